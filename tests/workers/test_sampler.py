"""What is particular to the transformers backend (batching, chunking, bans, checkpoint errors);
the policy contract every backend meets is in test_policy_contract.py."""

import numpy as np
import pytest
import torch

from search.backspace import pop_count
from search.types import Ask
from tests.models import tiny_checkpoint
from workers.decode import cropped_logits
from workers.hf import CheckpointError, SearchTokenizer, load_checkpoint
from workers.sampler import TransformersPolicy, _row_seed, uniforms
from workers.tokens import add_backspace_token


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def loaded(request, tmp_path_factory):
    path = tiny_checkpoint(tmp_path_factory.mktemp(request.param), request.param)
    model, hf = load_checkpoint(path, "cpu")
    return model, SearchTokenizer.wrap(hf, "\n", "<|bksp|>")


def policy(loaded, **kw):
    model, tok = loaded
    return TransformersPolicy(model, tok.eos_id, tok.delim_id, **kw)


def asks(tok, n=3):
    prompts = ["12+34=?\n", "7*8=?\n", "123+456=?\n1+2+0=3\n", "9=?\n"]
    return [Ask(tuple(tok.encode(p)), n, "end", seed=i) for i, p in enumerate(prompts)]


def test_batched_rows_equal_one_at_a_time(loaded):
    p = policy(loaded, max_new_tokens=12)
    batch = asks(loaded[1])
    together = p.sample(batch)
    alone = [p.sample([a])[0] for a in batch]
    assert [[r.tokens for r in rs] for rs in together] == [[r.tokens for r in rs] for rs in alone]
    chunked = policy(loaded, max_new_tokens=12, max_batch=2).sample(batch)
    assert [[r.tokens for r in rs] for rs in chunked] == [[r.tokens for r in rs] for rs in alone]


