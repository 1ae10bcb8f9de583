"""The value model at work: a `halluc value` checkpoint behind the search's `Valuer` protocol.

    valuer = load_valuer("runs/arith-tiny/value/model", device="cpu")
    valuer.values([prompt_ids + step_ids, ...])        # one value in [0, 1] per prefix

The checkpoint is an `AutoModelForTokenClassification` with one label (stages/value.py trains
it); the value of a token-id sequence is the sigmoid of the logit at its last token, the estimated
probability that a rollout from there ends correct. `score` is the one batched reading of it
(right padding, each row read at its own last token), for training, the search, evaluation and
decoding alike. It runs on transformers, on the CPU or beside a vLLM policy on the GPU (it is
not a vLLM pooling model).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search.errors import HallucError
from workers.hf import check_checkpoint_dir, load_tokenizer, pick_device
from workers.policy import context_limit


class ValuerError(HallucError, ValueError):
    """A value model that cannot score the prefixes it is given."""


def batch(sequences: list[list[int]], pad_id: int, device: Any) -> tuple[Any, Any, Any]:
    """Right-padded `input_ids`, `attention_mask` [B, L] and each row's last index [B]."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    last = torch.tensor([len(s) - 1 for s in sequences])
    return ids.to(device), mask.to(device), last.to(device)


def logits(model: Any, sequences: list[list[int]]) -> torch.Tensor:
    """The value logit at each sequence's last token, [B] (float32)."""
    device = next(model.parameters()).device
    pad = model.config.pad_token_id
    ids, mask, last = batch(sequences, 0 if pad is None else pad, device)
    out = model(input_ids=ids, attention_mask=mask).logits[..., 0]  # [B, L]
    return out[torch.arange(len(sequences), device=device), last].float()


@torch.no_grad()
def score(model: Any, sequences: list[list[int]], batch_size: int = 32) -> np.ndarray:
    """The value (sigmoid of the logit at the last token) of each token-id sequence, [N]."""
    model.eval()
    parts = [
        torch.sigmoid(logits(model, sequences[i : i + batch_size])).cpu()
        for i in range(0, len(sequences), batch_size)
    ]
    return torch.cat(parts).numpy() if parts else np.zeros(0, dtype=np.float32)


class ModelValuer:
    """`values(prefixes)` from a loaded value model, `batch_size` prefixes per forward pass,
    similar lengths batched together; `calls` counts the calls and `scored` the prefixes."""

    def __init__(self, model: Any, batch_size: int = 64, name: str = "") -> None:
        self.model, self.batch_size, self.name = model.eval(), batch_size, name
        self.vocab = model.get_input_embeddings().weight.shape[0]
        self.limit = context_limit(model.config)
        self.calls = self.scored = 0

    def values(self, prefixes: Sequence[Sequence[int]]) -> list[float]:
        self.calls += 1
        self.scored += len(prefixes)
        if not prefixes:
            return []
        self._check(prefixes)
        order = sorted(range(len(prefixes)), key=lambda i: len(prefixes[i]))
        got = score(self.model, [list(prefixes[i]) for i in order], self.batch_size)
        out = [0.0] * len(prefixes)
        for i, v in zip(order, got.tolist(), strict=True):
            out[i] = float(v)
        return out

    def _check(self, prefixes: Sequence[Sequence[int]]) -> None:
        top = max((max(p) for p in prefixes if p), default=-1)
        longest = max(len(p) for p in prefixes)
        if not all(prefixes) or top >= self.vocab or (self.limit and longest > self.limit):
            raise ValuerError(
                f"value model {self.name}: asked to score a prefix it cannot read (ids up to "
                f"{top} against {self.vocab} token rows, {longest} tokens against "
                f"{self.limit} positions, or an empty one); train it (`halluc value`) on "
                "searches of this model and task"
            )


def load_valuer(
    path: str | Path,
    device: str = "auto",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    batch_size: int = 64,
) -> ModelValuer:
    """The value model in the checkpoint directory `path` (`halluc value`'s `model/`)."""
    from transformers import AutoModelForTokenClassification

    p = check_checkpoint_dir(path)
    if len(_config(p).get("id2label") or {}) != 1:
        raise ValuerError(
            f"{p} is not a value model (no single-label head in config.json); give the model/ "
            "directory `halluc value` wrote, e.g. RUN/value/model"
        )
    model = AutoModelForTokenClassification.from_pretrained(
        p, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, use_safetensors=True
    )
    return ModelValuer(model.to(pick_device(device)), batch_size, str(p))


def check_tokenizer(
    path: str | Path, policy: str | Path, text: str, trust_remote_code: bool = False
) -> None:
    """Fail unless the value model at `path` writes `text` as the same token ids as the policy
    checkpoint `policy`: its values are of token ids, and another tokenizer's ids mean other
    text."""
    own = load_tokenizer(path, trust_remote_code).encode(text, add_special_tokens=False)
    theirs = load_tokenizer(policy, trust_remote_code).encode(text, add_special_tokens=False)
    if list(own) != list(theirs):
        raise ValuerError(
            f"value model {path}: its tokenizer writes {text[:40]!r} as {list(own)[:12]} but the "
            f"policy's as {list(theirs)[:12]}; use a value model trained on this policy's runs"
        )


def _config(path: Path) -> dict[str, Any]:
    return dict(json.loads((path / "config.json").read_text()))
