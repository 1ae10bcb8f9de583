"""Where a correction trace puts its backspaces (`trace.placement`): at the error, where the
failure shows, or right after the first wrong token. Whatever the placement, what stays visible
is the good steps and the fix."""

import pytest

from search.backspace import BackspaceError, apply_backspaces
from search.driver import run_batched
from search.tasks.arithmetic import ArithmeticTask
from search.tasks.countdown import CountdownTask
from search.traces import PLACEMENTS, table_rows
from search.tree import FailingBranch, SearchResult, split_steps
from search.types import Rollout
from tests.conftest import make_tree, scripted
from tests.search.test_tree_search import omega

B = "<|bksp|>"


def hand_built(task, problem, tok, unit, parent, wrong, continuation, fix):
    """A search result with one failing branch from `parent` (texts of whole steps) and one
    correct rollout `fix` from that parent."""
    tree = make_tree(task, problem, tok, unit)
    steps = tuple(split_steps(tok.encode(parent), tok.delim_id))
    tree.add_rollouts(tree.node(steps), [Rollout(tuple(tok.encode(fix)), True)])
    branch = FailingBranch(
        steps, tuple(tok.encode(wrong)), tuple(continuation), error_mc=0.0, error_n=1
    )
    return SearchResult(tree, [branch])


def correction(result, placement):
    (row,) = [
        r for r in table_rows(result, placement=placement)["traces"] if r["kind"] == "correction"
    ]
    return row


def visible(tok, row, unit):
    ids = apply_backspaces(row["input_ids"], row["prompt_len"], unit, tok.bksp_id, tok.delim_id)
    return tok.decode(ids[row["prompt_len"] :])


# 347+589: 7+9+0=16 / 4+8+1=13 / 3+5+1=9 / ans 936; the model writes 12 for 13 and goes on
PARENT = "7+9+0=16\n"
WRONG = "4+8+1=12\n"
ON = "3+5+1=9\nans 926"
FIX = "4+8+1=13\n3+5+1=9\nans 936"


@pytest.fixture
def arith():
    task = ArithmeticTask(op="add", digits=3)
    return task, task.make_problem(347, 589)


@pytest.mark.parametrize(
    "unit, placement, raw",
    [
        ("step", "at_error", PARENT + WRONG + B + FIX),
        ("token", "at_error", PARENT + WRONG + B * 9 + FIX),
        # arithmetic cannot tell before the end: erase the wrong answer and all that led to it;
        # the last erased step has no delimiter, and one backspace still takes it whole
        ("step", "at_detection", PARENT + WRONG + ON + B * 3 + FIX),
        ("token", "at_detection", PARENT + WRONG + ON + B * (9 + 15) + FIX),
        # right after the "2" of "=12": the first token that differs from the fix
        ("step", "at_token", PARENT + "4+8+1=12" + B + FIX),
        ("token", "at_token", PARENT + "4+8+1=12" + B * 8 + FIX),
    ],
)
def test_arithmetic_placements(arith, tok, unit, placement, raw):
    task, problem = arith
    result = hand_built(task, problem, tok, unit, PARENT, WRONG, tok.encode(ON), FIX)
    row = correction(result, placement)
    assert row["raw_text"] == raw
    assert row["visible_text"] == visible(tok, row, unit) == PARENT + FIX
    assert row["n_backspaces"] == raw.count(B)
    assert row["input_ids"][-1] == tok.eos_id
    # erased tokens carry no loss; backspaces and the fix do
    erased = {p for s, e in row["erase_spans"] for p in range(s, e)}
    assert all(
        row["loss_mask"][p] == (p not in erased)
        for p in range(row["prompt_len"], len(row["input_ids"]))
    )


def test_at_token_backspace_follows_the_exact_checkers_first_wrong_token(arith, tok):
    """Two paths to the same position: the first backspace of the trace, and the first character
    where the wrong step stops being a prefix of the reference step."""
    task, problem = arith
    reference = task.reference(problem)[1]
    for wrong in ("4+8+1=12\n", "4+8+0=12\n", "5+8+1=14\n", "4+8+1=131\n"):
        result = hand_built(task, problem, tok, "token", PARENT, wrong, (), FIX)
        row = correction(result, "at_token")
        first_bksp = row["input_ids"].index(tok.bksp_id)
        k = next(i for i in range(len(wrong)) if not (reference + "\n").startswith(wrong[: i + 1]))
        assert first_bksp == row["prompt_len"] + len(PARENT) + k + 1, wrong
        assert row["n_backspaces"] == k + 1
        assert row["visible_text"] == PARENT + FIX


def test_at_token_erases_a_wrong_step_that_is_a_prefix_of_the_fix_whole(arith, tok):
    task, problem = arith
    result = hand_built(task, problem, tok, "token", PARENT, "4+8+1=1", (), FIX)
    assert correction(result, "at_token")["raw_text"] == PARENT + "4+8+1=1" + B * 7 + FIX


