"""Erase-mode attention as tensors, for training and for batched decoding (docs/design.md §7, §8).

Both are built from `search.backspace.attention_views` / `pop_count`, the one definition of what a
backspace erases:

- `erase_attention(rows, ...)`: the 4D float mask `[B, 1, L, L]` (0 where a position attends,
  the dtype's minimum elsewhere) and `position_ids` `[B, L]` for a training batch.
- `RowState`: one decoding row's visibility, updated token by token; when a backspace run ends it
  names the cache columns to hide, which is what cropping the cache does for a single sequence.

In `stream` mode none of this applies: plain causal attention, erased tokens stay visible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from search.backspace import BackspaceError, Unit, attention_views, pop_count


def erase_attention(
    rows: Sequence[Sequence[int]],
    prompt_lens: Sequence[int],
    width: int,
    unit: Unit,
    bksp_id: int,
    delim_id: int,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask `[B, 1, width, width]` and position ids `[B, width]` for right-padded rows."""
    b = len(rows)
    allow = torch.zeros((b, width, width), dtype=torch.bool)
    positions = torch.zeros((b, width), dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(zip(rows, prompt_lens, strict=True)):
        views = attention_views(ids, n_prompt, unit, bksp_id, delim_id)
        for j, view in enumerate(views):
            allow[i, j, view] = True
            positions[i, j] = len(view) - 1
        for j in range(len(ids), width):  # padding attends to itself only (no all-masked rows)
            allow[i, j, j] = True
    mask = torch.zeros((b, 1, width, width), dtype=dtype)
    mask.masked_fill_(~allow[:, None], torch.finfo(dtype).min)
    return mask, positions


class RowState:
    """Backspace bookkeeping of one decoding row, in cache columns.

    `stack`: visible non-backspace columns; `base`/`run`: what the current backspace run sees.
    The prompt occupies columns [start, start + prompt_len).
    """

    def __init__(self, start: int, prompt_len: int, unit: Unit, delim_id: int) -> None:
        self.stack = list(range(start, start + prompt_len))
        self.n_prompt = prompt_len
        self.unit, self.delim_id = unit, delim_id
        self.base: list[int] = []
        self.run: list[int] = []
        self.tokens: dict[int, int] = {}
        self.n_backspaces = 0
        self.last = -1  # the token pushed last

    def can_backspace(self) -> bool:
        """False when only the prompt is visible (a backspace would delete into it)."""
        return len(self.stack) > self.n_prompt

    def position(self) -> int:
        """Erase-mode position id of the token pushed last: its view's length minus one."""
        return len(self.base) + len(self.run) - 1 if self.run else len(self.stack) - 1

    def push(self, col: int, tok: int, is_bksp: bool) -> list[int]:
        """Record token `tok` at cache column `col`; returns columns to hide from now on."""
        self.tokens[col] = tok
        self.last = tok
        if is_bksp:
            if not self.run:
                self.base = list(self.stack)
            visible = [self.tokens.get(c, -1) for c in self.stack]
            n = pop_count(visible, self.n_prompt, self.unit, self.delim_id)
            if n == 0:
                raise BackspaceError(f"backspace at column {col} would delete into the prompt")
            del self.stack[-n:]
            self.run.append(col)
            self.n_backspaces += 1
            return []
        hidden = sorted(set(self.base) - set(self.stack)) + self.run if self.run else []
        self.run, self.base = [], []
        self.stack.append(col)
        return hidden
