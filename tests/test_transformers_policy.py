"""The transformers policy backend on tiny random models: batching, stopping, seeds, log-probs."""

import pytest
import torch

from search.types import Ask
from tests.models import tiny_checkpoint
from workers.hf import CheckpointError, SearchTokenizer, load_checkpoint
from workers.sampler import TransformersPolicy


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


def test_seeds_decide_the_samples(loaded):
    p = policy(loaded, max_new_tokens=12)
    [a] = asks(loaded[1], n=8)[:1]
    first = [r.tokens for r in p.sample([a])[0]]
    assert first == [r.tokens for r in p.sample([a])[0]]
    assert len(set(first)) > 1  # the n samples of one ask differ
    other = Ask(a.prefix, a.n, a.until, a.seed + 1)
    assert first != [r.tokens for r in p.sample([other])[0]]


def test_greedy_matches_generate(loaded):
    model, tok = loaded
    p = policy(loaded, temperature=0.0, max_new_tokens=10)
    for a in asks(tok, n=1):
        [[r]] = p.sample([a])
        ref = model.generate(
            torch.tensor([a.prefix]),
            max_new_tokens=10,
            do_sample=False,
            eos_token_id=tok.eos_id,
            pad_token_id=0,
        )
        expect = ref[0, len(a.prefix) :].tolist()
        if tok.eos_id in expect:
            expect = expect[: expect.index(tok.eos_id)]
        assert list(r.tokens) == expect


def test_step_asks_stop_at_the_delimiter_and_budget_cuts(loaded):
    tok = loaded[1]
    p = policy(loaded, max_new_tokens=40, ban_ids=[tok.eos_id])
    step = [Ask(a.prefix, a.n, "step", a.seed) for a in asks(tok)]
    for rs in p.sample(step):
        for r in rs:
            assert tok.delim_id not in r.tokens[:-1]
            assert r.finished == (r.tokens[-1:] == (tok.delim_id,))
        assert any(r.finished for r in rs)
    short = policy(loaded, max_new_tokens=3, ban_ids=[tok.eos_id, tok.delim_id])
    for rs in short.sample(asks(tok)):
        assert all(len(r.tokens) == 3 and not r.finished for r in rs)


def test_logprobs_match_a_full_forward(loaded):
    model, tok = loaded
    p = policy(loaded, max_new_tokens=8, logprobs=True)
    for a, rs in zip(asks(tok, n=2), p.sample(asks(tok, n=2)), strict=True):
        for r in rs:
            ids = torch.tensor([a.prefix + r.tokens])
            with torch.no_grad():
                logp = model(ids).logits.log_softmax(-1)[0]
            expect = [logp[len(a.prefix) + i - 1, t].item() for i, t in enumerate(r.tokens)]
            assert r.logprobs == pytest.approx(expect, abs=1e-4)


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
