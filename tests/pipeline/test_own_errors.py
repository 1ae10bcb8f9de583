"""Retry data from the model's own errors (`bootstrap.retry_model`): every erased step is one the
model wrote, on its own right prefix, and the exact checker rejects it; the redo is right."""

import json

import pytest

from pipeline import own_errors
from pipeline.config import ConfigError, load_config
from pipeline.loading import task_from_config
from pipeline.stages import bootstrap
from search.errors import HallucError
from tests.conftest import tiny_cfg


def test_every_erased_step_is_the_models_own_and_wrong(trained, monkeypatch):
    out, _ = trained
    cfg = tiny_cfg(out, "bootstrap.retry_rate=0.5", f"bootstrap.retry_model={out}/bootstrap/model")
    task = task_from_config(cfg.task)
    problems = task.problems("train", 40)
    written: list[str] = []  # every sample the model wrote, as text
    make = own_errors.make_policy

    def recording(loaded, decoding):
        policy = make(loaded, decoding)
        inner = policy.sample

        def sample(asks):
            got = inner(asks)
            written.extend(loaded.tokenizer.decode(list(r.tokens)) for rs in got for r in rs)
            return got

        policy.sample = sample
        return policy

    monkeypatch.setattr(own_errors, "make_policy", recording)
    retries = own_errors.own_retries(cfg, task, problems, out / "bootstrap" / "model")
    d = task.step_delimiter
    assert 0 < sum(r is not None for r in retries) < len(problems)  # right about half the time
    for problem, pieces in zip(problems, retries, strict=True):
        if pieces is None:
            continue
        (typed, n), (redo, zero) = pieces
        assert n == 1 and zero == 0 and typed.endswith(d)
        steps = typed[: -len(d)].split(d)
        before, wrong = steps[:-1], steps[-1]
        assert task.first_error(problem, before) is None  # a right prefix
        assert task.first_error(problem, steps) == len(before)  # the checker rejects the step
        assert any(w.startswith(typed[: -len(d)]) for w in written)  # the model wrote it
        assert task.is_correct(problem, [*before, *redo.split(d)])  # the redo solves it
        assert wrong not in redo.split(d)[:1]


def test_countdown_continuation_goes_on_from_the_models_own_prefix():
    task = task_from_config(load_config("countdown-tiny").task)
    problem = task.make_problem(24, [4, 6, 1])
    assert task.first_error(problem, ["4*6=24"]) is None  # not the solver's first move
    rest = own_errors.continuation(task, problem, ["4*6=24"])
    assert task.is_correct(problem, ["4*6=24", *rest])
    with pytest.raises(HallucError, match="right prefix"):
        own_errors.continuation(task, problem, ["4+6=10"])


def test_a_bootstrap_on_own_errors_trains_with_the_backspace(trained, tmp_path):
    out, _ = trained
    model = out / "bootstrap" / "model"
    cfg = tiny_cfg(
        tmp_path,
        "bootstrap.retry_rate=0.5",
        f"bootstrap.retry_model={model}",
        "bootstrap.steps=5",
        "bootstrap.n_problems=100",
        "eval.n_problems=4",
        "trace.unit=step",
    )
    bootstrap.main(cfg)
    compute = json.loads((tmp_path / "bootstrap" / "compute.json").read_text())
    assert 0 < compute["retry_examples"] < 100
    meta = json.loads((tmp_path / "bootstrap" / "model" / "halluc.json").read_text())
    assert meta["mode"] == "erase" and meta["backspace"]
    with pytest.raises(ConfigError, match="retry_rate"):
        tiny_cfg(tmp_path / "b", f"bootstrap.retry_model={model}")


def test_the_logprob_detector_erases_the_first_unlikely_step_after_a_right_prefix(
    trained, monkeypatch
):
    """`retry_detector=logprob`: the erased step is the first whose mean token log-probability
    (as the model drew it) is below retry_tau, right or wrong, after steps that are all right."""
    out, _ = trained
    model = out / "bootstrap" / "model"
    sets = ["bootstrap.retry_rate=0.5", f"bootstrap.retry_model={model}"]
    tau = -0.05  # the trained tiny model's steps sit on both sides of it
    cfg = tiny_cfg(out, *sets, "bootstrap.retry_detector=logprob", f"bootstrap.retry_tau={tau}")
    task = task_from_config(cfg.task)
    problems = task.problems("train", 40)
    drawn: dict[str, list[tuple[list[str], list[float]]]] = {}  # prompt -> (steps, means)
    make = own_errors.make_policy

    def recording(loaded, decoding):
        assert decoding.logprobs and decoding.ban_backspace
        policy = make(loaded, decoding)
        inner = policy.sample

        def sample(asks):
            got = inner(asks)
            tok = loaded.tokenizer
            for a, rs in zip(asks, got, strict=True):
                for r in (r for r in rs if r.finished):  # unfinished samples are passed over
                    text, means, start = tok.decode(list(r.tokens)), [], 0
                    for step in text.split(task.step_delimiter):
                        n = len(step) + 1  # one token per character, then the delimiter
                        lp = r.logprobs[start : start + n]
                        means.append(sum(lp) / len(lp) if lp else 0.0)
                        start += n
                    drawn.setdefault(tok.decode(list(a.prefix)), []).append(
                        (text.split(task.step_delimiter), means)
                    )
            return got

        policy.sample = sample
        return policy

    monkeypatch.setattr(own_errors, "make_policy", recording)
    retries = own_errors.own_retries(cfg, task, problems, model)
    d, right_erased = task.step_delimiter, 0
    assert 0 < sum(r is not None for r in retries) < len(problems)
    for problem, pieces in zip(problems, retries, strict=True):
        if pieces is None:
            continue
        (typed, n), (redo, _) = pieces
        steps = typed[: -len(d)].split(d)
        k = len(steps) - 1
        assert n == 1 and task.first_error(problem, steps[:k]) is None  # a right prefix
        assert task.is_correct(problem, [*steps[:k], *redo.split(d)])
        # the first sample whose first unlikely step follows a right prefix: this one
        first = next(
            (s, m)
            for s, m in drawn[problem.prompt]
            if (j := next((i for i, x in enumerate(m) if x < tau), None)) is not None
            and task.first_error(problem, s[:j]) is None
        )
        assert first[0][: k + 1] == steps and first[1][k] < tau
        assert all(x >= tau for x in first[1][:k])
        right_erased += task.first_error(problem, steps) is None
    assert right_erased > 0  # the detector's decisions, not the checker's
    with pytest.raises(ConfigError, match="retry_detector"):
        tiny_cfg(out, "bootstrap.retry_rate=0.5", "bootstrap.retry_detector=logprob")
