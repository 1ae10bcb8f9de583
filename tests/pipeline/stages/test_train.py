"""Training on traces: the loss is where the mask says, parameters move, the model reloads, a
killed run resumes to the same weights, and `halluc eval` reads the result."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from pipeline.config import ConfigError
from pipeline.config.keys import config_hash
from pipeline.layout import RunLayout
from pipeline.shards import ShardError
from pipeline.stages import eval as evaluate
from pipeline.stages import train
from pipeline.trainers import sft
from pipeline.trainers.job import Job
from tests.conftest import CURVES, read_curves, tiny_cfg
from workers.erase import BLOCKED_SDPA
from workers.hf import CheckpointError, load_checkpoint

STEPS = ["train.max_steps=12", "train.save_steps=6", "train.batch_size=8"]


def cfg_for(out, *extra):
    return tiny_cfg(out, *STEPS, *extra)


def _round0(run):
    """What round 0 trains from and where: the start model and the round's layout."""
    layout = RunLayout(run)
    return layout.model(0), layout.round(0)


@pytest.mark.parametrize("mode", ["erase", "stream"])
def test_loss_only_on_kept_tokens_and_backspaces(searched, mode):
    model, tok, collate, ds = train.prepare(
        Job(cfg_for(searched, f"train.mode={mode}"), *_round0(searched))
    )
    rows = [ds[i] for i in range(8)]
    batch = collate(rows)
    labels = batch["labels"]
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        keep = torch.tensor(row["loss_mask"], dtype=torch.bool)
        assert torch.equal(labels[i, :n] != -100, keep)
    with torch.no_grad():
        out = model(**batch)
    logits = out.logits[:, :-1].reshape(-1, out.logits.shape[-1])
    target = labels[:, 1:].reshape(-1)
    per_token = torch.nn.functional.cross_entropy(
        logits, target, reduction="none", ignore_index=-100
    )
    assert torch.all(per_token[target == -100] == 0)  # prompt and erased tokens: no loss
    assert torch.isclose(per_token.sum() / (target != -100).sum(), out.loss, atol=1e-5)
    erased = sum(row["loss_mask"][row["prompt_len"] :].count(0) for row in rows)
    assert erased > 0  # the batch really holds erased tokens


def test_training_moves_parameters_and_saves_a_model_that_reloads(searched, tmp_path):
    cfg = cfg_for(searched, "run.round=0", "train.mode=erase")
    before, _ = load_checkpoint(searched / "bootstrap" / "model", "cpu")
    path = train.main(cfg)
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert "<|bksp|>" in tok.get_vocab() and model.config.vocab_size >= len(tok)
    moved = [
        n
        for n, p in model.named_parameters()
        if n in dict(before.named_parameters())
        and p.shape == dict(before.named_parameters())[n].shape
        and not torch.equal(p, dict(before.named_parameters())[n])
    ]
    assert len(moved) > 5
    assert json.loads((path / "halluc.json").read_text())["mode"] == "erase"
    # it trained on blocked SDPA (workers.erase.use_blocked_attention), which a fresh process
    # has not registered: the checkpoint must not name it
    assert BLOCKED_SDPA not in (path / "config.json").read_text()
    assert not (path.parent / "checkpoints").exists()
    result = evaluate.main(cfg)  # the eval stage picks the round's trained model
    assert result["mode"] == "erase" and result["model"] == str(path)
    assert set(result["settings"]) == {
        "greedy",
        "T=1.0",
        "greedy, backspace banned",
        "T=1.0, backspace banned",
    }
    assert (path.parent.parent / "eval.json").exists()  # the round's one eval.json


def test_killed_training_resumes_to_the_same_weights(searched, tmp_path, monkeypatch):
    def trained_in(name, kill_at=None):
        import shutil

        out = tmp_path / name
        shutil.copytree(searched / "bootstrap", out / "bootstrap")
        shutil.copytree(searched / "round-0" / "search", out / "round-0" / "search")
        cfg = cfg_for(out, "train.mode=erase")
        if kill_at is not None:
            real = Trainer.training_step
            calls = {"n": 0}

            def dies(self, *a, **kw):
                calls["n"] += 1
                if calls["n"] == kill_at:
                    raise KeyboardInterrupt
                return real(self, *a, **kw)

            monkeypatch.setattr(Trainer, "training_step", dies)
            with pytest.raises(KeyboardInterrupt):
                train.main(cfg)
            monkeypatch.setattr(Trainer, "training_step", real)
            assert any((out / "round-0" / "train" / "checkpoints").glob("checkpoint-6"))
            assert not (out / "round-0" / "train" / "model").exists()
        return AutoModelForCausalLM.from_pretrained(train.main(cfg))

    whole, resumed = trained_in("whole"), trained_in("killed", kill_at=9)
    for (n, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), n
    # the curves show each step once: the killed run's steps after its checkpoint are hidden
    train_dir = tmp_path / "killed" / "round-0" / "train"
    assert len(list((train_dir / "tb").glob("events.*"))) == 2  # the killed run's, the rerun's
    for tag, points in read_curves(train_dir).items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), tag
    assert [s for s, _ in read_curves(train_dir)["train/loss"]] == [1, 10]
    assert read_curves(tmp_path / "whole" / "round-0" / "train").keys() >= CURVES


