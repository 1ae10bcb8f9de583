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
    parser.add_argument("--a", required=True, type=run_dir, help="one finished run (a grid row)")
    parser.add_argument("--b", required=True, type=run_dir, help="another, of the same seeds")
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


def compute(a: Path, b: Path, seeds: list[int] | None = None) -> dict[str, Any]:
    """Per round (1..R, the model trained in round R-1) and arm both runs have: both sides'
    figures at their chosen settings and the paired differences, over `seeds` (default: the
    runs' seeds, which must then be the same)."""
    va, vb = read_verdict(a), read_verdict(b)
    if seeds is None:
        seeds = va["seeds"]
        if vb["seeds"] != seeds:
            raise TableError(
                f"{a} has seeds {seeds} and {b} has {vb['seeds']}: pair the same seeds, or "
                "give --seeds with the ones both have"
            )
    for run, v in ((a, va), (b, vb)):
        if missing := [s for s in seeds if s not in v["seeds"]]:
            raise TableError(f"{run} has seeds {v['seeds']}, not {missing}: pair seeds both have")
    start_a, start_b = chosen(a, seeds, "bootstrap"), chosen(b, seeds, "bootstrap")
    if start_a is None or start_b is None:
        raise TableError(f"{a if start_a is None else b}: a seed has no start model figures")
    arms = [arm for arm in va["compute"][0] if arm in vb["compute"][0]]
    rows = []
    for r in range(min(len(va["rounds"]), len(vb["rounds"])) - 1):
        for arm in arms:
            fa, fb = chosen(a, seeds, f"{arm}/round-{r}"), chosen(b, seeds, f"{arm}/round-{r}")
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
        raise TableError(f"{a} and {b}: no round of an arm both runs have finished")
    start = fmean(f["accuracy"] for f in start_a)
    return {"a": str(a), "b": str(b), "seeds": seeds, "start": start, "rows": rows}


def _seeds(xs: list[float], sign: str = "") -> str:
    return " · ".join(f"{100 * x:{sign}.1f}" for x in xs)


def render(result: dict[str, Any], command: str = "") -> str:
    a, b = Path(result["a"]).name, Path(result["b"]).name
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
