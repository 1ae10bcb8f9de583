"""`halluc grid`: one resumable command for a table of lever settings × seeds.

    halluc grid --preset arith-tiny --grid levers.yaml --seeds 0,1,2
    ray job submit --working-dir . -- halluc grid --preset arith-tiny --grid levers.yaml \
        --seeds 0,1,2 --set run.out_dir=/mnt/shared/runs/levers

A grid file is a YAML list of rows; each row has a `name` (its directory) and `set`, dotted
config keys and their values, read exactly like `--set KEY=VALUE` and applied after the command
line's `--set`s (`run.out_dir` and `run.seeds` belong to the whole grid, not to a row):

    - name: defaults
      set: {}
    - name: step-end
      set: {trace.backspace_at: step_end}
    - name: subtokens
      set: {train.init: subtokens, train.token_warmup: 0}

Every row is checked before anything runs (its keys and values, and that its directory, if an
earlier invocation made it, holds the same config). Then each row in order is one `halluc run`
over the seeds (`--seeds`, else `run.seeds`, else `run.seed`) into `run.out_dir/NAME/`. A row
whose report and `verdict.json` over these seeds and `run.rounds` are there is skipped; the first
unfinished one is run, and since `halluc run` resumes at its first unfinished stage, rerunning the
same command after a kill continues where it stopped. A row whose task (but for `task.n_train`)
and bootstrap sections equal those of a row that has its bootstrap model starts from a copy of
that model, seed by seed (the model only: its figures depend on the row's eval and trace
settings, so the row evaluates it itself).

`--rows NAME,NAME` runs only those rows (in the file's order; all are still checked) and
tabulates only them, for a grid whose rows are not all wanted at every seed count.

At the end, `run.out_dir/grid.json` (per row: name, overrides, and every round's verdict figures
with the backtrack arm at T=1.0 and the compute per arm) and `grid.md` (the command that makes it
and one table, a line per row and round).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Config, ConfigError, check_resumable, config_diff, load_config
from pipeline.config.keys import BOOTSTRAP_TASK_KEYS, eval_keys
from pipeline.files import copy_dir, read_json, write_json, write_text
from pipeline.layout import GridLayout, RunLayout, compute_of
from pipeline.loading import task_from_config
from pipeline.measure import report
from pipeline.measure.grid_table import command_line, page, record, sets, table_rows
from pipeline.stages import run

log = logging.getLogger(__name__)

ROW_KEYS = ("name", "set")
GRID_KEYS = ("run.out_dir", "run.seeds")  # one grid, one place, one set of seeds
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Row:
    """One row of a grid: its name, its overrides as the grid file gives them, its config (the
    command line's, then the row's overrides, into `run.out_dir/NAME/` over the grid's seeds)."""

    name: str
    overrides: dict[str, Any]
    cfg: Config

    @property
    def root(self) -> Path:
        return Path(self.cfg.run.out_dir)


def main(
    grid: str | Path,
    preset: str,
    overrides: list[str],
    seeds: list[int] | None = None,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Run (or resume) every row of the grid file `grid` (those named in `only`, when given), then
    write grid.json and grid.md in `run.out_dir`; returns their paths and the Markdown table."""
    base = load_config(preset, overrides)
    layout = GridLayout(Path(base.run.out_dir))
    seeds = seeds or base.run.seeds or [base.run.seed]
    if RunLayout(layout.root).config.exists():
        raise ConfigError(
            f"{layout.root} holds a run or a stage's outputs (config.yaml), not a grid; give "
            f"the grid its own directory: --set run.out_dir=DIR"
        )
    every = load_rows(Path(grid), preset, overrides, seeds, layout)
    rows = select(every, only, grid)
    for i, row in enumerate(rows, 1):
        if finished(row, seeds):
            log.info("grid row %d/%d %s: finished, skipped", i, len(rows), row.name)
            continue
        log.info("grid row %d/%d %s: running %s", i, len(rows), row.name, sets(row.overrides))
        share_bootstrap(row, every, seeds)  # from any row of the file that has it
        run.main(row.cfg)
    records = [record(row, seeds) for row in rows]
    command = command_line(str(grid), preset, overrides, seeds, only)
    write_json(layout.json, {"command": command, "seeds": seeds, "rows": records})
    table = report.markdown(table_rows(records))
    write_text(layout.md, page(command, seeds, records, table))
    return {"table": table, "json": str(layout.json), "md": str(layout.md)}


def describe(result: dict[str, Any]) -> str:
    return f"{result['table']}\n\n{result['md']}\n{result['json']}"


# --- the grid file ---------------------------------------------------------------------------


def load_rows(
    path: Path, preset: str, overrides: list[str], seeds: list[int], layout: GridLayout
) -> list[Row]:
    """The rows of the grid file at `path`, each with its config (into `layout.row(NAME)`), checked:
    the file's shape, the names (directory names, each once), each row's keys and values (as
    `--set` checks them), and that a row directory made earlier holds the same config. Raises
    `ConfigError` naming the file, the row and its line."""
    items = _read(path)
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for i, (line, item) in enumerate(items, 1):
        name = _row_name(item, f"{path}, row {i} (line {line})")
        label = f"{path}, row {i} (line {line}, {name!r})"
        sets = _row_sets(item, label)
        if name in seen:
            raise ConfigError(f"{label}: the name {name!r} is already row {seen[name]}'s")
        seen[name] = i
        cfg = _row_config(preset, overrides, sets, seeds, layout.row(name), label)
        try:
            check_resumable(cfg, RunLayout.of(cfg).config)
        except ConfigError as err:
            raise ConfigError(f"{label}: {err}, or give the row another name") from None
        rows.append(Row(name, sets, cfg))
    return rows


def select(rows: list[Row], only: list[str] | None, path: str | Path) -> list[Row]:
    """The rows named in `only`, in the grid file's order (all of them when `only` is None); every
    row is checked all the same, so a name that is not the file's is an error, not a silent skip."""
    if only is None:
        return rows
    names = [row.name for row in rows]
    unknown = [name for name in only if name not in names]
    if unknown:
        raise ConfigError(f"{path}: no row named {', '.join(map(repr, unknown))} (rows: {names})")
    return [row for row in rows if row.name in only]


def _read(path: Path) -> list[tuple[int, Any]]:
    """(line, row) for each row of the grid file: a non-empty YAML list."""
    if not path.is_file():
        raise ConfigError(f"grid file {path} does not exist")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}".replace("\n", " ")) from None
    if not isinstance(data, list) or not data or node is None:
        raise ConfigError(
            f"{path}: a grid file is a list of rows (`- name: NAME` with `set: {{KEY: VALUE}}`), "
            f"got {type(data).__name__ if data else 'nothing'}"
        )
    return [(n.start_mark.line + 1, item) for n, item in zip(node.value, data, strict=True)]


def _row_name(item: Any, label: str) -> str:
    """The row's name, once the row is a mapping of known keys."""
    if not isinstance(item, dict):
        raise ConfigError(f"{label}: a row is a mapping with name and set, got {item!r}")
    unknown = sorted(set(item) - set(ROW_KEYS), key=str)
    if unknown:
        raise ConfigError(f"{label}: unknown key {unknown[0]!r}; a row has {', '.join(ROW_KEYS)}")
    name = item.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(
            f"{label}: name must be a directory name (letters, digits, '.', '_', '-', not "
            f"starting with '.', '_' or '-'), got {name!r}"
        )
    return name


def _row_sets(item: dict[str, Any], label: str) -> dict[str, Any]:
    """The row's overrides: dotted keys (not the grid's own) and their values."""
    sets = item.get("set") or {}
    if not isinstance(sets, dict):
        raise ConfigError(f"{label}: set must be a mapping of SECTION.KEY: VALUE, got {sets!r}")
    for key in sets:
        parts = key.split(".") if isinstance(key, str) else []
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"{label}: set key {key!r} must look like section.key")
        if key in GRID_KEYS:
            raise ConfigError(
                f"{label}: {key} belongs to the whole grid; give it on the command line "
                f"(--set {key}=... or --seeds), not in a row"
            )
    return sets


