"""Reading and writing configs: a preset with `--set` overrides (`load_config`), each value
checked against its type as it is read (`build`), old key names read at their new places
(`pipeline.config.history`); the resume check that compares a directory's stored config.yaml
with the config now (`check_resumable`), and `save_config`."""

from __future__ import annotations

import dataclasses
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.config.domains import check_domains
from pipeline.config.history import MOVED, REMOVED, current, rename
from pipeline.config.keys import NOT_HASHED, OWN_SECTIONS
from pipeline.config.sections import Config
from pipeline.files import write_text
from search.errors import ConfigError, ParamError


def presets() -> list[str]:
    """Names of the presets shipped with the package."""
    files = resources.files("pipeline") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in files.iterdir() if p.name.endswith(".yaml"))


def load_config(
    preset: str = "arith-tiny",
    overrides: list[str] | None = None,
    where: str = "",
    warn: bool = True,
) -> Config:
    """A preset (a shipped name or a path to a YAML file) with `a.b=value` / `a.b.c=value`
    overrides. A bad key or value is reported as in `where` (default: the preset file). A key
    under an old name (`history.RENAMED`) is read at its new place, in the preset and in an
    override alike, so an override under either name replaces the preset's value; a retired
    one is dropped (both with a warning, once, unless not `warn`: a config.yaml a stage saved,
    which it writes again under the names of today)."""
    path = _preset_path(preset)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: a preset must be a mapping of sections, got {type(raw).__name__}"
        )
    rename(raw, where or str(path), warn)
    for item in overrides or []:
        _override(raw, item, path)
    cfg = build(Config, raw, where or str(path))
    check_domains(cfg.to_dict(), where or str(path))
    return cfg


def _override(raw: dict[str, Any], item: str, path: Path) -> None:
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"override {item!r}: {text!r} is not a YAML value") from None
    now = current(".".join(parts), value, "--set")
    if now is None:
        return
    parts = now.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"{path}: {where} is {child!r}, not a mapping, so --set {key} cannot go in it; "
                f"fix {where} in the preset"
            )
        node = child
    node[parts[-1]] = value


def _preset_path(preset: str) -> Path:
    if preset.endswith((".yaml", ".yml")):
        path = Path(preset)
        if not path.is_file():
            raise ConfigError(f"preset file {preset} does not exist")
        return path
    path = Path(str(resources.files("pipeline") / "presets" / f"{preset}.yaml"))
    if not path.is_file():
        raise ConfigError(f"unknown preset {preset!r}; shipped presets: {', '.join(presets())}")
    return path


def build(cls: type, raw: Any, where: str, prefix: str = "") -> Any:
    """An instance of dataclass `cls` from a mapping, every value checked against its type.
    `where` names the preset file, `prefix` the dotted key of this section."""
    label = f"{where}: {prefix}" if prefix else where
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: expected a mapping for {cls.__name__}, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for name in sorted(set(raw) - set(names)):
        full = f"{prefix}.{name}" if prefix else name
        if full in MOVED:
            raise ConfigError(f"{where}: {full} has moved: use {MOVED[full]}")
        if full in REMOVED:
            raise ConfigError(f"{where}: {full} was removed: {REMOVED[full]}")
        raise ConfigError(f"{label}: unknown key {name!r}; allowed keys: {', '.join(names)}")
    values = {}
    for name, value in raw.items():
        full = f"{prefix}.{name}" if prefix else name
        values[name] = _check(hints[name], value, where, full)
    try:
        return cls(**values)
    except (ConfigError, ParamError) as err:
        raise ConfigError(f"{label}.{err}" if prefix else f"{label}: {err}") from None


def _check(hint: Any, value: Any, where: str, key: str) -> Any:
    """`value` checked against the type `hint` of the key `key` (a section, a Literal, an
    optional, a list, or a scalar)."""
    if dataclasses.is_dataclass(hint):
        return build(hint, {} if value is None else value, where, key)  # type: ignore[arg-type]
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(
                f"{where}: {key}: {value!r} is not allowed; choose one of {list(allowed)}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        return _check(inner, value, where, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_check(item, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    return _scalar(hint, value, where, key)


def _scalar(hint: type, value: Any, where: str, key: str) -> Any:
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key}: expected {hint.__name__}, got {value!r}")
    return value


def config_diff(
    old: Config, new: Config, free: set[tuple[str, str]], only: tuple[str, ...] = ()
) -> list[str]:
    """`key: old there, new now` for every leaf key (dotted) that differs, outside `free`, under
    the sections or dotted keys `only` (all when empty)."""

    def leaves(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            full = f"{prefix}.{k}" if prefix else k
            out |= leaves(v, full) if isinstance(v, dict) else {full: v}
        return out

    skip = {f"{s}.{k}" for s, k in free}
    a, b = leaves(old.to_dict()), leaves(new.to_dict())
    keys = [
        k
        for k in b
        if k not in skip and (not only or any(k == o or k.startswith(f"{o}.") for o in only))
    ]
    return [f"{k}: {a.get(k)!r} there, {b[k]!r} now" for k in keys if a.get(k) != b[k]]


def check_resumable(cfg: Config, saved: Path, only: tuple[str, ...] = ()) -> None:
    """Fail when `saved` (a run's or a stage's config.yaml) holds another config than `cfg` (in
    the sections `only`, when given): resuming would mix the finished work of one config with the
    rest of another. Paths, worker and thread counts, `run.rounds` (extending a run) and
    `run.seeds` (seeds added to a several-seed run: each is its own sub-run, seed-S/, checked on
    its own, and the verdict is remade over the seeds given) may differ, and so may the
    `OWN_SECTIONS` not named in `only`."""
    if not saved.exists():
        return
    # a config.yaml saved before a rename is read the way a preset is: old names at their new
    # places, retired keys dropped, so the comparison is of the config as it is named now
    allowed = {*NOT_HASHED, ("run", "rounds"), ("run", "round"), ("run", "seeds")}
    d = cfg.to_dict()
    allowed |= {(s, k) for s in OWN_SECTIONS if s not in only for k in d[s]}
    diff = config_diff(load_config(str(saved), warn=False), cfg, allowed, only)
    if diff:
        raise ConfigError(
            f"{saved.parent} holds work made with another config ({'; '.join(diff)}); give "
            "another run.out_dir, or delete that directory to start over"
        )


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML, atomically (and nothing secret: the config holds no
    tokens)."""
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
