"""Paired differences at each temperature of a multi-seed run: the backtrack arm's model with its
backspace allowed minus banned, and the backtrack arm minus the baseline at the same setting.

    .venv/bin/python benchmarks/sweep_diffs.py --run runs/arith-tiny-verdict

Reads every `seed-S/ARM/round-R/eval.json` (`per_problem` lists over the same held-out problems)
and pairs them per problem over seeds (`pipeline.measure.stats.paired_bootstrap`). Round numbers
are the verdict's: round r is the model trained in round r-1. Prints two Markdown tables.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.layout import RunLayout
from pipeline.measure.settings import settings_of
from pipeline.measure.stats import paired_bootstrap


def evals(run: Path, arm: str, r: int) -> list[dict[str, Any]]:
    return [
        json.loads(RunLayout(seed).round(r - 1, arm).eval.read_text())
        for seed in RunLayout(run).seed_dirs()
    ]


def per(es: list[dict[str, Any]], name: str) -> list[list[float]]:
    return [e["settings"][name]["per_problem"] for e in es]


def cell(d: dict[str, Any]) -> str:
    lo, hi = d["ci95"]
    return f"{100 * d['mean']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True)
    run = Path(ap.parse_args().run)
    first = RunLayout(run).seed_dirs()[0]
    rounds = [r + 1 for r in RunLayout(first).rounds("backtrack")]
    settings = settings_of(evals(run, "backtrack", rounds[0])[0])
    names = [n for n, s in settings.items() if not s.backspace_banned and s.sampling]
    # each sampled setting's name with the backspace banned
    banned = {n: replace(settings[n], backspace_banned=True).name for n in names}
    for title, other in (("allowed − banned", None), ("backtrack − baseline", "baseline")):
        print(f"\n{title}, paired over seeds ({run}):\n")
        print("| round | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for r in rounds:
            bt = evals(run, "backtrack", r)
            base = evals(run, other, r) if other else bt
            cells = [
                cell(paired_bootstrap(per(bt, n), per(base, n if other else banned[n])))
                for n in names
            ]
            print(f"| {r} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
