"""Deliberate backspaces (`bksp_threshold`) and the random-eraser control (`bksp_random`).

On a tiny model whose backspace probability is set by hand from the token it reads (high after some
tokens, low after the others), so where a backspace must and must not appear is known exactly. A
replay of each rollout says where a backspace was allowed (not into the prompt, at most
`max_backspaces`, token unit), which is what the rules below are checked against.
"""

import numpy as np
import pytest

from search.errors import ConfigError
from search.types import Ask
from tests.models import FixedBackspace, tiny_checkpoint
from workers.hf import SearchTokenizer, load_checkpoint
from workers.policy import Decoding, Loaded, make_policy
from workers.sampler import TransformersPolicy, _row_seed, uniforms
from workers.tokens import add_backspace_token

PROMPTS = ["12+34=?\n", "7*8=?\n", "123+456=?\n1+2+0=3\n", "9=?\n"]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def base(request, tmp_path_factory):
    path = tiny_checkpoint(tmp_path_factory.mktemp(request.param), request.param)
    model, hf = load_checkpoint(path, "cpu")
    add_backspace_token(model, hf, "<|bksp|>")
    return model, SearchTokenizer.wrap(hf, "\n", "<|bksp|>")


def fixed(base, high: float, low: float) -> tuple[FixedBackspace, SearchTokenizer, set[int]]:
    """The model with P(backspace) = `high` after a digit 0-4 or the delimiter (every prompt ends
    with one), `low` after anything else; and the set of those high tokens."""
    model, tok = base
    hot = {tok.encode(c)[0] for c in "01234"} | {tok.delim_id}
    return FixedBackspace(model, tok.bksp_id, dict.fromkeys(hot, high), low), tok, hot


def policy(model, tok, **kw) -> TransformersPolicy:
    kw = {"max_new_tokens": 32, "bksp_id": tok.bksp_id, "unit": "token", **kw}
    return TransformersPolicy(model, tok.eos_id, tok.delim_id, **kw)


def asks(tok, n=4, seed=0):
    return [Ask(tuple(tok.encode(p)), n, "end", seed + i) for i, p in enumerate(PROMPTS)]


def replay(prompt, tokens, bksp_id, max_backspaces):
    """(token read, backspace allowed, backspace emitted) at each position of a token-unit
    rollout."""
    visible = n_bksp = 0  # generated tokens still visible, backspaces so far
    prev = prompt[-1]
    for t in tokens:
        yield prev, n_bksp < max_backspaces and visible > 0, t == bksp_id
        visible, n_bksp = (visible - 1, n_bksp + 1) if t == bksp_id else (visible + 1, n_bksp)
        prev = t


def positions(batch, got, tok, max_backspaces):
    return [
        step
        for a, rs in zip(batch, got, strict=True)
        for r in rs
        for step in replay(a.prefix, r.tokens, tok.bksp_id, max_backspaces)
    ]


@pytest.mark.parametrize("temperature", [0.0, 0.7])  # the threshold is on the raw probability
@pytest.mark.parametrize("mode", ["stream", "erase"])
def test_threshold_emits_the_backspace_exactly_where_the_model_is_sure_enough(
    base, temperature, mode
):
    model, tok, hot = fixed(base, high=0.4, low=0.2)
    p = policy(model, tok, temperature=temperature, mode=mode, max_backspaces=2, bksp_threshold=0.3)
    batch = asks(tok)
    steps = positions(batch, p.sample(batch), tok, 2)
    for prev, allowed, emitted in steps:
        assert emitted == (allowed and prev in hot)
    # every case occurred: emitted, refused for a low probability, refused by a ban (the prompt:
    # each prompt ends with a delimiter, so the first token would be a backspace without it)
    assert any(e for _, _, e in steps)
    assert any(a and prev not in hot for prev, a, _ in steps)
    assert any(not a and prev in hot for prev, a, _ in steps)
    if temperature > 0:  # greedy rollouts repeat one token; sampled ones reach the cap
        assert any(not a and prev in hot and prev != tok.delim_id for prev, a, _ in steps)


def test_below_the_threshold_everywhere_is_the_banned_backspace_draw(base):
    """Where the threshold emits nothing, the content token is drawn exactly as with the
    backspace banned outright (same uniforms, same rest of the distribution)."""
    model, tok, _ = fixed(base, high=0.4, low=0.2)
    batch = asks(tok)
    for temperature in (0.0, 1.0):
        never = policy(model, tok, temperature=temperature, bksp_threshold=0.5).sample(batch)
        banned = policy(model, tok, temperature=temperature, ban_ids=[tok.bksp_id]).sample(batch)
        assert never == banned
    # the ban wins over the threshold
    got = policy(model, tok, ban_ids=[tok.bksp_id], bksp_threshold=0.1).sample(batch)
    assert not any(tok.bksp_id in r.tokens for rs in got for r in rs)


