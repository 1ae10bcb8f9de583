"""On-policy RL (train.objective=rl): advantages, the KL term and the loss by hand and against
TRL's GRPO loss, the tree's credit, the loss mask and erase attention in the recomputed
log-probabilities, `halluc train` raising the reward, and a killed run resuming to the same
weights."""

import json
import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from pipeline.config import ConfigError, load_config
from pipeline.layout import RunLayout
from pipeline.loading import task_from_config
from pipeline.shards import ShardError
from pipeline.stages import train
from pipeline.trainers import rl, rl_streams
from tests.conftest import CURVES, read_curves
from tests.models import tiny_checkpoint
from workers.collate import BacktrackCollator
from workers.grpo import erase_credits, group_advantages, k3, policy_loss
from workers.hf import SearchTokenizer, load_checkpoint
from workers.preference import sequence_logps
from workers.tokens import add_backspace_token

BKSP = "<|bksp|>"

# --- advantages, KL, loss ------------------------------------------------------------------


def test_group_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [1.0, 0.0, 0.0, 0.0]])
    got = group_advantages(rewards)
    # group 0: mean 0.5, Bessel std sqrt(4 * 0.25 / 3); group 2: mean 0.25, std sqrt(0.75 / 3)
    s0, s2 = math.sqrt(1 / 3), 0.5
    expected = [
        [0.5 / (s0 + 1e-4), -0.5 / (s0 + 1e-4), -0.5 / (s0 + 1e-4), 0.5 / (s0 + 1e-4)],
        [0.0, 0.0, 0.0, 0.0],  # all equal: nothing to learn from this group
        [0.75 / (s2 + 1e-4), -0.25 / (s2 + 1e-4), -0.25 / (s2 + 1e-4), -0.25 / (s2 + 1e-4)],
    ]
    assert got.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]
    # a token cost separates otherwise equal streams: the shorter one is ahead
    costed = group_advantages(torch.tensor([[1.0 - 0.01 * 10, 1.0 - 0.01 * 20]]))
    assert costed[0, 0] > 0 > costed[0, 1]


def test_k3_by_hand():
    half, quarter = torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25))
    assert k3(half, quarter).item() == pytest.approx(0.5 + math.log(2) - 1)
    assert k3(quarter, half).item() == pytest.approx(2 - math.log(2) - 1)
    assert k3(half, half).item() == 0.0


def test_policy_loss_by_hand_and_masked_targets_carry_nothing():
    # row 0: a prompt target, then two generated ones; row 1: one generated, then padding
    logp = torch.log(torch.tensor([[0.9, 0.5, 0.25], [0.5, 0.3, 0.3]])).requires_grad_()
    ref = torch.log(torch.tensor([[0.1, 0.25, 0.25], [0.5, 0.9, 0.9]]))
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]])
    adv = torch.tensor([1.5, -2.0])
    beta = 0.1
    loss, figures = policy_loss(logp, ref, adv, mask, beta)
    kl = [0.5 + math.log(2) - 1, 0.0, 0.0]  # the three loss-bearing targets
    expected = (-1.5 + beta * kl[0] - 1.5 + beta * kl[1] + 2.0 + beta * kl[2]) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert figures["kl"] == pytest.approx(sum(kl) / 3, rel=1e-6)
    loss.backward()
    # d/dlogp of (-A·ratio + β·k3) = -A + β(1 - exp(ref - logp)), over the 3 targets
    grad = logp.grad
    assert grad[0, 1].item() == pytest.approx((-1.5 + beta * (1 - 0.5)) / 3, rel=1e-5)
    assert grad[1, 0].item() == pytest.approx((2.0 + beta * (1 - 1.0)) / 3, rel=1e-5)
    assert grad[0, 0] == 0 and grad[1, 1] == 0 and grad[1, 2] == 0
    # a prompt target's or a padded target's log-probability changes nothing
    other = logp.detach().clone()
    other[0, 0], other[1, 2] = math.log(0.01), math.log(0.99)
    again, _ = policy_loss(other, ref, adv, mask, beta)
    assert again.item() == pytest.approx(loss.item(), abs=1e-7)
    # but a generated one's does
    other[0, 2] = math.log(0.01)
    assert policy_loss(other, ref, adv, mask, beta)[0].item() != pytest.approx(loss.item())


