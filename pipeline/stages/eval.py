"""The eval stage: a model's figures on held-out problems (see `pipeline.measure.evaluation`).

    halluc eval --preset arith-tiny                     # round run.round's trained model
    halluc eval --preset arith-tiny --set eval.model=runs/x/model --set eval.samples=4
    halluc eval --preset countdown-gpu --set eval.policy=vllm --set eval.model=/mnt/models/m

Without `eval.model` it evaluates the model of round `run.round` (outside the arms), or the start
model when that round has no trained model, and caches the figures where the stage keeps them
(`round-R/eval.json`, `bootstrap/eval.json`). With `eval.model` the evaluation is ad hoc: its
figures go to `run.out_dir/evals/`, never over a stage's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.layout import RunLayout
from pipeline.loading import task_from_config
from pipeline.measure.evaluation import evaluate_to, format_table
from pipeline.runtime import record_environment, set_threads


def main(cfg: Config) -> dict[str, Any]:
    layout = RunLayout.of(cfg)
    set_threads(cfg)
    record_environment(cfg, layout.environment)
    task = task_from_config(cfg.task)
    problems = task.problems("test", cfg.eval.n_problems)
    model, out = target(cfg, layout)
    return evaluate_to(out, model, task, problems, cfg)


def target(cfg: Config, layout: RunLayout) -> tuple[Path, Path]:
    """The model to evaluate and where its figures go."""
    if cfg.eval.model:
        return Path(cfg.eval.model), layout.adhoc_eval(cfg.eval.model, cfg.hash)
    trained = layout.round(cfg.run.round)
    if trained.model.exists():
        return trained.model, trained.eval
    return layout.start_model, layout.start_eval


def describe(result: dict[str, Any]) -> str:
    return format_table(result)