def test_the_prefill_computes_the_last_position_logits_only(loaded):
    """With a 50k-token vocabulary a prefill's logits at every prompt position are gigabytes; the
    sampler asks for the last position's only, and samples the same tokens and log-probabilities
    as from the full logits."""
    model, tok = loaded
    shapes = []
    model.register_forward_hook(lambda m, args, out: shapes.append(tuple(out.logits.shape)))
    got = policy(loaded, max_new_tokens=6, logprobs=True).sample(asks(tok))
    assert shapes and all(shape[1] == 1 for shape in shapes)  # the prefill's too
    shapes.clear()
    full = policy(loaded, max_new_tokens=6, logprobs=True)
    full._last_only = {}
    want = full.sample(asks(tok))
    assert max(shape[1] for shape in shapes) > 1  # the full prefill, for comparison
    assert [[r.tokens for r in rs] for rs in got] == [[r.tokens for r in rs] for rs in want]
    for a, b in zip(sum(got, []), sum(want, []), strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
    model._forward_hooks.clear()


def test_banned_tokens_are_never_sampled(loaded):
    tok = loaded[1]
    p = policy(loaded, max_new_tokens=16, ban_ids=[tok.bksp_id, tok.encode("7")[0]])
    for rs in p.sample(asks(tok, n=8)):
        for r in rs:
            assert tok.bksp_id not in r.tokens and tok.encode("7")[0] not in r.tokens


def test_bad_checkpoints_fail_with_what_to_do(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    path = tiny_checkpoint(tmp_path / "m")
    (path / "tokenizer.json").unlink()
    (path / "tokenizer_config.json").unlink()
    with pytest.raises(CheckpointError, match="has no tokenizer"):
        load_checkpoint(path)
    path = tiny_checkpoint(tmp_path / "w")
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickled .bin weights"):
        load_checkpoint(path)


def test_delimiter_must_be_one_token(tmp_path):
    _, hf = load_checkpoint(tiny_checkpoint(tmp_path / "m"), "cpu")
    with pytest.raises(CheckpointError, match="exactly one token"):
        SearchTokenizer.wrap(hf, "\n\n", "<|bksp|>")


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def with_bksp(request, tmp_path_factory):
    """A tiny model with `<|bksp|>` whose backspace logit tracks the delimiter's."""
    path = tiny_checkpoint(tmp_path_factory.mktemp(request.param), request.param)
    model, hf = load_checkpoint(path, "cpu")
    bksp = add_backspace_token(model, hf, "<|bksp|>")
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[bksp] = 1.1 * head[hf.convert_tokens_to_ids("\n")]
    return model, SearchTokenizer.wrap(hf, "\n", "<|bksp|>")


@pytest.mark.parametrize("mode", ["stream", "erase"])
def test_rows_that_stop_early_leave_the_batch_without_changing_the_others(with_bksp, mode):
    """One-step asks stop within a few tokens, full rollouts run to the budget: the rows left
    decode in a shrinking batch and must sample exactly what each samples alone."""
    model, tok = with_bksp
    p = TransformersPolicy(
        model,
        tok.eos_id,
        tok.delim_id,
        max_new_tokens=40,
        logprobs=True,
        bksp_id=tok.bksp_id,
        mode=mode,
        unit="token",
        max_backspaces=4,
    )
    prompts = [a.prefix for a in asks(tok)]
    batch = [  # one row per ask, so each row can be sampled alone
        Ask(prefix, 1, until, seed)
        for seed, (prefix, until) in enumerate(
            (pr, u) for pr in prompts for u in ("step", "end", "end")
        )
    ]
    together = [rs[0] for rs in p.sample(batch)]
    alone = [p.sample([a])[0][0] for a in batch]
    lengths = [len(r.tokens) for r in together]
    assert min(lengths) <= 5 and max(lengths) == 40  # rows stopped at very different steps
    assert any(tok.bksp_id in r.tokens for r in together)
    for got, one in zip(together, alone, strict=True):
        assert (got.tokens, got.finished) == (one.tokens, one.finished)
        assert got.logprobs == pytest.approx(one.logprobs, abs=1e-5)


def test_greedy_with_an_erase_temperature_samples_only_the_step_after_each_erase(with_bksp):
    """Temperature 0 with `erase_temperature`: every token is the argmax of its (cropped-cache)
    logits, except from a backspace to the end of the step written next, where it is the
    inverse-CDF draw at that temperature from the row's own uniform."""
    model, tok = with_bksp
    hot_t, budget = 3.0, 4
    p = TransformersPolicy(
        model,
        tok.eos_id,
        tok.delim_id,
        temperature=0.0,
        max_new_tokens=30,
        bksp_id=tok.bksp_id,
        mode="erase",
        unit="token",
        max_backspaces=budget,
        erase_temperature=hot_t,
    )
    batch = asks(tok, n=3)
    drawn = greedy = 0
    for a, rollouts in zip(batch, p.sample(batch), strict=True):
        for j, r in enumerate(rollouts):
            stream, n0 = [*a.prefix, *r.tokens], len(a.prefix)
            logits = cropped_logits(model, stream, n0, "token", tok.bksp_id, tok.delim_id)
            seed = np.array([_row_seed(a.seed, j)], dtype=np.uint64)
            hot, used, visible = False, 0, list(a.prefix)
            for t, x in enumerate(r.tokens):
                row = logits[n0 + t - 1].clone().float()
                if used >= budget or pop_count(visible, n0, "token", tok.delim_id) == 0:
                    row[tok.bksp_id] = float("-inf")
                if hot:
                    cdf = torch.softmax(row / hot_t, -1).cumsum(-1, dtype=torch.float64)
                    u = torch.tensor([uniforms(seed, t)[0]], dtype=torch.float64) * cdf[-1]
                    expect, drawn = int(torch.searchsorted(cdf, u, right=True)), drawn + 1
                else:
                    expect, greedy = int(row.argmax()), greedy + 1
                assert x == expect, (a.seed, j, t)
                hot = x == tok.bksp_id or (hot and x != tok.delim_id)
                if x == tok.bksp_id:
                    used += 1
                    del visible[len(visible) - pop_count(visible, n0, "token", tok.delim_id) :]
                else:
                    visible.append(x)
    assert drawn >= 5 and greedy >= 20  # both kinds of position were checked


def test_erase_temperature_is_checked_and_hashed_only_when_set():
    from pipeline.config import load_config
    from search.errors import ConfigError

    for bad in (["eval.erase_temperature=-1"], ["eval.erase_temperature=1", "eval.bksp_search=2"]):
        with pytest.raises(ConfigError, match="erase_temperature"):
            load_config("arith-tiny", bad)
    with pytest.raises(ConfigError, match="erase_temperature=1.0: the vLLM policy"):
        load_config("arith-tiny", ["eval.erase_temperature=1", "eval.policy=vllm"])
    plain = load_config("arith-tiny", [])
    assert load_config("arith-tiny", ["eval.erase_temperature=0"]).hash == plain.hash
    assert load_config("arith-tiny", ["eval.erase_temperature=1"]).hash != plain.hash