def test_curves_change_no_weight_and_no_figure(searched, tmp_path):
    """TensorBoard on (the default) and off: the same weights, bit for bit, and compute.json."""
    import shutil

    def trained_in(name, *extra):
        out = tmp_path / name
        shutil.copytree(searched / "bootstrap", out / "bootstrap")
        shutil.copytree(searched / "round-0" / "search", out / "round-0" / "search")
        path = train.main(cfg_for(out, "train.mode=erase", *extra))
        return (path / "model.safetensors").read_bytes(), (path.parent / "compute.json")

    curves, compute = trained_in("curves")
    plain, plain_compute = trained_in("plain", "train.report_to=[]")
    assert curves == plain and compute.read_text() == plain_compute.read_text()
    assert not (tmp_path / "plain" / "round-0" / "train" / "tb").exists()
    got = read_curves(tmp_path / "curves" / "round-0" / "train")
    assert got.keys() >= CURVES and [s for s, _ in got["train/loss"]] == [1, 10]
    assert json.loads(compute.read_text())["optimizer_steps"] == 12


def test_bad_inputs(searched, tmp_path):
    with pytest.raises(ShardError, match="run `halluc search` first"):
        sft.load_traces(cfg_for(tmp_path), RunLayout(tmp_path).round(0))
    model, _ = load_checkpoint(searched / "bootstrap" / "model", "cpu")
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(CheckpointError, match="4D mask"):
        train.check_attention(model, "erase")
    train.check_attention(model, "stream")


@pytest.mark.ray
def test_ray_train_with_two_workers(searched, tmp_path):
    import shutil

    import ray

    out = tmp_path / "ray"
    shutil.copytree(searched / "bootstrap", out / "bootstrap")
    shutil.copytree(searched / "round-0" / "search", out / "round-0" / "search")
    try:
        path = train.main(cfg_for(out, "train.workers=2", "train.max_steps=4"))
    finally:
        ray.shutdown()
    assert AutoModelForCausalLM.from_pretrained(path)
    assert (path / "halluc.json").exists()


def test_error_weight_scales_exactly_the_two_targets_that_see_the_error(searched, tmp_path):
    model, tok, collate, ds = train.prepare(
        Job(cfg_for(searched, "train.error_weight=0.25"), *_round0(searched))
    )
    rows = [ds[i] for i in range(8)]
    batch = collate(rows)
    w = batch["loss_weights"]
    bksp = collate.bksp_id
    for i, row in enumerate(rows):
        seq = row["input_ids"]
        for t, tok_id in enumerate(seq):
            first_after = t > 0 and seq[t - 1] == bksp and tok_id != bksp
            expect = (
                0.0 if not row["loss_mask"][t] else (0.25 if tok_id == bksp or first_after else 1.0)
            )
            assert w[i, t].item() == expect, (i, t)
    assert (w == 0.25).sum() > 0
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = sft.WeightedTrainer(model=model, args=args, data_collator=collate)
    weighted = trainer.compute_loss(model, dict(batch))
    plain = dict(batch)
    plain.pop("loss_weights")
    with torch.no_grad():
        full = model(**plain).loss
    assert weighted.item() < full.item()  # the down-weighted targets are the hard ones
    assert torch.isclose(trainer.compute_loss(model, plain), full)
    assert not isinstance(trainer._get_train_sampler(ds), torch.utils.data.SequentialSampler)
    # train.curriculum: the rows' order is kept
    kept = sft.WeightedTrainer(model=model, args=args, data_collator=collate, sequential=True)
    assert isinstance(kept._get_train_sampler(ds), torch.utils.data.SequentialSampler)


