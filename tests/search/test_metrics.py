"""Stream metrics on hand-built streams of 347+589 (steps 7+9+0=16 / 4+8+1=13 / 3+5+1=9 /
ans 936), and against a naive re-reading of the definitions on random streams."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.backspace import apply_backspaces
from search.metrics import StreamReport, analyze
from search.tasks.arithmetic import ArithmeticTask
from search.tasks.jsonl import JsonlTask
from search.tokenizer import CharTokenizer
from search.tree import Judge, split_steps
from search.types import Problem

TOK = CharTokenizer()
TASK = ArithmeticTask("add", 3)
PROBLEM = TASK.make_problem(347, 589)
B = TOK.bksp_id
RIGHT = ["7+9+0=16\n", "4+8+1=13\n", "3+5+1=9\n", "ans 936"]


def judge(unit: str = "token") -> Judge:
    return Judge(TASK, PROBLEM, TOK, tuple(TOK.encode(PROBLEM.prompt)), unit)  # type: ignore[arg-type]


def stream(*parts: str | int) -> list[int]:
    """Text parts are encoded; an int part is that many backspaces."""
    ids: list[int] = []
    for part in parts:
        ids += [B] * part if isinstance(part, int) else TOK.encode(part)
    return ids


def report(unit: str, *parts: str | int, finished: bool = True) -> StreamReport:
    return analyze(judge(unit), stream(*parts), finished)


def test_reference_and_bad_step() -> None:
    assert TASK.reference(PROBLEM) == [s.strip() for s in RIGHT]
    r = report("token", *RIGHT)
    assert (r.correct, r.made_error, r.erase_events, r.steps_written) == (True, False, 0, 4)


@pytest.mark.parametrize("unit", ["token", "step"])
def test_mid_step_erase_of_a_right_step_is_not_precise_and_no_error(unit: str) -> None:
    # "7+9+0=1" is the start of the right step "7+9+0=16": erasing its "1" is no erase of an error
    r = report(unit, "7+9+0=1", 1, "7+9+0=" if unit == "step" else "", "16\n", *RIGHT[1:])
    assert r.correct and r.erase_events == 1
    assert r.precise_erases == 0 and r.made_error is False
    assert (r.steps_written, r.wrong_steps_written, r.erased_steps) == (4, 0, 0)


@pytest.mark.parametrize(("unit", "n"), [("token", 9), ("step", 1)])
def test_whole_step_erase_of_a_wrong_step_is_precise_and_recovers(unit: str, n: int) -> None:
    r = report(unit, "7+9+0=17\n", n, *RIGHT)
    assert r.n_backspaces == n and r.erase_events == 1 and r.precise_erases == 1
    assert r.made_error is True and r.correct  # a recovery
    assert (r.steps_written, r.wrong_steps_written) == (5, 1)
    assert (r.erased_steps, r.erased_wrong_steps) == (1, 1)


def test_cutting_into_a_finished_wrong_step_is_precise() -> None:
    # token unit: erase "7\n" of the wrong "7+9+0=17\n", write "6\n"
    r = report("token", "7+9+0=17\n", 2, "6\n", *RIGHT[1:])
    assert r.precise_erases == 1 and r.made_error and r.correct
    assert (r.erased_steps, r.erased_wrong_steps) == (1, 1)


def test_cutting_into_a_finished_right_step_is_not_precise() -> None:
    r = report("token", "7+9+0=16\n", 1, "\n", *RIGHT[1:])  # only its delimiter goes
    assert r.precise_erases == 0 and r.made_error is False and r.correct
    assert (r.steps_written, r.erased_steps, r.erased_wrong_steps) == (5, 1, 0)


@pytest.mark.parametrize(("unit", "n"), [("token", 9), ("step", 1)])
def test_erasing_a_right_step_after_a_visible_wrong_one_is_precise(unit: str, n: int) -> None:
    # "4+8+1=13" matches the reference, but the wrong step before it puts it off the path
    r = report(unit, "7+9+0=17\n", "4+8+1=13\n", n, *RIGHT[1:])
    assert r.precise_erases == 1 and r.made_error and not r.correct
    assert (r.steps_written, r.wrong_steps_written) == (5, 5)  # all after the first wrong one
    assert (r.erased_steps, r.erased_wrong_steps) == (1, 1)
    assert (r.fresh_steps, r.errors_made) == (1, 1)  # one error made, the rest inherit it


@pytest.mark.parametrize(("unit", "n"), [("token", 9), ("step", 1)])
def test_erasing_a_right_step_after_an_erased_wrong_one_is_not_precise(unit: str, n: int) -> None:
    r = report(unit, "7+9+0=17\n", n, "7+9+0=16\n", "4+8+1=13\n", n, *RIGHT[1:])
    assert r.erase_events == 2 and r.precise_erases == 1
    assert r.made_error and r.correct
    assert (r.steps_written, r.wrong_steps_written) == (6, 1)
    assert (r.erased_steps, r.erased_wrong_steps) == (2, 1)
    assert (r.fresh_steps, r.errors_made) == (6, 1)  # every step written on a right prefix


@pytest.mark.parametrize("unit", ["token", "step"])
def test_two_runs_one_precise_one_not(unit: str) -> None:
    first = ("7+9+0=1", 1, "7+9+0=" if unit == "step" else "")  # mid-step, right step
    second = ("4+8+1=14\n", 9 if unit == "token" else 1)  # whole wrong step
    r = report(unit, *first, "16\n", *second, *RIGHT[1:])
    assert r.erase_events == 2 and r.precise_erases == 1 and r.made_error and r.correct
    assert (r.erased_steps, r.erased_wrong_steps) == (1, 1)


def test_a_run_over_several_steps_is_one_event() -> None:
    # step unit: a partial step, then a right step, then the wrong first step: one run, precise
    r = report("step", "7+9+0=17\n", "4+8+1=13\n", "3+", 3, *RIGHT)
    assert r.erase_events == 1 and r.precise_erases == 1
    assert (r.erased_steps, r.erased_wrong_steps) == (2, 2) and r.correct


def test_no_backspace_streams() -> None:
    clean = report("token", *RIGHT)
    assert clean.correct and clean.made_error is False and clean.precise_erases == 0
    wrong_answer = report("token", *RIGHT[:-1], "ans 937")  # the final step counts when finished
    assert not wrong_answer.correct and wrong_answer.made_error
    assert (wrong_answer.steps_written, wrong_answer.wrong_steps_written) == (4, 1)
    # the right answer through a wrong step: an error, and no recovery (it is not correct). The
    # old 2% "recovery" without a backspace was this: correct meant the final answer alone
    lucky = report("token", RIGHT[0], "4+8+1=14\n", *RIGHT[2:])
    assert lucky.made_error and not lucky.correct and lucky.wrong_steps_written == 3


def test_the_last_step_of_an_unfinished_stream_is_partial() -> None:
    cut = report("token", "7+9+0=16\n", "4+8+1=1", finished=False)
    assert cut.made_error is False and cut.steps_written == 1 and not cut.correct
    ended = report("token", "7+9+0=16\n", "4+8+1=1", finished=True)
    assert ended.made_error is True and ended.steps_written == 2


def test_a_task_without_checker_reports_none() -> None:
    task = JsonlTask("unread.jsonl")  # checks answers only; the file is never read
    problem = Problem("q", "2+2?\n", "4")
    j = Judge(task, problem, TOK, tuple(TOK.encode(problem.prompt)))
    r = analyze(j, stream("two\n", "#### 5\n", 7, "#### 4"), True)
    assert r.correct and r.erase_events == 1 and (r.steps_written, r.erased_steps) == (3, 1)
    assert r.precise_erases is None and r.made_error is None and r.errors_made is None
    assert r.wrong_steps_written is None and r.erased_wrong_steps is None


# -- the same definitions re-read naively: visible text at every prefix of the stream --


def _finished(visible: list[int], end: bool) -> list[tuple[int, ...]]:
    steps = split_steps(visible, TOK.delim_id)
    return steps if end or not steps or steps[-1][-1] == TOK.delim_id else steps[:-1]


def naive(j: Judge, gen: list[int], finished: bool) -> tuple[int, bool, int]:
    """(precise erases, made error, wrong steps written) straight from the definitions."""
    prompt = list(j.prompt)

    def visible(k: int, end: bool = False) -> list[tuple[int, ...]]:
        ids = apply_backspaces(prompt + gen[:k], len(prompt), j.unit, B, TOK.delim_id)
        return _finished(ids[len(prompt) :], end)

    precise = wrong_written = 0
    starts = [k for k in range(len(gen)) if gen[k] == B and (k == 0 or gen[k - 1] != B)]
    for s in starts:
        e = next((k for k in range(s, len(gen)) if gen[k] != B), len(gen))
        before, kept = visible(s), len(visible(e))
        err = j.first_error(before)
        precise += err is not None and len(before) > max(kept, err)
    for k, t in enumerate(gen):
        if t == TOK.delim_id:
            wrong_written += j.first_error(visible(k + 1)) is not None
    end = apply_backspaces(prompt + gen, len(prompt), j.unit, B, TOK.delim_id)[len(prompt) :]
    if finished and end and end[-1] != TOK.delim_id:
        wrong_written += j.first_error(visible(len(gen), end=True)) is not None
    return precise, wrong_written > 0, wrong_written


def naive_errors(j: Judge, gen: list[int], finished: bool) -> tuple[int, int]:
    """(steps finished on a right prefix, wrong ones among them) straight from the definitions:
    at each step finished, the visible finished steps before it and with it."""
    prompt = list(j.prompt)
    fresh = errors = 0
    ends = [k + 1 for k, t in enumerate(gen) if t == TOK.delim_id]
    end = apply_backspaces(prompt + gen, len(prompt), j.unit, B, TOK.delim_id)[len(prompt) :]
    if finished and end and end[-1] != TOK.delim_id:
        ends.append(len(gen))
    for k in ends:
        ids = apply_backspaces(prompt + gen[:k], len(prompt), j.unit, B, TOK.delim_id)
        steps = split_steps(ids[len(prompt) :], TOK.delim_id)
        if j.first_error(steps[:-1]) is None:
            fresh += 1
            errors += j.first_error(steps) is not None
    return fresh, errors


PIECES = [*RIGHT, "7+9+0=17\n", "4+8+1=14\n", "3+", "7+9+0=1", "6\n", "\n", "ans 937"]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["token", "step"]),
    st.lists(st.one_of(st.sampled_from(PIECES), st.integers(1, 4)), max_size=12),
    st.booleans(),
)
def test_analyze_agrees_with_the_naive_definitions(
    unit: str, parts: list[str | int], finished: bool
) -> None:
    j, gen = judge(unit), stream(*parts)
    if j.visible_steps(gen) is None:  # deletes into the prompt: covered nowhere else
        return
    r = analyze(j, gen, finished)
    assert (r.precise_erases, r.made_error, r.wrong_steps_written) == naive(j, gen, finished)
    assert (r.fresh_steps, r.errors_made) == naive_errors(j, gen, finished)
    assert r.erased_wrong_steps is not None and r.wrong_steps_written is not None
    assert r.erased_wrong_steps <= r.erased_steps <= r.steps_written
    assert r.erased_wrong_steps <= r.wrong_steps_written
    assert r.precise_erases is not None and r.precise_erases <= r.erase_events


@pytest.mark.parametrize(("unit", "n"), [("token", 9), ("step", 1)])
def test_erasing_the_first_error_at_once_is_first_error_precise_recalled_and_repaired(
    unit: str, n: int
) -> None:
    r = report(unit, "7+9+0=17\n", n, *RIGHT)
    assert r.fresh_erases == 1 and r.first_error_erased is True and r.correct
    assert r.right_steps_erased == 0


def test_erasing_a_step_wrong_only_by_inheritance_is_precise_but_not_at_the_first_error() -> None:
    """The Countdown case in arithmetic: a wrong first step, then a step after it (wrong by
    inheritance), and an erase of that later step only. The old measure calls it precise (it
    erased a wrong step); it erased no error of its own, missed the first error, repaired
    nothing."""
    r = report("step", "7+9+0=17\n", "4+8+1=13\n", 1, "4+8+1=13\n", "3+5+1=9\n", "ans 936")
    assert r.precise_erases == 1  # what the old figure counts
    assert r.fresh_erases == 0 and r.first_error_erased is False and not r.correct
    assert (r.errors_made, r.steps_written) == (1, 5)


def test_erasing_right_steps_counts_as_over_erasure_and_no_error_leaves_recall_undefined() -> None:
    r = report("step", RIGHT[0], RIGHT[1], 2, RIGHT[0], *RIGHT[1:])
    assert r.right_steps_erased == 2 and r.fresh_erases == 0
    assert r.first_error_erased is None and r.correct


def test_the_first_error_figures_over_samples_beside_their_chance() -> None:
    from search.metrics import first_error

    caught = report("step", "7+9+0=17\n", 1, *RIGHT)  # first error erased, repaired
    missed = report("step", "7+9+0=17\n", "4+8+1=13\n", 1, "4+8+1=13\n", "3+5+1=9\n", "ans 936")
    clean = report("step", RIGHT[0], RIGHT[1], 2, RIGHT[0], *RIGHT[1:])  # erases right steps
    got = first_error([caught, missed, clean])
    assert got["first_error_precision"] == 1 / 3  # 3 erase events, one erased a fresh error
    assert got["first_error_recall"] == 1 / 2  # two samples erred, one caught at once
    assert got["repair_rate"] == 1.0
    # steps written: 5 + 5 + 6; fresh errors: 1 + 1 + 0; erased finished steps: 1 + 1 + 2
    assert got["chance_first_error_precision"] == 2 / 16
    assert got["chance_first_error_recall"] == 3 / 16
    assert got["over_erasure"] == 2 / 4
