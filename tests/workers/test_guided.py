"""Backspace-guided search (`workers.guided`, `eval.bksp_search`), with the model's own erase rule
or the value model's (`eval.value_drop`, a scripted valuer here).

On a tiny model whose backspace probability is set by hand (`FixedBackspace`): high after the
step delimiter, so the model wants to erase at every step end, or low everywhere, so it never
does. What the candidates were is recorded by wrapping the candidate sampler.
"""

import pytest

from pipeline.config import ConfigError, load_config
from search.backspace import apply_backspaces, pop_count
from search.tree import derive_seed
from search.types import Ask
from tests.models import EndsAfter, FixedBackspace, tiny_checkpoint
from workers.guided import GuidedPolicy
from workers.hf import SearchTokenizer, load_checkpoint
from workers.policy import Decoding, Loaded, make_policy
from workers.sampler import TransformersPolicy
from workers.tokens import add_backspace_token

PROMPTS = ["12+34=?\n", "7*8=?\n", "123+456=?\n1+2+0=3\n"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tiny_checkpoint(tmp_path_factory.mktemp("gpt2"), "gpt2")
    model, hf = load_checkpoint(path, "cpu")
    add_backspace_token(model, hf, "<|bksp|>")
    return model, SearchTokenizer.wrap(hf, "\n", "<|bksp|>")


def guided(base, after_delim: float, **kw) -> tuple[GuidedPolicy, SearchTokenizer]:
    """The guided policy over the model with P(backspace) = `after_delim` right after a step
    delimiter and 1e-6 elsewhere."""
    model, tok = base
    fixed = FixedBackspace(model, tok.bksp_id, {tok.delim_id: after_delim}, 1e-6)
    kw = {"m": 3, "temperature": 1.0, "max_new_tokens": 40, **kw}
    return GuidedPolicy(fixed, tok.eos_id, tok.delim_id, tok.bksp_id, "step", **kw), tok


def asks(tok, n=3):
    return [Ask(tuple(tok.encode(p)), n, "end", 7 + i) for i, p in enumerate(PROMPTS)]


def record(policy: GuidedPolicy) -> list:
    """Wrap the candidate sampler; the list fills with (visible prefix, candidates drawn)."""
    seen, inner = [], policy.candidates.sample

    def sample(batch):
        got = inner(batch)
        seen.extend((a.prefix, rs) for a, rs in zip(batch, got, strict=True))
        return got

    policy.candidates.sample = sample
    return seen


def mean_lp(r) -> float:
    return sum(r.logprobs) / len(r.logprobs)


def test_a_model_that_never_erases_decodes_exactly_as_plain_greedy(base):
    """Step by step with no erase is the same greedy stream as decoding to the end at once."""
    policy, tok = guided(base, after_delim=1e-6, temperature=0.0)
    model = policy.model
    plain = TransformersPolicy(
        model, tok.eos_id, tok.delim_id, 0.0, 40, ban_ids=[tok.bksp_id, *policy.others]
    )
    batch = asks(tok, n=1)
    got = policy.sample(batch)
    want = plain.sample(batch)
    assert [[r.tokens for r in rs] for rs in got] == [[r.tokens for r in rs] for rs in want]
    assert [[r.finished for r in rs] for rs in got] == [[r.finished for r in rs] for rs in want]
    assert policy.generated == [[len(r.tokens)] for rs in got for r in rs]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_an_erase_redraws_m_candidates_and_keeps_the_likeliest(base, temperature):
    policy, tok = guided(base, after_delim=0.999, temperature=temperature, max_backspaces=2)
    seen = record(policy)
    batch = asks(tok)
    got = policy.sample(batch)
    assert seen, "the model erased nowhere"
    by_prefix = {}
    for prefix, drawn in seen:
        assert len(drawn) == 3  # m candidates, at T=1 even when the decoding is greedy
        by_prefix.setdefault(prefix, []).append(drawn)
    n_erases = 0
    for a, rs, counts in zip(batch, got, policy.generated, strict=True):
        for r, generated in zip(rs, counts, strict=True):
            ids = [*a.prefix, *r.tokens]
            apply_backspaces(ids, len(a.prefix), "step", tok.bksp_id, tok.delim_id)  # valid
            assert r.tokens.count(tok.bksp_id) <= 2
            thrown = 0
            for k, t in enumerate(r.tokens):
                if t != tok.bksp_id:
                    continue
                n_erases += 1
                before = apply_backspaces(
                    ids[: len(a.prefix) + k + 1], len(a.prefix), "step", tok.bksp_id, tok.delim_id
                )
                erased = tuple(
                    apply_backspaces(
                        ids[: len(a.prefix) + k], len(a.prefix), "step", tok.bksp_id, tok.delim_id
                    )[len(before) :]
                )
                drawn = next(d for d in by_prefix[tuple(before)] if _follows(r.tokens, k, d))
                fresh = [d for d in drawn if d.tokens != erased] or drawn
                best = max(fresh, key=mean_lp)
                kept = r.tokens[k + 1 : k + 1 + len(best.tokens)]
                assert kept == best.tokens[: len(kept)]  # the stream's end may cut the last step
                room = policy.max_new_tokens - (k + 1)
                thrown += sum(min(len(d.tokens), room) for d in drawn) - len(kept)
            # every token drawn counts: the stream's and the candidates thrown away
            assert generated == len(r.tokens) + thrown
    assert n_erases >= len(batch)


def _follows(tokens, k, drawn) -> bool:
    """Whether one of the candidates `drawn` is what the stream holds right after position k."""
    kept = [tokens[k + 1 : k + 1 + len(d.tokens)] for d in drawn]
    return any(t == d.tokens[: len(t)] for t, d in zip(kept, drawn, strict=True))


def test_the_threshold_decides_the_erase_when_set(base):
    for p, erases in ((0.3, False), (0.7, True)):
        policy, tok = guided(base, after_delim=p, temperature=0.0, bksp_threshold=0.5)
        got = policy.sample(asks(tok))
        found = any(tok.bksp_id in r.tokens for rs in got for r in rs)
        assert found == erases


def test_the_options_are_checked_and_route_to_the_guided_policy(base, caplog):
    with pytest.raises(ConfigError, match="bksp_search"):
        load_config("arith-tiny", ["eval.bksp_search=-1"])
    with pytest.raises(ConfigError, match="vLLM"):
        load_config("arith-tiny", ["eval.bksp_search=4", "eval.policy=vllm"])
    model, tok = base
    loaded = Loaded("transformers", "m", tok, model, "erase", "step", True)
    with pytest.raises(ConfigError, match="value_drop"):  # the config's rule, without a config
        make_policy(loaded, Decoding(bksp_search=2, bksp_random=0.1, value_drop=0.1))
    coin = make_policy(loaded, Decoding(bksp_search=2, bksp_random=0.1))
    assert isinstance(coin, GuidedPolicy) and coin.bksp_random == 0.1
    assert isinstance(make_policy(loaded, Decoding(bksp_search=4)), GuidedPolicy)
    banned = make_policy(loaded, Decoding(bksp_search=4, ban_backspace=True))
    assert isinstance(banned, TransformersPolicy)
    untrained = Loaded("transformers", "plain-model", tok, model, "stream", "step", False)
    assert isinstance(make_policy(untrained, Decoding(bksp_search=4)), TransformersPolicy)
    # said, once per model: an erase rule asked of a model that guided search cannot decode
    make_policy(untrained, Decoding(bksp_search=4, erase_logprob=-1.0))
    said = [r.message for r in caplog.records if "not trained on backspaces" in r.message]
    assert len(said) == 1 and "plain-model" in said[0]


def record_all(policy: GuidedPolicy) -> dict:
    """Wrap both samplers; the dict fills with (visible prefix, step tokens) -> mean log-prob."""
    seen: dict = {}
    for sampler in (policy.step, policy.candidates):
        inner = sampler.sample

        def sample(batch, inner=inner):
            got = inner(batch)
            for a, rs in zip(batch, got, strict=True):
                seen.update({(a.prefix, r.tokens): mean_lp(r) for r in rs if r.logprobs})
            return got

        sampler.sample = sample
    return seen


# the random tiny model's steps have mean log-probabilities near -2.9 (greedy) and -3.1 to -3.4
# (T=1): thresholds in between erase some steps and keep others
@pytest.mark.parametrize("temperature, tau", [(0.0, -2.9), (1.0, -3.25)])
def test_the_likelihood_rule_erases_exactly_the_unlikely_steps_and_never_redraws_them(
    base, temperature, tau
):
    """`erase_logprob`: a step is erased if and only if the mean log-probability of its tokens
    (as drawn) is below the threshold; the redraw keeps a candidate other than the erased step
    whenever one was drawn. The model's own P(backspace) is near zero here: every erase is the
    rule's."""
    policy, tok = guided(base, after_delim=1e-6, temperature=temperature, erase_logprob=tau,
                         max_backspaces=3)  # fmt: skip
    seen = record_all(policy)
    batch = asks(tok)
    got = policy.sample(batch)
    erased_any = kept_any = False
    for a, rs in zip(batch, got, strict=True):
        for r in rs:
            ids, erases = [*a.prefix, *r.tokens], 0
            visible = list(a.prefix)
            k = 0

            def drawn(k, visible=visible, r=r):  # the step drawn at this prefix the stream holds
                held = [t for (p, t) in seen if p == tuple(visible)]
                return next(t for t in held if r.tokens[k : k + len(t)] == t[: len(r.tokens) - k])

            while k < len(r.tokens):
                step = drawn(k)
                k += len(step)
                after = k < len(r.tokens) and r.tokens[k] == tok.bksp_id
                lp = seen[(tuple(visible), step)]
                if after:
                    assert lp < tau  # erased: unlikely
                    erases, erased_any = erases + 1, True
                    k += 1
                    redo = drawn(k)
                    others = [t for (p, t) in seen if p == tuple(visible) and t != step]
                    assert redo != step or not others  # the erased step is tabu
                else:
                    visible += step
                    if k < len(r.tokens) and erases < 3 and len(r.tokens) < policy.max_new_tokens:
                        assert lp >= tau  # kept with room to erase: likely enough
                        kept_any = True
            assert ids  # the stream is well formed
    # greedy streams of this random model are one long step after the erased ones: no kept
    # decision to check there, only erases
    assert erased_any and (kept_any or temperature == 0.0)


def test_the_random_eraser_fires_by_its_coin_alone_and_redraws_with_the_tabu(base):
    """`bksp_random` p with guided search: the control at a detector's rate. The model never
    wants to erase here (P(backspace) 1e-6); p = 1 erases at every step end while erases are left
    (never into the prompt), the redraw keeps another step whenever one was drawn; p near 0 is
    the decoding of a guided search that never erases; a rerun erases the same steps."""
    _, tok = base
    batch = asks(tok)
    coin, _ = guided(base, after_delim=1e-6, bksp_random=1.0, max_backspaces=2)
    seen = record(coin)
    got = coin.sample(batch)
    for rs in got:
        for r in rs:
            n = sum(1 for t in r.tokens if t == tok.bksp_id)
            steps = sum(1 for t in r.tokens if t == tok.delim_id)
            assert n == 2 or (n < 2 and steps <= n + 1)  # out of steps or tokens before 2
    assert seen and all(len(c) == 3 for _, c in seen)  # m = 3 candidates after each erase
    again, _ = guided(base, after_delim=1e-6, bksp_random=1.0, max_backspaces=2)
    assert [[r.tokens for r in rs] for rs in again.sample(batch)] == [
        [r.tokens for r in rs] for rs in got
    ]
    never, _ = guided(base, after_delim=1e-6, bksp_random=1e-12, max_backspaces=2)
    plain, _ = guided(base, after_delim=1e-6, max_backspaces=2)
    assert [[r.tokens for r in rs] for rs in never.sample(batch)] == [
        [r.tokens for r in rs] for rs in plain.sample(batch)
    ]
    cfg = load_config("arith-tiny", ["eval.bksp_search=2", "eval.bksp_random=0.2"])
    assert cfg.eval.bksp_random == 0.2


def test_the_likelihood_rule_is_one_rule_of_guided_search():
    with pytest.raises(ConfigError, match="erase_logprob"):
        load_config("arith-tiny", ["eval.erase_logprob=-1.0"])  # no guided search
    with pytest.raises(ConfigError, match="erase_logprob"):
        load_config("arith-tiny", ["eval.bksp_search=2", "eval.erase_logprob=0.5"])  # a log-prob
    with pytest.raises(ConfigError, match="erase_logprob"):
        load_config(
            "arith-tiny",
            ["eval.bksp_search=2", "eval.erase_logprob=-1.0", "eval.bksp_threshold=0.5"],
        )
    cfg = load_config("arith-tiny", ["eval.bksp_search=2", "eval.erase_logprob=-1.0"])
    assert cfg.hash != load_config("arith-tiny", ["eval.bksp_search=2"]).hash


class HashValuer:
    """A value for every prefix, fixed by its ids (so drops over a step are large or small at
    random); `seen` collects what it was asked."""

    def __init__(self):
        self.seen = []

    def values(self, prefixes):
        self.seen += prefixes
        return [derive_seed("value", *p) % 1000 / 1000 for p in prefixes]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_value_rule_erases_exactly_where_the_value_drops_more_than_the_threshold(
    base, temperature
):
    """The model wants to erase at every step end (P = 0.999) and is not listened to: a step is
    erased where, and only where, the value fell by more than 0.3 over it."""
    valuer, drop, budget = HashValuer(), 0.3, 3
    policy, tok = guided(
        base,
        after_delim=0.999,
        temperature=temperature,
        max_backspaces=budget,
        valuer=valuer,
        value_drop=drop,
    )
    batch = asks(tok)
    got = policy.sample(batch)
    value = dict(zip(valuer.seen, valuer.values(valuer.seen), strict=True))
    decisions = {True: 0, False: 0}
    for a, rs in zip(batch, got, strict=True):
        for r in rs:
            erases = 0
            for k, t in enumerate(r.tokens):
                if t != tok.delim_id or erases >= budget or k + 1 >= policy.max_new_tokens:
                    continue  # no step ended here, or no erase allowed any more
                after = visible(a.prefix, r.tokens[: k + 1], tok)
                before = after[: len(after) - pop_count(after, len(a.prefix), "step", tok.delim_id)]
                erased = k + 1 < len(r.tokens) and r.tokens[k + 1] == tok.bksp_id
                assert erased == (value[before] - value[after] > drop)
                decisions[erased] += 1
                erases += erased
    assert decisions[True] >= 2 and decisions[False] >= 2


def visible(prompt, stream, tok):
    ids = [*prompt, *stream]
    return tuple(apply_backspaces(ids, len(prompt), "step", tok.bksp_id, tok.delim_id))


def test_the_value_rule_needs_a_value_model_and_is_one_rule(base):
    with pytest.raises(ConfigError, match="value_drop"):
        load_config("arith-tiny", ["eval.bksp_search=4", "eval.value_drop=0.2"])
    with pytest.raises(ConfigError, match="value_drop"):
        load_config("arith-tiny", ["eval.value_model=v", "eval.value_drop=0.2"])
    sets = ["eval.value_model=v", "eval.value_drop=0.2", "eval.bksp_search=4"]
    with pytest.raises(ConfigError, match="value_drop"):
        load_config("arith-tiny", [*sets, "eval.bksp_threshold=0.5"])
    cfg = load_config("arith-tiny", sets)
    assert cfg.hash != load_config("arith-tiny").hash
    model, tok = base
    loaded = Loaded("transformers", "m", tok, model, "erase", "step", True)
    with pytest.raises(ConfigError, match="value model"):
        make_policy(loaded, Decoding(bksp_search=4, value_drop=0.2))
    policy = make_policy(loaded, Decoding(bksp_search=4, value_drop=0.2), HashValuer())
    assert isinstance(policy, GuidedPolicy) and policy.value_drop == 0.2


@pytest.mark.parametrize("at_end", [False, True])
def test_the_dead_end_trigger_erases_a_step_that_ended_the_stream_and_retries_another(base, at_end):
    """`erase_at_end` (issue 27, item 3): a model whose backspace is likely only where a stream
    ends (after its last token, never after a delimiter) erases there only with the option; each
    erase takes the part-written last step and the redraw never rewrites it while another
    candidate was drawn; the stream ends for good once the erases are spent."""
    model, tok = base
    special = {tok.delim_id, tok.bksp_id, tok.eos_id}
    ends = [i for i in range(len(tok.hf)) if i not in special]  # a step ends at its first token
    inner = FixedBackspace(
        EndsAfter(model, tok.eos_id, ends), tok.bksp_id, {tok.delim_id: 1e-6}, 0.999
    )
    options = {"temperature": 0.0, "max_new_tokens": 40, "max_backspaces": 2, "at_end": at_end}
    policy = GuidedPolicy(inner, tok.eos_id, tok.delim_id, tok.bksp_id, "step", 3, **options)
    seen = record(policy)
    batch = asks(tok, n=1)
    got = policy.sample(batch)
    for a, (r,) in zip(batch, got, strict=True):
        ids = [*a.prefix, *r.tokens]
        assert r.finished and r.tokens[-1] in ends  # each stream ends after a step's token
        if not at_end:
            assert tok.bksp_id not in r.tokens
            continue
        assert r.tokens.count(tok.bksp_id) == 2  # every end is erased while erases are left
        for k, t in enumerate(r.tokens):
            if t != tok.bksp_id:
                continue
            assert r.tokens[k - 1] in ends  # the backspace stands where the stream had ended
            before = apply_backspaces(ids[: len(a.prefix) + k], len(a.prefix), "step",
                                      tok.bksp_id, tok.delim_id)  # fmt: skip
            n = pop_count(before, len(a.prefix), "step", tok.delim_id)
            erased, prefix = tuple(before[len(before) - n :]), tuple(before[: len(before) - n])
            redo = r.tokens[k + 1 :]
            redo = tuple(redo[: redo.index(tok.bksp_id)] if tok.bksp_id in redo else redo)
            # the candidates drawn at that prefix that hold the redo (a prefix can be retried)
            drawn = [[x.tokens for x in d] for p, d in seen if p == prefix]
            drawn = [d for d in drawn if redo in d]
            assert drawn
            assert any(redo != erased or all(x == erased for x in d) for d in drawn)  # tabu
    with pytest.raises(ConfigError, match="erase_at_end"):
        load_config("arith-tiny", ["eval.erase_at_end=true"])
    cfg = load_config("arith-tiny", ["eval.bksp_search=2", "eval.erase_at_end=true"])
    assert cfg.hash != load_config("arith-tiny", ["eval.bksp_search=2"]).hash