def test_the_curriculum_reads_short_erases_first(searched):
    """The rows as `load_traces` reads them, stably sorted by the tokens each erases (counted
    from the spans it sorts by, and here again from the loss mask: erased tokens carry none)."""
    rnd = _round0(searched)[1]
    shuffled = sft.load_traces(cfg_for(searched), rnd)
    ordered = sft.load_traces(cfg_for(searched, "train.curriculum=true"), rnd)

    def erased(row):
        return row["loss_mask"][row["prompt_len"] :].count(0)

    rows = [shuffled[i] for i in range(len(shuffled))]
    assert [ordered[i] for i in range(len(ordered))] == sorted(rows, key=erased)
    assert erased(ordered[0]) < erased(ordered[len(ordered) - 1])


def test_untie_learns_the_backspace_output_row_apart_and_saves_an_ordinary_checkpoint(
    searched, tmp_path
):
    import shutil

    from pipeline.files import save_model

    out = tmp_path / "untied"
    shutil.copytree(searched / "bootstrap", out / "bootstrap")
    shutil.copytree(searched / "round-0" / "search", out / "round-0" / "search")
    tied, *_ = train.prepare(Job(cfg_for(out), *_round0(out)))
    assert tied.get_output_embeddings().weight is tied.get_input_embeddings().weight
    cfg = cfg_for(out, "train.untie=true")
    model, tok, collate, ds = train.prepare(Job(cfg, *_round0(out)))
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert head.data_ptr() != emb.data_ptr() and not model.config.tie_word_embeddings
    bksp = collate.bksp_id
    assert torch.equal(head, emb)  # a copy, backspace row included, until training moves it

    trained = AutoModelForCausalLM.from_pretrained(train.main(cfg))
    t_emb, t_head = trained.get_input_embeddings().weight, trained.get_output_embeddings().weight
    assert not trained.config.tie_word_embeddings and t_head.data_ptr() != t_emb.data_ptr()
    assert not torch.equal(t_head[bksp], head[bksp])  # the backspace's output row was learned
    assert not torch.allclose(t_head[bksp], t_emb[bksp], atol=1e-3)  # apart from its input row

    with torch.no_grad():  # an untied head that differs from the embeddings survives a reload
        head[bksp] += 1.0
    save_model(model, tok, tmp_path / "saved")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    x = torch.tensor([ds[0]["input_ids"]])
    with torch.no_grad():
        assert torch.equal(again(x).logits, model.eval()(x).logits)
    assert (
        AutoTokenizer.from_pretrained(tmp_path / "saved").convert_tokens_to_ids("<|bksp|>") == bksp
    )


def test_a_training_row_longer_than_the_context_is_refused(tmp_path):
    """Truncated nowhere silently: the row, its length and the model's are named."""
    from types import SimpleNamespace

    from datasets import Dataset

    rows = Dataset.from_dict({"input_ids": [[1] * 10, [1] * 40], "loss_mask": [[1] * 10, [1] * 40]})
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=32))
    rnd = RunLayout(tmp_path).round(0)
    with pytest.raises(
        ShardError, match=r"training row 1 of .* is 40 tokens and the model takes 32"
    ):
        train.check_lengths(rows, model, rnd)
    train.check_lengths(rows.select([0]), model, rnd)


