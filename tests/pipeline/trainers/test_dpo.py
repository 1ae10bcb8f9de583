"""Preference training (train.objective=dpo): the loss by hand and against TRL's on the same
log-probabilities, erase attention and the loss mask inside the sequence log-probabilities, and
`halluc train` on a hand-made pairs set raising the chosen-over-rejected margin (and resuming)."""

import json
import math
import random
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, Trainer

from pipeline.config import load_config
from pipeline.layout import RunLayout
from pipeline.shards import SCHEMA_VERSION, write_shard
from pipeline.stages import train
from pipeline.trainers.job import Job
from search.pairs import preferences
from search.tasks.arithmetic import ArithmeticTask
from tests.conftest import CURVES, read_curves
from tests.models import tiny_checkpoint
from workers.collate import LOSS_WEIGHTS, BacktrackCollator
from workers.hf import SearchTokenizer, load_checkpoint
from workers.preference import (
    REF_CHOSEN,
    REF_REJECTED,
    PairCollator,
    dpo_loss,
    preference_loss,
    sequence_logps,
)
from workers.tokens import add_backspace_token

BKSP = "<|bksp|>"


# --- the loss ------------------------------------------------------------------------------


class FixedLogits(torch.nn.Module):
    """Logits that depend on the position only: `table[t]` at position t of every row."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float32)

    def forward(self, input_ids, **_):
        return SimpleNamespace(logits=self.table[None].expand(input_ids.shape[0], -1, -1))


def test_dpo_loss_by_hand():
    # position 0 predicts from uniform logits, position 1 from weights 1:2:3:4
    model = FixedLogits([[0.0] * 4, [math.log(k) for k in (1, 2, 3, 4)], [0.0] * 4])
    batch = {
        "input_ids": torch.tensor([[0, 1, 2], [0, 1, 3]]),
        # chosen: targets 1 and 2 under loss; rejected: only its last token, 3
        "labels": torch.tensor([[-100, 1, 2], [-100, -100, 3]]),
        REF_CHOSEN: torch.tensor([math.log(0.05)]),
        REF_REJECTED: torch.tensor([math.log(0.5)]),
    }
    chosen, rejected = math.log(0.25 * 0.3), math.log(0.4)
    logps, _ = sequence_logps(model, batch)
    assert logps.tolist() == pytest.approx([chosen, rejected])
    # β = 0.5: the margin (log .075 − log .05) − (log .4 − log .5) = log 1.875
    dpo = math.log(1 + 1.875**-0.5)
    for weight, sft in ((0.0, 0.0), (1.0, -(math.log(0.25) + math.log(0.3)) / 2)):
        value, margins = preference_loss(model, batch, beta=0.5, sft_weight=weight)
        assert value.item() == pytest.approx(dpo + weight * sft, rel=1e-6)
        assert margins.tolist() == pytest.approx([0.5 * math.log(1.875)])
    # train.error_weight 0.2 on the second target scales it in the SFT term (not the DPO term)
    weighted = batch | {LOSS_WEIGHTS: torch.tensor([[0.0, 1.0, 0.2], [0.0, 0.0, 1.0]])}
    value, _ = preference_loss(model, weighted, beta=0.5, sft_weight=2.0)
    sft = -(math.log(0.25) + 0.2 * math.log(0.3)) / 2
    assert value.item() == pytest.approx(dpo + 2.0 * sft, rel=1e-6)
    assert dpo_loss(*(torch.tensor([x]) for x in (0.0, 0.0, 0.0, 0.0)), beta=1.0).item() == (
        pytest.approx(math.log(2))
    )


def trl_loss(per_token, labels, ref_chosen, ref_rejected, beta, sft_weight):
    """TRL 1.16's DPOTrainer loss (`_compute_loss`: loss_type sigmoid, plus sft when weighted)
    on given per-target log-probabilities `[2B, L-1]` (0 off the completion, as its fused head
    gives them) with precomputed reference log-probabilities, through a stand-in trainer and
    model that return them."""
    from trl.trainer.dpo_trainer import DPOTrainer

    n, width = per_token.shape
    outputs = SimpleNamespace(
        log_probs=per_token,
        entropy=torch.zeros(n, width),
        mean_logits=torch.zeros(n, width),
        is_top1=torch.zeros(n, width, dtype=torch.bool),
    )
    accelerator = SimpleNamespace(
        device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x
    )
    types = ["sigmoid", "sft"] if sft_weight else ["sigmoid"]
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=accelerator,
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=types,
        loss_weights=[1.0, sft_weight][: len(types)],
        beta=beta,
        use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    completion = (labels != -100).long()
    inputs = {
        "input_ids": torch.where(completion.bool(), labels, 0),
        "attention_mask": torch.ones_like(completion),
        "completion_mask": completion,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    return DPOTrainer._compute_loss(trainer, lambda **_: outputs, inputs, False)


@pytest.mark.parametrize("beta, sft_weight", [(0.1, 0.0), (0.5, 1.0), (2.0, 0.3)])
def test_dpo_loss_equals_trls_on_the_same_log_probabilities(tiny_bksp, beta, sft_weight):
    pytest.importorskip("trl")
    model, tok, collate = tiny_bksp
    rows = preference_rows(tok, collate, 6, right=True)
    batch = collate(rows) | {
        REF_CHOSEN: torch.linspace(-30.0, -10.0, 6),  # any reference: it enters both the same
        REF_REJECTED: torch.linspace(-12.0, -25.0, 6),
    }
    with torch.no_grad():
        ours, _ = preference_loss(model, batch, beta, sft_weight)
        _, per_token = sequence_logps(model, batch)
    theirs = trl_loss(
        per_token, batch["labels"][:, 1:], batch[REF_CHOSEN], batch[REF_REJECTED], beta, sft_weight
    )
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    assert ours.item() > 0.1  # not a case where both are trivially 0


# --- erase attention and the loss mask ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


def with_bksp(path, mode):
    model, hf = load_checkpoint(path, "cpu")
    bksp = add_backspace_token(model, hf, BKSP)
    tok = SearchTokenizer.wrap(hf, "\n", BKSP)
    assert tok.bksp_id == bksp
    collate = BacktrackCollator(mode, "step", tok.bksp_id, tok.delim_id, hf.pad_token_id or 0)
    return model, tok, PairCollator(collate)


@pytest.fixture(scope="module")
def tiny_bksp(tiny):
    return with_bksp(tiny, "erase")


def pair_rows(tok, n, seed=0):
    """`pairs` rows made by hand from 2-digit additions: the good steps, a wrong step the exact
    checker flags, its fix (the rest of the reference) and, as the model's own continuation, the
    rest of the reference written on after the wrong step."""
    task = ArithmeticTask(op="add", digits=2)
    rng = random.Random(seed)
    rows = []
    for problem in task.problems("train", n):
        ref = task.reference(problem)
        steps = [s + "\n" for s in ref[:-1]] + [ref[-1]]
        k = rng.randrange(len(ref) - 1)
        wrong = tok.encode(task.wrong_step(problem, ref[:k], rng) + "\n")
        prompt = tok.encode(problem.prompt + "".join(steps[:k]))
        chosen = wrong + [tok.bksp_id] + tok.encode("".join(steps[k:])) + [tok.eos_id]
        rejected = wrong + tok.encode("".join(steps[k + 1 :])) + [tok.eos_id]
        rows.append(
            {
                "problem_id": problem.id,
                "task": task.name,
                "round": 0,
                "model_id": "tiny",
                "config_hash": "hand-made",
                "seed": 0,
                "schema_version": SCHEMA_VERSION,
                "prompt_ids": prompt,
                "chosen_ids": chosen,
                "rejected_ids": rejected,
                "prompt_text": tok.decode(prompt),
                "chosen_text": tok.decode(chosen),
                "rejected_text": tok.decode(rejected),
            }
        )
    return rows


def as_feature(p):
    return {
        "chosen_ids": p.chosen,
        "chosen_mask": p.chosen_mask,
        "rejected_ids": p.rejected,
        "rejected_mask": p.rejected_mask,
        "prompt_len": p.prompt_len,
    }


def preference_rows(tok, collate, n, right=False):
    prefs = [
        p
        for row in pair_rows(tok, n)
        for p in preferences(row, "step", tok.bksp_id, tok.delim_id, right)
    ]
    return [as_feature(p) for p in prefs[:n]]


def chosen_per_token(model, collate, feature):
    """Per-target log-probabilities `[L-1]` of the chosen side of one pair."""
    with torch.no_grad():
        _, per_token = sequence_logps(model, collate([feature]))
    return per_token[0]


@pytest.mark.parametrize("mode", ["erase", "stream"])
def test_the_fix_never_sees_the_erased_wrong_step(tiny, mode):
    model, tok, collate = with_bksp(tiny, mode)
    f = preference_rows(tok, collate, 1)[0]
    ids = f["chosen_ids"]
    at = ids.index(tok.bksp_id)  # the backspace; the wrong step ends right before it
    first_wrong = next(i for i in range(f["prompt_len"], at) if ids[i] != tok.delim_id)
    assert f["chosen_mask"][first_wrong] == 0  # erased: no loss of its own
    changed = list(ids)
    changed[first_wrong] = tok.encode("9" if tok.decode([ids[first_wrong]]) != "9" else "8")[0]
    a = chosen_per_token(model, collate, f)
    b = chosen_per_token(model, collate, f | {"chosen_ids": changed})
    # target j is predicted at position j, of token j+1: the backspace sees the error (it must,
    # to decide), and so does the first token of the fix, predicted at the backspace
    assert not torch.isclose(a[at - 1], b[at - 1])
    after = slice(at + 1, len(ids) - 1)  # the rest of the fix, predicted after the backspace
    if mode == "erase":
        assert torch.allclose(a[after], b[after], atol=1e-6)
    else:  # plain causal attention: the fix reads the wrong step
        assert not torch.allclose(a[after], b[after], atol=1e-6)


def test_sequence_log_probability_sums_exactly_the_loss_bearing_tokens(tiny_bksp):
    model, tok, collate = tiny_bksp
    f = preference_rows(tok, collate, 1)[0]
    ids, mask = f["chosen_ids"], f["chosen_mask"]
    with torch.no_grad():
        logps, per_token = sequence_logps(model, collate([f]))
    assert logps[0].item() == pytest.approx(
        sum(per_token[0, j - 1].item() for j in range(1, len(ids)) if mask[j]), abs=1e-5
    )
    # a token without loss adds nothing: the last one (end-of-sequence), changed, masked or not
    last = list(ids)
    last[-1] = tok.delim_id
    masked = [*mask[:-1], 0]

    def chosen(ids, mask):
        g = f | {"chosen_ids": ids, "chosen_mask": mask}
        with torch.no_grad():
            return sequence_logps(model, collate([g]))[0][0].item()

    assert chosen(ids, masked) == pytest.approx(chosen(last, masked), abs=1e-6)
    assert chosen(ids, mask) != pytest.approx(chosen(last, mask), abs=1e-3)
    # a kept token of the fix, changed, changes the chosen log-probability
    kept = max(j for j in range(len(ids) - 1) if mask[j] and ids[j] != tok.bksp_id)
    other = list(ids)
    other[kept] = tok.encode("7" if tok.decode([ids[kept]]) != "7" else "6")[0]
    assert chosen(ids, mask) != pytest.approx(chosen(other, mask), abs=1e-3)


def test_a_pair_scores_the_same_alone_and_padded_in_a_batch(tiny_bksp):
    model, tok, collate = tiny_bksp
    rows = preference_rows(tok, collate, 5, right=True)
    with torch.no_grad():
        together, _ = sequence_logps(model, collate(rows))
        alone = [sequence_logps(model, collate([r]))[0] for r in rows]
    b = len(rows)
    for i, one in enumerate(alone):
        assert together[i].item() == pytest.approx(one[0].item(), abs=1e-4)
        assert together[b + i].item() == pytest.approx(one[1].item(), abs=1e-4)


# --- halluc train with objective=dpo ---------------------------------------------------------

DPO = [
    "train.objective=dpo",
    "train.mode=erase",
    "trace.unit=step",
    "train.max_steps=12",
    "train.save_steps=6",
    "train.batch_size=8",
    "train.lr=1e-3",
    "train.warmup=2",
    "train.token_warmup=4",
    "train.dpo.beta=0.5",
    "search.workers=0",
    "task.arithmetic.digits=2",
]


def dpo_run(tiny, out, *extra):
    """A run directory whose round 0 has hand-made pairs from the tiny model's tokenizer."""
    _, hf = load_checkpoint(tiny, "cpu")
    tok = SearchTokenizer.wrap(hf, "\n", BKSP)
    write_shard(RunLayout(out).round(0).search, "pairs", 0, pair_rows(tok, 24))
    return load_config("arith-tiny", [f"run.out_dir={out}", f"model.path={tiny}", *DPO, *extra])


