"""FlexAttention with the erase-mode block mask (`workers.erase.erase_block_mask`) against SDPA
with the boolean mask of the same `erased_at`: at the attention function (unfused on the CPU,
compiled on CUDA under the gpu marker) and through a GPT-2 on the registered attention function.
Needs no hypothesis, so the gpu case runs where only torch, transformers and pytest are:
`python3 -m pytest -m gpu tests/workers/test_erase_flex.py`."""

import random
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config

from tests.streams import BK, NL, random_batch, valid_stream
from workers.erase import erase_block_mask, erase_mask, erase_vectors, register_flex_attention


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


def long_rows(unit, n=4):
    """Rows of about 400-650 tokens with padding after the shorter ones, so whole 128-blocks
    are skipped, partial or full."""
    rng = random.Random(1)
    rows = []
    for _ in range(n):
        prompt = [rng.randrange(5, 60) for _ in range(40)] + [NL]
        tokens = [BK if rng.random() < 0.2 else rng.randrange(3, 60) for _ in range(600)]
        rows.append(valid_stream(prompt, tokens, unit))
    return rows, [41] * n


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("unit", ["token", "step"])
def test_compiled_flex_attention_equals_sdpa_with_the_bool_mask_on_cuda(unit):
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    rows, lens = long_rows(unit)
    width = max(map(len, rows))
    erased_at = erase_vectors(rows, lens, width, unit, BK, NL)[0].cuda()
    outs, grads = [], []
    for attend in (
        lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=erase_mask(erased_at, torch.bool)
        ),
        lambda q, k, v: torch.compile(flex.flex_attention)(
            q, k, v, block_mask=erase_block_mask(erased_at)
        ),
    ):
        q, k, v = (x.requires_grad_() for x in qkv(len(rows), 4, width, 64, "cuda"))
        out = attend(q, k, v)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append(q.grad)
    assert (outs[0] - outs[1]).abs().max().item() < 2e-3
    assert (grads[0] - grads[1]).abs().max().item() < 2e-2 * grads[0].abs().max().item()


@pytest.mark.gpu
@cuda
def test_a_gpt2_on_compiled_flex_attention_gives_the_sdpa_logits_on_cuda():
    pytest.importorskip("torch.nn.attention.flex_attention")
    rows, lens = long_rows("step")
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows]).cuda()
    erased_at, positions = (x.cuda() for x in erase_vectors(rows, lens, width, "step", BK, NL))
    logits = []
    for impl in ("sdpa", register_flex_attention()):
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=60, n_layer=2, n_embd=128, n_head=2, attn_pdrop=0.0)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=impl).cuda().eval()
        mask = {"attention_mask": erase_mask(erased_at, torch.bool)}
        if impl != "sdpa":
            mask = {"erase_block_mask": erase_block_mask(erased_at)}
        with torch.no_grad():
            logits.append(model(ids, position_ids=positions, **mask).logits)
    assert (logits[0] - logits[1]).abs().max().item() < 1e-3
