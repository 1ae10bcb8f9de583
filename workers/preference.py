"""Preference training (DPO) on the project's collator: erase attention and the loss mask hold.

A batch of B pairs is one `BacktrackCollator` batch of 2B rows, the B chosen sequences then the B
rejected ones (search/pairs.py builds them), so both sides get the same labels (-100 outside the
loss mask) and, in erase mode, the same 4D mask and position ids as SFT and decoding.

    sequence_logps(model, batch)    per row: the sum of log p(token) over labelled targets
    dpo_loss(pc, pr, rc, rr, beta)  per pair: -log σ(β((pc - rc) - (pr - rr)))   (TRL's sigmoid)
    preference_loss(model, batch)   mean DPO loss over the pairs + sft_weight × the SFT loss on
                                    the chosen rows (mean over their labelled targets, the
                                    collator's `LOSS_WEIGHTS` applied when present)

With the weights at 1 the sum is TRL 1.16's DPOTrainer loss with loss_type=["sigmoid", "sft"]
and loss_weights=[1, sft_weight] on the same log-probabilities
(tests/pipeline/trainers/test_dpo.py checks it). The reference log-probabilities come in the
batch (`REF_CHOSEN`, `REF_REJECTED`): the reference model is frozen, so they are computed once
before training (`reference_logps`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from workers.collate import LOSS_WEIGHTS, BacktrackCollator

REF_CHOSEN = "ref_chosen_logps"
REF_REJECTED = "ref_rejected_logps"
MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


@dataclass
class PairCollator:
    """Features: `chosen_ids`, `chosen_mask`, `rejected_ids`, `rejected_mask`, `prompt_len` and,
    once computed, `ref_chosen`, `ref_rejected`. Returns `inner`'s batch of the chosen rows then
    the rejected rows, with the reference log-probabilities `[B]` when the features have them."""

    inner: BacktrackCollator

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [
            {
                "input_ids": f[f"{side}_ids"],
                "loss_mask": f[f"{side}_mask"],
                "prompt_len": f["prompt_len"],
            }
            for side in ("chosen", "rejected")
            for f in features
        ]
        batch = self.inner(rows)
        if "ref_chosen" in features[0]:
            batch[REF_CHOSEN] = torch.tensor([f["ref_chosen"] for f in features])
            batch[REF_REJECTED] = torch.tensor([f["ref_rejected"] for f in features])
        return batch


def sequence_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the summed log-probability of its labelled targets `[N]`, and the per-target
    log-probabilities `[N, L-1]` (0 where the label is -100: prompt, erased and padded tokens)."""
    logits = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}).logits[:, :-1].float()
    target = batch["labels"][:, 1:]
    per_token = -F.cross_entropy(
        logits.transpose(1, 2), target, ignore_index=-100, reduction="none"
    )
    return per_token.sum(dim=1), per_token


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """The DPO loss of each pair `[B]` from sequence log-probabilities `[B]`."""
    return -F.logsigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected)))


def preference_loss(
    model: Any, batch: dict[str, torch.Tensor], beta: float, sft_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training loss of a `PairCollator` batch (module docstring) and each pair's reward
    margin β((pc - rc) - (pr - rr)) `[B]`, detached."""
    logps, per_token = sequence_logps(model, batch)
    b = logps.shape[0] // 2
    chosen, rejected = logps[:b], logps[b:]
    ref_c, ref_r = batch[REF_CHOSEN].to(logps), batch[REF_REJECTED].to(logps)
    loss = dpo_loss(chosen, rejected, ref_c, ref_r, beta).mean()
    if sft_weight:
        labelled = batch["labels"][:b, 1:] != -100
        weights = batch[LOSS_WEIGHTS][:b, 1:] if LOSS_WEIGHTS in batch else labelled.float()
        sft = -(per_token[:b] * weights).sum() / labelled.sum().clamp(min=1)
        loss = loss + sft_weight * sft
    margins = beta * ((chosen - ref_c) - (rejected - ref_r))
    return loss, margins.detach()


@torch.no_grad()
def reference_logps(
    model: Any, rows: Any, collate: PairCollator, batch_size: int
) -> tuple[list[float], list[float]]:
    """The chosen and rejected sequence log-probabilities of every pair of `rows` (features as
    `PairCollator` takes them), in order, with `model` in eval mode (it is left in eval mode)."""
    model.eval()
    device = next(model.parameters()).device
    chosen: list[float] = []
    rejected: list[float] = []
    for start in range(0, len(rows), batch_size):
        batch = collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
        logps, _ = sequence_logps(model, {k: v.to(device) for k, v in batch.items()})
        b = logps.shape[0] // 2
        chosen += logps[:b].tolist()
        rejected += logps[b:].tolist()
    return chosen, rejected
