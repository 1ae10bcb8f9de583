"""The arm table (`pipeline.arms`): the config's names are the table's, and what `halluc run`
and the layout do with an arm is what its record says."""

import typing
from pathlib import Path

import pytest

from pipeline.arms import ARMS, REQUIRED, ArmError, ArmName, SelectArm, arm, in_order
from pipeline.config import load_config
from pipeline.layout import RunLayout
from pipeline.stages import run


def test_the_config_allows_exactly_the_tables_names():
    assert typing.get_args(ArmName) == tuple(a.name for a in ARMS)
    assert typing.get_args(SelectArm) == tuple(a.name for a in ARMS if a.selects)
    assert REQUIRED == ("backtrack", "baseline")
    assert [a.name for a in ARMS if a.sets_budget] == ["backtrack"]  # one budget, run first
    assert ARMS[0].sets_budget


def test_run_order_and_unknown_names():
    assert [a.name for a in in_order(["sft_rl", "baseline", "backtrack"])] == [
        "backtrack",
        "baseline",
        "sft_rl",
    ]
    with pytest.raises(ArmError, match=r"no arm is called 'ppo'; the arms are backtrack, "):
        arm("ppo")


@pytest.mark.parametrize("a", ARMS, ids=lambda a: a.name)
def test_each_arm_trains_with_its_records_objective_from_its_records_model(a):
    cfg = load_config("arith-tiny", ["run.arms=[baseline,backtrack,dpo,rl,sft_rl]"])
    t = run.arm_config(cfg, a.name, 1).train
    assert t.objective == a.objective
    assert t.token_warmup == (0 if a.starts_from else cfg.train.token_warmup)
    layout = RunLayout(Path("/runs/x"))
    for r in (0, 1):
        if a.starts_from:  # that arm's model of the same round
            assert layout.model(r, a.name) == layout.round(r, a.starts_from).model
        else:  # its own model of the round before, the start model in round 0
            before = layout.round(r - 1, a.name).model if r else layout.start_model
            assert layout.model(r, a.name) == before
