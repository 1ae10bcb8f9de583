"""`halluc table main`: the main table under verdict v2, from a finished several-seed `halluc run`.

    halluc table main --run runs/v2/arith-headroom

Per round and arm (round 0: the start model), each seed read at its setting chosen on validation
problems: accuracy (mean, and per seed); its difference with the baseline and with the start model
as a two-level interval that resamples seeds, then problems within each (`seeds_then_problems`),
each seed's own difference beside it; the first-error figures (precision and recall each beside
its chance for a random eraser at the same rate, repair rate; `search.metrics.first_error`); the
detector's ROC-AUC pooled and within problem, and its lift within problem over the best trivial
score (`pipeline.measure.strata`); accuracy against generated tokens: best-of-N by likelihood at
N = 1, 4 and 16 with tokens per problem (`pipeline.measure.budget`); and what the arm cost
summed over seeds (optimizer steps, loss-bearing tokens, tokens generated in search and in
training). Then, per round (from `verdict.json`), the baseline's best-of-N at the backtrack arm's
tokens, and per seed the stronger of it and the baseline at its chosen setting, picked on the test
problems (`measure.verdict.strongest`: hindsight favours the control), and the wall time per seed
by stage. Prints Markdown and writes RUN/main.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import fmean
from typing import Any

from pipeline.arms import ARMS
from pipeline.files import read_json
from pipeline.measure.stats import seeds_then_problems
from pipeline.measure.verdict import choose
from pipeline.tables.common import (
    MISSING,
    TableError,
    held_dir,
    mean_all,
    num,
    pct,
    read_verdict,
    run_dir,
)

CURVE_N = (1, 4, 16)
# the verdict's compute-matched controls, as the table names them
CONTROLS = (
    ("best_of_n", "baseline best-of-N at the backtrack arm's tokens"),
    ("strongest", "the stronger per seed of the baseline and its best-of-N, picked on test"),
)


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, type=run_dir, help="a finished run's out_dir")


def _seed(run: Path, s: int) -> Path:
    sub = run / f"seed-{s}"
    return sub if sub.exists() else run  # a run of one seed without run.seeds


def chosen(run: Path, seeds: list[int], where: str) -> list[dict[str, Any]] | None:
    """Per seed, the held-out figures in `where` at the setting chosen on validation problems,
    with the detector block and the curve (None when any seed lacks the figures)."""
    out = []
    for s in seeds:
        d = held_dir(_seed(run, s), where)
        if not (d / "eval.json").exists() or not (d / "tune.json").exists():
            return None
        held = read_json(d / "eval.json")
        name = choose(read_json(d / "tune.json"))
        curve = read_json(d / "curve.json")["curve"] if (d / "curve.json").exists() else None
        det = held.get("detector") or {}
        out.append(held["settings"][name] | {"setting": name, "det": det, "curve": curve})
    return out


def compute(run: Path) -> dict[str, Any]:
    verdict = read_verdict(run)
    seeds, costs = verdict["seeds"], verdict["compute"]
    start = chosen(run, seeds, "bootstrap")
    if start is None:
        raise TableError(f"{run}: a seed has no start model figures (bootstrap/eval.json)")
    rows = [_row(0, "start model", start, None, start, [])]
    for r in range(len(verdict["rounds"]) - 1):
        figures = {a.name: chosen(run, seeds, f"{a.name}/round-{r}") for a in ARMS}
        base = figures.get("baseline")
        for arm, fs in figures.items():
            if fs:
                cost = [c[arm][r] for c in costs if arm in c]
                rows.append(_row(r + 1, arm, fs, base, start, cost))
    best = [
        {"round": i, "control": key, "what": what, **rnd[key]}
        for i, rnd in enumerate(verdict["rounds"])
        for key, what in CONTROLS
        if rnd.get(key)
    ]
    wall = verdict.get("wall_seconds") or []
    return {"run": str(run), "seeds": seeds, "rows": rows, "best_of_n": best, "wall": wall}


def _row(
    r: int,
    arm: str,
    fs: list[dict[str, Any]],
    base: list[dict[str, Any]] | None,
    start: list[dict[str, Any]],
    cost: list[dict[str, Any]],
) -> dict[str, Any]:
    mine = [f["per_problem"] for f in fs]
    strata = [f["det"].get("stratified") or {} for f in fs]
    curves = [f["curve"] for f in fs]
    out: dict[str, Any] = {
        "round": r,
        "arm": arm,
        "settings": sorted({f["setting"] for f in fs}),
        "accuracy": fmean(f["accuracy"] for f in fs),
        "per_seed": [f["accuracy"] for f in fs],
        "minus_baseline": (
            seeds_then_problems(mine, [f["per_problem"] for f in base])
            if base and arm != "baseline" and r
            else None
        ),
        "minus_start": seeds_then_problems(mine, [f["per_problem"] for f in start]) if r else None,
        "auc": mean_all([f["det"].get("roc_auc") for f in fs]),
        "auc_within_problem": mean_all(
            [(s.get("detector") or {}).get("within_problem") for s in strata]
        ),
        "lift_within_problem": mean_all(
            [(s.get("lift") or {}).get("within_problem") for s in strata]
        ),
        "curve": _curve(curves) if all(curves) else None,
        "optimizer_steps": sum(c.get("optimizer_steps", 0) for c in cost),
        "loss_tokens": sum(c.get("loss_tokens", 0) for c in cost),
        "generated": sum(
            (c.get("search_generated_tokens") or 0) + (c.get("generated_tokens") or 0) for c in cost
        ),
    }
    for key in (
        "first_error_precision",
        "chance_first_error_precision",
        "first_error_recall",
        "chance_first_error_recall",
        "repair_rate",
        "backtrack_rate",
    ):
        out[key] = mean_all([f.get(key) for f in fs])
    return out


def _within(strata: list[dict[str, Any]], key: str) -> float | None:
    return mean_all([(s.get(key) or {}).get("within_problem") for s in strata])


def _curve(curves: list[list[dict[str, Any]]]) -> dict[int, tuple[float, float]]:
    """Best-of-N by likelihood at each N of CURVE_N: (accuracy, tokens per problem), seed means."""
    out = {}
    for n in CURVE_N:
        at = [next((row for row in c if row["n"] == n), None) for c in curves]
        if all(at):
            out[n] = (
                fmean(row["best_of_n"]["accuracy"] for row in at if row),
                fmean(row["tokens_per_problem"] for row in at if row),
            )
    return out


def _diff(d: dict[str, Any] | None) -> str:
    if not d:
        return MISSING
    lo, hi = d["ci95"]
    seeds = " · ".join(f"{100 * x:+.1f}" for x in d.get("per_seed", []))
    return f"{100 * d['mean']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f}) [{seeds}]"


def render(result: dict[str, Any], command: str = "") -> str:
    lines = [
        f"Run `{result['run']}`, seeds {result['seeds']}; each arm at its setting chosen on "
        "validation problems; intervals resample seeds, then problems (per-seed differences in "
        "brackets); opt. steps, loss tokens and generated tokens are sums over the seeds.",
        "",
        "| round | arm | accuracy (setting) | per seed | − baseline | − start | first error: "
        "precision (chance) / recall (chance) / repair | backtrack rate | detector AUC pooled / "
        "within problem (lift) | best-of-N N=1 / 4 / 16 (tokens) | opt. steps | loss tokens | "
        "generated (search + train) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(_line(row))
    for b in result["best_of_n"]:
        which = " · ".join(b["picked"]) if b["control"] == "strongest" else f"N≈{b['mean_n']:.1f}"
        lines.append(
            f"| {b['round']} | {b['what']} ({which}) | {pct(b['accuracy'])} | "
            f"{' · '.join(pct(x) for x in b['per_seed'])} | backtrack − it: "
            f"{_diff(b['difference'])} |" + " |" * 8
        )
    if result["wall"]:
        lines += [
            "",
            "Wall time per seed (minutes): " + "; ".join(_wall(w) for w in result["wall"]),
        ]
    return "\n".join(lines) + "\n"


def _wall(w: dict[str, float]) -> str:
    parts = ", ".join(f"{k} {v / 60:.1f}" for k, v in w.items() if k != "total")
    return f"{w['total'] / 60:.1f} ({parts})"


def _line(a: dict[str, Any]) -> str:
    fe = (
        f"{pct(a['first_error_precision'])} ({pct(a['chance_first_error_precision'])}) / "
        f"{pct(a['first_error_recall'])} ({pct(a['chance_first_error_recall'])}) / "
        f"{pct(a['repair_rate'])}"
    )
    lift = a["lift_within_problem"]
    det = (
        f"{num(a['auc'], 3)} / {num(a['auc_within_problem'], 3)} "
        f"({MISSING if lift is None else f'{lift:+.3f}'})"
    )
    curve = a["curve"] or {}
    bon = " / ".join(pct(curve[n][0]) if n in curve else MISSING for n in CURVE_N)
    tok = " / ".join(f"{curve[n][1]:.0f}" if n in curve else MISSING for n in CURVE_N)
    cells = [
        str(a["round"]),
        a["arm"],
        f"{pct(a['accuracy'])} ({' / '.join(a['settings'])})",
        " · ".join(pct(x) for x in a["per_seed"]),
        _diff(a["minus_baseline"]),
        _diff(a["minus_start"]),
        fe,
        pct(a["backtrack_rate"]),
        det,
        f"{bon} ({tok})",
        str(a["optimizer_steps"]) if a["round"] else MISSING,
        f"{a['loss_tokens']:,}" if a["round"] else MISSING,
        f"{a['generated']:,}" if a["round"] else MISSING,
    ]
    return "| " + " | ".join(cells) + " |"
