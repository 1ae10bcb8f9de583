"""What one generated stream did: right or wrong, backspaces, and whether each erase was deserved
(docs/design.md §8; docs/measurement.md). Pure Python over token ids, with the task's exact step
checker where it has one.

Definitions, all on *whole* steps:

- A step is *finished* once its delimiter is written; the last step of a stream that finished
  (end-of-sequence) is finished at the end too. A *partial* step (no delimiter yet, or the tail of
  a stream cut by its token budget) is neither right nor wrong.
- A finished step is *wrong* when the exact checker's first error among the visible finished steps
  lies at or before it (everything after the first wrong step is off the path too). Its verdict is
  fixed when it is finished: the steps before it cannot change while it stays visible.
- An *erase event* is one backspace run. It erases the visible steps it removes or cuts into
  (unit `token`: one token per backspace, so a run may cut into a step, e.g. only its delimiter;
  unit `step`: each backspace removes a partial step, or else the last finished step whole). An
  event is *precise* when one of the finished steps it erases is wrong. Erasing only a partial
  step is never precise: there is no verdict on it.
- A stream *made an error* when it ever finished a wrong step (erased later or not); it *recovered*
  when it made an error and is still `correct` (`Judge.correct`). `errors_made` counts the wrong
  steps finished while every visible step before them was right (the first wrong step, and after
  an erase the next one), out of `fresh_steps`, the steps finished on such a right prefix:
  sum(errors_made) / sum(fresh_steps) is the per-step error rate, the rate at which the model
  makes an error where it still could be right (a step after a wrong one is wrong by inheritance,
  and is not an error of its own).
- For chance: `steps_written` / `wrong_steps_written` count every finished step, erased or not,
  and `erased_steps` / `erased_wrong_steps` the finished steps that backspaces erased. An eraser
  that picked finished steps at random would hit wrong ones at the rate
  sum(wrong_steps_written) / sum(steps_written); erase precision by steps is
  sum(erased_wrong_steps) / sum(erased_steps).

First-error figures (what "erased steps wrong" overstates: every step after the first wrong one
counts as wrong, so erasing the last move after a dead-end first one scores as precise while
repairing nothing):

- an erase event is *first-error precise* when it erases a *fresh* error: a wrong step finished
  on a right prefix (the first wrong step, or after an erase the next one), not a step wrong by
  inheritance; chance for it is sum(errors_made) / sum(steps_written);
- `first_error_erased`: the stream's first error was erased before any later step was finished
  (None when it made no error); over the samples that made one, that is first-error recall, and
  a random eraser at the same rate would manage it with probability about
  sum(erase_events) / sum(steps_written);
- `right_steps_erased`: finished steps erased that were right (over-erasure).

Fields that need the exact checker are None for a task without one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from search.backspace import is_step_end, pop_count
from search.tree import Judge, split_steps


@dataclass(frozen=True)
class StreamReport:
    correct: bool
    n_tokens: int
    n_backspaces: int
    erase_events: int
    precise_erases: int | None  # None: the task has no exact step checker
    made_error: bool | None
    steps_written: int
    wrong_steps_written: int | None
    erased_steps: int
    erased_wrong_steps: int | None
    finished: bool = True  # False: the stream ran out of its token budget (truncated)
    fresh_steps: int = 0
    errors_made: int | None = None
    fresh_erases: int | None = None  # erase events that erased a fresh error
    first_error_erased: bool | None = None  # None: no error made (or no checker)
    right_steps_erased: int = 0


class _Walk:
    """The visible tokens of a stream as it is written, with a verdict per visible finished step
    (True: wrong; always False without a checker) and the counts of the report."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.visible: list[int] = []
        self.wrong: list[bool] = []  # one per visible finished step
        self.written = self.written_wrong = self.erased = self.erased_wrong = 0
        self.events = self.precise = 0
        self.fresh = self.errors = 0  # steps finished on a right prefix, and wrong ones of them
        self.run_hit = False  # the current run erased a wrong finished step
        self.own: list[bool] = []  # per visible finished step: a fresh error (not inherited)
        self.run_fresh = False  # the current run erased a fresh error
        self.fresh_events = 0
        self.first: str | None = None  # the first error: "pending", "erased" or "kept"

    def write(self, token: int) -> None:
        self.visible.append(token)
        if is_step_end(token, self.judge.tokenizer.step_ends):
            self.finish_step()

    def finish_step(self) -> None:
        """The last visible step is finished: give it its verdict."""
        if self.wrong and self.wrong[-1]:
            verdict = True  # after the first wrong step
        else:
            self.fresh += 1
            if self.judge.task.has_step_checker:
                steps = split_steps(self.visible, self.judge.tokenizer.step_ends)
                verdict = self.judge.first_error(steps) is not None
            else:
                verdict = False
            self.errors += verdict
        own = verdict and not (len(self.wrong) and self.wrong[-1])
        if self.first == "pending":
            self.first = "kept"  # a later step was written over it
        if own and self.first is None:
            self.first = "pending"
        self.wrong.append(verdict)
        self.own.append(own)
        self.written += 1
        self.written_wrong += verdict

    def backspace(self, starts_run: bool) -> None:
        if starts_run:
            self.events += 1
            self.run_hit = self.run_fresh = False
        delim = self.judge.tokenizer.step_ends
        n = pop_count(self.visible, 0, self.judge.unit, delim)
        gone = self.visible[len(self.visible) - n :]
        del self.visible[len(self.visible) - n :]
        # a step whose end went is cut into
        keep = len(self.wrong) - sum(is_step_end(t, delim) for t in gone)
        cut, own = self.wrong[keep:], self.own[keep:]
        del self.wrong[keep:]
        del self.own[keep:]
        self.erased += len(cut)
        self.erased_wrong += sum(cut)
        self.run_hit |= any(cut)
        self.run_fresh |= any(own)
        if self.first == "pending" and any(own):
            self.first = "erased"

    def end_run(self) -> None:
        self.precise += self.run_hit
        self.fresh_events += self.run_fresh


