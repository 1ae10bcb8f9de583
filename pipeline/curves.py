"""Training curves as TensorBoard event files, one `tb/` directory per training stage
(`layout.curves`): `tensorboard --logdir runs/NAME` shows the bootstrap, every arm's rounds and the
value model side by side, each named by its path (`backtrack/round-1/train/tb`).

Tags, by optimizer step taken (1 after the first update):

    train/loss  train/learning_rate  train/grad_norm     every training stage
    train/reward  train/kl  train/backtrack_rate ...     rl: the figures of its compute.json history

The names are those of the Trainer's own TensorBoard callback (sft and dpo log through it, with
`train/dpo_margin` for dpo), so the hand-written loops (bootstrap, rl, value) line up with them.
Writing a curve reads figures the loop has already computed and draws no random numbers: the
weights and compute.json are the same with and without it (tests/pipeline/stages/test_train.py,
tests/pipeline/trainers/test_rl.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from pipeline.layout import curves

LOSS, LR, GRAD_NORM = "train/loss", "train/learning_rate", "train/grad_norm"


def summary_writer(stage_dir: Path, first_step: int) -> Any:
    """A `SummaryWriter` on `stage_dir`'s `tb/`. Events an earlier (killed) attempt wrote from
    step `first_step` on are hidden (TensorBoard's purge step): a resumed run's curve shows each
    step once, from the run that kept it."""
    from torch.utils.tensorboard import SummaryWriter  # here: the config's imports stay light

    return SummaryWriter(str(curves(stage_dir)), purge_step=first_step)


class Curves:
    """Scalars by step into `stage_dir`'s `tb/`; with `stage_dir` None it takes every call and
    writes nothing (a Ray Train worker other than the first, or curves turned off)."""

    def __init__(self, stage_dir: Path | None, first_step: int = 1) -> None:
        self.writer = None if stage_dir is None else summary_writer(stage_dir, first_step)

    def add(self, step: int, scalars: Mapping[str, float]) -> None:
        if self.writer is not None:
            for tag, value in scalars.items():
                self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> Curves:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def grad_norm(params: Iterable[Any]) -> float:
    """The 2-norm of the gradients of `params` taken together (what `clip_grad_norm_` returns),
    read without touching them: for loops that do not clip."""
    import torch

    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norms = torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
    return torch.linalg.vector_norm(norms).item()
