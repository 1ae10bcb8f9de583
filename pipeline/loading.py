"""What a config names, built: its task, and a checkpoint loaded for sampling (for the search
and the evaluation alike, through `workers.policy`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.config import Config, TaskConfig
from search.tasks import make_task
from search.types import Task
from workers.policy import Kind, Loaded, load


def task_from_config(t: TaskConfig) -> Task:
    """The task `t.name`, built with its own section (`task.arithmetic`, `task.countdown`, ...)."""
    options = dataclasses.asdict(getattr(t, t.name))
    if t.name != "jsonl":
        options["seed"] = t.seed
    return make_task(t.name, **options)


def load_model(cfg: Config, kind: Kind, path: Path, task: Task) -> Loaded:
    """The checkpoint at `path` for sampling with a `kind` policy, as the config says."""
    m = cfg.model
    return load(
        kind,
        path,
        task.step_delimiter,
        cfg.trace.bksp_token,
        cfg.trace.unit,
        device=m.device,
        dtype=m.dtype,
        trust_remote_code=m.trust_remote_code,
        gpu_memory=cfg.search.gpu_memory,
        seed=cfg.run.seed,
    )
