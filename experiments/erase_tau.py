"""The likelihood erase's threshold τ chosen by the decoder's own accuracy on validation problems,
and the random eraser's rate that matches it (issue 27, item 2).

    .venv/bin/python experiments/erase_tau.py --preset countdown-tiny \
        --model runs/dead-end/at-error/bootstrap/model [--problems 100] [--m 4] \
        [--shares 0.02,0.05,0.1,0.2,0.4] [--out FILE.json] [--set KEY=VALUE ...]

`experiments/logprob_tau.py` chose τ by Youden's J, which separates wrong steps from right ones
best, and on Countdown that τ flagged most steps and lost 15 points (RESULTS §3.5). Here τ is
chosen for what it is for. On `--problems` validation problems: the model's own T=1.0 samples with
the backspace banned give each step's mean token log-probability (`sample_points`, as
logprob_tau); each τ in the candidates flags a share of those steps (`--shares`: the τ at each of
these quantiles). For each candidate, guided search (`eval.bksp_search` = `--m`, erase where the
step's log-probability is below τ, tabu redraw) is evaluated on the same validation problems,
greedy and at T=1.0, beside plain sampling (the model's own backspace where it has one; τ null in
the output); the (τ, setting) with the highest validation accuracy is chosen, ties to the smaller
share, so a null τ chosen says that no threshold beat plain sampling on validation. Prints the
figures and the chosen τ with its flagged share, which is the rate `eval.bksp_random` takes for
the random eraser at the same rate, and (`best_erasing`) the best of the thresholds alone, the one
to measure on test problems when none beat plain sampling. No test problem is read.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from pipeline.config import load_config
from pipeline.loading import task_from_config
from pipeline.measure.evaluation import evaluate_model
from pipeline.measure.likelihood import validation_steps


def quantile_taus(means: list[float], shares: list[float]) -> list[tuple[float, float]]:
    """(τ, share of `means` below τ) for each share: τ midway between the k-th and (k+1)-th
    lowest mean, k = round(share × n), so that exactly k points are flagged (distinct means)."""
    xs = sorted(means)
    out = []
    for s in shares:
        k = min(len(xs) - 1, max(1, round(s * len(xs))))
        tau = (xs[k - 1] + xs[k]) / 2
        out.append((tau, sum(x < tau for x in xs) / len(xs)))
    return out


def validation_accuracy(
    preset: str, model: Path, sets: list[str], problems: int, extra: list[str]
) -> dict[str, float]:
    """Greedy and T=1.0 validation accuracy of guided search with `extra` settings."""
    cfg = load_config(preset, [*sets, "eval.temperatures=[1.0]", "eval.banned=false", *extra])
    task = task_from_config(cfg.task)
    tune = task.problems("validation", problems)
    got = evaluate_model(model, task, tune, cfg, banned=False, detector=False)
    return {name: s["accuracy"] for name, s in got["settings"].items()}


def measure(
    preset: str,
    model: Path,
    problems: int,
    samples: int,
    m: int,
    shares: list[float],
    sets: list[str],
) -> dict[str, Any]:
    means, _, n = validation_steps(preset, model, problems, samples, sets)
    guided = [f"eval.bksp_search={m}"]
    plain = validation_accuracy(preset, model, sets, problems, [])  # its own backspace, if any
    rows: list[dict[str, Any]] = [{"tau": None, "flagged_share": 0.0, **plain}]
    for tau, share in quantile_taus(means, shares):
        rule = [*guided, f"eval.erase_logprob={tau:.4f}"]
        acc = validation_accuracy(preset, model, sets, problems, rule)
        rows.append({"tau": round(tau, 4), "flagged_share": share, **acc})
    return {
        "model": str(model),
        "preset": preset,
        "sets": sets,
        "validation_problems": n,
        "steps": len(means),
        "m": m,
        "rows": rows,
        "chosen": best(rows),
        "best_erasing": best(rows[1:]),
    }


def best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The (τ, setting) of `rows` with the highest validation accuracy, ties to the fewer flags."""
    settings = [k for k in rows[0] if k not in ("tau", "flagged_share")]
    row, setting = max(
        ((r, s) for r in rows for s in settings),
        key=lambda rs: (rs[0][rs[1]], -rs[0]["flagged_share"]),
    )
    return {
        "tau": row["tau"],
        "setting": setting,
        "validation_accuracy": row[setting],
        "flagged_share": row["flagged_share"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", required=True)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--m", type=int, default=4)
    ap.add_argument("--shares", default="0.02,0.05,0.1,0.2,0.4")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    shares = [float(x) for x in args.shares.split(",")]
    if not all(0 < s < 1 for s in shares) or args.m < 1:
        ap.error("--shares are in (0, 1) and --m is at least 1")
    got = measure(args.preset, args.model, args.problems, args.samples, args.m, shares, args.sets)
    text = json.dumps(got, indent=1, default=lambda x: None if math.isnan(x) else x)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
