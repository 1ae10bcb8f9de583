"""An erasing decoder against best-of-N at the same generated tokens, on one model (issue 27,
items 2 and 3): guided search with an erase rule (`eval.bksp_search` with `eval.erase_logprob` or
`eval.erase_at_end`, an ad-hoc `halluc eval` of the run's start model) against that model's own
best-of-N (likelihood and majority selectors) read from the run's start curve, N per problem
the smallest whose tokens reach the erasing decoder's tokens on that problem; and whether any of
those N samples is right (what a checker picks, where the task's answers can be checked, as
Countdown's can without the reference answer).

    .venv/bin/python experiments/erase_vs_best_of_n.py --run runs/dead-end/at-detection \
        --eval runs/dead-end/at-detection/evals/NAME.json [--setting T=1.0] [--name LABEL] \
        [--curve CURVE.json] [--control OTHER.json]

The run is a `halluc run ... --set run.rounds=0` (its start model's eval.json, tune.json and
curve.json: the curve samples at the sampling setting chosen on validation problems). Prints one
Markdown row: the erasing decoder's accuracy, tokens per problem and backtrack rate, the same
model with the backspace banned at that setting, best-of-N and majority at its tokens, and the
differences paired over problems (95%; one seed: problems only). `--setting chosen` reads each
seed at the setting chosen on its validation problems (the `tune.json` beside its eval.json).
Several seeds: `--run`, `--eval` (and `--curve`, `--control`) take one path per seed, in the same
order; the figures are means over the seeds (each seed's accuracy in brackets) and the intervals
resample seeds, then problems.
`--curve`: other models' curves (a round's `ARM/round-R/curve.json`, for a model that is not the
run's start). `--control`: other evaluations of the same models and problems (the random eraser at
the same rate), paired at the same setting. A round the keep-best gate rejected is refused: its
model is not the one the arm kept.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pipeline.files import read_json
from pipeline.layout import RoundLayout, RunLayout
from pipeline.measure import budget
from pipeline.measure.settings import BANNED
from pipeline.measure.stats import seeds_then_problems
from pipeline.measure.verdict import choose

CHOSEN = "chosen"  # --setting: each seed at the setting chosen on its validation problems


def sides(
    run: Path,
    eval_path: Path,
    setting: str,
    curve_path: Path | None = None,
    control: Path | None = None,
) -> dict[str, Any]:
    """One seed: the erasing decoder's per-problem results at `setting` and those of what it is
    set against (the banned twin, best-of-N and majority at its tokens, the control), with their
    accuracies, tokens and N."""
    if RoundLayout(eval_path.parent).rejected:
        raise SystemExit(
            f"{eval_path}: the keep-best gate (train.keep_best) rejected this round's model; the "
            "arm went on with the model it held before (its eval.json is the one the tables read: "
            "the latest earlier round it kept, else bootstrap/eval.json)"
        )
    settings = read_json(eval_path)["settings"]
    erasing, banned = settings[setting], settings.get(setting + BANNED)
    curve = dict(read_json(curve_path or RunLayout(run).start_curve))
    tokens = erasing["tokens_per_problem"]
    matched = budget.matched(budget.samples_of(curve), tokens, curve["temperature"], oracle=True)
    out: dict[str, Any] = {
        "mine": erasing,
        "tokens_per_problem": sum(tokens) / len(tokens),
        "curve_setting": curve["setting"],
        "best_of_n": matched["best_of_n"],
        "majority": matched["majority"],
        "checked": matched["oracle"],
        "banned": banned,
    }
    if control:
        out["control"] = read_json(control)["settings"][setting]
    return out


def setting_of(eval_path: Path, setting: str) -> str:
    """`setting`, or with `chosen` the setting chosen on validation problems for the model of
    `eval_path` (its tune.json beside it, as the tables read each seed)."""
    if setting != CHOSEN:
        return setting
    tune = eval_path.parent / "tune.json"
    if not tune.is_file():
        raise SystemExit(f"{eval_path}: --setting {CHOSEN} needs tune.json beside it (none)")
    return choose(read_json(tune))


def compare(seeds: list[dict[str, Any]], setting: str) -> dict[str, Any]:
    """Over the seeds (`sides` of each): mean figures and the paired differences, resampling
    seeds then problems (problems only with one seed)."""
    mine = [s["mine"]["per_problem"] for s in seeds]

    def minus(key: str) -> dict[str, Any] | None:
        if any(not s.get(key) for s in seeds):
            return None
        return seeds_then_problems(mine, [s[key]["per_problem"] for s in seeds])

    def mean(key: str, field: str = "accuracy") -> float | None:
        values = [(s.get(key) or {}).get(field) for s in seeds]
        return None if None in values else sum(values) / len(values)

    out: dict[str, Any] = {
        "setting": setting,
        "seeds": len(seeds),
        "accuracy": mean("mine"),
        "per_seed": [s["mine"]["accuracy"] for s in seeds],
        "tokens_per_problem": sum(s["tokens_per_problem"] for s in seeds) / len(seeds),
        "backtrack_rate": mean("mine", "backtrack_rate"),
        "curve_setting": "/".join(sorted({s["curve_setting"] for s in seeds})),
        "banned": mean("banned"),
        "minus_banned": minus("banned"),
        "control": mean("control"),
        "minus_control": minus("control"),
    }
    for name in ("best_of_n", "majority", "checked"):
        out[name] = {"accuracy": mean(name), "mean_n": mean(name, "mean_n"), "minus": minus(name)}
    return out


def _diff(d: dict[str, Any] | None) -> str:
    if not d:
        return "–"
    lo, hi = d["ci95"]
    return f"{100 * d['mean']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f})"


def row(name: str, got: dict[str, Any]) -> str:
    pct = lambda x: "–" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    bon, maj, chk = got["best_of_n"], got["majority"], got["checked"]
    return (
        f"| {name} | {got['setting']} | {pct(got['accuracy'])} "
        f"[{' · '.join(f'{100 * x:.1f}' for x in got['per_seed'])}] | "
        f"{got['tokens_per_problem']:.1f} | "
        f"{pct(got['backtrack_rate'])} | {pct(got['banned'])} | {_diff(got.get('minus_banned'))} | "
        f"{pct(bon['accuracy'])} (N≈{bon['mean_n']:.2f}, {got['curve_setting']}) | "
        f"{_diff(bon['minus'])} | {pct(maj['accuracy'])} | {_diff(maj['minus'])} | "
        f"{pct(chk['accuracy'])} | {_diff(chk['minus'])} | "
        f"{pct(got.get('control'))} | {_diff(got.get('minus_control'))} |"
    )


HEADER = (
    "| decoder | setting | accuracy | tokens per problem | backtrack rate | backspace banned | "
    "− banned | best-of-N at its tokens (N, setting) | − best-of-N | majority | − majority | "
    "any right (a checker) | − any right | control | − control |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, type=Path, nargs="+", help="one per seed")
    ap.add_argument("--eval", required=True, type=Path, nargs="+", help="one per seed")
    ap.add_argument("--setting", default="T=1.0", help=f"a setting, or {CHOSEN!r}: validation's")
    ap.add_argument("--name", default="")
    ap.add_argument(
        "--curve", type=Path, nargs="+", help="the best-of-N curves (default: the runs' start)"
    )
    ap.add_argument(
        "--control", type=Path, nargs="+", help="other evaluations, paired at the setting"
    )
    args = ap.parse_args()
    n = len(args.run)
    if any(len(x) != n for x in (args.eval, args.curve or args.run, args.control or args.run)):
        ap.error("--run, --eval and (when given) --curve and --control take one path per seed each")
    curves, controls = args.curve or [None] * n, args.control or [None] * n
    settings = [setting_of(e, args.setting) for e in args.eval]
    got = compare(
        [
            sides(r, e, settings[i], curves[i], controls[i])
            for i, (r, e) in enumerate(zip(args.run, args.eval, strict=True))
        ],
        " / ".join(dict.fromkeys(settings)),
    )
    print(json.dumps(got, indent=1))
    print(HEADER)
    print(row(args.name or str(args.eval[0]), got))


if __name__ == "__main__":
    main()