def _row_config(
    preset: str,
    overrides: list[str],
    sets: dict[str, Any],
    seeds: list[int],
    out: Path,
    label: str,
) -> Config:
    """The row's config: the command line's overrides, the row's (as `--set KEY=JSON`, which
    YAML reads back to the same value), its directory and the grid's seeds."""
    try:
        items = [
            *overrides,
            *(f"{k}={json.dumps(v)}" for k, v in sets.items()),
            f"run.out_dir={out}",
            f"run.seeds={json.dumps(seeds)}",
        ]
        return load_config(preset, items, where=label)
    except (ConfigError, TypeError) as err:  # TypeError: a value JSON cannot hold (a date)
        msg = str(err)
        raise ConfigError(msg if msg.startswith(label) else f"{label}: {msg}") from None


# --- running ---------------------------------------------------------------------------------


def finished(row: Row, seeds: list[int]) -> bool:
    """Whether `halluc run` finished the row: its verdict over these seeds and every round, and
    its report (written after the verdict)."""
    layout = RunLayout.of(row.cfg)
    if not (layout.verdict.exists() and layout.report_html.exists()):
        return False
    verdict = read_json(layout.verdict)
    return bool(verdict["seeds"] == seeds and len(verdict["rounds"]) == row.cfg.run.rounds + 1)


