"""Does a round learn its problems or the task? Greedy accuracy of checkpoints on problems of the
training targets that nothing trained on, beside validation problems (held-out targets).

    R=runs/ladder-lr/countdown-tiny/0.6m/lr-0.001/seed-0
    PYTHONPATH=. .venv/bin/python experiments/unseen_problems.py --preset countdown-tiny \\
        --set bootstrap.size=0.6m --set bootstrap.lr=0.001 \\
        --model start=$R/bootstrap/model --model round1=$R/baseline/round-0/train/model

The unseen training problems are numbers `--skip` .. `--skip` + `--n` − 1 of the training split in
the task's seeded order: the bootstrap trains on the first `bootstrap.n_problems` (20,000 in the
Countdown presets) and the loop searches the first `task.n_train`, so with `--skip` at least the
former none of them was trained on. Never a test problem. Prints one JSON line per model;
`--sampled` adds the accuracy at T=1.0 (one sample a problem) beside the greedy one, the figure
a choice between checkpoints (e.g. bootstrap steps) is made on when the loop samples.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import load_config
from pipeline.loading import task_from_config
from pipeline.measure.evaluation import evaluate_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="countdown-tiny")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT_DIR")
    ap.add_argument("--skip", type=int, default=20_000)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--sampled", action="store_true", help="T=1.0 accuracy too")
    args = ap.parse_args()
    temperatures = "[1.0]" if args.sampled else "[]"
    cfg = load_config(
        args.preset, [*args.sets, f"eval.temperatures={temperatures}", "eval.samples=1"]
    )
    if args.skip < cfg.bootstrap.n_problems:
        raise SystemExit(
            f"--skip {args.skip}: the bootstrap trained on the first "
            f"{cfg.bootstrap.n_problems} training problems; skip at least those"
        )
    task = task_from_config(cfg.task)
    splits = {
        "unseen training problems": task.problems("train", args.skip + args.n)[args.skip :],
        "validation": task.problems("validation", args.n),
    }
    for item in args.model:
        name, _, path = item.partition("=")
        row: dict[str, object] = {"model": name, "path": path}
        for split, problems in splits.items():
            figures = evaluate_model(Path(path), task, problems, cfg, banned=False, detector=False)
            row[split] = figures["settings"]["greedy"]["accuracy"]
            if args.sampled:
                row[f"{split} T=1.0"] = figures["settings"]["T=1.0"]["accuracy"]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
