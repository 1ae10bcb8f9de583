"""Step boundaries under byte-level BPE: a step ends at every token whose text ends with the
delimiter (`.\\n` as well as `\\n`), so the step backspace, the sampler's step stop and the
search's prefixes see the steps a user's checkpoint writes (tests/bpe.py builds the tokenizers)."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search.backspace import apply_backspaces, is_step_end
from search.tree import split_steps
from search.types import Ask
from tests.bpe import GPT2, QWEN2, bpe_tokenizer, qwen2_checkpoint
from workers.hf import SearchTokenizer

BKSP = "<|bksp|>"
STEPS = ["She sold 24 clips.\n", "So 5 * 4 = 20.\n", "Then 3 more", "#### 7\n"]


@pytest.fixture(scope="module", params=[QWEN2, GPT2], ids=["qwen2", "gpt2"])
def tok(request):
    return SearchTokenizer.wrap(bpe_tokenizer(request.param), "\n", BKSP)


def test_every_token_that_ends_with_the_delimiter_ends_a_step():
    """The issue's example: Qwen2's pattern merges `.\\n`, whose id is not that of `\\n`; one step
    backspace used to erase both steps (back to a bare `\\n` that never came)."""
    tok = SearchTokenizer.wrap(bpe_tokenizer(QWEN2), "\n", BKSP)
    text = "She sold 24 clips.\nAltogether 72 clips.\n"
    ids = tok.encode(text)
    merged = tok.hf.convert_tokens_to_ids(tok.hf.tokenize(".\n"))
    assert len(merged) == 1 and merged[0] != tok.delim_id and merged[0] in tok.step_ends
    assert tok.delim_id in tok.step_ends
    prompt = tok.encode("Q: how many?\n")
    visible = apply_backspaces(
        [*prompt, *ids, tok.bksp_id], len(prompt), "step", tok.bksp_id, tok.step_ends
    )
    assert tok.decode(visible[len(prompt) :]) == "She sold 24 clips.\n"
    steps = split_steps(ids, tok.step_ends)
    assert [tok.decode(s) for s in steps] == ["She sold 24 clips.\n", "Altogether 72 clips.\n"]
    assert not is_step_end(tok.encode("clips")[-1], tok.step_ends)


def test_tokens_with_the_delimiter_inside_are_found_and_banned():
    """A token such as `\\nThe` would hide a step boundary inside itself: the wrapper lists such
    tokens, and sampling bans them (choosing them would end a step mid-token)."""
    hf = bpe_tokenizer(QWEN2)
    hf.add_tokens(["\nThe"])  # what a vocabulary trained on other text may hold
    tok = SearchTokenizer.wrap(hf, "\n", BKSP)
    inside = hf.convert_tokens_to_ids("\nThe")
    assert inside in tok.straddling and inside not in tok.step_ends


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.one_of(
            st.just("bksp"),
            st.sampled_from(
                ["She sold 24 clips.\n", "So 5 * 4 = 20.\n", "Then 3 more", "#### 7\n"]
            ),
        ),
        max_size=12,
    )
)
def test_backspaces_by_ids_and_by_text_leave_the_same_visible_text(tok, actions):
    """For random streams of steps (each tokenized as a model writes it, one piece after another)
    and step backspaces, applying the backspaces to the ids and to the text agree (GPT-2's and
    Qwen2's pre-tokenizers)."""
    prompt = tok.encode("Question: how many?\n")
    ids, shown = list(prompt), []
    for action in actions:
        if action == "bksp":
            if not shown:
                continue  # a backspace never reaches into the prompt
            ids.append(tok.bksp_id)
            shown.pop()
        else:
            ids.extend(tok.encode(action))
            if shown and not shown[-1].endswith("\n"):
                shown[-1] += action  # an unfinished step goes on
            else:
                shown.append(action)
    visible = apply_backspaces(ids, len(prompt), "step", tok.bksp_id, tok.step_ends)
    assert tok.decode(visible[len(prompt) :]) == "".join(shown)


def test_the_sampler_stops_a_step_at_a_merged_delimiter(tmp_path):
    """`until="step"` rollouts of a Qwen2-config model end at the first token that ends a step,
    whichever of the tokens ending with the delimiter it is."""
    from workers.policy import Decoding, load, make_policy

    path = qwen2_checkpoint(tmp_path / "qwen2")
    loaded = load("transformers", path, "\n", BKSP, "step", device="cpu")
    tok = loaded.tokenizer
    assert loaded.pad_id == tok.eos_id  # no pad token: padding falls back to end-of-sequence
    # make the merged `.\n` likely (a logit 5 above the rest), so that steps end on it
    merged = tok.hf.convert_tokens_to_ids(tok.hf.tokenize(".\n"))[0]

    def favour(module, inputs, logits):
        logits[..., merged] += 5.0
        return logits

    loaded.backend.lm_head.register_forward_hook(favour)
    policy = make_policy(loaded, Decoding(temperature=1.0, max_new_tokens=12, max_batch=8))
    prompt = tuple(tok.encode("Question: how many?\n"))
    (rollouts,) = policy.sample([Ask(prompt, 6, "step", seed=1)])
    ended = [r for r in rollouts if r.finished and r.tokens and r.tokens[-1] in tok.step_ends]
    assert ended
    for r in rollouts:
        assert not any(t in tok.step_ends for t in r.tokens[:-1])
