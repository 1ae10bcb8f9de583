"""An erasing decoder against best-of-N at the same generated tokens, on one model (issue 27,
items 2 and 3): guided search with an erase rule (`eval.bksp_search` with `eval.erase_logprob` or
`eval.erase_at_end`, an ad-hoc `halluc eval` of the run's start model) against that model's own
best-of-N (likelihood and majority selectors) read from the run's start curve, N per problem
the smallest whose tokens reach the erasing decoder's tokens on that problem.

    .venv/bin/python experiments/erase_vs_best_of_n.py --run runs/dead-end/at-detection \
        --eval runs/dead-end/at-detection/evals/NAME.json [--setting T=1.0] [--name LABEL] \
        [--curve CURVE.json] [--control OTHER.json]

The run is a `halluc run ... --set run.rounds=0` (its start model's eval.json, tune.json and
curve.json: the curve samples at the sampling setting chosen on validation problems). Prints one
Markdown row: the erasing decoder's accuracy, tokens per problem and backtrack rate, the same
model with the backspace banned at that setting, best-of-N and majority at its tokens, and the
differences paired over problems (95%; one seed: problems only). `--curve`: another model's curve
(a round's `ARM/round-R/curve.json`, for a model that is not the run's start). `--control`: another
evaluation of the same model and problems (the random eraser at the same rate), paired at the same
setting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pipeline.files import read_json
from pipeline.layout import RunLayout
from pipeline.measure import budget
from pipeline.measure.settings import BANNED
from pipeline.measure.stats import seeds_then_problems


def compare(
    run: Path,
    eval_path: Path,
    setting: str,
    curve_path: Path | None = None,
    control: Path | None = None,
) -> dict[str, Any]:
    settings = read_json(eval_path)["settings"]
    erasing, banned = settings[setting], settings.get(setting + BANNED)
    curve = dict(read_json(curve_path or RunLayout(run).start_curve))
    drawn = budget.samples_of(curve)
    tokens = erasing["tokens_per_problem"]
    matched = budget.matched(drawn, tokens, curve["temperature"])
    mine = erasing["per_problem"]
    out: dict[str, Any] = {
        "setting": setting,
        "accuracy": erasing["accuracy"],
        "tokens_per_problem": sum(tokens) / len(tokens),
        "backtrack_rate": erasing.get("backtrack_rate"),
        "curve_setting": curve["setting"],
        "banned": banned["accuracy"] if banned else None,
    }
    for name in ("best_of_n", "majority"):
        m = matched[name]
        out[name] = {
            "accuracy": m["accuracy"],
            "mean_n": m["mean_n"],
            "minus": seeds_then_problems([mine], [m["per_problem"]]),
        }
    if banned:
        out["minus_banned"] = seeds_then_problems([mine], [banned["per_problem"]])
    if control:
        other = read_json(control)["settings"][setting]
        out["control"] = other["accuracy"]
        out["minus_control"] = seeds_then_problems([mine], [other["per_problem"]])
    return out


def _diff(d: dict[str, Any] | None) -> str:
    if not d:
        return "–"
    lo, hi = d["ci95"]
    return f"{100 * d['mean']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f})"


def row(name: str, got: dict[str, Any]) -> str:
    pct = lambda x: "–" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    bon, maj = got["best_of_n"], got["majority"]
    return (
        f"| {name} | {got['setting']} | {pct(got['accuracy'])} | {got['tokens_per_problem']:.1f} | "
        f"{pct(got['backtrack_rate'])} | {pct(got['banned'])} | {_diff(got.get('minus_banned'))} | "
        f"{pct(bon['accuracy'])} (N≈{bon['mean_n']:.2f}, {got['curve_setting']}) | "
        f"{_diff(bon['minus'])} | {pct(maj['accuracy'])} | {_diff(maj['minus'])} | "
        f"{pct(got.get('control'))} | {_diff(got.get('minus_control'))} |"
    )


HEADER = (
    "| decoder | setting | accuracy | tokens per problem | backtrack rate | backspace banned | "
    "− banned | best-of-N at its tokens (N, setting) | − best-of-N | majority | − majority | "
    "control | − control |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--eval", required=True, type=Path)
    ap.add_argument("--setting", default="T=1.0")
    ap.add_argument("--name", default="")
    ap.add_argument("--curve", type=Path, help="the best-of-N curve (default: the run's start)")
    ap.add_argument("--control", type=Path, help="another evaluation, paired at the setting")
    args = ap.parse_args()
    got = compare(args.run, args.eval, args.setting, args.curve, args.control)
    print(json.dumps(got, indent=1))
    print(HEADER)
    print(row(args.name or str(args.eval), got))


if __name__ == "__main__":
    main()
