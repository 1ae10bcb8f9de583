"""Blocked SDPA (`workers.erase.use_blocked_attention`): the erase-mode training forward and its
gradients are SDPA's, on GPT-2, Llama and a grouped-query Qwen2, with the float and the boolean
mask, in all three attention modes (stream: the padding mask the model builds itself); decoding
with a switched model is unchanged."""

import random

import pytest
import torch

from tests.models import tiny_checkpoint
from tests.workers.test_parity import PROMPT_LEN, random_stream
from workers import erase
from workers.collate import BacktrackCollator
from workers.hf import load_checkpoint
from workers.sampler import TransformersPolicy
from workers.tokens import add_backspace_token


def loaded(tmp_path, arch):
    model, tok = load_checkpoint(tiny_checkpoint(tmp_path, arch), "cpu")
    bksp = add_backspace_token(model, tok, "<|bksp|>")
    return model, tok, bksp, tok.convert_tokens_to_ids("\n")


def loss_and_grads(model, batch):
    model.zero_grad()
    logits = model(**batch).logits
    weights = torch.linspace(-1, 1, logits.shape[-1])  # every logit shapes the gradient
    (logits * weights).sum().backward()
    return logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("mode", ["stream", "erase", "tried"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_blocked_attention_gives_sdpa_logits_and_gradients(
    tmp_path, monkeypatch, arch, mode, dtype
):
    monkeypatch.setattr(erase, "QUERY_BLOCK", 7)  # several blocks, a short last one
    model, tok, bksp, delim = loaded(tmp_path, arch)
    rng = random.Random(1)
    rows = [random_stream(rng, len(tok) - 1, bksp, delim, "step", n) for n in (40, 33, 26)]
    collate = BacktrackCollator(mode, "step", bksp, delim, dtype=dtype)
    batch = collate(
        [{"input_ids": r, "loss_mask": [1] * len(r), "prompt_len": PROMPT_LEN} for r, _ in rows]
    )
    batch.pop("labels")
    want, want_grads = loss_and_grads(model, batch)
    assert erase.use_blocked_attention(model)
    assert model.config._attn_implementation == erase.BLOCKED_SDPA
    got, grads = loss_and_grads(model, batch)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert len(grads) == len(want_grads)
    for g, w in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_a_model_not_on_sdpa_is_left_alone(tmp_path):
    model, *_ = loaded(tmp_path, "gpt2")
    model.set_attn_implementation("eager")
    assert not erase.use_blocked_attention(model)
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize("mode", ["stream", "erase"])
def test_decoding_with_a_switched_model_is_unchanged(tmp_path, monkeypatch, mode):
    """The sampler's left-padded prefill and cached steps (masks the model builds itself) give
    the same rollouts and log-probabilities."""
    monkeypatch.setattr(erase, "QUERY_BLOCK", 3)
    model, tok, bksp, delim = loaded(tmp_path, "llama")
    prompts = [[5, 6, 7, delim], [8, 9, delim], [5, 7, 9, 11, 13, 6, delim]]
    from search.types import Ask

    asks = [Ask(tuple(p), 2, "end", seed=i) for i, p in enumerate(prompts)]

    def sample():
        policy = TransformersPolicy(
            model,
            tok.eos_token_id,
            delim,
            temperature=1.0,
            max_new_tokens=20,
            logprobs=True,
            bksp_id=bksp,
            mode=mode,
            unit="token",
        )
        return [r for rs in policy.sample(asks) for r in rs]

    want = sample()
    assert erase.use_blocked_attention(model)
    got = sample()
    for g, w in zip(got, want, strict=True):
        assert g.tokens == w.tokens
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-5)
