"""Preference pairs as training sequences (search/pairs.py): what each side holds and where its
loss is, the right-step pair, the model's own continuation ending as it did, and rows made with
another unit refused."""

import dataclasses

import pytest

from search.pairs import PairError, pair_loss_tokens, preferences, wrong_step_len
from search.traces import table_rows
from tests.search.test_placement import FIX, ON, PARENT, WRONG, hand_built

B = "<|bksp|>"


@pytest.fixture
def arith():
    from search.tasks.arithmetic import ArithmeticTask

    task = ArithmeticTask(op="add", digits=3)
    return task, task.make_problem(347, 589)


def pair_row(arith, tok, unit, finished=True, continuation=ON):
    task, problem = arith
    result = hand_built(task, problem, tok, unit, PARENT, WRONG, tok.encode(continuation), FIX)
    branch = dataclasses.replace(result.branches[0], wrong_finished=finished)
    (row,) = table_rows(dataclasses.replace(result, branches=[branch]))["pairs"]
    return row, problem


def loss_text(tok, ids, mask):
    return tok.decode([t for t, m in zip(ids, mask, strict=True) if m])


@pytest.mark.parametrize("unit, n_bksp", [("step", 1), ("token", len(WRONG))])
def test_wrong_step_pair_sides_and_their_loss(arith, tok, unit, n_bksp):
    row, problem = pair_row(arith, tok, unit)
    (pref,) = preferences(row, unit, tok.bksp_id, tok.delim_id)
    prompt = problem.prompt + PARENT
    assert pref.prompt_len == len(row["prompt_ids"]) == len(tok.encode(prompt))
    assert tok.decode(pref.chosen) == prompt + WRONG + B * n_bksp + FIX
    assert tok.decode(pref.rejected) == prompt + WRONG + ON
    assert pref.chosen[-1] == pref.rejected[-1] == tok.eos_id
    # the wrong step carries no loss on either side; the backspaces and the fix, or the model's
    # own continuation, do (end-of-sequence included)
    assert loss_text(tok, pref.chosen, pref.chosen_mask) == B * n_bksp + FIX
    assert sum(pref.chosen_mask[-len(FIX) - 1 :]) == len(FIX) + 1
    assert loss_text(tok, pref.rejected, pref.rejected_mask) == ON
    assert sum(pref.rejected_mask) == len(ON) + 1
    assert wrong_step_len(row) == len(WRONG)
    assert pair_loss_tokens(row) == pref.loss_tokens


def test_the_rejected_side_ends_as_the_models_rollout_did(arith, tok):
    ended, _ = pair_row(arith, tok, "step", finished=True)
    cut, _ = pair_row(arith, tok, "step", finished=False)
    assert ended["rejected_ids"] == cut["rejected_ids"] + [tok.eos_id]
    # a wrong final step: nothing follows it but the end the model wrote
    last, _ = pair_row(arith, tok, "step", continuation="")
    (pref,) = preferences(last, "step", tok.bksp_id, tok.delim_id)
    assert pref.rejected_mask[-1] == 1 and sum(pref.rejected_mask) == 1


@pytest.mark.parametrize("unit, n_bksp", [("step", 1), ("token", len("4+8+1=13\n"))])
def test_right_step_pair_carries_on_against_erasing(arith, tok, unit, n_bksp):
    row, problem = pair_row(arith, tok, unit)
    assert len(preferences(row, unit, tok.bksp_id, tok.delim_id, right=False)) == 1
    wrong, right = preferences(row, unit, tok.bksp_id, tok.delim_id, right=True)
    assert (wrong.kind, right.kind) == ("wrong_step", "right_step")
    step, rest = FIX.split("\n", 1)
    prompt = problem.prompt + PARENT
    assert right.prompt_len == wrong.prompt_len
    assert tok.decode(right.chosen) == prompt + FIX
    assert tok.decode(right.rejected) == prompt + step + "\n" + B * n_bksp
    assert loss_text(tok, right.chosen, right.chosen_mask) == rest
    assert right.chosen_mask[-1] == 1  # end-of-sequence is part of carrying on
    assert loss_text(tok, right.rejected, right.rejected_mask) == B * n_bksp


def test_a_one_step_fix_has_no_right_step_pair(arith, tok):
    row, _ = pair_row(arith, tok, "step")
    w = wrong_step_len(row)
    one_step = row | {"chosen_ids": row["chosen_ids"][: w + 1] + tok.encode("ans 936") + [1]}
    kinds = [p.kind for p in preferences(one_step, "step", tok.bksp_id, tok.delim_id, right=True)]
    assert kinds == ["wrong_step"]


def test_rows_made_with_another_unit_or_token_are_refused(arith, tok):
    row, _ = pair_row(arith, tok, "step")  # one step backspace erases the whole wrong step
    with pytest.raises(PairError, match="trace.unit=token"):
        preferences(row, "token", tok.bksp_id, tok.delim_id)
    other = tok.encode("z")[0]
    with pytest.raises(PairError, match=f"backspace id {other}"):
        preferences(row, "step", other, tok.delim_id)
    digit = tok.encode("4")[0]  # would erase into the prompt at once
    with pytest.raises(PairError, match=f"backspace id {digit}"):
        preferences(row, "step", digit, tok.delim_id)
