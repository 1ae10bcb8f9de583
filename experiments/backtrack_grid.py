"""Fine-tune the arith-tiny bootstrap model on its own search traces in both attention modes and
both backspace units, and evaluate each beside the bootstrap model (issue 4's evidence).

    .venv/bin/python experiments/backtrack_grid.py [--root runs/grid] [--out grid.md]

Uses the arith-tiny preset throughout: bootstrap once, search once per unit (the unit decides how
traces are serialized), train four models (stream/erase x token/step), evaluate five.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from pipeline.config import load_config
from pipeline.layout import RunLayout
from pipeline.loading import task_from_config
from pipeline.measure import evaluation
from pipeline.stages import bootstrap, train
from pipeline.stages import search as search_stage


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="runs/grid")
    ap.add_argument("--out", default="grid.md")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    root = Path(args.root)
    base = [*args.overrides]
    boot_cfg = load_config("arith-tiny", [f"run.out_dir={root / 'token'}", *base])
    bootstrap.main(boot_cfg)
    first = RunLayout(root / "token")  # the other unit starts from its bootstrap
    tables = [evaluation.format_table(json.loads(first.bootstrap_eval.read_text()))]
    results = {"bootstrap": json.loads(first.bootstrap_eval.read_text())}
    for unit in ("token", "step"):
        run = root / unit
        if unit != "token" and not RunLayout(run).bootstrap.exists():
            shutil.copytree(first.bootstrap, RunLayout(run).bootstrap)
        sets = [f"run.out_dir={run}", f"trace.unit={unit}", *base]
        search_stage.main(load_config("arith-tiny", sets))
        for mode in ("stream", "erase"):
            cfg = load_config("arith-tiny", [*sets, f"train.mode={mode}"])
            shutil.rmtree(RunLayout(run).round(0).train, ignore_errors=True)
            path = train.main(cfg)
            final = run / f"model-{mode}"
            shutil.rmtree(final, ignore_errors=True)
            shutil.move(str(path), final)
            task = task_from_config(cfg.task)
            res = evaluation.evaluate_model(
                final, task, task.problems("test", cfg.eval.n_problems), cfg
            )
            results[f"{mode}/{unit}"] = res
            tables.append(evaluation.format_table(res))
    Path(args.out).write_text("\n\n".join(tables) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=2))
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
