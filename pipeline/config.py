"""Configuration: one small frozen dataclass per stage, YAML presets, `key=value` overrides.

    cfg = load_config("arith-tiny", ["search.n_mc=4", "run.out_dir=/tmp/run"])

A preset is a YAML file in `pipeline/presets/` (shipped inside the package) with one mapping per
section. Unknown sections or keys and values of the wrong type fail at once with `ConfigError`,
naming the key (and the preset file) and what is allowed. The resolved config is saved as YAML
beside every output, with its hash on every row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A preset or override that names an unknown key or gives a bad value."""


@dataclass(frozen=True)
class TaskConfig:
    """Which problems. `op`/`digits` are for arithmetic; `path` and the fields for jsonl."""

    name: Literal["arithmetic", "countdown", "jsonl"] = "arithmetic"
    op: Literal["add", "mul"] = "add"
    digits: int = 3
    path: str = ""
    question_field: str = "question"
    answer_field: str = "answer"
    n_train: int = 256
    n_test: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.digits < 1 or self.n_train < 1 or self.n_test < 1:
            raise ConfigError("task.digits, task.n_train and task.n_test must be at least 1")
        if self.name == "jsonl" and not self.path:
            raise ConfigError("task.path: the jsonl task needs a JSONL file or dataset directory")


@dataclass(frozen=True)
class SearchConfig:
    """Tree search (DESIGN §5). OmegaPRM: K=n_screen, k=n_mc, B=budget, alpha, beta,
    L=length_scale, c_puct. MCTS: simulations, width, mcts_c_puct. `policy=fake` is the scripted
    policy with known mistakes (no model): its error rates are the fake_* keys. `policy=vllm`
    samples with vLLM on one GPU per worker (`gpu_memory` is the share of it vLLM may take)."""

    algorithm: Literal["omegaprm", "mcts"] = "omegaprm"
    policy: Literal["fake", "transformers", "vllm"] = "transformers"
    gpu_memory: float = 0.85
    n_screen: int = 32
    n_mc: int = 8
    budget: int = 100
    alpha: float = 0.5
    beta: float = 0.9
    length_scale: float = 500.0
    c_puct: float = 0.125
    locate: Literal["binary", "exhaustive"] = "binary"
    simulations: int = 20
    width: int = 4
    mcts_c_puct: float = 1.0
    batch_size: int = 16
    max_corrections: int = 1
    temperature: float = 1.0
    max_new_tokens: int = 64
    max_batch: int = 256
    workers: int = 1
    address: str = ""
    fake_error_rate: float = 0.05
    fake_trap_rate: float = 0.5
    fake_n_traps: int = 1
    fake_fix_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "n_screen",
            "n_mc",
            "budget",
            "simulations",
            "width",
            "batch_size",
            "max_new_tokens",
            "max_batch",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"search.{name}: must be at least 1, got {getattr(self, name)}")
        shares = (
            "fake_error_rate",
            "fake_trap_rate",
            "fake_fix_rate",
            "alpha",
            "beta",
            "gpu_memory",
        )
        for name in shares:
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"search.{name}: must be in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class ModelConfig:
    """The model the stages load: a local Hugging Face checkpoint directory (empty: the run's
    bootstrap model). Remote code runs only if `trust_remote_code` is set."""

    path: str = ""
    device: str = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False


@dataclass(frozen=True)
class BootstrapConfig:
    """A small decoder trained from scratch on the task's reference solutions (DESIGN §9)."""

    arch: Literal["gpt2", "llama"] = "gpt2"
    n_layer: int = 3
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 256
    n_problems: int = 20000
    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 100
    eval_problems: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "n_layer",
            "n_embd",
            "n_head",
            "n_positions",
            "n_problems",
            "steps",
            "batch_size",
            "eval_problems",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"bootstrap.{name}: must be at least 1")
        if self.n_embd % self.n_head:
            raise ConfigError("bootstrap.n_embd must be a multiple of bootstrap.n_head")


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning on traces (DESIGN §7). `base`: the checkpoint to start from (empty: the model
    the round searched with). `kinds`: comma-separated trace kinds to train on. `workers` > 0
    runs under Ray Train with that many workers. `token_warmup` > 0 first fits only the new
    token's embedding rows for that many batches (learning rate 10 × `lr`), the rest frozen."""

    base: str = ""
    data: str = ""
    mode: Literal["stream", "erase"] = "erase"
    init: Literal["mean", "words", "description", "subtokens"] = "mean"
    kinds: str = "correction,self_correction,clean"
    epochs: float = 2.0
    max_steps: int = -1
    lr: float = 3e-4
    dropout: float = 0.0
    error_weight: float = 1.0
    token_warmup: int = 0
    warmup: int = 10
    batch_size: int = 32
    save_steps: int = 50
    workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        allowed = {"correction", "self_correction", "clean"}
        bad = set(self.kinds.split(",")) - allowed
        if bad:
            raise ConfigError(f"train.kinds: {sorted(bad)} not allowed; use {sorted(allowed)}")
        if self.batch_size < 1 or self.save_steps < 1 or self.workers < 0 or self.token_warmup < 0:
            raise ConfigError(
                "train.batch_size and train.save_steps must be >= 1, workers and token_warmup >= 0"
            )


