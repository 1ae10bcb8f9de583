"""`halluc table compare-rows`: two rows of a grid (two finished several-seed runs of the same
preset and seeds, differing in their overrides), arm by arm and round by round, paired per
held-out problem.

    halluc table compare-rows --a runs/anchored/countdown-confirm/replay \\
        --b runs/anchored/countdown-confirm/previous

Each side's arm is read, seed by seed, at its setting chosen on validation problems (what the main
table reads; where a keep-best gate rejected a round, the model the arm kept). Per round and arm:
each side's mean accuracy with its per-seed values, a − b and each side minus its start model as
two-level intervals that resample seeds, then problems (`stats.seeds_then_problems`), each seed's
own difference beside them, and each side's optimizer steps and loss-bearing tokens summed over
seeds. Prints Markdown. `--seeds 0,1,2`: pair only these seeds, which both runs must have (a run
extended to more seeds against one that was not); without it both runs must have the same seeds.
A side may be several runs of disjoint seeds, read as one (`--a RUN_S0 RUN_S1 RUN_S2`): one run per
seed where a setting differs from seed to seed, such as a threshold chosen per seed on validation.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import fmean
from typing import Any

from pipeline.measure.stats import seeds_then_problems
from pipeline.tables.common import MISSING, TableError, diff, ints, pct, read_verdict, run_dir
from pipeline.tables.main import chosen


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--a", required=True, nargs="+", type=run_dir, help="a finished run (a grid row)"
    )
    parser.add_argument("--b", required=True, nargs="+", type=run_dir, help="another")
    parser.add_argument(
        "--seeds", type=ints, default=None, help="0,1,2: pair only these seeds (both runs have)"
    )


def _costs(verdict: dict[str, Any], seeds: list[int], arm: str, r: int) -> tuple[int, int]:
    per_seed = dict(zip(verdict["seeds"], verdict["compute"], strict=True))
    cost = [per_seed[s][arm][r] for s in seeds if arm in per_seed[s] and len(per_seed[s][arm]) > r]
    return (
        sum(c.get("optimizer_steps", 0) for c in cost),
        sum(c.get("loss_tokens", 0) for c in cost),
    )


class _Side:
    """One side of the comparison: a run, or runs of disjoint seeds read as one."""

    def __init__(self, runs: Path | list[Path]) -> None:
        self.runs = [runs] if isinstance(runs, Path) else list(runs)
        verdicts = [read_verdict(r) for r in self.runs]
        self.run_of: dict[int, Path] = {}
        for run, v in zip(self.runs, verdicts, strict=True):
            for s in v["seeds"]:
                if s in self.run_of:
                    raise TableError(
                        f"seed {s} is in {self.run_of[s]} and {run}: give disjoint seeds"
                    )
                self.run_of[s] = run
        self.verdict = {
            "seeds": list(self.run_of),
            "compute": [c for v in verdicts for c in v["compute"]],
            "rounds": min((v["rounds"] for v in verdicts), key=len),
        }
        self.name = " + ".join(str(r) for r in self.runs)
        self.label = " + ".join(r.name for r in self.runs)  # the table's column heads

    def chosen(self, seeds: list[int], where: str) -> list[dict[str, Any]] | None:
        out = []
        for s in seeds:
            figures = chosen(self.run_of[s], [s], where)
            if figures is None:
                return None
            out += figures
        return out


def compute(
    a: Path | list[Path], b: Path | list[Path], seeds: list[int] | None = None
) -> dict[str, Any]:
    """Per round (1..R, the model trained in round R-1) and arm both runs have: both sides'
    figures at their chosen settings and the paired differences, over `seeds` (default: the
    runs' seeds, which must then be the same). A side is a run or runs of disjoint seeds."""
    side_a, side_b = _Side(a), _Side(b)
    va, vb = side_a.verdict, side_b.verdict
    name_a, name_b = side_a.name, side_b.name
    if seeds is None:
        seeds = va["seeds"]
        if vb["seeds"] != seeds:
            raise TableError(
                f"{name_a} has seeds {seeds} and {name_b} has {vb['seeds']}: pair the same "
                "seeds, or give --seeds with the ones both have"
            )
    for run, v in ((name_a, va), (name_b, vb)):
        if missing := [s for s in seeds if s not in v["seeds"]]:
            raise TableError(f"{run} has seeds {v['seeds']}, not {missing}: pair seeds both have")
    start_a, start_b = side_a.chosen(seeds, "bootstrap"), side_b.chosen(seeds, "bootstrap")
    if start_a is None or start_b is None:
        raise TableError(
            f"{name_a if start_a is None else name_b}: a seed has no start model figures"
        )
    arms = [arm for arm in va["compute"][0] if arm in vb["compute"][0]]
    rows = []
    for r in range(min(len(va["rounds"]), len(vb["rounds"])) - 1):
        for arm in arms:
            fa, fb = (
                side_a.chosen(seeds, f"{arm}/round-{r}"),
                side_b.chosen(seeds, f"{arm}/round-{r}"),
            )
            if fa is None or fb is None:
                continue
            pa, pb = [f["per_problem"] for f in fa], [f["per_problem"] for f in fb]
            rows.append(
                {
                    "round": r + 1,
                    "arm": arm,
                    "a": fmean(f["accuracy"] for f in fa),
                    "b": fmean(f["accuracy"] for f in fb),
                    "a_per_seed": [f["accuracy"] for f in fa],
                    "b_per_seed": [f["accuracy"] for f in fb],
                    "a_minus_b": seeds_then_problems(pa, pb),
                    "a_minus_start": seeds_then_problems(pa, [f["per_problem"] for f in start_a]),
                    "b_minus_start": seeds_then_problems(pb, [f["per_problem"] for f in start_b]),
                    "a_cost": _costs(va, seeds, arm, r),
                    "b_cost": _costs(vb, seeds, arm, r),
                }
            )
    if not rows:
        raise TableError(f"{name_a} and {name_b}: no round of an arm both runs have finished")
    start = fmean(f["accuracy"] for f in start_a)
    labels = {"a_label": side_a.label, "b_label": side_b.label}
    return {"a": name_a, "b": name_b, **labels, "seeds": seeds, "start": start, "rows": rows}


def _seeds(xs: list[float], sign: str = "") -> str:
    return " · ".join(f"{100 * x:{sign}.1f}" for x in xs)


def render(result: dict[str, Any], command: str = "") -> str:
    a, b = result["a_label"], result["b_label"]
    out = [f"    {command}", ""] if command else []
    out += [
        f"a = `{result['a']}`, b = `{result['b']}`; seeds {result['seeds']}; start model "
        f"{pct(result['start'])} (mean over seeds). Differences in points, 95% interval over "
        "seeds, then problems; per seed in brackets.",
        "",
        f"| round | arm | {a} [per seed] | {b} [per seed] | {a} − {b} [per seed] | "
        f"{a} − start | {b} − start | optimizer steps: {a} / {b} | loss tokens: {a} / {b} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        d = r["a_minus_b"]
        out.append(
            f"| {r['round']} | {r['arm']} | {pct(r['a'])} [{_seeds(r['a_per_seed'])}] | "
            f"{pct(r['b'])} [{_seeds(r['b_per_seed'])}] | "
            f"{diff(d)} [{_seeds(d['per_seed'], sign='+')}] | {diff(r['a_minus_start'])} | "
            f"{diff(r['b_minus_start'])} | {r['a_cost'][0]} / {r['b_cost'][0]} | "
            f"{r['a_cost'][1] or MISSING} / {r['b_cost'][1] or MISSING} |"
        )
    return "\n".join(out)
