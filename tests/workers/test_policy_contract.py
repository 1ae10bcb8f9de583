"""One contract, every policy backend (docs/design.md §10): the same tests run against

- `transformers`: `TransformersPolicy`, batched decoding with a KV cache;
- `segments`: `SegmentPolicy` (the logic the vLLM backend runs) over a CPU reference engine;
- `vllm`: `SegmentPolicy` over `VllmEngine`, where vLLM imports and a GPU is present (skipped,
  with the reason, elsewhere).

On tiny random GPT-2 and Llama models whose backspace logit is pushed up, so backspaces are
frequent.
"""

import importlib.util
from functools import cache

import pytest
import torch

from search.backspace import apply_backspaces
from search.types import Ask
from tests.engines import ReferenceEngine
from tests.models import tiny_checkpoint
from tests.workers.test_parity import reference_greedy
from workers.hf import SearchTokenizer, load_checkpoint
from workers.sampler import TransformersPolicy
from workers.segments import SegmentPolicy
from workers.tokens import add_backspace_token


def _vllm_missing() -> str:
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (a CUDA extra: pip install 'halluc[vllm]')"
    if not torch.cuda.is_available():
        return "vLLM needs a CUDA GPU and none is visible"
    return ""


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def ckpt(request, tmp_path_factory):
    """A tiny model with `<|bksp|>` whose backspace logit tracks the delimiter's."""
    path = tiny_checkpoint(tmp_path_factory.mktemp("contract"), request.param)
    model, hf = load_checkpoint(path, "cpu")
    bksp = add_backspace_token(model, hf, "<|bksp|>")
    delim = hf.convert_tokens_to_ids("\n")
    with torch.no_grad():  # wherever the delimiter is likely, the backspace is a little more so
        head = model.get_output_embeddings().weight
        head[bksp] = 1.1 * head[delim]
    model.save_pretrained(path, safe_serialization=True)
    hf.save_pretrained(path)
    model, hf = load_checkpoint(path, "cpu")
    return path, model, SearchTokenizer.wrap(hf, "\n", "<|bksp|>")


@cache
def _vllm_engine(path):
    from workers.vllm_engine import VllmEngine

    return VllmEngine(path, dtype="float32", gpu_memory_utilization=0.3)


@pytest.fixture(params=["transformers", "segments", "vllm"])
def make(request, ckpt):
    """make(**policy options) -> a policy of this backend over the contract checkpoint."""
    path, model, tok = ckpt
    if request.param == "vllm" and (reason := _vllm_missing()):
        pytest.skip(reason)

    def build(**kw):
        if request.param == "transformers":
            return TransformersPolicy(model, tok.eos_id, tok.delim_id, **kw)
        engine = ReferenceEngine(model) if request.param == "segments" else _vllm_engine(str(path))
        kw.pop("max_batch", None)
        return SegmentPolicy(engine, tok.eos_id, tok.delim_id, **kw)

    build.backend = request.param
    return build


def asks(tok, n=3, until="end"):
    prompts = ["12+34=?\n", "7*8=?\n", "123+456=?\n1+2+0=3\n", "9=?\n"]
    return [Ask(tuple(tok.encode(p)), n, until, seed=i) for i, p in enumerate(prompts)]


def tokens(result):
    return [[r.tokens for r in rs] for rs in result]


def test_n_samples_stop_at_the_delimiter_or_the_budget(make, ckpt):
    tok = ckpt[2]
    got = make(max_new_tokens=40, ban_ids=[tok.eos_id]).sample(asks(tok, until="step"))
    assert [len(rs) for rs in got] == [3] * 4
    for rs in got:
        for r in rs:
            assert tok.delim_id not in r.tokens[:-1]
            assert r.finished == (r.tokens[-1:] == (tok.delim_id,))
    short = make(max_new_tokens=3, ban_ids=[tok.eos_id, tok.delim_id, tok.bksp_id])
    for rs in short.sample(asks(tok)):
        assert all(len(r.tokens) == 3 and not r.finished for r in rs)
    for rs in make(max_new_tokens=40, ban_ids=[tok.bksp_id]).sample(asks(tok)):
        assert all(tok.eos_id not in r.tokens for r in rs)  # end-of-sequence is not returned


