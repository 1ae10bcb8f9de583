"""Bootstrap data forms (Countdown): optimal paths, Stream-of-Search streams, backspace streams;
equal loss-bearing tokens per batch; a stream output is judged by the solution it states."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
from transformers import AutoTokenizer

from pipeline import bootstrap_data
from pipeline.config import load_config
from pipeline.loading import task_from_config
from pipeline.stages import bootstrap
from search.backspace import apply_backspaces
from search.errors import HallucError
from search.tasks.countdown import sos_heldout_targets
from search.tasks.countdown_stream import search_trace
from search.tokenizer import CharTokenizer
from search.tree import Judge
from tests.conftest import SMALL, tiny_cfg


def _cfg(out, *extra):
    # the forms of the data alone: retries (a lever of their own) go with optimal data only
    return load_config(
        "countdown-tiny", [f"run.out_dir={out}", *SMALL, "bootstrap.retry_rate=0", *extra]
    )


def _examples(data: str, erased_loss: bool = False):
    cfg = _cfg("unused", f"bootstrap.data={data}")
    task = task_from_config(cfg.task)
    solved = bootstrap_data.solutions(task, task.problems("train", 30), cfg.bootstrap)
    tok = bootstrap.build_tokenizer([p.prompt + t for p, f in solved for t, _ in f])
    tok.add_special_tokens({"additional_special_tokens": ["<|bksp|>"]})
    examples = bootstrap_data.encode_examples(tok, solved, "\n", "<|bksp|>", erased_loss)
    return task, solved, tok, examples


def test_backspace_examples_leave_the_found_path_and_erased_moves_carry_no_loss():
    task, solved, tok, examples = _examples("backspace")
    bksp, delim = tok.get_vocab()["<|bksp|>"], tok.get_vocab()["\n"]
    with_backspaces = 0
    for (problem, _), ex in zip(solved, examples, strict=True):
        ids, n = ex["input_ids"], ex["prompt_len"]
        visible = apply_backspaces(ids, n, "step", bksp, delim)
        steps = tok.decode(visible[n:-1]).split("\n")  # less end-of-sequence
        assert task.is_correct(problem, steps)
        # loss on what stays visible and on the backspaces, none on the erased moves
        assert sum(ex["loss_mask"]) == len(visible) - n + ids.count(bksp)
        assert all(ex["loss_mask"][i] == 1 for i in range(n, len(ids)) if ids[i] == bksp)
        with_backspaces += bksp in ids
    assert with_backspaces > len(examples) // 2  # most searches meet a dead end first
    _, _, _, full = _examples("backspace", erased_loss=True)
    assert all(sum(e["loss_mask"]) == len(e["input_ids"]) - e["prompt_len"] for e in full)


def test_stream_output_is_judged_by_its_last_path():
    cfg = _cfg("unused")
    task = task_from_config(cfg.task)
    problem = task.problems("train", 1)[0]
    tok = CharTokenizer()
    judge = Judge(task, problem, tok, tuple(tok.encode(problem.prompt)), "step")
    stream = search_trace(problem, "stream")[0][0]
    assert "back " in stream or len(stream.split("\n")) == 2
    assert judge.correct(tuple(tok.encode(stream)), True)
    dead = stream.rsplit("\n", 1)[0]  # the stream stopped one move short
    assert not judge.correct(tuple(tok.encode(dead)), True)
    assert not judge.correct(tuple(tok.encode(stream + "\nback 1 2 3")), True)


def test_batches_by_tokens_hold_equal_loss_tokens():
    _, _, _, examples = _examples("stream")
    b = dataclasses.replace(_cfg("unused").bootstrap, batch_tokens=500)
    batches = bootstrap_data.Batches(examples, b, random.Random(0))
    for _ in range(20):
        batch = batches.next()
        tokens = sum(sum(e["loss_mask"]) for e in batch)
        assert 500 <= tokens < 500 + max(sum(e["loss_mask"]) for e in batch)


def test_fresh_batches_use_every_example_once_before_any_twice():
    examples = [{"input_ids": [i], "loss_mask": [1], "prompt_len": 0} for i in range(10)]
    b = dataclasses.replace(_cfg("unused").bootstrap, batch_size=4, fresh=True)
    batches = bootstrap_data.Batches(examples, b, random.Random(0))
    seen = [e["input_ids"][0] for _ in range(5) for e in batches.next()]
    assert sorted(seen[:10]) == list(range(10))  # the first pass: each once
    assert len(set(seen[10:20])) == 10 and batches.epochs == 2.0
    drawn = bootstrap_data.Batches(examples, dataclasses.replace(b, fresh=False), random.Random(0))
    repeats = [e["input_ids"][0] for _ in range(5) for e in drawn.next()]
    assert len(set(repeats[:10])) < 10  # with replacement across batches: some twice already


def test_backspace_bootstrap_writes_an_erase_model(tmp_path):
    figures = bootstrap.main(_cfg(tmp_path, "bootstrap.data=optimal+backspace"))
    model = tmp_path / "bootstrap" / "model"
    meta = json.loads((model / "halluc.json").read_text())
    assert meta == {"mode": "erase", "unit": "step", "bksp_token": "<|bksp|>", "backspace": True}
    tok = AutoTokenizer.from_pretrained(model)
    assert tok.convert_tokens_to_ids("<|bksp|>") not in (None, tok.unk_token_id)
    compute = json.loads((tmp_path / "bootstrap" / "compute.json").read_text())
    assert compute["optimizer_steps"] == 3 and compute["loss_tokens"] > 0
    assert compute["examples"] == 60
    assert "T=1.0" in figures["settings"]
    with pytest.raises(HallucError, match="bksp_token"):  # the model carries the token it has
        bootstrap.main(_cfg(tmp_path, "bootstrap.data=optimal+backspace", "trace.bksp_token=<|b|>"))


@pytest.mark.parametrize("attention", ["stream", "tried"])
def test_backspace_data_attended_in_another_mode_trains_and_decodes_in_it(
    tmp_path, monkeypatch, attention
):
    """`bootstrap.attention=stream` (every token visible) or `tried` (the moves tried at the
    branch point stay in view): the collator trains in that mode and the model records it, so
    decoding attends as training did; another hash than erase attention's, and data without
    backspaces refused (tests/pipeline/test_config.py pins the hash of a config made before the
    key)."""
    from pipeline.config import ConfigError, config_hash
    from workers.collate import BacktrackCollator
    from workers.policy import load

    modes = []

    def collator(mode, *args, **kwargs):
        modes.append(mode)
        return BacktrackCollator(mode, *args, **kwargs)

    monkeypatch.setattr(bootstrap, "BacktrackCollator", collator)
    cfg = _cfg(tmp_path, "bootstrap.data=backspace", f"bootstrap.attention={attention}")
    model = bootstrap.trained_model(cfg, task_from_config(cfg.task))
    meta = json.loads((model / "halluc.json").read_text())
    assert modes == [attention] and meta["mode"] == attention and meta["backspace"]
    loaded = load("transformers", model, "\n", "<|bksp|>", "step", device="cpu")
    assert loaded.mode == attention and loaded.trained
    assert config_hash(cfg) != config_hash(_cfg(tmp_path, "bootstrap.data=backspace"))
    with pytest.raises(ConfigError, match="has none"):
        _cfg(tmp_path, "bootstrap.data=optimal", f"bootstrap.attention={attention}")


def test_stream_forms_need_countdown_and_step_unit(tmp_path):
    with pytest.raises(HallucError, match="countdown only"):
        bootstrap.main(tiny_cfg(tmp_path / "a", "bootstrap.data=stream"))
    with pytest.raises(HallucError, match="trace.unit=step"):
        bootstrap.main(_cfg(tmp_path / "b", "bootstrap.data=backspace", "trace.unit=token"))
    assert not (tmp_path / "b" / "bootstrap" / "model").exists()


def test_stream_of_search_heldout_split():
    # the held-out targets of Stream of Search's generator (seed 4, targets 10..100)
    assert sos_heldout_targets(10, 100, 4) == [14, 39, 41, 57, 62, 81, 87, 89, 96]
    cfg = load_config("countdown-small", ["task.countdown.heldout_sos_seed=4"])
    task = task_from_config(cfg.task)
    assert task.heldout == [14, 39, 41, 57, 62, 81, 87, 89, 96]
    assert {p.meta["target"] for p in task.problems("test", 30)} <= set(task.heldout)
    with pytest.raises(Exception, match="at most one of"):
        task_from_config(
            load_config(
                "countdown-small",
                ["task.countdown.heldout_sos_seed=4", "task.countdown.heldout_share=0.2"],
            ).task
        )
