"""What the train stage hands a trainer, and what it hands back: one shape for every objective.

A trainer is a module of pipeline/trainers/ (sft, dpo, rl) that stages/train.py picks by
`train.objective`, in this process or on each of `train.workers` Ray Train workers:

    trainer.check(job)                          fail on missing or damaged inputs, cheaply (before
                                                Ray Train starts its workers)
    trainer.load(job, tok, collate)             the rows it trains on (a `datasets.Dataset`)
    trainer.fit(model, tok, collate, rows, job) train `model` in place (resuming from what an
                                                earlier, killed run left); returns its `Compute`
    trainer.SCRATCH                             what it keeps in train/ for a resumed run; the
                                                stage removes it once the model is saved

The stage prepares the model (backspace token, dropout, attention check) and the collator before,
and writes compute.json and the model after, on the first process only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from datasets import Dataset

from pipeline.config import Config
from pipeline.layout import RoundLayout
from workers.collate import BacktrackCollator


@dataclass(frozen=True)
class Job:
    """One training of one round. `base`: the checkpoint it starts from; `rnd`: the round whose
    selection (or search) it reads and whose `train/` it writes; `backspace` False trains without
    the backspace token (a clean-only arm); `max_steps` > 0 fixes the optimizer steps (equal
    compute between arms), else `train.epochs` decides; `ray`: one of Ray Train's workers;
    `earlier`: rounds whose selections come first (`train.accumulate`). It pickles: Ray Train
    hands it to every worker."""

    cfg: Config
    base: Path
    rnd: RoundLayout
    backspace: bool = True
    max_steps: int = -1
    ray: bool = False
    earlier: tuple[RoundLayout, ...] = ()  # rounds whose selections are added (train.accumulate)

    @property
    def out(self) -> Path:
        """The round's `train/` directory: checkpoints, curves, compute.json, the model."""
        return self.rnd.train


@dataclass(frozen=True)
class Compute:
    """What one training cost. `optimizer_steps`; `loss_tokens`: the loss-bearing tokens it
    counts (sft and dpo: of its rows, once; rl: of every stream of every step); `generated_tokens`:
    tokens it sampled itself (rl), None for an objective that samples nothing; `wall_s`: seconds
    `fit` took (of this attempt: a resumed run counts its own); `details`: the objective's other
    figures (rows, batch size, pairs by kind, the rl history...)."""

    objective: str
    optimizer_steps: int
    loss_tokens: int
    wall_s: float
    generated_tokens: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """compute.json: every figure but `wall_s`, which differs between two runs of one config
        (and would make a resumed run's file differ from an unkilled one's)."""
        head: dict[str, Any] = {
            "objective": self.objective,
            "optimizer_steps": self.optimizer_steps,
            "loss_tokens": self.loss_tokens,
        }
        if self.generated_tokens is not None:
            head["generated_tokens"] = self.generated_tokens
        return head | dict(self.details)


class Trainer(Protocol):
    """The shape of a trainer module (see the module docstring)."""

    @property
    def SCRATCH(self) -> tuple[str, ...]: ...  # a module's constant: read-only

    def check(self, job: Job) -> None: ...

    def load(self, job: Job, tok: Any, collate: BacktrackCollator) -> Dataset: ...

    def fit(
        self, model: Any, tok: Any, collate: BacktrackCollator, rows: Dataset, job: Job
    ) -> Compute: ...


def world() -> tuple[int, int]:
    """This process's rank and the number of training processes (Ray Train's process group)."""
    import torch

    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
