"""`halluc table sweep-diffs`: at each sampled setting of a multi-seed run, every arm that erases
with its backspace allowed minus banned, the backtrack arm minus the baseline, and every arm's
erase figures (accuracy, backtrack rate, first-error precision and recall beside chance, repair,
tokens per solved problem).

    halluc table sweep-diffs --run runs/arith-tiny-verdict
    halluc table sweep-diffs --run runs/climb/arith-headroom/replay --setting T=1.0

Reads every `seed-S/ARM/round-R/eval.json` (`per_problem` lists over the same held-out problems) and
pairs them per problem within each seed; the interval resamples seeds, then problems
(`stats.seeds_then_problems`). An arm is compared with its backspace banned when its evaluation has
the banned twin of its settings and it erased at all (not the baseline, whose backspace is banned).
The seeds are the verdict's, where the run has one. The figures are means over seeds of each
seed's share (a seed with nothing to divide by, say no erase, is left out of that mean). Round
numbers are the verdict's: round r is the model trained in round r-1. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.arms import ARMS
from pipeline.files import read_json
from pipeline.layout import RunLayout
from pipeline.measure.stats import seeds_then_problems as paired
from pipeline.tables.common import (
    MISSING,
    TableError,
    diff,
    held_dir,
    mean_known,
    num,
    pct,
    run_dir,
    seed_dirs,
)

BANNED = ", backspace banned"
# (column, key, chance's key): the erase figures, each share beside what chance would give
FIGURES = (
    ("accuracy", "accuracy", None),
    ("backtrack rate", "backtrack_rate", None),
    ("first-error precision (chance)", "first_error_precision", "chance_first_error_precision"),
    ("recall (chance)", "first_error_recall", "chance_first_error_recall"),
    ("repair", "repair_rate", None),
    ("erased steps wrong (chance)", "step_erase_precision", "chance_precision"),
)


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", required=True, type=run_dir, help="a finished run's out_dir with seed-S/ in it"
    )
    parser.add_argument(
        "--setting",
        action="append",
        help="a sampled setting to show, e.g. T=1.0 (repeatable; default: every sampled one)",
    )


def seeds_of(run: Path) -> list[Path]:
    """The seed directories of the run's verdict (a grid adding seeds to a finished row leaves
    unfinished ones beside them), else every `seed-S/`."""
    verdict = RunLayout(run).verdict
    if verdict.is_file():
        return seed_dirs(run, read_json(verdict)["seeds"])
    return sorted(run.glob("seed-*"))


def evals(seeds: list[Path], arm: str, r: int) -> list[dict[str, Any]]:
    """Every seed's held-out figures of `arm`'s model of verdict round `r`: where the keep-best
    gate rejected the round, those of the model the arm kept (as the verdict reads them)."""
    paths = [held_dir(seed, f"{arm}/round-{r - 1}") / "eval.json" for seed in seeds]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise TableError(f"{missing[0]}: no such file; the run has not evaluated that round yet")
    return [read_json(p) for p in paths]


def _per(es: list[dict[str, Any]], name: str) -> list[list[float]]:
    return [e["settings"][name]["per_problem"] for e in es]


def _names(first: dict[str, Any], wanted: list[str] | None, where: Path) -> list[str]:
    """The sampled settings of an evaluation (greedy and the banned twins left out), or those of
    them `wanted`; a TableError names the ones there are when one is not."""
    names = [n for n in first["settings"] if not n.endswith(BANNED) and n != "greedy"]
    unknown = [n for n in wanted or [] if n not in names]
    if unknown:
        raise TableError(f"{where}: no sampled setting {unknown[0]!r}; there are {names}")
    return [n for n in names if n in wanted] if wanted else names


def compute(run: Path, setting: list[str] | None = None) -> dict[str, Any]:
    """Per comparison, per round, per sampled setting: the paired difference over seeds; per arm,
    round and setting: the erase figures' means over seeds."""
    seeds = seeds_of(run)
    if not seeds:
        raise TableError(f"{run}: no seed-S directories; give the out_dir of a run with run.seeds")
    rounds = sorted(int(p.name.split("-")[1]) + 1 for p in (seeds[0] / "backtrack").glob("round-*"))
    if not rounds:
        raise TableError(f"{seeds[0]}: no backtrack/round-R; the run has no trained round yet")
    arms = [a.name for a in ARMS if (seeds[0] / a.name / "round-0").is_dir()]
    loaded = {(arm, r): evals(seeds, arm, r) for arm in arms for r in rounds}  # read once
    first = {arm: loaded[arm, rounds[0]][0] for arm in arms}
    names = _names(first["backtrack"], setting, seeds[0] / "backtrack" / "round-0")
    tables = []
    for arm in arms:
        if not all(n + BANNED in first[arm]["settings"] for n in names):
            continue  # no banned twin: a model without the backspace
        if not any(
            e["settings"][n]["backtrack_rate"]
            for r in rounds
            for e in loaded[arm, r]
            for n in names
        ):
            continue  # never erased (the baseline, its backspace banned): nothing to compare
        rows = []
        for r in rounds:
            es = loaded[arm, r]
            rows.append(
                {"round": r, "cells": [paired(_per(es, n), _per(es, n + BANNED)) for n in names]}
            )
        tables.append({"title": f"{arm}, allowed − banned", "rows": rows})
    if "baseline" in arms:
        rows = []
        for r in rounds:
            bt, base = loaded["backtrack", r], loaded["baseline", r]
            rows.append({"round": r, "cells": [paired(_per(bt, n), _per(base, n)) for n in names]})
        tables.append({"title": "backtrack − baseline", "rows": rows})
    figures = [
        {"arm": arm, "round": r, "setting": n, **_means([e["settings"][n] for e in loaded[arm, r]])}
        for arm in arms
        for r in rounds
        for n in names
    ]
    return {"run": str(run), "names": names, "tables": tables, "figures": figures}


def _means(per_seed: list[dict[str, Any]]) -> dict[str, float | None]:
    keys = [k for _, key, chance in FIGURES for k in (key, chance) if k] + ["tokens_per_solved"]
    return {k: mean_known([f.get(k) for f in per_seed]) for k in keys}


def render(result: dict[str, Any], command: str = "") -> str:
    """The paired tables, then the figures, each after a blank line and its title."""
    names, lines = result["names"], []
    for table in result["tables"]:
        lines += ["", f"{table['title']}, paired over seeds ({result['run']}):", ""]
        lines.append("| round | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for row in table["rows"]:
            lines.append(f"| {row['round']} | " + " | ".join(map(diff, row["cells"])) + " |")
    lines += ["", f"Each arm's figures, means over seeds ({result['run']}):", ""]
    columns = [c for c, _, _ in FIGURES] + ["tokens per solved problem"]
    lines.append("| arm | round | setting | " + " | ".join(columns) + " |")
    lines.append("|---|---|---|" + "---|" * len(columns))
    for f in result["figures"]:
        cells = [
            pct(f[key]) + (f" ({pct(f[chance])})" if chance else "") for _, key, chance in FIGURES
        ]
        tokens = num(f["tokens_per_solved"], 1)
        lines.append(
            f"| {f['arm']} | {f['round']} | {f['setting']} | "
            + " | ".join(cells)
            + f" | {tokens} |"
        )
    return "\n".join(lines).replace(f" {MISSING} ({MISSING})", f" {MISSING}")
