"""The detector measure (measure/detector.py): ranking figures against hand-computed cases and
brute force; decision points against a hand-checked stream; the batched teacher-forced
probabilities against one sequence at a time, and the whole figure against a direct computation
that labels and positions the samples on its own."""

import numpy as np
import pytest
import torch

from pipeline.measure.detector import (
    average_precision,
    backspace_probs,
    decision_points,
    detector_figures,
    figures,
    pr_curve,
    reliability,
    roc_auc,
    roc_curve,
    sample_points,
)
from search.tasks import TaskCapabilityError
from search.tasks.arithmetic import ArithmeticTask
from search.tokenizer import CharTokenizer
from search.tree import Judge, derive_seed
from search.types import Ask, Problem
from tests.models import tiny_checkpoint
from workers.hf import load_checkpoint
from workers.policy import Decoding, load, make_policy
from workers.tokens import add_backspace_token

TIES = ([0.9, 0.8, 0.8, 0.3], [1, 1, 0, 0])


# ---- ranking figures ------------------------------------------------------------------------


def test_roc_auc_hand_cases():
    assert roc_auc(*TIES) == pytest.approx(3.5 / 4)  # the tied pair counts half
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert roc_auc([0.5] * 5, [0, 1, 0, 1, 1]) == 0.5
    assert roc_auc([0.1, 0.2], [1, 1]) is None
    assert roc_auc([0.1, 0.2], [0, 0]) is None
    assert roc_auc([], []) is None


def _pairwise_auc(s, y):
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def _brute_ap(s, y):
    """Mean over positives of the precision at their own score (ties: everything >= it)."""
    return np.mean([y[s >= t].mean() for t in s[y == 1]])


@pytest.mark.parametrize("seed", range(5))
def test_random_cases_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    s = np.round(rng.random(200), 1)  # few distinct values: many ties
    y = (rng.random(200) < 0.2 + 0.5 * s).astype(int)
    assert roc_auc(s, y) == pytest.approx(_pairwise_auc(s, y), abs=1e-12)
    assert average_precision(s, y) == pytest.approx(_brute_ap(s, y), abs=1e-12)
    fpr, tpr = np.array(roc_curve(s, y)).T
    assert np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2) == pytest.approx(roc_auc(s, y))


def test_curves_and_average_precision_hand_cases():
    assert roc_curve(*TIES) == [[0, 0], [0, 0.5], [0.5, 1], [1, 1]]
    assert np.allclose(pr_curve(*TIES), [[0.5, 1], [1, 2 / 3], [1, 0.5]])
    assert average_precision(*TIES) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert average_precision([0.1, 0.2], [1, 1]) is None
    assert roc_curve([0.1], [0]) == [] and pr_curve([0.1], [1]) == []


def test_reliability_bins():
    rows = reliability([0.05, 0.15, 0.12, 0.95, 1.0], [0, 1, 0, 1, 1], bins=10)
    assert [(r["lo"], r["hi"], r["n"]) for r in rows] == [(0, 0.1, 1), (0.1, 0.2, 2), (0.9, 1, 2)]
    assert [r["observed"] for r in rows] == [0, 0.5, 1]
    assert [r["mean_p"] for r in rows] == pytest.approx([0.05, 0.135, 0.975])


def test_figures_counts_and_thinned_curves():
    rng = np.random.default_rng(0)
    s, y = rng.random(1000), (rng.random(1000) < 0.3).astype(int)
    f = figures(s.tolist(), y.tolist(), max_points=50)
    assert f["n_positions"] == 1000 and f["positives"] == int(y.sum())
    assert f["base_rate"] == y.mean()
    assert len(f["roc"]) <= 50 and f["roc"][0] == [0, 0] and f["roc"][-1] == [1, 1]
    assert sum(r["n"] for r in f["reliability"]) == 1000
    empty = figures(None, [1, 0])
    assert empty["roc_auc"] is None and empty["base_rate"] == 0.5 and empty["roc"] == []


# ---- decision points ------------------------------------------------------------------------


@pytest.fixture
def arith_judge():
    task = ArithmeticTask("add", digits=2)
    problem = task.make_problem(12, 34)  # reference: 2+4+0=6 / 1+3+0=4 / ans 46
    tok = CharTokenizer()
    return Judge(task, problem, tok, tuple(tok.encode(problem.prompt)), "step"), tok