def test_at_detection_reads_the_continuation_after_its_own_backspaces(arith, tok):
    task, problem = arith
    own = tok.encode("3+5+1=8\n") + [tok.bksp_id] + tok.encode(ON)  # fixed a step, still wrong
    result = hand_built(task, problem, tok, "step", PARENT, WRONG, own, FIX)
    assert correction(result, "at_detection")["raw_text"] == PARENT + WRONG + ON + B * 3 + FIX
    # a rollout that erased its own wrong step leaves nothing after it to erase
    back = tok.encode("3+5+1=9\n") + [tok.bksp_id] * 2 + tok.encode("4+8+1=14\nans 946")
    result = hand_built(task, problem, tok, "step", PARENT, WRONG, back, FIX)
    assert correction(result, "at_detection")["raw_text"] == PARENT + WRONG + B + FIX


# 24 from 1 2 3 4: 3*2=6 / 6*4=24 / 24*1=24. After 6+4=10 the target is out of reach (1 10),
# which shows one step later, when one number is left that is not 24
CD_PARENT = "3*2=6\n"
CD_FIX = "6*4=24\n24*1=24"


@pytest.fixture
def countdown():
    task = CountdownTask()
    return task, task.make_problem(24, [1, 2, 3, 4])


@pytest.mark.parametrize(
    "continuation, erased, n_step",
    [
        ("10+1=11", "6+4=10\n10+1=11", 2),  # dead end seen at the last step (no delimiter)
        ("10+1=12\n12*2=24", "6+4=10\n10+1=12\n", 2),  # an invalid step: seen there, not later
        ("", "6+4=10\n", 1),  # nothing after the wrong step: erase what there is
        ("10-1=9\n", "6+4=10\n10-1=9\n", 2),  # unfinished before the dead end: all of it
    ],
)
def test_countdown_at_detection_erases_through_the_visible_dead_end(
    countdown, tok, continuation, erased, n_step
):
    task, problem = countdown
    solution = [CD_PARENT.strip(), *CD_FIX.split("\n")]
    assert task.is_correct(problem, solution) and task.first_error(problem, solution) is None
    for unit, n in (("step", n_step), ("token", len(erased))):
        result = hand_built(
            task, problem, tok, unit, CD_PARENT, "6+4=10\n", tok.encode(continuation), CD_FIX
        )
        row = correction(result, "at_detection")
        assert row["raw_text"] == CD_PARENT + erased + B * n + CD_FIX, unit
        assert row["visible_text"] == visible(tok, row, unit) == CD_PARENT + CD_FIX
    error = correction(result, "at_error")
    assert error["raw_text"] == CD_PARENT + "6+4=10\n" + B * 7 + CD_FIX


def test_detection_step_countdown_sees_dead_ends_arithmetic_nothing(countdown, arith, tok):
    task, problem = countdown
    steps = ["3*2=6", "6+4=10", "10+1=11"]
    assert task.first_error(problem, steps) == 1  # the error
    assert task.detection_step(problem, steps) == 2  # where it shows
    assert task.detection_step(problem, steps[:2]) is None
    judge = make_tree(*arith, tok).judge
    wrong = split_steps(tok.encode(PARENT + WRONG + ON), tok.delim_id)
    assert judge.first_error(wrong) == 1 and judge.detection_step(wrong) is None


@pytest.mark.parametrize("name", ["arithmetic", "countdown"])
@pytest.mark.parametrize("unit", ["step", "token"])
def test_every_placement_leaves_the_same_visible_text(tok, name, unit):
    """On the scripted policy's searches: the placements differ only in what they erase, which
    starts with the wrong step's first wrong token (at_token), the wrong step (at_error), or
    runs on to where the task sees the failure (at_detection): the last erased step, or the
    whole continuation when it sees none."""
    task = ArithmeticTask(digits=4) if name == "arithmetic" else CountdownTask(seed=1)
    problems = task.problems("train", 8)
    policy = scripted(task, problems, tok, error_rate=0.05, trap_rate=0.5, unit=unit)
    results = run_batched([omega(task, p, tok, n_mc=8, budget=6) for p in problems], policy)
    n_rows = 0
    for result in results:
        judge = result.tree.judge
        rows = [table_rows(result, 1, p)["traces"] for p in PLACEMENTS]
        for err, det, tokn in zip(*rows, strict=True):
            if err["kind"] != "correction":
                assert err == det == tokn
        corrections = [[r for r in rs if r["kind"] == "correction"] for rs in rows]
        for branch, err, det, tokn in zip(result.branches, *corrections, strict=True):
            n_rows += 1
            assert err["visible_text"] == det["visible_text"] == tokn["visible_text"]
            wrong, rest = list(branch.wrong_step), list(branch.wrong_continuation)
            assert erased(err) == wrong
            assert wrong[: len(erased(tokn))] == erased(tokn)
            assert erased(det) == wrong + rest[: len(erased(det)) - len(wrong)]
            steps = [*branch.parent, *split_steps(erased(det), tok.delim_id)]
            seen = judge.detection_step(steps)
            if erased(det) != wrong + rest:
                assert seen == len(steps) - 1
            elif name == "arithmetic":
                assert seen is None
    assert n_rows > 5


def erased(row):
    """The tokens of a correction trace's (one) erased span."""
    ((start, end),) = row["erase_spans"]
    return row["input_ids"][start:end]


def test_an_unknown_placement_is_refused(arith, tok):
    task, problem = arith
    result = hand_built(task, problem, tok, "step", PARENT, WRONG, (), FIX)
    with pytest.raises(BackspaceError, match="placement 'at_end' is not one of"):
        table_rows(result, placement="at_end")  # type: ignore[arg-type]
