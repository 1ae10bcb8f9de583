"""Best-of-N and majority vote at the backtrack arm's generated tokens (measure.evaluation)."""

from pipeline.loading import task_from_config
from pipeline.measure.evaluation import _majority, controls
from pipeline.measure.settings import Setting
from search.types import Rollout
from tests.conftest import tiny_cfg


class Report:
    def __init__(self, correct):
        self.correct = correct


class Tok:
    bksp_id = 99

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


class Loaded:
    tokenizer = Tok()


def sample(text, logprob, correct):
    ids = tuple(ord(c) for c in text)
    return Rollout(ids, True, tuple([logprob] * len(ids))), Report(correct)


def test_majority_votes_on_the_last_line_then_takes_the_likeliest():
    chosen = [
        sample("1+1\nans 2", -0.1, False),  # likeliest overall, but a minority answer
        sample("1+1\nans 3", -0.9, False),
        sample("0+1\nans 3", -0.5, True),  # the likeliest of the majority
    ]
    assert _majority(chosen, Loaded(), None).correct is True


def test_controls_spend_the_given_tokens(trained):
    out, _ = trained
    cfg = tiny_cfg(out)
    task = task_from_config(cfg.task)
    problems = task.problems("test", 6)
    model = out / "bootstrap" / "model"
    one = controls(model, task, problems, cfg, Setting(1.0, 2), budget=[1.0] * 6)
    assert one["best_of_n"]["mean_n"] == 1.0  # a budget under one sample buys one sample
    assert one["best_of_n"]["per_problem"] == one["majority"]["per_problem"]
    big = controls(model, task, problems, cfg, Setting(1.0, 2), budget=[60.0] * 6)
    assert big["best_of_n"]["mean_n"] > 1
    assert big["best_of_n"]["generated_tokens"] <= 6 * 60 + 6 * 2 * cfg.sampling.max_new_tokens
