"""The backspace token: what it erases, and traces that use it (docs/design.md §4).

`apply_backspaces` is the one definition of what is visible. Traces, decoding, evaluation and the
trace viewer all go through `pop_count` (one backspace) or `apply_backspaces` (a whole stream).

Units:
- "token": each backspace deletes the previous visible token.
- "step": one backspace deletes back to the start of the last step: the trailing token (often the
  step's end) and then everything up to, not including, the previous token that ends a step.

Which tokens end a step (`Delim`): one id where the delimiter is always a token of its own (the
project's character tokenizer), else the set of every id whose text ends with the delimiter: a
byte-level BPE merges it with what precedes it (`.\n`), and such a token ends its step as the bare
delimiter does (`workers.hf.SearchTokenizer.step_ends`).

A backspace never deletes into the prompt: `BackspaceError` says where it would have.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from search.errors import HallucError

Unit = Literal["token", "step"]
UNITS: tuple[Unit, ...] = ("token", "step")
# How a stream with backspaces is attended (docs/design.md §7): `stream` sees every token; `erase`
# sees what is visible after each finished backspace run (`erase_schedule`); `tried` as erase, but
# the moves tried at the current branch point stay in view (`erase_schedule(keep_tried=True)`).
Mode = Literal["stream", "erase", "tried"]
ERASING: tuple[Mode, ...] = ("erase", "tried")  # the modes with erase_schedule's mask
Delim = int | frozenset[int]  # the token(s) that end a step


def is_step_end(tok: int, delim: Delim) -> bool:
    """Whether the token `tok` ends a step."""
    return tok in delim if isinstance(delim, frozenset) else tok == delim


class BackspaceError(HallucError, ValueError):
    """A backspace stream or trace that cannot be applied (deletes into the prompt, bad unit)."""


def pop_count(visible: Sequence[int], prompt_len: int, unit: Unit, delim_id: Delim) -> int:
    """How many trailing tokens of `visible` one backspace removes (0 when only the prompt is left).

    Decoding with a cropped KV cache calls this to know how far to crop.
    """
    if unit not in UNITS:
        raise BackspaceError(f"backspace unit {unit!r} is not one of {UNITS}")
    end = len(visible)
    if end <= prompt_len:
        return 0
    if unit == "token":
        return 1
    start = end - 1  # the trailing token always goes, delimiter or not
    while start > prompt_len and not is_step_end(visible[start - 1], delim_id):
        start -= 1
    return end - start


def walk(
    ids: Sequence[int], prompt_len: int, unit: Unit, bksp_id: int, delim_id: Delim
) -> Iterator[tuple[int, list[int], list[int]]]:
    """For each position: (position, visible non-backspace positions after it, positions it
    erased). The one loop that applies backspaces; the visible list is live, copy to keep it.
    Amortised O(len(ids)): `pop_count` reads only the tail it removes."""
    visible: list[int] = []
    tokens: list[int] = []  # ids[p] for p in visible, kept beside it for pop_count
    for pos, tok in enumerate(ids):
        if tok != bksp_id:
            visible.append(pos)
            tokens.append(tok)
            yield pos, visible, []
            continue
        if pos < prompt_len:
            raise BackspaceError(f"the prompt contains a backspace token at position {pos}")
        n = pop_count(tokens, prompt_len, unit, delim_id)
        if n == 0:
            raise BackspaceError(
                f"backspace at position {pos} would delete into the prompt "
                f"(prompt length {prompt_len}, nothing generated is left to erase)"
            )
        gone = visible[-n:]
        del visible[-n:]
        del tokens[-n:]
        yield pos, visible, gone


def _simulate(
    ids: Sequence[int], prompt_len: int, unit: Unit, bksp_id: int, delim_id: Delim
) -> tuple[list[int], list[int]]:
    """Positions of `ids` that stay visible, and positions of erased non-backspace tokens."""
    visible: list[int] = []
    erased: list[int] = []
    for _, now_visible, gone in walk(ids, prompt_len, unit, bksp_id, delim_id):
        erased.extend(gone)
        visible = now_visible
    return list(visible), sorted(erased)


def apply_backspaces(
    ids: Sequence[int], prompt_len: int, unit: Unit, bksp_id: int, delim_id: Delim
) -> list[int]:
    """The visible token ids of a stream `ids` (prompt first) after applying every backspace."""
    visible_pos, _ = _simulate(ids, prompt_len, unit, bksp_id, delim_id)
    return [ids[p] for p in visible_pos]


@dataclass(frozen=True)
class Serialized:
    """A training sequence.

    input_ids: prompt, generated tokens and backspaces. loss_mask: 1 where the token carries loss
    (kept generated tokens and backspaces), 0 on the prompt and on erased tokens. erase_spans:
    half-open [start, end) ranges of erased (non-backspace) tokens in input_ids.
    """

    input_ids: list[int]
    loss_mask: list[int]
    erase_spans: list[tuple[int, int]]
    n_backspaces: int


def _spans(positions: Sequence[int]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for p in positions:
        if spans and spans[-1][1] == p:
            spans[-1] = (spans[-1][0], p + 1)
        else:
            spans.append((p, p + 1))
    return spans


def serialize_stream(
    prompt: Sequence[int], completion: Sequence[int], unit: Unit, bksp_id: int, delim_id: Delim
) -> Serialized:
    """A raw generated stream (with the model's own backspaces) as a training sequence."""
    ids = [*prompt, *completion]
    _, erased = _simulate(ids, len(prompt), unit, bksp_id, delim_id)
    mask = [0] * len(prompt) + [1] * len(completion)
    for p in erased:
        mask[p] = 0
    n_bksp = sum(1 for t in completion if t == bksp_id)
    return Serialized(ids, mask, _spans(erased), n_bksp)


@dataclass(frozen=True)
class Segment:
    """Generated tokens that stay (`keep`) or are erased by backspaces right after them."""

    kind: Literal["keep", "erase"]
    ids: tuple[int, ...]


@dataclass(frozen=True)
class Trace:
    """The prompt plus segments, in order: e.g. keep(good steps), erase(wrong step), keep(fix)."""

    prompt: tuple[int, ...]
    segments: tuple[Segment, ...]

    def visible(self) -> list[int]:
        """What a reader sees once every erased segment is gone."""
        out = list(self.prompt)
        for seg in self.segments:
            if seg.kind == "keep":
                out.extend(seg.ids)
        return out


def _n_backspaces(
    seg: Segment, before: Sequence[int], prompt_len: int, unit: Unit, delim_id: Delim
) -> int:
    """Backspaces that erase exactly `seg`, given the visible tokens `before` it."""
    if unit == "token":
        return len(seg.ids)
    if len(before) > prompt_len and not is_step_end(before[-1], delim_id):
        raise BackspaceError(
            "with unit='step' an erased segment must start at a step boundary (after the prompt "
            "or a step delimiter); use unit='token' to erase part of a step"
        )
    n_delims = sum(1 for t in seg.ids if is_step_end(t, delim_id))
    return n_delims + (0 if is_step_end(seg.ids[-1], delim_id) else 1)


def serialize(trace: Trace, unit: Unit, bksp_id: int, delim_id: Delim) -> Serialized:
    """A trace as a training sequence: backspaces inserted after each erased segment."""
    if unit not in UNITS:
        raise BackspaceError(f"backspace unit {unit!r} is not one of {UNITS}")
    ids = list(trace.prompt)
    mask = [0] * len(ids)
    erased: list[int] = []
    visible = list(trace.prompt)
    n_total = 0
    for i, seg in enumerate(trace.segments):
        if not seg.ids:
            raise BackspaceError(f"segment {i} of the trace is empty")
        if bksp_id in seg.ids:
            raise BackspaceError(f"segment {i} of the trace already contains a backspace token")
        start = len(ids)
        ids.extend(seg.ids)
        if seg.kind == "keep":
            mask.extend([1] * len(seg.ids))
            visible.extend(seg.ids)
            continue
        n = _n_backspaces(seg, visible, len(trace.prompt), unit, delim_id)
        erased.extend(range(start, start + len(seg.ids)))
        ids.extend([bksp_id] * n)
        mask.extend([0] * len(seg.ids) + [1] * n)
        n_total += n
    return Serialized(ids, mask, _spans(erased), n_total)


def attention_views(
    ids: Sequence[int], prompt_len: int, unit: Unit, bksp_id: int, delim_id: Delim
) -> list[list[int]]:
    """Erase mode: for each position j, the positions j attends to (itself included), in order.

    A backspace sees everything that was visible when its run started (the error included) and
    the backspaces of its run before it. Any other token sees only what is visible after every
    earlier backspace: erased tokens and finished backspace runs are gone, exactly as if the KV
    cache had been cropped to the surviving prefix. Its position id is `len(view) - 1`.
    """
    base: list[int] = []  # what was visible when the current backspace run started
    run: list[int] = []  # positions of the current backspace run
    views: list[list[int]] = []
    for j, visible, gone in walk(ids, prompt_len, unit, bksp_id, delim_id):
        if ids[j] != bksp_id:
            run = []
            views.append(list(visible))
            continue
        if not run:
            base = visible + gone
        run.append(j)
        views.append(base + run)
    return views


def erase_schedule(
    ids: Sequence[int],
    prompt_len: int,
    unit: Unit,
    bksp_id: int,
    delim_id: Delim,
    keep_tried: bool = False,
) -> tuple[list[int], list[int]]:
    """Erase mode as two vectors, `attention_views` in O(len(ids)): (`erased_at`, `positions`).

    Position q attends to position k exactly when `k <= q < erased_at[k]`, and `positions[q]`
    is its position id (`len(attention_views(...)[q]) - 1`). `erased_at[k]` is the first
    non-backspace position after the backspace run that erases k; a backspace counts as erased
    from the first non-backspace token after its own run (the run's backspaces see each other,
    later tokens see none of them). A token that nothing erases gets `len(ids)`: visible to the
    end of the stream. Raises `BackspaceError` where `attention_views` does.

    `keep_tried` (mode `tried`): what a backspace erases, with the backspace, stays in view while
    the search stays at or below the point it was tried from: the start of its step, in visible
    tokens (its branch point). It goes when a later backspace run ends with fewer visible tokens
    than that, i.e. when the search backs above the branch point. So the moves tried at the current
    branch point, and the backspaces that undid them, are in context; deeper dead ends are not.
    """
    n = len(ids)
    erased_at = [n] * n
    pending: list[tuple[int, int]] = []  # (branch point, position) of the current run
    tried: list[tuple[int, int]] = []  # kept in view (keep_tried)
    for j, visible, gone in walk(ids, prompt_len, unit, bksp_id, delim_id):
        if ids[j] != bksp_id:
            if pending:  # a run has just ended with len(visible) - 1 tokens visible
                stay = len(visible) - 1
                kept = []
                for b, k in tried + pending:
                    if keep_tried and b <= stay:
                        kept.append((b, k))
                    else:
                        erased_at[k] = j
                tried, pending = kept, []
            continue
        branch = len(visible)  # the start of the step the backspace erased into
        while branch > prompt_len and not is_step_end(ids[visible[branch - 1]], delim_id):
            branch -= 1
        pending.extend((branch, k) for k in [*gone, j])
    return erased_at, _positions(erased_at)


def _positions(erased_at: Sequence[int]) -> list[int]:
    """Each position's position id: how many positions it attends to (itself included), less one."""
    seen = [0] * (len(erased_at) + 1)
    for k, e in enumerate(erased_at):
        seen[k] += 1
        seen[e] -= 1
    out, now = [], 0
    for d in seen[:-1]:
        now += d
        out.append(now - 1)
    return out