def trl_grpo_loss(logp, ref, advantages, mask, beta):
    """TRL 1.16's GRPOTrainer loss (`_compute_loss`, loss_type "dapo", its default; on-policy:
    no old log-probabilities, so the ratio is exp(logp - logp.detach())) on given per-target
    log-probabilities, through a stand-in trainer whose model returns them."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    n, width = logp.shape
    accelerator = SimpleNamespace(
        num_processes=1,
        gather=lambda x: x,
        gather_for_metrics=lambda x: x,
        reduce=lambda x, reduction: x,
    )
    trainer = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros(n, width), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        loss_type="dapo",
        epsilon_low=0.2,
        epsilon_high=0.2,
        use_vllm=False,
        model=SimpleNamespace(training=True),
        accelerator=accelerator,
        current_gradient_accumulation_steps=1,
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
    )
    inputs = {
        "prompt_ids": torch.zeros(n, 1, dtype=torch.long),
        "prompt_mask": torch.ones(n, 1, dtype=torch.long),
        "completion_ids": torch.zeros(n, width, dtype=torch.long),
        "completion_mask": mask.long(),
        "advantages": advantages,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    return GRPOTrainer._compute_loss(trainer, None, inputs)


@pytest.mark.parametrize("beta", [0.0, 0.04, 0.5])
@pytest.mark.parametrize("per_target", [False, True])
def test_policy_loss_equals_trls_grpo_loss_in_value_and_gradient(beta, per_target):
    pytest.importorskip("trl")
    gen = torch.Generator().manual_seed(0)
    shape = (6, 9)
    base = torch.log_softmax(torch.randn(6, 9, 5, generator=gen), -1)[..., 0]
    ref = torch.log_softmax(torch.randn(6, 9, 5, generator=gen), -1)[..., 0]
    mask = torch.rand(shape, generator=gen) > 0.3
    adv = torch.randn(shape if per_target else shape[:1], generator=gen)
    ours_logp, theirs_logp = base.clone().requires_grad_(), base.clone().requires_grad_()
    ours, _ = policy_loss(ours_logp, ref, adv, mask, beta)
    theirs = trl_grpo_loss(theirs_logp, ref, adv, mask, beta)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    assert torch.allclose(ours_logp.grad, theirs_logp.grad, atol=1e-7)
    assert ours_logp.grad.abs().sum() > 0.1  # not a case where both are trivially 0


# --- the tree's credit for backspace decisions -----------------------------------------------

D, B = 9, 8  # the step delimiter and the backspace in the hand-made streams below
PROMPT = (1, 2, D)


def test_erase_credit_is_the_value_before_the_step_minus_the_value_after_it():
    a, b, c = (3, D), (4, D), (5, D)
    values = {(*PROMPT, *a): 0.8, (*PROMPT, *a, *b): 0.1, (*PROMPT, *a, *b, *c): 0.0}
    # step unit: write a, b, erase b, write c, erase c, write 6
    stream = [*a, *b, B, *c, B, 6]
    got = erase_credits(PROMPT, stream, "step", B, D, values)
    # the second run went from a+c back to a: a+c was never probed, so no credit for it
    assert [(x.positions, x.value) for x in got] == [((4,), pytest.approx(0.8 - 0.1))]
    values[(*PROMPT, *a, *c)] = 0.5
    got = erase_credits(PROMPT, stream, "step", B, D, values)
    assert [(x.positions, x.value) for x in got] == [
        ((4,), pytest.approx(0.7)),
        ((7,), pytest.approx(0.8 - 0.5)),
    ]
    # one run erasing two steps: from a+b+c back to a
    got = erase_credits(PROMPT, [*a, *b, *c, B, B, 6], "step", B, D, values)
    assert [(x.positions, x.value) for x in got] == [((6, 7), pytest.approx(0.8))]
    # erasing the first step leaves the prompt alone, which the steps table never holds
    assert erase_credits(PROMPT, [*a, B, *b], "step", B, D, values) == []
    # a run that only cuts into a step (token unit: one backspace, the delimiter) gets none
    assert erase_credits(PROMPT, [*a, *b, B, *c], "token", B, D, values) == []
    # in token unit, two backspaces erase b (4, D) whole: credited like a step-unit erase
    got = erase_credits(PROMPT, [*a, *b, B, B, *c], "token", B, D, values)
    assert [(x.positions, x.value) for x in got] == [((4, 5), pytest.approx(0.7))]
    # a partial step erased in step unit: from a+(4,) back to a, a cut step, no credit
    assert erase_credits(PROMPT, [*a, 4, B, *c], "step", B, D, values) == []


class ListValuer:
    """A value for every prefix from a table, counting the batches and prefixes asked."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def values(self, prefixes):
        self.calls.append(list(prefixes))
        return [self.table[p] for p in prefixes]


