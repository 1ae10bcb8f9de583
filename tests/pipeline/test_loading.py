"""`pipeline.loading`: a prompt that leaves the model too little room is refused before any
work, naming the problem, the lengths and the setting that asks for the room."""

import pytest

from pipeline.loading import PromptTooLong, check_prompts, context_length
from search.types import Problem
from tests.conftest import tiny_cfg


def test_a_prompt_without_room_for_the_new_tokens_is_refused(trained):
    run, _ = trained
    model = run / "bootstrap" / "model"
    limit = context_length(model)
    cfg = tiny_cfg(run)
    fits = Problem("p-short", "1+1=?\n", "2")
    tight = Problem("p-tight", "9" * (limit - 20) + "\n", "9")  # room for 19 more tokens
    check_prompts(cfg, model, [fits, tight], 19, "sampling.max_new_tokens")
    with pytest.raises(PromptTooLong, match=r"p-tight: its prompt is \d+ tokens .* too few for 20"):
        check_prompts(cfg, model, [fits, tight], 20, "sampling.max_new_tokens")


def test_fresh_problems_give_each_round_training_problems_no_earlier_round_searched():
    import dataclasses

    from pipeline.config import config_hash, load_config
    from pipeline.loading import round_problems, task_from_config

    def at(cfg, r):
        return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, round=r))

    same = load_config("countdown-tiny", ["task.n_train=20"])
    fresh = load_config("countdown-tiny", ["task.n_train=20", "search.fresh_problems=true"])
    task = task_from_config(same.task)
    first = task.problems("train", 20)
    assert round_problems(at(same, 0), task) == round_problems(at(same, 2), task) == first
    rounds = [round_problems(at(fresh, r), task) for r in range(3)]
    assert rounds[0] == first and all(len(p) == 20 for p in rounds)
    ids = [p.id for ps in rounds for p in ps]
    assert len(set(ids)) == 60  # no problem searched twice
    assert rounds[2] == task.problems("train", 60)[40:]
    # off, the hash it had before the option existed (the preset as it was then: its bootstrap
    # was re-based later, which changes every hash of the preset on its own)
    before = [
        "task.n_train=20",
        "bootstrap.steps=2000",
        "bootstrap.lr=0.003",
        "model.precision=fp32",
    ]
    assert config_hash(load_config("countdown-tiny", before)) == "bcb1c981a361"
    assert config_hash(fresh) != config_hash(same)


def test_fresh_problems_that_run_out_fail_with_what_to_change():
    import dataclasses

    from pipeline.config import load_config
    from pipeline.loading import round_problems
    from search.errors import HallucError

    class Few:  # a finite dataset of 50 training problems, as a jsonl file is
        name = "jsonl"

        def problems(self, split, n):
            return [Problem(f"p{i}", "1+1=?\n", "2") for i in range(50)][:n]

    cfg = load_config("arith-tiny", ["task.n_train=20", "search.fresh_problems=true"])
    at = lambda r: dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, round=r))  # noqa: E731
    assert [p.id for p in round_problems(at(1), Few())] == [f"p{i}" for i in range(20, 40)]
    with pytest.raises(HallucError, match=r"round 2 searches training problems 41..60, but task"):
        round_problems(at(2), Few())
