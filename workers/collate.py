"""Training batches from trace rows: labels from `loss_mask`, stream or erase attention.

Labels are the input ids where `loss_mask` is 1 and -100 elsewhere, so the prompt and erased
tokens carry no loss while backspaces and corrections do. `stream`: a 2D padding mask, plain
causal attention. `erase`: the 4D mask and position ids of `workers.erase.erase_attention`, the
same rule decoding uses. Rows are right-padded; packing is never used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from search.backspace import Unit
from workers.erase import erase_attention


@dataclass
class BacktrackCollator:
    mode: Literal["stream", "erase"]
    unit: Unit
    bksp_id: int
    delim_id: int
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
            batch["loss_weights"] = self.weights(ids, labels)
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
        )
        batch["attention_mask"] = mask4d
        batch["position_ids"] = positions
        return batch
