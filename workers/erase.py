"""Erase-mode attention as tensors, for training and for batched decoding (docs/design.md §7, §8).

Both are built from `search.backspace`, the one definition of what a backspace erases:

- `erase_vectors(rows, ...)`: per row, `erased_at` `[B, L]` (`search.backspace.erase_schedule`)
  and `position_ids` `[B, L]`, in one O(L) pass per row. Position q attends to k exactly when
  `k <= q < erased_at[k]`, so every mask below is one tensor comparison:
  - `erase_mask(erased_at, dtype)`: the dense 4D mask `[B, 1, L, L]` for SDPA or eager attention;
  - `erase_block_mask(erased_at)`: a FlexAttention `BlockMask` (torch >= 2.5) from the same rule,
    which a model registered with `register_flex_attention` takes (GPT-2 included).
- `use_blocked_attention(model)`: SDPA over query blocks, each against the keys up to its last
  query (`blocked_sdpa_attention`): a dense mask makes SDPA compute every block, the causal upper
  half included, and no training mask (erase or padding) lets a query see a later key, so that
  half is skipped.
- `erase_attention(rows, ...)`: the mask and position ids of a training batch (both of the above).
- `RowState`: one decoding row's visibility, updated token by token; when a backspace run ends it
  names the cache columns to hide, which is what cropping the cache does for a single sequence.

In `stream` mode none of this applies: plain causal attention, erased tokens stay visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from search.backspace import BackspaceError, Delim, Unit, erase_schedule, is_step_end, pop_count


def erase_vectors(
    rows: Sequence[Sequence[int]],
    prompt_lens: Sequence[int],
    width: int,
    unit: Unit,
    bksp_id: int,
    delim_id: Delim,
    keep_tried: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`erased_at` and `position_ids`, both `[B, width]` long, for right-padded `rows`
    (`keep_tried`: mode `tried`, see `erase_schedule`).

    Row i's first `len(rows[i])` entries are `erase_schedule`'s: a token nothing erases gets
    `len(rows[i])`, so it is hidden from the padding after the row. Padding column j gets
    `j + 1` (seen by itself only: no query row is all masked) and position id 0.
    """
    erased_at, positions = [], []
    for ids, n_prompt in zip(rows, prompt_lens, strict=True):
        if len(ids) > width:
            raise ValueError(
                f"a row of {len(ids)} tokens does not fit in width {width}: pass a width of at "
                "least the longest row"
            )
        e, p = erase_schedule(ids, n_prompt, unit, bksp_id, delim_id, keep_tried)
        erased_at.append(e + list(range(len(ids) + 1, width + 1)))
        positions.append(p + [0] * (width - len(ids)))
    shape = (len(rows), width)
    return (
        torch.tensor(erased_at, dtype=torch.long).reshape(shape),
        torch.tensor(positions, dtype=torch.long).reshape(shape),
    )