def test_anchored_round_on_accumulated_data_equals_one_training_on_the_union(searched, tmp_path):
    """train.anchor=start with train.accumulate: round 1 trains from the start model on rounds 0
    and 1's rows, repeats dropped. Round 1's rows here repeat round 0's, so the union is round 0's
    rows: the same weights as training once on them from the start model."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(searched / "bootstrap", out / "bootstrap")
    for r in (0, 1):
        shutil.copytree(searched / "round-0" / "search", out / f"round-{r}" / "search")
    cfg = cfg_for(out, "train.anchor=start", "train.accumulate=true", "train.max_steps=4")
    layout = RunLayout(out)
    rows = sft.load_traces(cfg, layout.round(0))
    assert len({tuple(ids) for ids in rows["input_ids"]}) == len(rows)  # no repeats within
    assert train.base_of(cfg, layout, 1) == layout.start_model != layout.model(1)
    assert train.base_of(cfg_for(out), layout, 1) == layout.model(1)  # previous, the default
    earlier = train.earlier_of(cfg, layout, 1)
    assert earlier == (layout.round(0),)
    assert (
        train.earlier_of(cfg_for(out, "train.objective=dpo", "train.accumulate=true"), layout, 1)
        == ()
    )
    union = train.train(cfg, train.base_of(cfg, layout, 1), layout.round(1), earlier=earlier)
    once = train.train(cfg, layout.start_model, layout.round(0))
    a = AutoModelForCausalLM.from_pretrained(union)
    b = AutoModelForCausalLM.from_pretrained(once)
    for (n, x), (_, y) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(x, y), n
    assert (
        json.loads((out / "round-1" / "train" / "compute.json").read_text())["optimizer_steps"] == 4
    )


def test_replay_adds_the_bootstrap_data_as_the_share_asked_and_new_problems_each_round(searched):
    """train.replay=0.25: a quarter of what the round trains on is the bootstrap's own data, each
    row a training problem's prompt and its reference solution (arith-tiny: the optimal form)."""
    from pipeline.loading import task_from_config

    layout = RunLayout(searched)
    model, tok, collate = train.prepare_model(cfg_for(searched), layout.model(0), True)
    assert model.config._attn_implementation == BLOCKED_SDPA  # trains on blocked SDPA
    plain = sft.load(Job(cfg_for(searched), layout.model(0), layout.round(0)), tok, collate)
    cfg = cfg_for(searched, "train.replay=0.25")
    job = Job(cfg, layout.model(0), layout.round(0))
    rows = sft.load(job, tok, collate)
    extra = rows.select(range(len(plain), len(rows)))
    assert rows.select(range(len(plain)))["input_ids"] == plain["input_ids"]
    assert len(extra) == round(len(plain) / 3) > 0  # 1/4 of the whole is 1/3 of the round's
    task = task_from_config(cfg.task)
    truth = {
        p.prompt: task.step_delimiter.join(task.reference(p))
        for p in task.problems("train", cfg.bootstrap.n_problems)
    }
    for row in extra:
        p = row["prompt_len"]
        prompt = tok.decode(row["input_ids"][:p])
        assert prompt in truth and tok.decode(row["input_ids"][p:-1]) == truth[prompt]
        assert sum(row["loss_mask"]) == len(row["input_ids"]) - p  # the solution and the end
    later = cfg_for(searched, "train.replay=0.25", "run.round=1")
    nxt = sft.load(Job(later, layout.model(0), layout.round(0)), tok, collate)
    assert nxt.select(range(len(plain), len(nxt)))["input_ids"] != extra["input_ids"]
    with pytest.raises(ConfigError, match="replay=1.0"):
        cfg_for(searched, "train.replay=1.0")


def test_replay_only_trains_on_as_many_rows_all_the_bootstraps(searched):
    """train.replay_only (replay's control): the whole that replay=0.25 gives, every row a
    bootstrap row, none of the round's selections."""
    layout = RunLayout(searched)
    model, tok, collate = train.prepare_model(cfg_for(searched), layout.model(0), True)
    plain = sft.load(Job(cfg_for(searched), layout.model(0), layout.round(0)), tok, collate)
    with_replay = cfg_for(searched, "train.replay=0.25")
    mixed = sft.load(Job(with_replay, layout.model(0), layout.round(0)), tok, collate)
    only = cfg_for(searched, "train.replay=0.25", "train.replay_only=true")
    rows = sft.load(Job(only, layout.model(0), layout.round(0)), tok, collate)
    assert len(rows) == round(len(plain) / 0.75) == pytest.approx(len(mixed), abs=1)
    assert not set(map(tuple, rows["input_ids"])) & set(map(tuple, plain["input_ids"]))
    unset = cfg_for(searched, "train.replay=0.25", "train.replay_only=false")
    assert config_hash(only) != config_hash(with_replay) == config_hash(unset)
    with pytest.raises(ConfigError, match="replay_only"):
        cfg_for(searched, "train.replay_only=true")


def test_a_round_in_another_mode_than_its_start_model_says_so(searched, tmp_path, caplog):
    """A start model that records one attention mode (its halluc.json) trained in another
    `train.mode`: the round trains and records the config's mode, and a warning names both."""
    import shutil

    base = tmp_path / "start"
    shutil.copytree(RunLayout(searched).model(0), base)
    (base / "halluc.json").write_text(
        json.dumps({"mode": "tried", "unit": "step", "bksp_token": "<|bksp|>", "backspace": True})
    )
    with caplog.at_level("WARNING", logger="pipeline.stages.train"):
        train.prepare_model(cfg_for(searched), base, True)
    assert "attention mode tried" in caplog.text and "train.mode=erase" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="pipeline.stages.train"):
        train.prepare_model(cfg_for(searched, "train.mode=tried"), base, True)
    assert "attention mode" not in caplog.text