def test_seeds_decide_the_samples(make, ckpt):
    tok = ckpt[2]
    p = make(max_new_tokens=12, ban_ids=[tok.bksp_id])
    batch = asks(tok, n=4)
    first = tokens(p.sample(batch))
    assert first == tokens(p.sample(batch))
    assert first[0] == tokens(p.sample(batch[:1]))[0]  # whatever else shares the batch
    assert len(set(first[0])) > 1  # the n samples of one ask differ
    other = [Ask(a.prefix, a.n, a.until, a.seed + 100) for a in batch]
    assert first != tokens(p.sample(other))


def test_logprobs_are_the_models_own(make, ckpt):
    _, model, tok = ckpt
    batch = asks(tok, n=2)
    for a, rs in zip(batch, make(max_new_tokens=8, logprobs=True).sample(batch), strict=True):
        for r in rs:
            with torch.no_grad():
                logp = model(torch.tensor([a.prefix + r.tokens])).logits.log_softmax(-1)[0]
            expect = [logp[len(a.prefix) + i - 1, t].item() for i, t in enumerate(r.tokens)]
            assert r.logprobs == pytest.approx(expect, abs=1e-4)


def test_greedy_equals_generate(make, ckpt):
    _, model, tok = ckpt
    p = make(temperature=0.0, max_new_tokens=10, ban_ids=[tok.bksp_id])
    for a in asks(tok, n=1):
        [[r]] = p.sample([a])
        ref = model.generate(
            torch.tensor([a.prefix]),
            max_new_tokens=10,
            do_sample=False,
            eos_token_id=tok.eos_id,
            pad_token_id=0,
            bad_words_ids=[[tok.bksp_id]],
        )[0, len(a.prefix) :].tolist()
        assert list(r.tokens) == (ref[: ref.index(tok.eos_id)] if tok.eos_id in ref else ref)


@pytest.mark.parametrize("mode", ["stream", "erase"])
def test_backspaces_keep_their_budget_and_the_prefix(make, ckpt, mode):
    tok = ckpt[2]
    p = make(max_new_tokens=30, bksp_id=tok.bksp_id, mode=mode, unit="token", max_backspaces=3)
    got = p.sample(asks(tok, n=6))
    for a, rs in zip(asks(tok, n=6), got, strict=True):
        for r in rs:
            assert r.tokens.count(tok.bksp_id) <= 3
            # raises BackspaceError if a backspace erased into the prefix
            apply_backspaces(a.prefix + r.tokens, len(a.prefix), "token", tok.bksp_id, 0)
    assert sum(r.tokens.count(tok.bksp_id) for rs in got for r in rs) >= 5


def test_counters_count_each_rollout_and_their_running_total(make, ckpt):
    """What the search stats and evaluation read: `generated` the length of each rollout of the
    last call (backspaces included), `tokens_generated` the total since the policy was built."""
    tok = ckpt[2]
    p = make(max_new_tokens=20, bksp_id=tok.bksp_id, mode="erase", unit="token")
    assert (p.generated, p.tokens_generated, p.discards) == ([], 0, False)
    batch = asks(tok, n=3)
    first = [[len(r.tokens) for r in rs] for rs in p.sample(batch)]
    assert p.generated == first and p.tokens_generated == sum(map(sum, first))
    assert len(set(n for ns in first for n in ns)) > 1  # lengths vary: each row is its own
    second = [[len(r.tokens) for r in rs] for rs in p.sample(batch[1:2])]
    assert p.generated == second == first[1:2]
    assert p.tokens_generated == sum(map(sum, first)) + sum(second[0])