def test_threshold_zero_samples_the_backspace_like_any_token(base):
    """0 is today's sampling: the backspace is drawn by its probability, so at T=1 it appears
    after low-probability tokens too and not after every high one (which no threshold does)."""
    model, tok, hot = fixed(base, high=0.4, low=0.2)
    batch = asks(tok, n=8)
    got = policy(model, tok, temperature=1.0, max_backspaces=64, bksp_threshold=0.0).sample(batch)
    assert got == policy(model, tok, temperature=1.0, max_backspaces=64).sample(batch)
    steps = positions(batch, got, tok, 64)
    assert any(e and prev not in hot for prev, _, e in steps)
    assert any(a and not e and prev in hot for prev, a, e in steps)


def test_the_random_eraser_ignores_the_model_and_keeps_its_rate(base):
    rate = 0.3
    model, tok, hot = fixed(base, high=0.9, low=0.01)
    batch = asks(tok, n=16)
    got = policy(model, tok, temperature=1.0, max_backspaces=1000, bksp_random=rate).sample(batch)
    steps = positions(batch, got, tok, 1000)
    assert not any(e and not a for _, a, e in steps)  # never where a backspace is not allowed
    for group in (hot, None):  # after tokens the model would erase at 0.9, and at 0.01
        draws = [e for prev, a, e in steps if a and (prev in hot) == (group is not None)]
        sd = (rate * (1 - rate) / len(draws)) ** 0.5
        assert len(draws) > 100 and abs(sum(draws) / len(draws) - rate) < 4 * sd
    tiny = policy(model, tok, temperature=1.0, bksp_random=1e-12).sample(batch)
    assert not any(tok.bksp_id in r.tokens for rs in tiny for r in rs)


@pytest.mark.parametrize("option", [{"bksp_random": 0.3}, {"bksp_threshold": 0.3}])
def test_rows_do_not_depend_on_the_batch(base, option):
    model, tok, _ = fixed(base, high=0.4, low=0.2)
    p = policy(model, tok, temperature=1.0, mode="erase", max_backspaces=8, **option)
    batch = [Ask(a.prefix, 1, "end", seed) for seed, a in enumerate(asks(tok, n=1) * 3)]
    together = [rs[0] for rs in p.sample(batch)]
    alone = [p.sample([a])[0][0] for a in batch]
    assert [r.tokens for r in together] == [r.tokens for r in alone]
    assert any(tok.bksp_id in r.tokens for r in together)
    # and the same seeds give the same rollouts on a rerun
    assert p.sample(batch) == p.sample(batch)


def test_bad_values_fail_naming_the_option(base):
    """The config's rules (`workers.options`), for a policy built without a config."""
    model, tok = base
    with pytest.raises(ConfigError, match="exclusive"):
        policy(model, tok, bksp_threshold=0.3, bksp_random=0.1)
    loaded = Loaded("transformers", "m", tok, model, "stream", "token", True)
    with pytest.raises(ConfigError, match=r"bksp_random: must be in \[0, 1\]"):
        make_policy(loaded, Decoding(bksp_random=1.5))
    with pytest.raises(ConfigError, match="bksp_threshold: must be in"):
        make_policy(loaded, Decoding(bksp_threshold=-0.1))


@pytest.mark.parametrize("option", ["bksp_threshold", "bksp_random"])
def test_the_vllm_policy_refuses_deliberate_backspaces(base, option):
    _, tok = base
    loaded = Loaded("vllm", "m", tok, object(), "stream", "token", True)
    make_policy(loaded, Decoding())  # the engine itself is never called here
    with pytest.raises(ConfigError, match=f"{option}=0.2: the vLLM policy does not implement"):
        make_policy(loaded, Decoding(**{option: 0.2}))


def test_the_eraser_draws_apart_from_the_token_draw(base):
    """Whether a row erases at a step is independent of the uniform its token is drawn from at
    that step (one shared stream would erase exactly where that uniform is below the rate)."""
    model, tok, _ = fixed(base, high=0.5, low=0.5)
    prompt = tuple(tok.encode(PROMPTS[0]))
    batch = [Ask(prompt, 1, "end", seed) for seed in range(300)]
    got = policy(model, tok, max_new_tokens=2, bksp_random=0.3).sample(batch)
    # the second token is the first where a backspace is allowed (the first would erase the prompt)
    u = uniforms(np.array([_row_seed(a.seed, 0) for a in batch], dtype=np.uint64), 1)
    erased = [len(r.tokens) == 2 and r.tokens[1] == tok.bksp_id for [r] in got]
    assert 50 < sum(erased) < 130
    assert any(e and x >= 0.3 for e, x in zip(erased, u, strict=True))
    assert any(not e and x < 0.3 for e, x in zip(erased, u, strict=True))


def test_the_table_title_names_the_rule():
    from pipeline.measure.evaluation import format_table

    result = {"model": "m", "mode": "erase", "unit": "step", "n_problems": 5, "settings": {}}
    assert "threshold" not in format_table(result)  # figures made before the options existed
    assert "backspace threshold 0.3," in format_table(result | {"bksp_threshold": 0.3})
    assert "random eraser 0.1," in format_table(
        result | {"bksp_threshold": 0.0, "bksp_random": 0.1}
    )
