"""experiments/unseen_problems.py: which problems it reads and what it prints, with the model's
evaluation replaced by a record of its arguments (`evaluate_model` is tested in pipeline/)."""

import json
import sys

import pytest

from experiments import unseen_problems
from pipeline.config import load_config
from pipeline.loading import task_from_config


def test_it_reads_unseen_training_and_validation_problems_greedy_and_sampled(
    monkeypatch, capsys, tmp_path
):
    seen = []

    def fake(path, task, problems, cfg, banned=None, detector=True):
        seen.append(([p.prompt for p in problems], cfg.eval.temperatures, banned, detector))
        settings = {"greedy": {"accuracy": 0.5}}
        settings |= {f"T={t}": {"accuracy": 0.25} for t in cfg.eval.temperatures}
        return {"settings": settings}

    monkeypatch.setattr(unseen_problems, "evaluate_model", fake)
    sets = ["bootstrap.n_problems=30"]
    argv = ["unseen", "--set", sets[0], "--skip", "30", "--n", "4", "--sampled"]
    monkeypatch.setattr(sys, "argv", [*argv, "--model", f"m={tmp_path}"])
    unseen_problems.main()
    row = json.loads(capsys.readouterr().out)
    assert row == {
        "model": "m",
        "path": str(tmp_path),
        "unseen training problems": 0.5,
        "unseen training problems T=1.0": 0.25,
        "validation": 0.5,
        "validation T=1.0": 0.25,
    }
    task = task_from_config(load_config("countdown-tiny", sets).task)
    train = [p.prompt for p in task.problems("train", 34)]
    test = {p.prompt for p in task.problems("test", 100)}
    (unseen, temps, banned, det), (val, *_) = seen
    assert unseen == train[30:] and not set(train[:30]) & set(unseen)  # none trained on
    assert val == [p.prompt for p in task.problems("validation", 4)] and not test & set(val)
    assert temps == [1.0] and banned is False and det is False
    # without --sampled: greedy only; a --skip inside the bootstrap's problems is refused
    monkeypatch.setattr(sys, "argv", [*argv[:-1], "--model", f"m={tmp_path}"])
    unseen_problems.main()
    assert "T=1.0" not in capsys.readouterr().out and seen[-1][1] == []
    monkeypatch.setattr(sys, "argv", ["unseen", "--set", sets[0], "--skip", "29", "--model", "m=x"])
    with pytest.raises(SystemExit, match="skip at least those"):
        unseen_problems.main()