def test_the_value_credit_values_what_the_tree_lacks_once_and_credits_every_whole_step_run():
    """`rl.credit=value`: the prefixes a whole-step erase is credited with and the tree lacks are
    valued by the value model in one batch, then credited v(P) − v(P+S) like the tree's."""
    a, b, c = (3, D), (4, D), (5, D)
    tree = {(*PROMPT, *a): 0.8}  # the search probed a alone
    model = {(*PROMPT, *a, *b): 0.1, (*PROMPT, *a, *c): 0.5, (*PROMPT, *a, *b, *c): 0.3}
    streams = [[SimpleNamespace(tokens=(*a, *b, B, *c, B, 6)), SimpleNamespace(tokens=(*a, 4, B))]]
    cfg = load_config("arith-tiny", ["trace.unit=step"])
    tok = SimpleNamespace(bksp_id=B, step_ends=D)
    values, valuer = dict(tree), ListValuer(model)
    rl_streams.value_missing(valuer, values, [PROMPT], streams, cfg, tok)
    assert valuer.calls == [[(*PROMPT, *a, *b), (*PROMPT, *a, *c)]]  # one batch, the missing
    assert values == tree | {k: model[k] for k in valuer.calls[0]}
    got = erase_credits(PROMPT, streams[0][0].tokens, "step", B, D, values)
    assert [(x.positions, x.value) for x in got] == [
        ((4,), pytest.approx(0.8 - 0.1)),
        ((7,), pytest.approx(0.8 - 0.5)),
    ]
    rl_streams.value_missing(valuer, values, [PROMPT], streams, cfg, tok)
    assert len(valuer.calls) == 1  # nothing left to value
    job = SimpleNamespace(cfg=load_config("arith-tiny", ["train.rl.credit=value"]), rnd=None)
    with pytest.raises(ConfigError, match="eval.value_model"):
        rl.credit_values(job)


def test_advantage_targets_put_the_credit_on_the_backspaces_the_collator_labels():
    ids = [*PROMPT, 3, D, 4, D, B, 5, D, 0]
    row = {"input_ids": ids, "loss_mask": [0] * 3 + [1] * 8, "prompt_len": 3}
    credited = rl_streams.Stream(row, 1.0, True, 7, 1, (), (((4,), 0.7),))
    plain = rl_streams.Stream(row, 0.0, False, 7, 1, ())
    collate = BacktrackCollator("erase", "step", B, D, 0)
    batch = collate([row, row])
    adv = rl.advantage_targets([[credited, plain]], batch["input_ids"].shape[1])
    target_is_bksp = batch["labels"][:, 1:] == B
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    assert adv[0][target_is_bksp[0]].tolist() == pytest.approx([0.7])
    assert adv[0][~target_is_bksp[0]].tolist() == pytest.approx([a] * 9)
    assert adv[1].tolist() == pytest.approx([-a] * 10)


# --- the loss mask and erase attention in the recomputed log-probabilities -------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


RL = [
    "train.objective=rl",
    "train.mode=erase",
    "trace.unit=step",
    "train.max_steps=12",
    "train.save_steps=6",
    "train.batch_size=16",
    "train.rl.group=8",
    "train.lr=1e-2",
    "train.warmup=0",
    "train.token_warmup=0",
    "train.rl.token_cost=0.02",
    "train.rl.kl=0.04",
    "search.workers=0",
    "task.arithmetic.digits=2",
    "task.n_train=16",
    "sampling.stream_tokens=16",
]


def rl_cfg(tiny, out, *extra):
    return load_config("arith-tiny", [f"run.out_dir={out}", f"model.path={tiny}", *RL, *extra])


def drawn(tiny, mode, unit="step", n=6):
    """A random tiny model with the backspace added, and its streams on `n` problems (seeded)."""
    cfg = rl_cfg(tiny, "unused", f"train.mode={mode}", f"trace.unit={unit}")
    model, hf = load_checkpoint(tiny, "cpu")
    add_backspace_token(model, hf, BKSP)
    task = task_from_config(cfg.task)
    tok = SearchTokenizer.wrap(hf, task.step_delimiter, BKSP)
    policy = rl_streams.sampler(model, hf, tok, cfg)
    streams = rl_streams.sample(policy, model, task, tok, task.problems("train", n), 0, cfg, {})
    return model, tok, [s for group in streams for s in group]