def share_bootstrap(row: Row, rows: list[Row], seeds: list[int]) -> None:
    """Give `row`, seed by seed, a copy of the bootstrap model of the first other row whose saved
    bootstrap config has the same task (but for `task.n_train`) and bootstrap sections (what the
    bootstrap stage compares when it resumes) and the same backspace token (which the backspace
    data forms train with); with it, that row's evaluations of the model (eval.json, tune.json,
    curve.json) where the eval stage would take them as this row's own (`shared_evals`).
    Never replaces or deletes anything; the model, copied last, marks the copy whole."""
    if row.cfg.model.path:  # a given start model: no bootstrap
        return
    for seed in seeds:
        cfg = run.seed_config(row.cfg, seed)
        layout = RunLayout.of(cfg)
        target = layout.bootstrap_model
        if target.exists():
            continue
        source = _same_bootstrap([r for r in rows if r is not row], seed, cfg)
        if source is not None:
            log.info("grid row %s, seed %d: bootstrap model copied from %s", row.name, seed, source)
            if compute_of(source).exists():
                write_json(compute_of(target), read_json(compute_of(source)))
            for have, want in shared_evals(source, layout, cfg):
                log.info("grid row %s, seed %d: %s copied from %s", row.name, seed, want.name, have)
                figures = dict(read_json(have))
                if "model" in figures:  # what the row would have written: its own model's path
                    figures["model"] = str(target)
                write_json(want, figures)
            copy_dir(source, target)


def shared_evals(source_model: Path, layout: RunLayout, cfg: Config) -> list[tuple[Path, Path]]:
    """(source, target) for the start model's evaluations in `source_model`'s run that this row
    (`cfg`, `layout`) would make the same: the held-out and the validation sweeps when their
    `eval_key` is one `cfg` accepts (what `evaluate_to` checks of a cached file), and the curve
    beside them when both are (it is drawn at the setting the validation sweep chose, by the same
    settings). Targets already there are left alone."""
    src = RunLayout(source_model.parent.parent)
    task = task_from_config(cfg.task)
    sweeps = (
        (src.start_eval, layout.start_eval, task.problems("test", cfg.eval.n_problems), None),
        (src.start_tune, layout.start_tune, task.problems("validation", cfg.eval.n_tune), False),
    )
    pairs = []
    for have, want, problems, banned in sweeps:
        if not have.exists():
            return []
        key = read_json(have).get("eval_key")
        if key not in eval_keys(cfg, len(problems), banned):
            return []
        pairs.append((have, want))
    if src.start_curve.exists():
        pairs.append((src.start_curve, layout.start_curve))
    return [(have, want) for have, want in pairs if not want.exists()]


def _same_bootstrap(rows: list[Row], seed: int, cfg: Config) -> Path | None:
    """The bootstrap model of seed `seed` of the first of `rows` that made it with `cfg`'s task
    and bootstrap sections and backspace token, if any."""
    for row in rows:
        layout = RunLayout.of(run.seed_config(row.cfg, seed))
        if not (layout.bootstrap_model.exists() and layout.bootstrap_config.exists()):
            continue
        made = load_config(str(layout.bootstrap_config), warn=False)  # old names or new
        same = not config_diff(made, cfg, set(), (*BOOTSTRAP_TASK_KEYS, "bootstrap"))
        if same and made.trace.bksp_token == cfg.trace.bksp_token:
            return layout.bootstrap_model
    return None