def margins(model_dir, cfg, rnd):
    """Each pair's (policy − reference) chosen minus (policy − reference) rejected, in nats."""
    model, tok, collate, ds = train.prepare(Job(cfg, model_dir, rnd))
    collate = PairCollator(collate)
    ref = json.loads((rnd.train / "reference.json").read_text())
    with torch.no_grad():
        logps, _ = sequence_logps(model.eval(), collate([ds[i] for i in range(len(ds))]))
    b = len(ds)
    chosen = logps[:b] - torch.tensor(ref["chosen"])
    rejected = logps[b:] - torch.tensor(ref["rejected"])
    return chosen - rejected, ds


@pytest.fixture(scope="module")
def dpo_trained(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo")
    cfg = dpo_run(tiny, out)
    return cfg, train.main(cfg), RunLayout(out).round(0)


@pytest.mark.parametrize("right", [False, True])
def test_halluc_train_dpo_raises_the_margin_of_chosen_over_rejected(
    dpo_trained, tiny, tmp_path, right
):
    cfg, path, rnd = dpo_trained
    if right:
        cfg = dpo_run(tiny, tmp_path, "train.dpo.right_pairs=true")
        path, rnd = train.main(cfg), RunLayout(tmp_path).round(0)
    ref = json.loads((rnd.train / "reference.json").read_text())
    compute = json.loads((rnd.train / "compute.json").read_text())
    assert compute["objective"] == "dpo" and compute["optimizer_steps"] == 12
    got, ds = margins(path, cfg, rnd)
    assert ref["pairs"] == compute["rows"] == len(ds)
    kinds = compute["pairs_by_kind"]
    assert kinds["wrong_step"] == 24 and (kinds.get("right_step", 0) > 0) == right
    masks = list(ds["chosen_mask"]) + list(ds["rejected_mask"])
    assert compute["loss_tokens"] == sum(map(sum, masks))
    # the reference is the model training started from: every margin was 0 there
    assert got.mean().item() > 1.0 and (got > 0).float().mean().item() > 0.8
    assert json.loads((path / "halluc.json").read_text())["mode"] == "erase"
    assert not (rnd.train / "checkpoints").exists()
    curves = read_curves(rnd.train)
    assert curves.keys() >= CURVES | {"train/dpo_margin"}
    assert curves["train/dpo_margin"][-1][1] > curves["train/dpo_margin"][0][1]


def test_killed_dpo_training_resumes_to_the_same_weights(dpo_trained, tiny, tmp_path, monkeypatch):
    cfg = dpo_run(tiny, tmp_path)
    real = Trainer.training_step
    calls = {"n": 0}

    def dies(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(Trainer, "training_step", dies)
    with pytest.raises(KeyboardInterrupt):
        train.main(cfg)
    monkeypatch.setattr(Trainer, "training_step", real)
    train_dir = tmp_path / "round-0" / "train"
    assert (train_dir / "reference.json").exists()
    assert any((train_dir / "checkpoints").glob("checkpoint-6"))
    resumed = AutoModelForCausalLM.from_pretrained(train.main(cfg))
    whole = AutoModelForCausalLM.from_pretrained(dpo_trained[1])
    for (n, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), n
    for tag, points in read_curves(train_dir).items():  # each step once, across the kill
        assert [s for s, _ in points] == sorted({s for s, _ in points}), tag


@pytest.mark.ray
def test_dpo_under_ray_train_with_two_workers(tiny, tmp_path):
    import ray

    try:
        path = train.main(dpo_run(tiny, tmp_path, "train.workers=2"))
    finally:
        ray.shutdown()
    rnd = RunLayout(tmp_path).round(0)
    compute = json.loads((rnd.train / "compute.json").read_text())
    assert compute["objective"] == "dpo" and compute["optimizer_steps"] == 12
    got, _ = margins(path, dpo_run(tiny, tmp_path), rnd)
    assert got.mean().item() > 0  # it learned the preferences, across two processes
