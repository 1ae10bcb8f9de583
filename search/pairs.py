"""Preference pairs as training sequences, from rows of the `pairs` table (docs/design.md §6, §7).

A `pairs` row (search/traces.py) holds `prompt_ids` P (the problem's prompt and the good steps),
`chosen_ids` (the wrong step W, the backspaces that erase it, the fix F: the model's own correct
continuation from P, ending with end-of-sequence) and `rejected_ids` (W and the model's own
continuation C of it, with end-of-sequence when that rollout ended). As sequences:

    wrong step   chosen    P · W · ⌫… · F      loss on ⌫… and F   (W erased: hidden from F)
                 rejected  P · W · C           loss on C
    right step   chosen    P · S · R           loss on R          (carrying on)
    (optional)   rejected  P · S · ⌫…          loss on ⌫…         (erasing a right step)

W carries no loss on either side. It is erased in the chosen sequence, and erased tokens never
carry loss (as in the traces); its log-probability is the same on both sides anyway (the same
tokens after the same P), so it would cancel in the DPO margin. S is the fix's first step
(through its first step delimiter) and R the rest of the fix: S lies on a rollout that ended right,
so erasing it is the unneeded backspace the right-step pair pushes down. A fix of one step has no
right-step pair. `prompt_len` of every sequence is len(P): a backspace never reaches into P.

Pure Python, like the rest of search/: the pipeline's select stage counts tokens with it and the
train stage builds its batches from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from search.backspace import (
    BackspaceError,
    Delim,
    Segment,
    Trace,
    Unit,
    is_step_end,
    serialize,
    serialize_stream,
)
from search.errors import HallucError

PairKind = Literal["wrong_step", "right_step"]


class PairError(HallucError, ValueError):
    """A `pairs` row that does not read as a wrong-step pair with these token ids and unit."""


@dataclass(frozen=True)
class Preference:
    """One preference pair as two training sequences over the same `prompt_len` tokens:
    `chosen`/`rejected` ids with their loss masks (1 where the token's log-probability counts)."""

    kind: PairKind
    prompt_len: int
    chosen: list[int]
    chosen_mask: list[int]
    rejected: list[int]
    rejected_mask: list[int]

    @property
    def loss_tokens(self) -> int:
        return sum(self.chosen_mask) + sum(self.rejected_mask)


def wrong_step_len(row: Mapping[str, Any]) -> int:
    """Length of the wrong step W: where `chosen_ids` and `rejected_ids` part (W's end; C, a
    visible continuation, never starts with a backspace)."""
    chosen, rejected = row["chosen_ids"], row["rejected_ids"]
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    return n


def pair_loss_tokens(row: Mapping[str, Any]) -> int:
    """Loss-bearing tokens of a row's wrong-step pair: backspaces and fix, plus continuation."""
    w = wrong_step_len(row)
    return len(row["chosen_ids"]) - w + len(row["rejected_ids"]) - w


def preferences(
    row: Mapping[str, Any], unit: Unit, bksp_id: int, delim_id: Delim, right: bool = False
) -> list[Preference]:
    """The wrong-step pair of a `pairs` row and, with `right`, its right-step pair (module
    docstring). Raises `PairError` when the chosen side does not erase exactly the wrong step
    with `bksp_id` in `unit` (pairs made with another tokenizer or backspace unit)."""
    prompt = list(row["prompt_ids"])
    chosen, rejected = list(row["chosen_ids"]), list(row["rejected_ids"])
    w = wrong_step_len(row)
    try:
        ser = serialize_stream(prompt, chosen, unit, bksp_id, delim_id)
        spans = ser.erase_spans
    except BackspaceError:
        spans = []
    if w == 0 or spans != [(len(prompt), len(prompt) + w)]:
        raise PairError(
            f"pairs row of problem {row.get('problem_id')!r}: its chosen side does not erase "
            f"exactly the wrong step ({w} tokens) with backspace id {bksp_id} and "
            f"trace.unit={unit}; the pairs were made with another tokenizer or unit: search "
            "again with this model and config"
        )
    out = [
        Preference(
            "wrong_step",
            len(prompt),
            prompt + chosen,
            ser.loss_mask,
            prompt + rejected,
            [0] * (len(prompt) + w) + [1] * (len(rejected) - w),
        )
    ]
    if right:
        fix = chosen[w + ser.n_backspaces :]
        out += _right_step(prompt, fix, unit, bksp_id, delim_id)
    return out


def _right_step(
    prompt: list[int], fix: Sequence[int], unit: Unit, bksp_id: int, delim_id: Delim
) -> list[Preference]:
    ends = [i for i, t in enumerate(fix[:-1]) if is_step_end(t, delim_id)]
    if not ends:
        return []  # one step: nothing to carry on with after it
    cut = ends[0] + 1
    step, rest = list(fix[:cut]), list(fix[cut:])
    erased = serialize(
        Trace(tuple(prompt), (Segment("erase", tuple(step)),)), unit, bksp_id, delim_id
    )
    shared = len(prompt) + len(step)
    return [
        Preference(
            "right_step",
            len(prompt),
            prompt + step + rest,
            [0] * shared + [1] * len(rest),
            erased.input_ids,
            [0] * shared + [1] * erased.n_backspaces,
        )
    ]