@dataclass(frozen=True)
class SelectConfig:
    """What each arm trains on next (DESIGN §6; pipeline/select.py)."""

    corrections_per_problem: int = 2
    self_corrections_per_problem: int = 2
    clean_per_problem: int = 1
    clean_share: float = 0.3
    min_parent_mc: float = 0.0
    curriculum: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.clean_share < 1:
            raise ConfigError("select.clean_share must be in [0, 1)")


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation (DESIGN §8): `samples` per problem at `temperature` (pass@1 over
    them), plus greedy; both also with the backspace banned."""

    n_problems: int = 500
    temperature: float = 1.0
    samples: int = 1
    max_backspaces: int = 16
    model: str = ""

    def __post_init__(self) -> None:
        if self.n_problems < 1 or self.samples < 1 or self.max_backspaces < 0:
            raise ConfigError("eval.n_problems and eval.samples must be >= 1")


@dataclass(frozen=True)
class TraceConfig:
    """The backspace token and what one backspace erases (DESIGN §4). `backspace_at=step_end`
    (step unit only): decoding may emit a backspace only right after a step delimiter or another
    backspace, where the traces have them, never inside a step."""

    bksp_token: str = "<|bksp|>"
    unit: Literal["token", "step"] = "token"
    backspace_at: Literal["any", "step_end"] = "any"

    def step_end_only(self, unit: str) -> bool:
        """Whether decoding in `unit` (the model's own, from halluc.json) keeps backspaces to step
        ends."""
        return self.backspace_at == "step_end" and unit == "step"


@dataclass(frozen=True)
class RunConfig:
    """Where outputs go, the run seed every other seed derives from, and the round."""

    out_dir: str = "runs/default"
    seed: int = 0
    round: int = 0
    rounds: int = 2
    model_id: str = ""


@dataclass(frozen=True)
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trace: TraceConfig = field(default_factory=TraceConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @property
    def hash(self) -> str:
        """A short hash of everything that shapes the outputs, not of where or on how many
        workers they are made (those must not change a row)."""
        d = self.to_dict()
        for section, key in NOT_HASHED:
            del d[section][key]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# where things are and how many workers make them; the model itself is named by each row's model_id
NOT_HASHED = [
    ("run", "out_dir"),
    ("search", "workers"),
    ("search", "address"),
    ("model", "device"),
    ("model", "path"),
    ("train", "base"),
    ("train", "data"),
    ("eval", "model"),
]


def presets() -> list[str]:
    """Names of the presets shipped with the package."""
    files = resources.files("pipeline") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in files.iterdir() if p.name.endswith(".yaml"))


def load_config(preset: str = "arith-tiny", overrides: list[str] | None = None) -> Config:
    """A preset (a shipped name or a path to a YAML file) with `section.key=value` overrides."""
    path = _preset_path(preset)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: a preset must be a mapping of sections, got {type(raw).__name__}"
        )
    for item in overrides or []:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        raw.setdefault(section, {})[name] = yaml.safe_load(value)
    return build(Config, raw, str(path))


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


def build(cls: type, raw: Any, where: str) -> Any:
    """An instance of dataclass `cls` from a mapping, every value checked against its type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(names)}")
    values = {}
    for name, value in raw.items():
        key = f"{where}:{name}" if ":" not in where else f"{where}.{name}"
        values[name] = _check(hints[name], value, key)
    return cls(**values)


def _check(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return build(hint, value or {}, key)  # type: ignore[arg-type]
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {list(allowed)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")
    return value


def check_resumable(cfg: Config, saved: Path) -> None:
    """Fail when `saved` (a run's config.yaml) holds another config than `cfg`: resuming would
    mix the finished stages of one config with the rest of another. Paths, worker counts and
    `run.rounds` (extending a run) may differ."""
    if not saved.exists():
        return
    old = load_config(str(saved)).to_dict()
    new = cfg.to_dict()
    free = {*NOT_HASHED, ("run", "rounds"), ("run", "round")}
    diff = [
        f"{s}.{k}: {old[s][k]!r} there, {new[s][k]!r} now"
        for s in new
        for k in new[s]
        if (s, k) not in free and old[s][k] != new[s][k]
    ]
    if diff:
        raise ConfigError(
            f"{saved.parent} holds a run with another config ({'; '.join(diff)}); give another "
            "run.out_dir, or delete that directory to start over"
        )


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML (and nothing secret: the config holds no tokens)."""
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