def recomputed(model, tok, flat, mode, unit="step"):
    collate = BacktrackCollator(mode, unit, tok.bksp_id, tok.delim_id, 0)
    batch = collate([s.row for s in flat])
    with torch.no_grad():
        _, logp = sequence_logps(model.eval(), batch)
    return batch, logp


@pytest.mark.parametrize("unit", ["step", "token"])
def test_recomputed_log_probs_are_the_samplers_in_erase_mode(tiny, unit):
    model, tok, flat = drawn(tiny, "erase", unit)
    with_bksp = [i for i, s in enumerate(flat) if s.n_backspaces]
    assert len(with_bksp) >= 3  # the random model erases now and then
    _, erase = recomputed(model, tok, flat, "erase", unit)
    _, stream = recomputed(model, tok, flat, "stream", unit)
    differs = 0
    for i, s in enumerate(flat):
        start = s.row["prompt_len"] - 1
        sampled = torch.tensor(s.logprobs)
        assert torch.allclose(erase[i, start : start + s.n_tokens], sampled, atol=1e-4)
        # plain causal attention lets a token after a backspace run see what it erased
        gap = (
            (stream[i, start : start + s.n_tokens] - sampled).abs().max().item()
            if s.n_tokens
            else 0
        )
        if i in with_bksp:
            differs += gap > 1e-3
        else:
            assert gap < 1e-4
    assert differs > 0


def test_generated_tokens_carry_the_loss_erased_ones_included_the_prompt_and_padding_none(tiny):
    model, tok, flat = drawn(tiny, "erase")
    batch, logp = recomputed(model, tok, flat, "erase")
    mask = batch["labels"][:, 1:] != -100
    for i, s in enumerate(flat):
        p, n = s.row["prompt_len"], len(s.row["input_ids"])
        assert not mask[i, : p - 1].any()  # the prompt's own tokens
        assert mask[i, p - 1 : n - 1].all()  # every generated one, erased ones included
        assert not mask[i, n - 1 :].any()  # padding
        ended = s.row["input_ids"][-1] == tok.eos_id
        assert n - p == s.n_tokens + ended  # end-of-sequence is an action too
    # a row scores the same alone as padded in the batch
    longest = max(range(len(flat)), key=lambda i: len(flat[i].row["input_ids"]))
    shortest = min(range(len(flat)), key=lambda i: len(flat[i].row["input_ids"]))
    for i in (longest, shortest):
        _, alone = recomputed(model, tok, [flat[i]], "erase")
        width = alone.shape[1]
        assert torch.allclose(alone[0], logp[i, :width], atol=1e-5)


# --- halluc train with objective=rl ----------------------------------------------------------


