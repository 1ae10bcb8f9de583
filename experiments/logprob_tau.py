"""The likelihood detector's threshold τ, chosen on validation problems (issue 27, items 2 and 4).

    .venv/bin/python experiments/logprob_tau.py --preset countdown-tiny \
        --model runs/v2/countdown-rl1e-4/seed-0/bootstrap/model [--problems 100] [--samples 4] \
        [--out FILE.json] [--set KEY=VALUE ...]

Samples `--samples` solutions per validation problem at T=1.0 with the backspace banned
(`pipeline.measure.detector.sample_points`), labels each step up to the first wrong one by the
exact checker, and prints the ROC-AUC of the step's mean token log-probability (lower: more
suspect) and the τ that maximises the true-positive rate minus the false-positive rate (Youden's
J): a step is flagged where its mean is below τ. That τ is what `eval.erase_logprob` and
`bootstrap.retry_tau` take, chosen without a test problem. Also the share of steps it flags and
the flagged steps' share that are wrong (its precision) beside the base rate.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.measure.detector import roc_auc
from pipeline.measure.likelihood import validation_steps


def youden(scores: Sequence[float], labels: Sequence[int]) -> dict[str, float]:
    """The threshold τ on `scores` (flag a point whose score is below τ) with the largest true-
    positive rate minus false-positive rate, and what it gives; τ is the midpoint between the
    highest flagged score and the next one up (the lowest score plus one where every point is
    flagged). Needs both classes."""
    pos, neg = sum(labels), len(labels) - sum(labels)
    if not pos or not neg:
        raise ValueError("youden: the labels need both classes")
    order = sorted(range(len(scores)), key=scores.__getitem__)
    best = {"j": -1.0}
    tp = fp = 0
    for rank, i in enumerate(order):
        tp, fp = tp + labels[i], fp + (1 - labels[i])
        nxt = scores[order[rank + 1]] if rank + 1 < len(order) else scores[i] + 1.0
        if nxt == scores[i]:
            continue  # a threshold cannot split equal scores
        j = tp / pos - fp / neg
        if j > best["j"]:
            flagged = rank + 1
            best = {
                "j": j,
                "tau": (scores[i] + nxt) / 2,
                "tpr": tp / pos,
                "fpr": fp / neg,
                "flagged_share": flagged / len(scores),
                "precision": tp / flagged,
            }
    return best


def measure(preset: str, model: Path, problems: int, samples: int, sets: list[str]) -> Any:
    means, labels, n = validation_steps(preset, model, problems, samples, sets)
    chosen = youden(means, labels)
    return {
        "model": str(model),
        "preset": preset,
        "sets": sets,
        "validation_problems": n,
        "samples_per_problem": samples,
        "steps": len(labels),
        "wrong_steps": sum(labels),
        "base_rate": sum(labels) / len(labels),
        "auc": 1 - (roc_auc(means, labels) or 0.5),  # lower mean: more suspect
        **chosen,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", required=True)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    got = measure(args.preset, args.model, args.problems, args.samples, args.sets)
    text = json.dumps(got, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
