"""`halluc table compare-bootstraps`: two bootstraps of the same preset, seed by seed, paired per
held-out problem: each one's `bootstrap/eval.json` (the run stage's figures of its start model) at
every setting; or any two models' figures on the same problems, given as eval.json files.

    halluc table compare-bootstraps \\
        --a runs/countdown-retry/seed-{0,1,2} --b runs/countdown-levers/defaults/seed-{0,1,2}

`--a` and `--b` take one directory per seed, in the same seed order. Prints a Markdown table: per
setting, each side's mean accuracy (and per seed), a − b with its 95% interval over seeds, then
problems (`stats.seeds_then_problems`), and for side a: the setting against the same one with the
backspace banned (what erasing itself adds), its backtrack rate and erased steps wrong against
chance. Where both sides' evaluations carry them, P(backspace)'s ROC-AUC as a detector of the
model's own first wrong steps, pooled and within problem, per seed and a − b over seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.files import read_json
from pipeline.measure.stats import seeds_then_problems as paired
from pipeline.tables.common import TableError, diff, mean_known, pct, run_dir


def arguments(parser: argparse.ArgumentParser) -> None:
    for side, text in (("--a", "side a: one per seed"), ("--b", "side b, same seeds")):
        parser.add_argument(
            side, nargs="+", required=True, type=dir_or_eval, metavar="DIR|EVAL.json", help=text
        )


def dir_or_eval(text: str) -> Path:
    """argparse type of `--a`/`--b`: a run (or seed) directory, or an eval.json itself (any
    model's `halluc eval` figures on the same held-out problems, e.g. a trained round's)."""
    return Path(text) if Path(text).is_file() else run_dir(text)


def figures_of(path: Path) -> Path:
    return path if path.is_file() else path / "bootstrap" / "eval.json"


def load(paths: list[Path]) -> list[dict[str, Any]]:
    """Each directory's start-model figures (`bootstrap/eval.json`), or the eval.json given."""
    missing = [str(d) for d in paths if not figures_of(d).is_file()]
    if missing:
        raise TableError(
            f"no bootstrap/eval.json in {', '.join(missing)}; give run (or seed) directories "
            "whose bootstrap finished, or eval.json files"
        )
    return [read_json(figures_of(d)) for d in paths]


def compute(a: list[Path], b: list[Path]) -> dict[str, Any]:
    """Per setting of side a's first seed that every seed of both sides has: both sides' figures
    and the paired differences (a − b; a − a with the backspace banned when a has that setting)."""
    if len(a) != len(b):
        raise TableError("--a and --b need one directory per seed each, in the same order")
    ea, eb = load(a), load(b)
    counts = {len(next(iter(e["settings"].values()))["per_problem"]) for e in ea + eb}
    if len(counts) > 1:  # pairing by position needs the same problems on every side
        raise TableError(
            f"the evaluations hold {sorted(counts)} problems: compare evaluations of the same "
            "held-out problems (the same preset and eval.n_problems)"
        )
    digests = {e["problems_digest"] for e in ea + eb if "problems_digest" in e}
    if len(digests) > 1:  # the same count of other problems (another preset or split)
        raise TableError(
            "the evaluations hold the same number of different problems (their problems_digest "
            "differ): compare evaluations of the same held-out problems (the same preset)"
        )
    rows = []
    for name in ea[0]["settings"]:
        sa = [e["settings"].get(name) for e in ea]
        sb = [e["settings"].get(name) for e in eb]
        if any(s is None for s in sa + sb):
            continue  # a setting some seed of either side was not evaluated at
        banned = f"{name}, backspace banned"
        own = None
        if banned in ea[0]["settings"]:
            own = paired(_per(sa), [x["settings"][banned]["per_problem"] for x in ea])
        rows.append(
            {
                "setting": name,
                "a": _side(sa),
                "b": _side(sb),
                "minus_b": paired(_per(sa), _per(sb)),
                "minus_banned": own,
                "backtrack_rate": mean_known([s["backtrack_rate"] for s in sa]),
                "erased_wrong": mean_known([s.get("step_erase_precision") for s in sa]),
                "chance": mean_known([s.get("chance_precision") for s in sa]),
            }
        )
    return {"rows": rows, "detector": detector_rows(ea, eb)}


# the backspace's probability as a detector of the model's own first wrong steps (eval.json)
AUCS = {"pooled": "pooled", "within problem": "within_problem"}


def detector_rows(ea: list[dict[str, Any]], eb: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """P(backspace)'s ROC-AUC per seed on each side, pooled and within problem, and a − b with a
    95% interval over seeds (an AUC has no per-problem value); none where a side has no figure."""
    rows = []
    for name, key in AUCS.items():
        got = [[_auc(e, key) for e in side] for side in (ea, eb)]
        if any(x is None for x in got[0] + got[1]):
            continue  # a model without the backspace, or a split with one class only
        va, vb = ([float(x or 0) for x in side] for side in got)
        rows.append({"measure": name, "a": va, "b": vb, "minus_b": paired(
            [[x] for x in va], [[y] for y in vb])})  # fmt: skip
    return rows


def _auc(evaluation: dict[str, Any], key: str) -> float | None:
    strata = (evaluation.get("detector") or {}).get("stratified") or {}
    return (strata.get("detector") or {}).get(key)


def _per(settings: list[dict[str, Any]]) -> list[list[float]]:
    return [s["per_problem"] for s in settings]


def _side(settings: list[dict[str, Any]]) -> dict[str, Any]:
    accuracy = [s["accuracy"] for s in settings]
    return {"accuracy": sum(accuracy) / len(accuracy), "per_seed": accuracy}


def render(result: dict[str, Any], command: str = "") -> str:
    lines = [
        "| setting | a | b | a − b (95% paired) | a: allowed − banned | a: backtrack rate |"
        " a: erased steps wrong (chance) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        a, b = r["a"], r["b"]
        lines.append(
            f"| {r['setting']} | {pct(a['accuracy'])} [{_each(a)}] | "
            f"{pct(b['accuracy'])} [{_each(b)}] | {diff(r['minus_b'])} | "
            f"{diff(r['minus_banned'])} | {pct(r['backtrack_rate'])} | "
            f"{pct(r['erased_wrong'])} ({pct(r['chance'])}) |"
        )
    if result.get("detector"):
        lines += [
            "",
            "| P(backspace) ROC-AUC | a | b | a − b (95% over seeds) |",
            "|---|---|---|---|",
        ]
        for r in result["detector"]:
            a, b = (f"{sum(v) / len(v):.3f} [{' · '.join(f'{x:.3f}' for x in v)}]" for v in (
                r["a"], r["b"]))  # fmt: skip
            d = r["minus_b"]
            lines.append(
                f"| {r['measure']} | {a} | {b} | {d['mean']:+.3f} "
                f"({d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}) |"
            )
    return "\n".join(lines)


def _each(side: dict[str, Any]) -> str:
    return " · ".join(pct(x) for x in side["per_seed"])