def test_step_end_only_keeps_backspaces_after_a_delimiter(make, ckpt):
    tok = ckpt[2]
    ends = (tok.delim_id, tok.bksp_id)

    def inside_steps(**kw):  # backspaces that follow something else than a delimiter/backspace
        p = make(max_new_tokens=30, bksp_id=tok.bksp_id, mode="erase", unit="step", **kw)
        got = [r.tokens for rs in p.sample(asks(tok, n=6)) for r in rs]
        return sum(t[i - 1] not in ends for t in got for i, x in enumerate(t) if x == tok.bksp_id)

    assert inside_steps() > 0 and inside_steps(step_end_only=True) == 0
    p = make(max_new_tokens=40, bksp_id=tok.bksp_id, mode="erase", unit="step", step_end_only=True)
    got = [r.tokens for rs in p.sample(asks(tok, n=16)) for r in rs]
    assert sum(t.count(tok.bksp_id) for t in got) >= 1  # still allowed at step ends


@pytest.mark.parametrize("unit", ["token", "step"])
@pytest.mark.parametrize("mode", ["erase", "tried"])
def test_erase_greedy_equals_the_cropped_cache(make, ckpt, unit, mode):
    """Erase-mode decoding sees what the training mask sees (reference: cropped-cache greedy;
    mode `tried`: each step's view by `tests.streams.tried_views`, over a full cache)."""
    _, model, tok = ckpt
    if mode == "tried" and make.backend != "transformers":
        with pytest.raises(ValueError, match="transformers policy"):
            make(bksp_id=tok.bksp_id, mode=mode)
        return
    p = make(
        temperature=0.0,
        max_new_tokens=24,
        bksp_id=tok.bksp_id,
        mode=mode,
        unit=unit,
        max_backspaces=5,
    )
    n_bksp = 0
    for a in asks(tok, n=1):
        [[r]] = p.sample([a])
        expect = reference_greedy(
            model,
            list(a.prefix),
            24,
            tok.bksp_id,
            tok.delim_id,
            tok.eos_id,
            unit,
            5,
            mode == "tried",
        )
        assert list(r.tokens) == expect
        n_bksp += r.tokens.count(tok.bksp_id)
    assert n_bksp >= 2


def test_vllm_load_serves_the_new_weights_with_a_fresh_cache(ckpt, tmp_path):
    if reason := _vllm_missing():
        pytest.skip(reason)
    from workers.vllm_engine import VllmEngine

    path, _, tok = ckpt
    other = tiny_checkpoint(tmp_path / "other", "llama", seed=1)
    engine = VllmEngine(path, dtype="float32", gpu_memory_utilization=0.3)
    batch = asks(tok, n=2)
    SegmentPolicy(engine, tok.eos_id, tok.delim_id).sample(batch)  # fill the prefix cache
    engine.load(other)
    reloaded = tokens(SegmentPolicy(engine, tok.eos_id, tok.delim_id).sample(batch))
    fresh = VllmEngine(other, dtype="float32", gpu_memory_utilization=0.3)
    assert reloaded == tokens(SegmentPolicy(fresh, tok.eos_id, tok.delim_id).sample(batch))


def test_vllm_completions_become_pieces_with_their_stop_token():
    """vLLM versions differ on whether token_ids keep the stop token; pieces always do."""
    from types import SimpleNamespace as NS

    from workers.vllm_engine import _piece

    lp = [{5: NS(logprob=-0.5)}, {3: NS(logprob=-1.0)}]
    kept = NS(token_ids=[5, 3], logprobs=lp, finish_reason="stop", stop_reason=3)
    assert _piece(kept).tokens == (5, 3) and _piece(kept).logprobs == (-0.5, -1.0)
    dropped = NS(token_ids=[5], logprobs=lp[:1], finish_reason="stop", stop_reason=3)
    assert _piece(dropped).tokens == (5, 3)
    cut = NS(token_ids=[5, 3], logprobs=lp, finish_reason="length", stop_reason=None)
    assert _piece(cut).tokens == (5, 3)
