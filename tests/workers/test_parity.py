"""The contract between training and inference: the erase-mode training forward sees exactly what
decoding with a cropped cache sees (and stream mode what plain decoding sees), position by
position, on tiny fp32 models with random traces holding several backtracks: GPT-2, Llama, and a
grouped-query Qwen2 (4 query heads over 2 key/value heads). Models with a sliding window are
refused in erase mode, since there the two paths disagree."""

import random

import pytest
import torch

from search.backspace import pop_count
from tests.models import tiny_checkpoint
from tests.streams import tried_views
from workers.collate import BacktrackCollator
from workers.decode import cropped_logits, reencode_logits
from workers.hf import (
    CheckpointError,
    cache_kwarg,
    check_erase_support,
    forward_cached,
    load_checkpoint,
)
from workers.sampler import TransformersPolicy
from workers.tokens import add_backspace_token

PROMPT_LEN = 6


@pytest.fixture(scope="module", params=["gpt2", "llama", "qwen2"])
def model_tok(request, tmp_path_factory):
    path = tiny_checkpoint(tmp_path_factory.mktemp(request.param), request.param)
    model, tok = load_checkpoint(path, "cpu")
    if request.param == "qwen2":  # the grouped-query case, full attention
        assert model.config.num_key_value_heads < model.config.num_attention_heads
        assert model.config.sliding_window is None
    bksp = add_backspace_token(model, tok, "<|bksp|>")
    return model, tok, bksp


def random_stream(rng, vocab, bksp, delim, unit, n=40):
    """Prompt, then generated tokens with backspace runs wherever something can be erased."""
    ids = [rng.randrange(5, vocab) for _ in range(PROMPT_LEN - 1)] + [delim]
    visible = list(ids)
    runs = 0
    while len(ids) < n:
        can = pop_count(visible, PROMPT_LEN, unit, delim) > 0
        if can and rng.random() < 0.3:
            for _ in range(rng.randint(1, 3)):
                k = pop_count(visible, PROMPT_LEN, unit, delim)
                if not k:
                    break
                del visible[len(visible) - k :]
                ids.append(bksp)
            runs += 1
        else:
            tok = delim if rng.random() < 0.25 else rng.randrange(5, vocab)
            ids.append(tok)
            visible.append(tok)
    return ids, runs


def training_logits(model, ids, mode, unit, bksp, delim):
    collate = BacktrackCollator(mode, unit, bksp, delim)
    batch = collate([{"input_ids": ids, "loss_mask": [1] * len(ids), "prompt_len": PROMPT_LEN}])
    batch.pop("labels")
    with torch.no_grad():
        return model(**batch).logits[0]


@torch.no_grad()
def plain_incremental(model, ids):
    out = model(torch.tensor([ids[:1]]), use_cache=True)
    rows, cache = [out.logits[0, -1]], out.cache if hasattr(out, "cache") else out.past_key_values
    for tok in ids[1:]:
        out = model(
            torch.tensor([[tok]]),
            **{"cache" if hasattr(out, "cache") else "past_key_values": cache},
            use_cache=True,
        )
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        rows.append(out.logits[0, -1])
    return torch.stack(rows)


@pytest.mark.parametrize("unit", ["token", "step"])
def test_erase_training_equals_cropped_cache_decoding(model_tok, unit):
    model, tok, bksp = model_tok
    delim = tok.convert_tokens_to_ids("\n")
    rng = random.Random(0)
    for _ in range(5):
        ids, runs = random_stream(rng, len(tok) - 1, bksp, delim, unit)
        assert runs >= 2
        train = training_logits(model, ids, "erase", unit, bksp, delim)
        decode = cropped_logits(model, ids, PROMPT_LEN, unit, bksp, delim)
        assert (train - decode).abs().max().item() <= 1e-4
        again = reencode_logits(model, ids, PROMPT_LEN, unit, bksp, delim)
        assert (again - decode).abs().max().item() <= 1e-4


@torch.no_grad()
def masked_incremental(model, ids, views):
    """Logits of `ids` fed one token at a time into a full KV cache, position q attending to the
    columns `views[q]` only (every column stays in the cache) at position id `len(views[q]) - 1`:
    each token keeps the representation it was written with, as a decoder that hides cache
    columns has it."""
    kwarg, cache, rows = cache_kwarg(model), None, []
    for q, view in enumerate(views):
        mask = torch.zeros((1, q + 1), dtype=torch.long)
        mask[0, view] = 1
        logits, cache = forward_cached(
            model,
            kwarg,
            cache,
            input_ids=torch.tensor([[ids[q]]]),
            attention_mask=mask,
            position_ids=torch.tensor([[len(view) - 1]]),
        )
        rows.append(logits[0, -1])
    return torch.stack(rows)


@pytest.mark.parametrize("unit", ["token", "step"])
def test_tried_training_equals_masked_cache_decoding(model_tok, unit):
    """Mode `tried`: the training forward sees, at each position, its view by the definition
    (`tests.streams.tried_views`), with the cache a decoder keeps."""
    model, tok, bksp = model_tok
    delim = tok.convert_tokens_to_ids("\n")
    rng = random.Random(3)
    for _ in range(3):
        ids, _ = random_stream(rng, len(tok) - 1, bksp, delim, unit)
        views = tried_views(ids, PROMPT_LEN, unit, bksp, delim)
        train = training_logits(model, ids, "tried", unit, bksp, delim)
        assert (train - masked_incremental(model, ids, views)).abs().max().item() <= 1e-4
        erase = training_logits(model, ids, "erase", unit, bksp, delim)
        assert (erase - train).abs().max() > 1e-3  # the tried moves are in view: not erase mode