@pytest.fixture(scope="module")
def rl_trained(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("rl")
    cfg = rl_cfg(tiny, out)
    return cfg, train.main(cfg), RunLayout(out).round(0)


def test_halluc_train_rl_raises_the_reward_and_states_its_compute(rl_trained, tiny):
    cfg, path, rnd = rl_trained
    compute = json.loads((rnd.train / "compute.json").read_text())
    history = compute["history"]
    assert compute["objective"] == "rl" and compute["optimizer_steps"] == len(history) == 12
    assert compute["batch_size"] == 16 and compute["problems_per_step"] == 2
    assert compute["rows"] == 192 and compute["group"] == 8
    assert compute["generated_tokens"] == pytest.approx(sum(16 * h["tokens"] for h in history))
    assert compute["generated_tokens"] < compute["loss_tokens"] < compute["reference_tokens"]
    for k in rl.CREDITED:  # what the erase credit would act on, counted with its weights at 0
        assert compute[k] == sum(h[k] for h in history)
    # a random model is never right: the token cost is the reward, and it learns to stop sooner
    first, last = history[:4], history[-4:]
    assert sum(h["reward"] for h in last) > sum(h["reward"] for h in first) + 0.1
    assert max(h["logp_gap"] for h in history) < 1e-3  # the sampler's and training's attention
    model = AutoModelForCausalLM.from_pretrained(path)
    before = AutoModelForCausalLM.from_pretrained(tiny)
    shared = [n for n, p in before.named_parameters() if "wte" not in n and "lm_head" not in n]
    moved = dict(model.named_parameters())
    assert all(not torch.equal(moved[n], dict(before.named_parameters())[n]) for n in shared)
    meta = json.loads((path / "halluc.json").read_text())
    assert meta["mode"] == "erase" and meta["backspace"] is True
    assert not (rnd.train / rl.CHECKPOINTS).exists() and not (rnd.train / rl.REFERENCE).exists()


def test_killed_rl_training_resumes_to_the_same_weights(rl_trained, tiny, tmp_path, monkeypatch):
    cfg = rl_cfg(tiny, tmp_path)
    real = rl.train_step
    calls = {"n": 0}

    def dies(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(rl, "train_step", dies)
    with pytest.raises(KeyboardInterrupt):
        train.main(cfg)
    train_dir = tmp_path / "round-0" / "train"
    assert (train_dir / rl.REFERENCE).exists()
    assert [p.name for p in (train_dir / rl.CHECKPOINTS).iterdir()] == ["step-000006.pt"]
    calls["n"] = -100  # the rerun does not die
    resumed = AutoModelForCausalLM.from_pretrained(train.main(cfg))
    assert calls["n"] == -100 + 6  # it ran steps 6 to 11 only
    whole = AutoModelForCausalLM.from_pretrained(rl_trained[1])
    for (n, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), n
    ours = json.loads((train_dir / "compute.json").read_text())
    theirs = json.loads((rl_trained[2].train / "compute.json").read_text())
    assert ours == theirs
    # the curves show each step once, the killed run's steps after its checkpoint hidden: the
    # unkilled run's curves, step for step
    assert read_curves(train_dir) == read_curves(rl_trained[2].train)


def test_rl_curves_show_reward_kl_and_backtrack_rate_and_change_nothing(rl_trained, tiny, tmp_path):
    cfg, path, rnd = rl_trained
    curves = read_curves(rnd.train)
    assert curves.keys() >= CURVES | {"train/reward", "train/kl", "train/backtrack_rate"}
    history = json.loads((rnd.train / "compute.json").read_text())["history"]
    assert [s for s, _ in curves["train/reward"]] == list(range(1, 13))
    for (_, got), h in zip(curves["train/reward"], history, strict=True):
        assert got == pytest.approx(h["reward"], rel=1e-6)  # float32 in the event file
    plain = train.main(rl_cfg(tiny, tmp_path, "train.report_to=[]"))  # no curves: nothing else
    assert (plain / "model.safetensors").read_bytes() == (path / "model.safetensors").read_bytes()
    assert (plain.parent / "compute.json").read_text() == (rnd.train / "compute.json").read_text()
    assert not (plain.parent / "tb").exists()


@pytest.mark.parametrize("sets, lr", [([], 3e-3), (["train.rl.lr=1e-4"], 1e-4)])
def test_the_rl_learning_rate_is_rl_lr_else_lr(tiny, tmp_path, monkeypatch, sets, lr):
    seen = []

    def stop(model, reference, optimizer, *a, **kw):
        seen.append(optimizer.param_groups[0]["initial_lr"])
        raise KeyboardInterrupt

    monkeypatch.setattr(rl, "train_step", stop)
    with pytest.raises(KeyboardInterrupt):
        train.main(rl_cfg(tiny, tmp_path, "train.lr=3e-3", *sets))
    assert seen == [lr]


@pytest.mark.parametrize("budget", [-1, 7])
def test_rl_steps_is_the_rl_objectives_own_count_over_the_budget_arms(tiny, tmp_path, budget):
    """`train.rl.steps` sets the rl objective's optimizer steps whether or not the run passes the
    budget arm's count (`max_steps`, 7 here) or `train.max_steps` (12 in RL); unset, those rule."""
    seen = []

    def count(*a, **kw):
        seen.append(1)
        if len(seen) > 3:
            raise KeyboardInterrupt  # a count above 3 is wrong: stop the run at once
        return real(*a, **kw)

    real = rl.train_step
    cfg = rl_cfg(tiny, tmp_path, "train.rl.steps=3", "train.save_steps=100")
    layout = RunLayout(tmp_path)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(rl, "train_step", count)
        train.train(cfg, tiny, layout.round(0), max_steps=budget)
    assert len(seen) == 3
    assert json.loads((layout.round(0).compute).read_text())["optimizer_steps"] == 3
    plain = rl_cfg(tiny, tmp_path)
    assert plain.hash == rl_cfg(tiny, tmp_path, "train.rl.steps=0").hash  # unset: the old hash
    assert cfg.hash != plain.hash


def test_tree_credit_without_a_steps_table_says_what_to_do(tiny, tmp_path):
    match = r"train.rl.credit=tree reads the round's steps table.*halluc search"
    with pytest.raises(ShardError, match=match):
        train.main(rl_cfg(tiny, tmp_path, "train.rl.credit=tree"))


@pytest.mark.parametrize(
    "override, message",
    [
        (["train.rl.group=1"], r"train.rl.group must be >= 2"),
        (["train.rl.kl=-0.1"], r"train.rl.group must be >= 2.*kl, token_cost and lr >= 0.*kl=-0.1"),
        (["train.rl.lr=-1e-4"], r"train.rl.group.* lr=-0.0001"),
        (["train.rl.token_cost=-1"], r"train.rl.group.* token_cost=-1.0"),
        (["train.rl.credit=values"], r"train.rl.credit: 'values' is not allowed"),
        (["train.rl.steps=-1"], r"yaml: train.rl.steps=-1: the rl objective's"),
        (["train.objective=rl", "train.workers=5"], r"each worker samples whole groups"),
    ],
)
def test_bad_rl_options_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("arith-tiny", override)


def test_the_tree_credit_reads_the_searchs_steps_table(searched):
    """On a real search's `steps` rows: erasing a probed step whose prefix was probed too is
    credited with the prefix's value minus the step's, through the keys the table gives."""
    from pipeline.shards import read_table
    from search.tree import split_steps

    rnd = RunLayout(searched).round(0)
    values = rl_streams.step_values(rnd)
    rows = read_table(rnd.search, "steps").to_pylist()
    assert len(values) == len({(*r["prefix_ids"], *r["step_ids"]) for r in rows}) > 0
    _, hf = load_checkpoint(searched / "bootstrap" / "model", "cpu")
    tok = SearchTokenizer.wrap(hf, "\n", BKSP)
    checked = 0
    for r in rows:
        prefix, step = tuple(r["prefix_ids"]), tuple(r["step_ids"])
        if prefix not in values or step[-1] != tok.delim_id:
            continue  # the prefix was not probed, or the step is the unfinished answer
        prompt = split_steps(prefix, tok.delim_id)[0]  # an arithmetic prompt is one line
        stream = [*prefix[len(prompt) :], *step, tok.bksp_id, *step]
        got = erase_credits(prompt, stream, "step", tok.bksp_id, tok.delim_id, values)
        assert [c.value for c in got] == [pytest.approx(values[prefix] - r["mc"])]
        checked += 1
    assert checked > 0


@pytest.mark.ray
def test_rl_under_ray_train_with_two_workers_reaches_the_in_process_weights(
    rl_trained, tiny, tmp_path
):
    import ray

    try:
        path = train.main(rl_cfg(tiny, tmp_path, "train.workers=2"))
    finally:
        ray.shutdown()
    ours = json.loads((tmp_path / "round-0" / "train" / "compute.json").read_text())
    theirs = json.loads((rl_trained[2].train / "compute.json").read_text())
    # the same streams, sampled by two workers instead of one: the same totals
    for key in ("rows", "generated_tokens", "loss_tokens", "reference_tokens", "correct"):
        assert ours[key] == theirs[key], key
    # and the same steps: DDP's weighted mean of the workers' gradients is the whole batch's
    whole = AutoModelForCausalLM.from_pretrained(rl_trained[1])
    split = AutoModelForCausalLM.from_pretrained(path)
    for (n, a), (_, b) in zip(whole.named_parameters(), split.named_parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-4), n


def test_rl_with_the_value_credit_asks_the_value_model_and_credits_runs(
    tiny, tmp_path, monkeypatch
):
    """`halluc train` with `rl.credit=value` and no search: every credited prefix comes from the
    value model (a scripted one here, valuing each prefix by its ids)."""
    from search.tree import derive_seed

    asked = []

    class Scripted:
        def values(self, prefixes):
            asked.extend(prefixes)
            return [derive_seed("v", *p) % 1000 / 1000 for p in prefixes]

    monkeypatch.setattr(rl, "load_value_model", lambda cfg: Scripted())
    sets = ["train.rl.credit=value", "eval.value_model=scripted", "train.max_steps=4"]
    path = train.main(rl_cfg(tiny, tmp_path, *sets))
    compute = json.loads((path.parent / "compute.json").read_text())
    assert compute["credit"] == "value" and compute["optimizer_steps"] == 4
    assert asked and len(set(asked)) == len(asked)  # each prefix valued once
    assert sum(h["credited_runs"] for h in compute["history"]) > 0
