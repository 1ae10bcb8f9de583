"""The likelihood detector's scores on validation problems: every labelled step of a model's own
samples with the mean log-probability of its tokens (issue 27: lower is more suspect). What
`experiments/logprob_tau.py` and `experiments/erase_tau.py` choose the erase threshold τ from,
without a test problem."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import load_config
from pipeline.loading import load_model, task_from_config
from pipeline.measure.detector import sample_points


def validation_steps(
    preset: str, model: Path, problems: int, samples: int, sets: list[str]
) -> tuple[list[float], list[int], int]:
    """Every labelled step of the model's own T=1.0 samples (backspace banned; `samples` per
    problem) on `problems` validation problems: its mean token log-probability, its label by the
    exact checker (1: wrong; steps up to the first wrong one), and how many problems there were."""
    cfg = load_config(preset, sets)
    task = task_from_config(cfg.task)
    loaded = load_model(cfg, "transformers", model, task)
    tune = task.problems("validation", problems)
    points = sample_points(
        loaded, task, tune, cfg.run.seed, samples, cfg.sampling.stream_length,
        max_batch=cfg.sampling.max_batch,
    )  # fmt: skip
    means = [m for p in points for m, _ in p.logprobs]
    return means, [y for p in points for y in p.labels], len(tune)
