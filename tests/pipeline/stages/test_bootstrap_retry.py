"""Retry data (`bootstrap.retry_rate`): one reference step typed wrong, erased by one step
backspace and typed right; the wrong step is wrong by the task's exact checker; a rate of 0 changes
nothing."""

import json
import math
import random

import pytest
from transformers import AutoTokenizer

from pipeline import bootstrap_data
from pipeline.config import ConfigError, load_config
from pipeline.loading import task_from_config
from pipeline.stages import bootstrap
from search.backspace import apply_backspaces
from search.errors import HallucError
from search.tasks import countdown
from search.tasks.countdown import apply_step, solvable
from search.tasks.jsonl import JsonlTask
from tests.conftest import SMALL

PRESETS = ["arith-tiny", "countdown-tiny"]


def _solved(preset: str, rate: float, n: int, seed: int = 0):
    cfg = load_config(preset, [f"bootstrap.retry_rate={rate}", f"bootstrap.seed={seed}"])
    task = task_from_config(cfg.task)
    return task, bootstrap_data.solutions(task, task.problems("train", n), cfg.bootstrap)


def _is_retry(found) -> bool:
    return any(n for _, n in found)


@pytest.mark.parametrize("preset", PRESETS)
def test_share_of_retries_matches_the_rate(preset):
    n, p = 400, 0.3
    _, solved = _solved(preset, p, n)
    retries = sum(_is_retry(found) for _, found in solved)
    assert len(solved) == n
    assert abs(retries - n * p) < 4 * math.sqrt(n * p * (1 - p))  # about 37 of 120


@pytest.mark.parametrize("preset", PRESETS)
def test_backspaces_leave_exactly_the_reference(preset):
    task, solved = _solved(preset, 0.5, 200)
    tok = bootstrap.build_tokenizer([p.prompt + t for p, f in solved for t, _ in f])
    tok.add_special_tokens({"additional_special_tokens": ["<|bksp|>"]})
    examples = bootstrap_data.encode_examples(tok, solved, "\n", "<|bksp|>")
    bksp, delim = tok.get_vocab()["<|bksp|>"], tok.get_vocab()["\n"]
    retried = set()  # (index of the retried step, number of steps)
    for (problem, found), ex in zip(solved, examples, strict=True):
        ids, n = ex["input_ids"], ex["prompt_len"]
        reference = task.reference(problem)
        visible = apply_backspaces(ids, n, "step", bksp, delim)
        assert tok.decode(visible[n:-1]) == "\n".join(reference)  # less end-of-sequence
        assert sum(ex["loss_mask"]) == len(visible) - n + ids.count(bksp)  # none on the wrong step
        if _is_retry(found):
            assert ids.count(bksp) == 1 and found[0][0].endswith("\n")  # the backspace ends a step
            *before, wrong = found[0][0].split("\n")[:-1]  # steps before, the wrong step
            k = len(before)
            assert before == reference[:k] and wrong != reference[k]
            retried.add((k, len(reference)))
    assert any(k == 0 for k, _ in retried)  # the first step, right after the prompt
    assert any(k == n - 1 for k, n in retried)  # the last, without a delimiter of its own


@pytest.mark.parametrize("preset", PRESETS)
def test_every_wrong_step_is_flagged_by_the_exact_checker(preset):
    cfg = load_config(preset, [])
    task = task_from_config(cfg.task)
    rng = random.Random(0)
    dropped_carries = 0
    for problem in task.problems("train", 100):
        reference = task.reference(problem)
        for k in range(len(reference)):
            wrong = task.wrong_step(problem, reference[:k], rng)
            assert wrong != reference[k]
            assert task.first_error(problem, [*reference[:k], wrong]) == k, (problem, k, wrong)
            dropped_carries += "+0=" in wrong and "+0=" not in reference[k]
    if preset == "arith-tiny":
        assert dropped_carries > 0  # both kinds of arithmetic slip are drawn


def test_countdown_wrong_step_is_a_losing_legal_move_else_an_arithmetic_slip(monkeypatch):
    task = task_from_config(load_config("countdown-tiny", []).task)
    problem = task.problems("train", 1)[0]
    state = tuple(sorted(problem.meta["numbers"]))
    target = problem.meta["target"]
    rng = random.Random(0)
    for _ in range(20):
        after = apply_step(state, task.wrong_step(problem, [], rng))
        assert after is not None and not solvable(after, target)
    monkeypatch.setattr(countdown, "solvable", lambda numbers, target: True)  # no move loses
    slip = task.wrong_step(problem, [], rng)
    assert apply_step(state, slip) is None
    assert slip.split("=")[0] == task.reference(problem)[0].split("=")[0]


@pytest.mark.parametrize("preset", PRESETS)
def test_rate_zero_is_todays_data_and_retries_draw_apart(preset):
    task, plain = _solved(preset, 0.0, 100)
    assert plain == [(p, [("\n".join(task.reference(p)), 0)]) for p, _ in plain]
    _, mixed = _solved(preset, 0.3, 100)
    kept = [(a, b) for a, b in zip(plain, mixed, strict=True) if not _is_retry(b[1])]
    assert 0 < len(kept) < 100 and all(a == b for a, b in kept)
    _, other = _solved(preset, 0.3, 100, seed=1)
    assert other != mixed  # the retries follow bootstrap.seed


