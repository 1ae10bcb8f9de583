"""Training batches from trace rows: labels from `loss_mask`, stream or erase attention.

Labels are the input ids where `loss_mask` is 1 and -100 elsewhere, so the prompt and erased
tokens carry no loss while backspaces and corrections do. `stream`: a 2D padding mask, plain
causal attention. `erase`: the 4D mask and position ids of `workers.erase.erase_attention`, the
same rule decoding uses. Rows are right-padded; packing is never used.

With `error_weight` != 1 the batch also carries per-target weights (`LOSS_WEIGHTS`), which only
`loss()` below reads: the model's own loss ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from search.backspace import Delim, Mode, Unit
from workers.erase import erase_attention

LOSS_WEIGHTS = "loss_weights"


def loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
    """The training loss of `batch` (a `BacktrackCollator` batch) and the model's outputs: the
    mean cross-entropy over labelled targets, each weighted by `LOSS_WEIGHTS` when present."""
    inputs = dict(batch)
    weights = inputs.pop(LOSS_WEIGHTS, None)
    if weights is None:
        outputs = model(**inputs)
        return outputs.loss, outputs
    labels = inputs.pop("labels")
    outputs = model(**inputs)
    logits = outputs.logits[:, :-1].float()
    target, w = labels[:, 1:], weights[:, 1:]
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        target.reshape(-1),
        ignore_index=-100,
        reduction="none",
    )
    return (per_token * w.reshape(-1)).sum() / (target != -100).sum().clamp(min=1), outputs


@dataclass
class BacktrackCollator:
    mode: Mode
    unit: Unit
    bksp_id: int
    delim_id: Delim  # the token(s) that end a step
    pad_id: int = 0
    dtype: torch.dtype = torch.float32
    error_weight: float = 1.0  # weight of the two targets predicted with the error in view

    def weights(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-target loss weights: `error_weight` on backspaces and on the first token after a
        backspace run (the two predictions made while the wrong step is visible), 1 elsewhere,
        0 where there is no label."""
        w = (labels != -100).float()
        after_run = torch.zeros_like(ids, dtype=torch.bool)
        after_run[:, 1:] = (ids[:, :-1] == self.bksp_id) & (ids[:, 1:] != self.bksp_id)
        w[((ids == self.bksp_id) | after_run) & (labels != -100)] *= self.error_weight
        return w

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        b = len(features)
        ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        labels = torch.full((b, width), -100, dtype=torch.long)
        mask = torch.zeros((b, width), dtype=torch.long)
        for i, f in enumerate(features):
            seq = torch.tensor(f["input_ids"], dtype=torch.long)
            keep = torch.tensor(f["loss_mask"], dtype=torch.bool)
            ids[i, : len(seq)] = seq
            labels[i, : len(seq)] = torch.where(keep, seq, torch.full_like(seq, -100))
            mask[i, : len(seq)] = 1
        batch = {"input_ids": ids, "labels": labels}
        if self.error_weight != 1.0:
            batch[LOSS_WEIGHTS] = self.weights(ids, labels)
        if self.mode == "stream":
            batch["attention_mask"] = mask
            return batch
        mask4d, positions = erase_attention(
            [f["input_ids"] for f in features],
            [f["prompt_len"] for f in features],
            width,
            self.unit,
            self.bksp_id,
            self.delim_id,
            self.dtype,
            keep_tried=self.mode == "tried",
        )
        batch["attention_mask"] = mask4d
        batch["position_ids"] = positions
        return batch
