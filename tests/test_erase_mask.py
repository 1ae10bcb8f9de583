"""The erase-mode mask built from one vector per row (`erased_at`) against the construction it
replaced (one `attention_views` list per position, O(L^2) per row): the same mask and position
ids for random streams of both units; bool and float masks giving the same logits; and the
FlexAttention block mask giving the same attention as SDPA with the boolean mask."""

import random
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, GPT2Config

from search.backspace import attention_views, pop_count
from tests.models import tiny_checkpoint
from workers.erase import (
    erase_attention,
    erase_block_mask,
    erase_mask,
    erase_vectors,
    register_flex_attention,
)
from workers.hf import load_checkpoint
from workers.tokens import add_backspace_token

BK, NL = 2, 9  # backspace and delimiter ids


def reference_attention(rows, prompt_lens, width, unit, bksp_id, delim_id, dtype):
    """The construction `erase_attention` had before `erased_at`, kept as the reference."""
    b = len(rows)
    allow = torch.zeros((b, width, width), dtype=torch.bool)
    positions = torch.zeros((b, width), dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(zip(rows, prompt_lens, strict=True)):
        views = attention_views(ids, n_prompt, unit, bksp_id, delim_id)
        for j, view in enumerate(views):
            allow[i, j, view] = True
            positions[i, j] = len(view) - 1
        for j in range(len(ids), width):  # padding attends to itself only (no all-masked rows)
            allow[i, j, j] = True
    if dtype == torch.bool:
        return allow[:, None], positions
    mask = torch.zeros((b, 1, width, width), dtype=dtype)
    mask.masked_fill_(~allow[:, None], torch.finfo(dtype).min)
    return mask, positions


def valid_stream(prompt, tokens, unit, bksp=BK, delim=NL):
    """`prompt` + `tokens`, dropping each backspace that would erase into the prompt."""
    ids, visible = list(prompt), list(prompt)
    for t in tokens:
        if t == bksp:
            n = pop_count(visible, len(prompt), unit, delim)
            if not n:
                continue
            del visible[len(visible) - n :]
        else:
            visible.append(t)
        ids.append(t)
    return ids


symbols = st.sampled_from([3, 4, NL, BK, BK])  # backspaces often, runs of them too
rows_st = st.lists(
    st.tuples(st.lists(st.sampled_from([3, 4, NL]), min_size=1, max_size=4), st.lists(symbols)),
    min_size=1,
    max_size=4,
)


@pytest.mark.parametrize("unit", ["token", "step"])
@settings(max_examples=300, deadline=None)
@given(rows=rows_st, pad=st.integers(0, 3))
def test_the_vector_mask_equals_the_views_mask(unit, rows, pad):
    streams = [valid_stream(p, t, unit) for p, t in rows]
    lens = [len(p) for p, _ in rows]
    width = max(len(s) for s in streams) + pad
    for dtype in (torch.float32, torch.bool, torch.bfloat16):
        got = erase_attention(streams, lens, width, unit, BK, NL, dtype)
        want = reference_attention(streams, lens, width, unit, BK, NL, dtype)
        assert got[0].dtype == want[0].dtype and got[0].shape == want[0].shape
        assert torch.equal(got[0], want[0])
        assert torch.equal(got[1], want[1])


def test_erased_at_of_a_small_stream():
    # prompt 5 6 NL; 7 8 erased by two backspaces (token unit); then 3
    ids = [5, 6, NL, 7, 8, BK, BK, 3]
    erased_at, positions = erase_vectors([ids], [3], 10, "token", BK, NL)
    never = len(ids)
    assert erased_at[0].tolist() == [never, never, never, 7, 7, 7, 7, never, 9, 10]
    assert positions[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 3, 0, 0]


def random_batch(rng, vocab, unit, n_rows=3):
    """Rows of different lengths (so the batch holds padding) with backspace runs."""
    rows = []
    for i in range(n_rows):
        prompt = [rng.randrange(5, vocab) for _ in range(4)] + [NL]
        pool = [BK, BK, NL, *range(5, vocab)[:6]]  # a quarter backspaces, some delimiters
        tokens = [rng.choice(pool) for _ in range(30 + 7 * i)]
        rows.append(valid_stream(prompt, tokens, unit))
    return rows, [5] * n_rows


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_bool_and_float_masks_give_identical_logits(tmp_path, arch):
    model, tok = load_checkpoint(tiny_checkpoint(tmp_path, arch), "cpu")
    assert model.config._attn_implementation == "sdpa"
    add_backspace_token(model, tok, "<|bksp|>")
    vocab = model.get_output_embeddings().weight.shape[0]
    for unit in ("token", "step"):
        rows, lens = random_batch(random.Random(unit), vocab, unit)
        width = max(map(len, rows))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        logits = {}
        for dtype in (torch.float32, torch.bool):
            mask, positions = erase_attention(rows, lens, width, unit, BK, NL, dtype)
            with torch.no_grad():
                logits[dtype] = model(ids, attention_mask=mask, position_ids=positions).logits
        assert torch.equal(logits[torch.float32], logits[torch.bool])


def qkv(b, h, width, dim, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randn(b, h, width, dim, generator=g).to(device) for _ in range(3)]


def test_the_block_mask_gives_sdpa_attention_on_cpu():
    """Unfused (eager) FlexAttention on the CPU, small shapes: the same rule as the dense mask."""
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    rows, lens = random_batch(random.Random(0), 30, "step")
    width = max(map(len, rows))
    erased_at, _ = erase_vectors(rows, lens, width, "step", BK, NL)
    q, k, v = qkv(len(rows), 2, width, 8, "cpu")
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=erase_mask(erased_at, torch.bool)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()"
        got = flex.flex_attention(q, k, v, block_mask=erase_block_mask(erased_at))
    assert (got - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("unit", ["token", "step"])
def test_a_gpt2_on_the_flex_attention_function_gives_the_sdpa_logits(unit):
    pytest.importorskip("torch.nn.attention.flex_attention")
    models = {}
    for impl in ("sdpa", register_flex_attention()):
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=30, n_layer=2, n_embd=32, n_head=4, attn_pdrop=0.0)
        models[impl] = AutoModelForCausalLM.from_config(config, attn_implementation=impl).eval()
    rows, lens = random_batch(random.Random(3), 30, unit)
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    erased_at, positions = erase_vectors(rows, lens, width, unit, BK, NL)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unfused FlexAttention on the CPU
        want = models["sdpa"](
            ids, attention_mask=erase_mask(erased_at, torch.bool), position_ids=positions
        ).logits
        got = models.popitem()[1](
            ids, position_ids=positions, erase_block_mask=erase_block_mask(erased_at)
        ).logits
    assert (got - want).abs().max().item() < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("unit", ["token", "step"])
def test_compiled_flex_attention_equals_sdpa_with_the_bool_mask_on_cuda(unit):
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    rng = random.Random(1)
    rows = []
    for _ in range(4):  # long rows, so whole 128-blocks are skipped or full
        prompt = [rng.randrange(5, 60) for _ in range(40)] + [NL]
        tokens = [BK if rng.random() < 0.2 else rng.randrange(3, 60) for _ in range(600)]
        rows.append(valid_stream(prompt, tokens, unit))
    width = max(map(len, rows))
    erased_at, _ = erase_vectors(rows, [41] * 4, width, unit, BK, NL)
    erased_at = erased_at.cuda()
    q, k, v = qkv(4, 4, width, 64, "cuda")
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=erase_mask(erased_at, torch.bool)
    )
    got = torch.compile(flex.flex_attention)(q, k, v, block_mask=erase_block_mask(erased_at))
    assert (got - want).abs().max().item() < 2e-3