def test_retry_bootstrap_writes_an_erase_model(tmp_path):
    def cfg(out, *extra):
        return load_config("arith-tiny", [f"run.out_dir={out}", *SMALL, *extra])

    bootstrap.main(cfg(tmp_path, "bootstrap.retry_rate=0.5", "sampling.stream_tokens=8"))
    model = tmp_path / "bootstrap" / "model"
    meta = json.loads((model / "halluc.json").read_text())
    assert meta == {"mode": "erase", "unit": "step", "bksp_token": "<|bksp|>", "backspace": True}
    tok = AutoTokenizer.from_pretrained(model)
    assert tok.convert_tokens_to_ids("<|bksp|>") not in (None, tok.unk_token_id)
    compute = json.loads((tmp_path / "bootstrap" / "compute.json").read_text())
    assert compute["examples"] == 60 and 15 <= compute["retry_examples"] <= 45
    with pytest.raises(HallucError, match="bksp_token"):  # the model carries the token it has
        bootstrap.main(cfg(tmp_path, "bootstrap.retry_rate=0.5", "trace.bksp_token=<|b|>"))
    plain = cfg(tmp_path / "p")
    bootstrap.train(plain, task_from_config(plain.task), tmp_path / "p" / "model")
    assert not (tmp_path / "p" / "model" / "halluc.json").exists()
    assert json.loads((tmp_path / "p" / "compute.json").read_text())["retry_examples"] == 0


def test_bad_rates_and_combinations_are_refused(tmp_path):
    for rate in (-0.1, 1.5):
        with pytest.raises(ConfigError, match=r"bootstrap\.retry_rate"):
            load_config("arith-tiny", [f"bootstrap.retry_rate={rate}"])
    with pytest.raises(ConfigError, match=r"bootstrap\.retry_rate.*data=optimal"):
        load_config("countdown-tiny", ["bootstrap.retry_rate=0.2", "bootstrap.data=backspace"])
    with pytest.raises(ConfigError, match=r"bootstrap\.retry_source"):
        load_config("arith-tiny", ["bootstrap.retry_source=model"])
    cfg = load_config(
        "arith-tiny",
        [f"run.out_dir={tmp_path}", *SMALL, "bootstrap.retry_rate=0.5", "trace.unit=token"],
    )
    with pytest.raises(HallucError, match=r"retry_rate=0\.5.*trace\.unit=step"):
        bootstrap.main(cfg)
    assert not (tmp_path / "bootstrap" / "model").exists()

    no_wrong_steps = JsonlTask(str(tmp_path / "unread.jsonl"))  # refused before it is read
    with pytest.raises(HallucError, match="retry_rate=0"):
        bootstrap_data.solutions(no_wrong_steps, [], cfg.bootstrap)


def test_dead_end_placement_erases_at_the_visible_dead_end_back_to_the_wrong_move():
    """bootstrap.retry_placement=at_detection (countdown): the wrong move is played on to one
    number left that is not the target; the backspaces come right after that last move (where
    end-of-sequence would go, no delimiter before them), one per move back to the wrong one, and
    leave the reference; every erased move is legal but the wrong one may not be."""
    sets = ["bootstrap.retry_rate=1.0", "bootstrap.retry_placement=at_detection"]
    cfg = load_config("countdown-tiny", sets)
    task = task_from_config(cfg.task)
    solved = bootstrap_data.solutions(task, task.problems("train", 200), cfg.bootstrap)
    tok = bootstrap.build_tokenizer([p.prompt + t for p, f in solved for t, _ in f])
    tok.add_special_tokens({"additional_special_tokens": ["<|bksp|>"]})
    examples = bootstrap_data.encode_examples(tok, solved, "\n", "<|bksp|>")
    bksp, delim = tok.get_vocab()["<|bksp|>"], tok.get_vocab()["\n"]
    played_on = 0
    for (problem, found), ex in zip(solved, examples, strict=True):
        ids, n = ex["input_ids"], ex["prompt_len"]
        reference = task.reference(problem)
        visible = apply_backspaces(ids, n, "step", bksp, delim)
        assert tok.decode(visible[n:-1]) == "\n".join(reference)
        (written, erases), _ = found
        state = tuple(problem.meta["numbers"])
        moves = written.split("\n")
        k = next(i for i, m in enumerate(moves) if i >= len(reference) or m != reference[i])
        assert moves[:k] == reference[:k]
        if apply_step_through(state, moves[: k + 1]) is None:  # an invalid wrong move
            assert written.endswith("\n") and erases == 1  # erased where it stands
            continue
        played_on += 1
        assert not written.endswith("\n")  # the backspaces stand where the end would
        assert erases == len(moves) - k  # the last move, then each move back to the wrong one
        end = apply_step_through(state, moves)
        assert end is not None and len(end) == 1 and end[0] != problem.meta["target"]
        assert not solvable(apply_step_through(state, moves[: k + 1]), problem.meta["target"])
        i = ids.index(bksp)
        assert ids[i - 1] != delim and ids[i : i + erases] == [bksp] * erases
    assert played_on > 150  # on this task the wrong move is almost always a legal losing one
    with pytest.raises(ConfigError, match="retry_placement"):
        load_config("countdown-tiny", [*sets[1:], "bootstrap.retry_rate=0"])
    arith = load_config("arith-tiny", sets)
    with pytest.raises(HallucError, match="dead end"):
        t = task_from_config(arith.task)
        bootstrap_data.solutions(t, t.problems("train", 4), arith.bootstrap)


def apply_step_through(state, moves):
    for move in moves:
        state = apply_step(state, move) if state is not None else None
    return state