def erase_mask(erased_at: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 4D mask `[B, 1, L, L]` of `erased_at` `[B, L]`: query q sees key k iff
    `k <= q < erased_at[b, k]`.

    `dtype=torch.bool` gives True where a position attends, which SDPA takes as it is (4x less
    memory than float32, and nothing to overflow under bf16 autocast). Any float dtype gives the
    additive form (0 where a position attends, the dtype's minimum elsewhere), which eager
    attention needs: it adds the mask to the scores, so a boolean mask there would be silently
    wrong. The float form is the default because the train stage's `check_attention` lets erase
    mode train with eager attention too; under SDPA both give bit-identical logits on the tiny test
    models (tests/workers/test_erase.py).
    """
    width = erased_at.shape[-1]
    idx = torch.arange(width, device=erased_at.device)
    allow = idx[:, None] < erased_at[:, None, :]  # [B, q, k]: q before k's erasure
    allow &= idx[None, :] <= idx[:, None]  # causal
    allow = allow[:, None]
    if dtype == torch.bool:
        return allow
    mask = torch.full(allow.shape, torch.finfo(dtype).min, dtype=dtype, device=erased_at.device)
    return mask.masked_fill_(allow, 0.0)


def erase_block_mask(erased_at: torch.Tensor, block_size: int = 128) -> Any:
    """A FlexAttention `BlockMask` (`torch.nn.attention.flex_attention`) of the same rule as
    `erase_mask`, built on `erased_at`'s device; for `flex_attention(..., block_mask=...)`, a
    model on `register_flex_attention`'s implementation (GPT-2 included), or one whose own
    `attn_implementation="flex_attention"` takes the `BlockMask` as its `attention_mask` (Llama).
    Raises `ImportError` on a torch without FlexAttention.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    b, width = erased_at.shape

    def mask_mod(bi: Any, h: Any, q: Any, k: Any) -> Any:
        return (k <= q) & (q < erased_at[bi, k])

    return create_block_mask(
        mask_mod, b, None, width, width, device=erased_at.device, BLOCK_SIZE=block_size
    )


FLEX_ATTENTION = "halluc_erase_flex"  # the attention implementation `register_flex_attention` adds
_compiled_flex: list[Any] = []


def register_flex_attention() -> str:
    """Register `flex_erase_attention` with transformers' `AttentionInterface` and return its
    name (`FLEX_ATTENTION`), to build a model with `attn_implementation=` that name. Such a
    model attends through FlexAttention with the `erase_block_mask` given to its forward as the
    keyword `erase_block_mask=`, `attention_mask` left unset: transformers' own
    "flex_attention" refuses GPT-2, whose forward cannot take a `BlockMask` as `attention_mask`.
    """
    from transformers import AttentionInterface

    AttentionInterface.register(FLEX_ATTENTION, flex_erase_attention)
    return FLEX_ATTENTION


def flex_erase_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A transformers attention function: `[B, H, L, D]` query/key/value to `[B, L, H, D]`, with
    the `BlockMask` in `kwargs["erase_block_mask"]`. Compiled (fused kernel) on CUDA, unfused
    elsewhere (small shapes, tests). No attention dropout: FlexAttention has none."""
    from torch.nn.attention.flex_attention import flex_attention

    block_mask = kwargs.get("erase_block_mask")
    if block_mask is None:
        raise ValueError(
            f"attn_implementation={FLEX_ATTENTION!r} needs the forward keyword erase_block_mask= "
            "(workers.erase.erase_block_mask); without it every position would see every other"
        )
    if dropout > 0:
        raise ValueError(
            f"{FLEX_ATTENTION} has no attention dropout (got {dropout}): set the model's "
            "attention dropout to 0 (GPT-2: attn_pdrop=0.0)"
        )
    attend = flex_attention
    if query.is_cuda:
        if not _compiled_flex:
            _compiled_flex.append(torch.compile(flex_attention))
        attend = _compiled_flex[0]
    out = attend(
        query,
        key,
        value,
        block_mask=block_mask,
        scale=scaling,
        enable_gqa=key.shape[1] != query.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


BLOCKED_SDPA = "halluc_blocked_sdpa"  # the attention implementation `use_blocked_attention` sets
QUERY_BLOCK = 256  # queries per SDPA call (BENCHMARKS.md: erase-mode training step)


def use_blocked_attention(model: Any) -> bool:
    """Switch a model on SDPA attention to `blocked_sdpa_attention` (registered with transformers'
    `AttentionInterface` as `BLOCKED_SDPA`, with SDPA's own mask builder for the masks the model
    builds itself; the saved config does not carry it) and say whether it did. For training: every
    mask it trains with is causal (no query sees a later key), in each attention mode; with a
    padding mask, SDPA too computes every block otherwise (BENCHMARKS.md)."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(BLOCKED_SDPA, blocked_sdpa_attention)
    AttentionMaskInterface.register(BLOCKED_SDPA, sdpa_mask)
    try:
        model.set_attn_implementation(BLOCKED_SDPA)
    except (ValueError, NotImplementedError):  # an architecture without attention backends
        return False
    return True


def blocked_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A transformers attention function: `[B, H, Lq, D]` query, `[B, Hkv, Lk, D]` key/value to
    `[B, Lq, H, D]`, SDPA with `attention_mask` (4D, bool or additive float) over blocks of
    `QUERY_BLOCK` queries, each against the keys up to its last query only. Equal to one SDPA call
    when the mask is causal (the keys left out are masked for every query of the block); without
    a mask (or with one that is the same for every query) it is one SDPA call, as transformers'
    own "sdpa" makes it."""
    lq, lk = query.shape[2], key.shape[2]
    mask = None if attention_mask is None else attention_mask[:, :, :, :lk]
    blocked = mask is not None and mask.shape[2] == lq  # a mask per query, so causal
    causal = mask is None and lq > 1 and getattr(module, "is_causal", True)
    step = QUERY_BLOCK if blocked else lq
    blocks = []
    for s in range(0, lq, step):
        e = min(s + step, lq)
        k_end = lk - lq + e if blocked else lk  # cached keys first, then one per query
        blocks.append(
            torch.nn.functional.scaled_dot_product_attention(
                query[:, :, s:e],
                key[:, :, :k_end],
                value[:, :, :k_end],
                attn_mask=mask[:, :, s:e, :k_end] if blocked and mask is not None else mask,
                dropout_p=dropout,
                is_causal=causal,
                scale=scaling,
                enable_gqa=key.shape[1] != query.shape[1],
            )
        )
    out = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=2)
    return out.transpose(1, 2).contiguous(), None


def erase_attention(
    rows: Sequence[Sequence[int]],
    prompt_lens: Sequence[int],
    width: int,
    unit: Unit,
    bksp_id: int,
    delim_id: Delim,
    dtype: torch.dtype = torch.float32,
    keep_tried: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask `[B, 1, width, width]` (`erase_mask` of `dtype`: float additive by default, for
    eager and SDPA alike; `torch.bool` for SDPA only) and position ids `[B, width]` for
    right-padded rows. Padding attends to itself only, with position id 0."""
    erased_at, positions = erase_vectors(
        rows, prompt_lens, width, unit, bksp_id, delim_id, keep_tried
    )
    return erase_mask(erased_at, dtype), positions


class RowState:
    """Backspace bookkeeping of one decoding row, in cache columns.

    `stack`: visible non-backspace columns; `run`: the current backspace run; `pending`: what it
    erased, its backspaces included, each with its branch point (`erase_schedule`); `tried`: what
    earlier runs erased that stays in view (`keep_tried`, mode `tried`; empty in mode `erase`).
    The prompt occupies columns [start, start + prompt_len).
    """

    def __init__(
        self, start: int, prompt_len: int, unit: Unit, delim_id: Delim, keep_tried: bool = False
    ) -> None:
        self.stack = list(range(start, start + prompt_len))
        self.n_prompt = prompt_len
        self.unit, self.delim_id, self.keep_tried = unit, delim_id, keep_tried
        self.n_base = 0  # columns in view when the current run started
        self.run: list[int] = []
        self.pending: list[tuple[int, int]] = []
        self.tried: list[tuple[int, int]] = []
        self.tokens: dict[int, int] = {}
        self.n_backspaces = 0
        self.last = -1  # the token pushed last

    def can_backspace(self) -> bool:
        """False when only the prompt is visible (a backspace would delete into it)."""
        return len(self.stack) > self.n_prompt

    def position(self) -> int:
        """Erase-mode position id of the token pushed last: its view's length minus one."""
        if self.run:
            return self.n_base + len(self.run) - 1
        return len(self.stack) + len(self.tried) - 1

    def push(self, col: int, tok: int, is_bksp: bool) -> list[int]:
        """Record token `tok` at cache column `col`; returns columns to hide from now on."""
        self.tokens[col] = tok
        self.last = tok
        if is_bksp:
            if not self.run:
                self.n_base = len(self.stack) + len(self.tried)
            visible = [self.tokens.get(c, -1) for c in self.stack]
            n = pop_count(visible, self.n_prompt, self.unit, self.delim_id)
            if n == 0:
                raise BackspaceError(f"backspace at column {col} would delete into the prompt")
            gone = self.stack[-n:]
            del self.stack[-n:]
            branch = len(self.stack)
            while branch > self.n_prompt and not is_step_end(visible[branch - 1], self.delim_id):
                branch -= 1
            self.pending.extend((branch, c) for c in [*gone, col])
            self.run.append(col)
            self.n_backspaces += 1
            return []
        hidden: list[int] = []
        if self.run:  # the run has ended: what stays in view, what goes
            kept = []
            for b, c in self.tried + self.pending:
                if self.keep_tried and b <= len(self.stack):
                    kept.append((b, c))
                else:
                    hidden.append(c)
            self.tried, self.run, self.pending = kept, [], []
        self.stack.append(col)
        return sorted(hidden)
