"""What one generated stream did: right or wrong, backspaces, and whether each erase was deserved
(DESIGN §8). Pure Python over token ids, with the task's exact step checker where it has one.

An *erase event* is one backspace run. It is *precise* when, just before the run, the visible
steps held an error (by the exact checker) at or after the first step the run erased. A stream
*made an error* when the visible steps held an error at some point (before any run, or at the
end); it *recovered* when it made an error and still ended right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from search.backspace import pop_count
from search.tree import Judge, split_steps


@dataclass(frozen=True)
class StreamReport:
    correct: bool
    n_tokens: int
    n_backspaces: int
    erase_events: int
    precise_erases: int | None  # None: the task has no exact step checker
    made_error: bool | None


def analyze(judge: Judge, generated: Sequence[int], finished: bool) -> StreamReport:
    """Report on `generated` (the raw stream after the prompt, backspaces included)."""
    tok = judge.tokenizer
    checker = judge.task.has_step_checker
    visible: list[int] = []
    events = precise = 0
    made_error = False
    error: int | None = None  # the exact error visible when the current run started
    in_run = False
    for t in [*generated, None]:  # None closes a run that ends the stream
        if t != tok.bksp_id:
            if in_run:  # the run is over: did it erase the error?
                precise += error is not None and error >= _kept_steps(visible, tok.delim_id)
                in_run = False
            if t is not None:
                visible.append(t)
            continue
        if not in_run:
            events += 1
            error = judge.first_error(split_steps(visible, tok.delim_id)) if checker else None
            made_error |= error is not None
            in_run = True
        n = pop_count(visible, 0, judge.unit, tok.delim_id)
        del visible[len(visible) - n :]
    if checker:
        made_error |= judge.first_error(split_steps(visible, tok.delim_id)) is not None
    return StreamReport(
        correct=judge.correct(generated, finished),
        n_tokens=len(generated),
        n_backspaces=sum(1 for t in generated if t == tok.bksp_id),
        erase_events=events,
        precise_erases=precise if checker else None,
        made_error=made_error if checker else None,
    )


def _kept_steps(visible: list[int], delim: int) -> int:
    """Steps left whole after a run: the index of the first step it erased (or cut into)."""
    steps = split_steps(visible, delim)
    whole = len(steps) if not steps or steps[-1][-1] == delim else len(steps) - 1
    return whole
