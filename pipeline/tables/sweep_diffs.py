"""`halluc table sweep-diffs`: paired differences at each temperature of a multi-seed run: the
backtrack arm's model with its backspace allowed minus banned, and the backtrack arm minus the
baseline at the same setting.

    halluc table sweep-diffs --run runs/arith-tiny-verdict

Reads every `seed-S/ARM/round-R/eval.json` (`per_problem` lists over the same held-out problems) and
pairs them per problem within each seed; the interval resamples seeds, then problems
(`stats.seeds_then_problems`). Round numbers are the verdict's: round r is the model trained in
round r-1. Prints two Markdown tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.files import read_json
from pipeline.measure.stats import seeds_then_problems as paired
from pipeline.tables.common import TableError, diff, run_dir

BANNED = ", backspace banned"
TITLES = (("allowed − banned", None), ("backtrack − baseline", "baseline"))


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", required=True, type=run_dir, help="a finished run's out_dir with seed-S/ in it"
    )


def evals(run: Path, arm: str, r: int) -> list[dict[str, Any]]:
    """Every seed's held-out figures of `arm`'s model of verdict round `r`."""
    return [
        read_json(seed / arm / f"round-{r - 1}" / "eval.json")
        for seed in sorted(run.glob("seed-*"))
    ]


def _per(es: list[dict[str, Any]], name: str) -> list[list[float]]:
    return [e["settings"][name]["per_problem"] for e in es]


def compute(run: Path) -> dict[str, Any]:
    """Per comparison, per round, per sampled setting (greedy and banned ones excluded): the
    paired difference over seeds."""
    seeds = sorted(run.glob("seed-*"))
    if not seeds:
        raise TableError(f"{run}: no seed-S directories; give the out_dir of a run with run.seeds")
    rounds = sorted(int(p.name.split("-")[1]) + 1 for p in (seeds[0] / "backtrack").glob("round-*"))
    if not rounds:
        raise TableError(f"{seeds[0]}: no backtrack/round-R; the run has no trained round yet")
    names = [
        n
        for n in evals(run, "backtrack", rounds[0])[0]["settings"]
        if not n.endswith(BANNED) and n != "greedy"
    ]
    tables = []
    for title, other in TITLES:
        rows = []
        for r in rounds:
            bt = evals(run, "backtrack", r)
            base = evals(run, other, r) if other else bt
            cells = [paired(_per(bt, n), _per(base, n if other else n + BANNED)) for n in names]
            rows.append({"round": r, "cells": cells})
        tables.append({"title": title, "rows": rows})
    return {"run": str(run), "names": names, "tables": tables}


def render(result: dict[str, Any], command: str = "") -> str:
    """Two Markdown tables, each after a blank line and its title."""
    names, lines = result["names"], []
    for table in result["tables"]:
        lines += ["", f"{table['title']}, paired over seeds ({result['run']}):", ""]
        lines.append("| round | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for row in table["rows"]:
            lines.append(f"| {row['round']} | " + " | ".join(map(diff, row["cells"])) + " |")
    return "\n".join(lines)
