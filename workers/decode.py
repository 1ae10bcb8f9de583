"""Single-sequence decoding that crops its KV cache at each backspace run (docs/design.md §8).

The batched sampler hides erased positions with a per-row mask; one sequence can instead drop
them from its `DynamicCache`: when a non-backspace token follows a backspace run, the cache is
cropped to the surviving prefix (which is always a prefix of the cache) before the token goes in.
`cropped_logits` feeds a given stream this way (the parity tests compare it with the erase-mode
training forward); `reencode_logits` re-encodes the visible prefix after each run instead (the
benchmark baseline). Both refuse a model whose attention is not over the whole visible prefix
(`workers.hf.check_erase_support`: a sliding window, for one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from search.backspace import Delim, Unit, pop_count
from workers.hf import cache_kwarg, check_erase_support, forward_cached


def crop_to(cache: Any, length: int) -> None:
    """Keep the first `length` positions (the surviving prefix is always the head of the cache).
    A negative argument means "remove that many" in every transformers version."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def cropped_logits(
    model: Any, ids: Sequence[int], prompt_len: int, unit: Unit, bksp_id: int, delim_id: Delim
) -> torch.Tensor:
    """Logits `[len(ids), vocab]` of `ids` fed one token at a time with a cropped cache."""
    return _incremental(model, ids, prompt_len, unit, bksp_id, delim_id, reencode=False)


def reencode_logits(
    model: Any, ids: Sequence[int], prompt_len: int, unit: Unit, bksp_id: int, delim_id: Delim
) -> torch.Tensor:
    """The same logits, but the cache is rebuilt by re-encoding the visible prefix after each
    backspace run instead of cropped (what decoding without cache surgery has to do)."""
    return _incremental(model, ids, prompt_len, unit, bksp_id, delim_id, reencode=True)


@torch.inference_mode()
def _incremental(
    model: Any,
    ids: Sequence[int],
    prompt_len: int,
    unit: Unit,
    bksp_id: int,
    delim_id: Delim,
    reencode: bool,
) -> torch.Tensor:
    check_erase_support(model)
    kwarg = cache_kwarg(model)
    logits, cache = forward_cached(model, kwarg, None, input_ids=torch.tensor([ids[:prompt_len]]))
    rows = list(logits[0])
    stack = list(ids[:prompt_len])  # visible tokens
    in_run = False
    for tok in ids[prompt_len:]:
        if tok == bksp_id:
            del stack[len(stack) - pop_count(stack, prompt_len, unit, delim_id) :]
            in_run = True
        else:
            stack.append(tok)
            if in_run and reencode:  # rebuild the cache from the whole visible prefix
                in_run = False
                out, cache = forward_cached(model, kwarg, None, input_ids=torch.tensor([stack]))
                rows.append(out[0, -1])
                continue
            if in_run:
                crop_to(cache, len(stack) - 1)  # the surviving prefix is the head of the cache
                in_run = False
        length = cache.get_seq_length()
        out, cache = forward_cached(
            model,
            kwarg,
            cache,
            input_ids=torch.tensor([[tok]]),
            position_ids=torch.tensor([[length]]),
        )
        rows.append(out[0, -1])
    return torch.stack(rows)