@pytest.mark.parametrize(
    "text, finished, at, labels",
    [
        ("2+4+0=6\n1+3+0=5\nans 56", True, [15, 23], [0, 1]),  # steps after the error left out
        ("2+4+0=6\n1+3+0=4\nans 46", True, [15, 23, 29], [0, 0, 0]),  # last: at end-of-sequence
        ("2+4+0=6\n1+3+0=4\nans 47", True, [15, 23, 29], [0, 0, 1]),
        ("2+4+0=6\n1+3+0=4\nans 46", False, [15, 23], [0, 0]),  # cut by the budget: no verdict
        ("2+4+0=7\n1+3", False, [15], [1]),
        ("2+4+0=6\n", True, [15], [0]),
        ("", True, [], []),
    ],
)
def test_decision_points_hand_checked(arith_judge, text, finished, at, labels):
    judge, tok = arith_judge  # prompt "12+34=?\n": 8 tokens, so generated index i is 8 + i
    points = decision_points(judge, tok.encode(text), finished)
    assert list(points.at) == at and list(points.labels) == labels
    assert points.ids == judge.prompt + tuple(tok.encode(text))
    assert points.token_at == ()


def test_decision_points_at_every_token(arith_judge):
    judge, tok = arith_judge
    points = decision_points(judge, tok.encode("2+4+0=6\n1+3+0=5\nans 56"), True, "any")
    assert list(points.token_at) == list(range(8, 24))
    assert list(points.token_labels) == [0] * 8 + [1] * 8
    assert set(points.at) <= set(points.token_at)


def test_decision_points_keep_each_steps_mean_and_least_logprob(arith_judge):
    judge, tok = arith_judge
    ids = tok.encode("2+4+0=6\n1+3+0=5\nans 56")
    logprobs = [-0.5] * 8 + [-0.1] * 7 + [-2.0] + [-9.0] * 6  # the steps after the error: unread
    points = decision_points(judge, ids, True, logprobs=logprobs)
    assert points.logprobs == ((-0.5, -0.5), (-0.1 * 7 / 8 - 2.0 / 8, -2.0))
    assert decision_points(judge, ids, True).logprobs == ()


# ---- on a tiny model ------------------------------------------------------------------------


class NineTask:
    """A step is wrong iff it holds a 9: exact, and random text gets both labels."""

    name = "nine"
    step_delimiter = "\n"
    has_step_checker = True

    def problems(self, split, n):
        return [Problem(f"nine-{i}", f"{i}+{i}=?\n", "") for i in range(n)]

    def reference(self, problem):
        return []

    def is_correct(self, problem, steps):
        return False

    def first_error(self, problem, steps):
        return next((i for i, s in enumerate(steps) if "9" in s), None)

    def solution(self, problem, lines):
        return list(lines)

    def detection_step(self, problem, steps):
        return None

    has_wrong_steps = False

    def wrong_step(self, problem, before, rng):
        raise TaskCapabilityError("the nine task makes no wrong steps")


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def tiny(request, tmp_path_factory):
    """A tiny model with `<|bksp|>` given a random output row, loaded as evaluation loads it."""
    path = tiny_checkpoint(tmp_path_factory.mktemp("detector"), request.param)
    model, hf = load_checkpoint(path, "cpu")
    bksp = add_backspace_token(model, hf, "<|bksp|>")
    with torch.no_grad():  # a row of its own, so p(bksp) varies with the context
        model.get_output_embeddings().weight[bksp] = torch.randn(
            32, generator=torch.Generator().manual_seed(1)
        )
    model.save_pretrained(path, safe_serialization=True)
    hf.save_pretrained(path)
    return load("transformers", path, "\n", "<|bksp|>", "step", device="cpu")


def _single(model, ids, at, bksp):
    with torch.no_grad():
        logits = model(torch.tensor([list(ids)])).logits[0]
    return logits[list(at)].double().softmax(-1)[:, bksp].tolist()