def analyze(judge: Judge, generated: Sequence[int], finished: bool) -> StreamReport:
    """Report on `generated` (the raw stream after the prompt, backspaces included, no
    end-of-sequence); `finished`: the stream ended with end-of-sequence, not its budget."""
    tok = judge.tokenizer
    walk = _Walk(judge)
    previous = None
    for t in generated:
        if t == tok.bksp_id:
            walk.backspace(starts_run=previous != tok.bksp_id)
        else:
            if previous == tok.bksp_id:
                walk.end_run()
            walk.write(t)
        previous = t
    if previous == tok.bksp_id:
        walk.end_run()
    if finished and walk.visible and not is_step_end(walk.visible[-1], tok.step_ends):
        walk.finish_step()
    checker = judge.task.has_step_checker
    return StreamReport(
        correct=judge.correct(generated, finished),
        n_tokens=len(generated),
        n_backspaces=sum(1 for t in generated if t == tok.bksp_id),
        erase_events=walk.events,
        precise_erases=walk.precise if checker else None,
        made_error=walk.written_wrong > 0 if checker else None,
        steps_written=walk.written,
        wrong_steps_written=walk.written_wrong if checker else None,
        erased_steps=walk.erased,
        erased_wrong_steps=walk.erased_wrong if checker else None,
        finished=finished,
        fresh_steps=walk.fresh,
        errors_made=walk.errors if checker else None,
        fresh_erases=walk.fresh_events if checker else None,
        first_error_erased=None if not checker or walk.first is None else walk.first == "erased",
        right_steps_erased=walk.erased - walk.erased_wrong,
    )


def first_error(reports: list[StreamReport]) -> dict[str, float | None]:
    """The first-error figures (`search.metrics`), each beside its chance: the share of erase
    events that erased a fresh error (chance: fresh errors among the steps written), the share of
    samples with an error whose first error was erased before a later step (chance: erase events
    per step written), the share of those that ended correct (repair), and the share of erased
    finished steps that were right (over-erasure). None where there is nothing to divide by or
    no exact checker."""
    checked = [r for r in reports if r.fresh_erases is not None]
    events = sum(r.erase_events for r in checked)
    written = sum(r.steps_written for r in checked)
    erased = sum(r.erased_steps for r in checked)
    erred = [r for r in checked if r.first_error_erased is not None]
    caught = [r for r in erred if r.first_error_erased]

    def share(a: float, b: float) -> float | None:
        return a / b if b else None

    return {
        "first_error_precision": share(sum(r.fresh_erases or 0 for r in checked), events),
        "chance_first_error_precision": share(sum(r.errors_made or 0 for r in checked), written),
        "first_error_recall": share(len(caught), len(erred)),
        "chance_first_error_recall": share(events, written),
        "repair_rate": share(sum(r.correct for r in caught), len(caught)),
        "over_erasure": share(sum(r.right_steps_erased for r in checked), erased),
    }