def test_stream_training_equals_plain_decoding(model_tok):
    model, tok, bksp = model_tok
    delim = tok.convert_tokens_to_ids("\n")
    ids, _ = random_stream(random.Random(1), len(tok) - 1, bksp, delim, "token")
    train = training_logits(model, ids, "stream", "token", bksp, delim)
    assert (train - plain_incremental(model, ids)).abs().max().item() <= 1e-4


def test_erase_really_hides_the_erased_tokens(model_tok):
    model, tok, bksp = model_tok
    delim = tok.convert_tokens_to_ids("\n")
    ids, _ = random_stream(random.Random(2), len(tok) - 1, bksp, delim, "token")
    erase = training_logits(model, ids, "erase", "token", bksp, delim)
    stream = training_logits(model, ids, "stream", "token", bksp, delim)
    first_bksp = ids.index(bksp)
    assert torch.allclose(erase[:first_bksp], stream[:first_bksp], atol=1e-5)
    assert (erase - stream).abs().max() > 1e-3


@pytest.mark.parametrize("unit", ["token", "step"])
def test_batched_erase_decoding_equals_cropped_greedy(model_tok, unit):
    model, tok, bksp = model_tok
    delim, eos = tok.convert_tokens_to_ids("\n"), tok.eos_token_id
    bias = torch.zeros(model.get_output_embeddings().weight.shape[0])
    bias[bksp] = 4.0  # make backspaces frequent in this random model
    handle = model.get_output_embeddings().register_forward_hook(lambda m, i, o: o + bias)
    try:
        prompts = [[7, 8, 9, 10, 11, delim], [12, 13, delim], [9, 9, 9, 9, delim]]
        policy = TransformersPolicy(
            model,
            eos,
            delim,
            temperature=0.0,
            max_new_tokens=24,
            bksp_id=bksp,
            mode="erase",
            unit=unit,
            max_backspaces=5,
        )
        from search.types import Ask

        got = policy.sample([Ask(tuple(p), 1, "end", 0) for p in prompts])
        for p, [r] in zip(prompts, got, strict=True):
            assert r.tokens.count(bksp) >= 1
            assert list(r.tokens) == reference_greedy(model, p, 24, bksp, delim, eos, unit, 5)
    finally:
        handle.remove()


def reference_greedy(model, prompt, n, bksp, delim, eos, unit, budget, tried=False):
    """One sequence, logits from the cropped-cache path (`tried`: from the last position's
    views, `tests.streams.tried_views`, over a full cache), the same bans as the sampler."""
    stream, visible, used = list(prompt), list(prompt), 0
    for _ in range(n):
        if tried:
            views = tried_views(stream, len(prompt), unit, bksp, delim)
            logits = masked_incremental(model, stream, views)[-1].clone()
        else:
            logits = cropped_logits(model, stream, len(prompt), unit, bksp, delim)[-1].clone()
        if used >= budget or pop_count(visible, len(prompt), unit, delim) == 0:
            logits[bksp] = float("-inf")
        t = int(logits.argmax())
        if t == eos:
            break
        stream.append(t)
        if t == bksp:
            used += 1
            del visible[len(visible) - pop_count(visible, len(prompt), unit, delim) :]
        else:
            visible.append(t)
    return stream[len(prompt) :]


@pytest.mark.parametrize(
    ("arch", "config"),
    [
        ("mistral", {"sliding_window": 8}),
        ("gemma2", {"sliding_window": 8}),
        ("qwen2", {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 0}),
    ],
)
def test_sliding_window_models_are_refused_in_erase_mode(tmp_path, arch, config):
    model, tok = load_checkpoint(tiny_checkpoint(tmp_path, arch, **config), "cpu")
    bksp = add_backspace_token(model, tok, "<|bksp|>")
    delim = tok.convert_tokens_to_ids("\n")
    ids, _ = random_stream(random.Random(0), len(tok) - 1, bksp, delim, "token")
    refusal = r"sliding_window=8.*train\.mode=stream"
    with pytest.raises(CheckpointError, match=refusal):
        check_erase_support(model)
    for decode in (cropped_logits, reencode_logits):  # before: a crop error, or wrong logits
        with pytest.raises(CheckpointError, match=refusal):
            decode(model, ids, PROMPT_LEN, "token", bksp, delim)


def test_a_mistral_without_a_window_keeps_parity(tmp_path):
    model, tok = load_checkpoint(tiny_checkpoint(tmp_path, "mistral", sliding_window=None), "cpu")
    check_erase_support(model)
    bksp = add_backspace_token(model, tok, "<|bksp|>")
    delim = tok.convert_tokens_to_ids("\n")
    ids, _ = random_stream(random.Random(3), len(tok) - 1, bksp, delim, "step")
    train = training_logits(model, ids, "erase", "step", bksp, delim)
    decode = cropped_logits(model, ids, PROMPT_LEN, "step", bksp, delim)
    assert (train - decode).abs().max().item() <= 1e-4


def test_the_batched_sampler_refuses_a_sliding_window_in_erase_mode(tmp_path):
    model, tok = load_checkpoint(tiny_checkpoint(tmp_path, "mistral", sliding_window=8), "cpu")
    bksp = add_backspace_token(model, tok, "<|bksp|>")
    delim = tok.convert_tokens_to_ids("\n")
    with pytest.raises(CheckpointError, match="sliding_window=8"):
        TransformersPolicy(model, tok.eos_token_id, delim, bksp_id=bksp, mode="erase")


def test_training_refuses_a_sliding_window_in_erase_mode(tmp_path):
    from pipeline.stages.train import check_attention

    model, _ = load_checkpoint(tiny_checkpoint(tmp_path, "mistral", sliding_window=8), "cpu")
    check_attention(model, "stream")  # stream mode needs no mask: allowed
    with pytest.raises(CheckpointError, match="sliding_window=8"):
        check_attention(model, "erase")