def test_batched_probabilities_equal_one_sequence_at_a_time(tiny):
    task = NineTask()
    points = sample_points(tiny, task, task.problems("test", 6), 0, 3, 40)
    assert len({len(p.ids) for p in points}) > 1  # right padding is exercised
    at = [(*p.at, *range(len(p.ids))) for p in points]  # decision points and every position
    batched = backspace_probs(
        tiny.backend, [p.ids for p in points], at, tiny.tokenizer.bksp_id, max_batch=5
    )
    for p, a, got in zip(points, at, batched, strict=True):
        want = _single(tiny.backend, p.ids, a, tiny.tokenizer.bksp_id)
        assert got == pytest.approx(want, abs=1e-5)


def _step_ends(tok, prompt, rollout):
    """Positions and labels of a stream's step ends, found from its text (char tokenizer)."""
    pieces = tok.decode(rollout.tokens).split("\n")
    if pieces[-1] == "" or not rollout.finished:
        pieces = pieces[:-1]  # ended on a delimiter, or a step cut by the budget
    delimited = rollout.tokens.count(tok.delim_id)  # the first `delimited` pieces had one
    at, labels, end = [], [], len(prompt) - 1
    for i, piece in enumerate(pieces):
        end += len(tok.encode(piece)) + (i < delimited)
        at.append(end)
        labels.append(int("9" in piece))
        if "9" in piece:
            break
    return at, labels


def _direct(loaded, problems, seed, samples, max_new_tokens):
    """Samples, step ends and labels found by this test on its own; p(bksp) one at a time."""
    tok = loaded.tokenizer
    policy = make_policy(loaded, Decoding(1.0, max_new_tokens, ban_backspace=True))
    prompts = [tok.encode(p.prompt) for p in problems]
    asks = [
        Ask(tuple(pr), samples, "end", derive_seed(seed, "detector", p.id))
        for p, pr in zip(problems, prompts, strict=True)
    ]
    scores, labels = [], []
    for prompt, rollouts in zip(prompts, policy.sample(asks), strict=True):
        for r in rollouts:
            at, y = _step_ends(tok, prompt, r)
            scores += _single(loaded.backend, prompt + list(r.tokens), at, tok.bksp_id)
            labels += y
    return scores, labels


def test_detector_figures_match_a_direct_computation(tiny):
    task = NineTask()
    problems = task.problems("test", 6)
    got = detector_figures(tiny, task, problems, seed=3, samples=4, max_new_tokens=32)
    scores, labels = _direct(tiny, problems, 3, 4, 32)
    assert 0 < sum(labels) < len(labels)  # both classes, or the test says nothing
    assert got["n_positions"] == len(labels) and got["positives"] == sum(labels)
    assert got["samples"] == 24 and got["note"] is None
    assert got["roc_auc"] == pytest.approx(roc_auc(scores, labels), abs=1e-9)
    assert got["pr_auc"] == pytest.approx(average_precision(scores, labels), abs=1e-9)
    strata = got["stratified"]  # beside the pooled AUC: within strata, and trivial scores
    assert strata["detector"]["pooled"] == pytest.approx(got["roc_auc"], abs=1e-9)
    assert set(strata["trivial"]) == {"step_index", "step_length", "step_mean_logprob",
                                      "step_min_logprob"}  # fmt: skip
    assert set(strata["lift"]) == {"pooled", "within_step_index", "within_problem"}
    assert got["mean_p_wrong"] == pytest.approx(
        np.mean([s for s, y in zip(scores, labels, strict=True) if y]), abs=1e-6
    )


def test_every_token_figure_and_json(tiny):
    import json

    task = NineTask()
    got = detector_figures(tiny, task, task.problems("test", 4), 0, 2, 30, backspace_at="any")
    assert got["tokens"]["n_positions"] >= got["n_positions"]
    assert json.loads(json.dumps(got)) == got  # plain JSON types


def test_model_without_a_backspace_row_gets_counts_and_a_note(tmp_path):
    path = tiny_checkpoint(tmp_path)  # the tokenizer gains the token; the model has no row
    loaded = load("transformers", path, "\n", "<|bksp|>", "step", device="cpu")
    task = NineTask()
    got = detector_figures(loaded, task, task.problems("test", 3), 0, 2, 30)
    assert got["n_positions"] > 0 and got["roc_auc"] is None and got["pr_auc"] is None
    assert "no output row" in got["note"]


def test_task_without_a_step_checker_is_skipped(tiny):
    task = NineTask()
    task.has_step_checker = False
    got = detector_figures(tiny, task, task.problems("test", 2), 0)
    assert got["n_positions"] == 0 and "no exact step checker" in got["note"]
