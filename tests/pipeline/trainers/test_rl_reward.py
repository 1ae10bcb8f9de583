"""The rl reward with the erase credit (`pipeline.trainers.rl_streams.reward`, issue 28 item 2) on
hand-built streams of 347+589 (steps 7+9+0=16 / 4+8+1=13 / 3+5+1=9 / ans 936), step unit."""

import dataclasses

import pytest

from pipeline.config import RlConfig
from pipeline.trainers import rl
from pipeline.trainers.rl_streams import Stream, reward
from tests.search.test_metrics import RIGHT, report

CREDIT = RlConfig(token_cost=0.0, erase_bonus=0.5, erase_penalty=0.25, repair_bonus=0.3)


def test_outcome_only_when_the_credit_is_off():
    r = report("step", "7+9+0=17\n", 1, *RIGHT)
    plain = RlConfig(token_cost=0.001)
    assert reward(r, plain) == pytest.approx(1.0 - 0.001 * r.n_tokens)


def test_erasing_the_first_error_earns_the_bonus_and_the_repair():
    r = report("step", "7+9+0=17\n", 1, *RIGHT)  # the wrong first step, erased at once, then right
    assert reward(r, CREDIT) == pytest.approx(1.0 + 0.5 + 0.3)


def test_erasing_a_step_wrong_by_inheritance_earns_nothing():
    # the first step is wrong; the second is wrong only because it follows it; erasing the second
    # leaves the first error in place: no bonus, no repair, no penalty (it was not right)
    r = report("step", "7+9+0=17\n", "4+8+1=13\n", 1, "4+8+1=14\n", "3+5+1=9\n", "ans 1036")
    assert not r.correct and reward(r, CREDIT) == pytest.approx(0.0)


def test_erasing_right_steps_costs_the_penalty_per_step():
    r = report("step", RIGHT[0], RIGHT[1], 1, 1, *RIGHT[0:])  # two right steps erased, then right
    assert r.right_steps_erased == 2
    assert reward(r, CREDIT) == pytest.approx(1.0 - 2 * 0.25)


def test_weights_are_checked():
    with pytest.raises(ValueError, match="erase_bonus"):
        dataclasses.replace(CREDIT, erase_bonus=-1.0)


def test_each_step_records_what_the_credit_acted_on_and_the_totals_add_up():
    """compute.json says how often the bonus, the penalty and the repair fired (whatever their
    weights), per step in the history and in total; a checkpoint from before these totals
    resumes them at 0."""

    def stream(fresh, right, repaired):
        row = {"input_ids": [1, 2, 3], "loss_mask": [0, 1, 1]}
        return Stream(row, 0.0, repaired, 2, fresh, (0.0, 0.0), (), fresh, right, repaired)

    state = {"history": [], **dict.fromkeys(rl.TOTALS, 0)}  # as an older checkpoint saved it
    rl._count(state, [[stream(1, 0, True), stream(0, 2, False)]], {}, 0)
    rl._count(state, [[stream(2, 1, False)], [stream(0, 0, False)]], {}, 1)
    first, second = state["history"]
    assert (first["fresh_erases"], first["right_steps_erased"], first["repairs"]) == (1, 2, 1)
    assert (second["fresh_erases"], second["right_steps_erased"], second["repairs"]) == (2, 1, 0)
    assert [state[k] for k in rl.CREDITED] == [3, 3, 1]
