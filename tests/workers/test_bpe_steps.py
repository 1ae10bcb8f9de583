"""Step boundaries under byte-level BPE: a step ends at every token whose text ends with the
delimiter (`.\\n` as well as `\\n`), so the step backspace, the sampler's step stop and the
search's prefixes see the steps a user's checkpoint writes (tests/bpe.py builds the tokenizers)."""

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search.backspace import apply_backspaces, is_step_end, pop_count
from search.tree import split_steps
from search.types import Ask
from tests.bpe import GPT2, QWEN2, bpe_tokenizer, checkpoint, qwen2_checkpoint
from workers.hf import CheckpointError, SearchTokenizer, load_checkpoint, load_tokenizer
from workers.tokens import add_backspace_token

BKSP = "<|bksp|>"
PROMPT_LEN = 6
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


def random_stream(rng, vocab, bksp, ends, n=40):
    """Prompt, then generated tokens with step backspace runs, steps ending at any of `ends`."""
    ends = sorted(ends)
    ids = [rng.randrange(5, vocab) for _ in range(PROMPT_LEN - 1)] + [ends[0]]
    visible, runs = list(ids), 0
    while len(ids) < n:
        if pop_count(visible, PROMPT_LEN, "step", frozenset(ends)) and rng.random() < 0.3:
            for _ in range(rng.randint(1, 2)):
                k = pop_count(visible, PROMPT_LEN, "step", frozenset(ends))
                if not k:
                    break
                del visible[len(visible) - k :]
                ids.append(bksp)
            runs += 1
        else:
            tok = rng.choice(ends) if rng.random() < 0.25 else rng.randrange(5, vocab)
            ids.append(tok)
            visible.append(tok)
    return ids, runs


@pytest.mark.parametrize("arch, bos", [("qwen2", False), ("llama", True)])
def test_erase_training_equals_cropped_decoding_with_merged_step_ends(tmp_path, arch, bos):
    """The erase parity of tests/workers/test_parity.py on a byte-level BPE checkpoint whose steps
    end at several ids (`.\\n`, `?\\n`, `\\n`), for Qwen2 (no BOS) and Llama (a BOS token)."""
    from workers.collate import BacktrackCollator
    from workers.decode import cropped_logits

    model, hf = load_checkpoint(checkpoint(tmp_path / arch, arch, bos=bos), "cpu")
    bksp = add_backspace_token(model, hf, BKSP)
    ends = SearchTokenizer.wrap(hf, "\n", BKSP).step_ends
    assert len(ends) >= 2
    rng = random.Random(0)
    for _ in range(4):
        ids, runs = random_stream(rng, len(hf) - 2, bksp, ends)
        assert runs >= 2
        collate = BacktrackCollator("erase", "step", bksp, ends)
        batch = collate([{"input_ids": ids, "loss_mask": [1] * len(ids), "prompt_len": PROMPT_LEN}])
        batch.pop("labels")
        with torch.no_grad():
            train = model(**batch).logits[0]
        decode = cropped_logits(model, ids, PROMPT_LEN, "step", bksp, ends)
        assert (train - decode).abs().max().item() <= 1e-4


@pytest.mark.parametrize("tied", [True, False])
def test_the_backspace_takes_a_spare_row_of_a_padded_matrix(tmp_path, tied):
    """Released models pad their embedding matrix beyond the tokenizer: the backspace takes the
    next id, a spare row, without a resize; tied heads stay tied, an untied head gets its row."""
    model, hf = load_checkpoint(checkpoint(tmp_path / "m", spare_rows=16, tied=tied), "cpu")
    rows = model.get_input_embeddings().weight.shape[0]
    bksp = add_backspace_token(model, hf, BKSP)
    assert bksp == len(hf) - 1 < rows == model.get_input_embeddings().weight.shape[0]
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert (emb.data_ptr() == head.data_ptr()) == tied
    mean = emb[:bksp].mean(0)
    assert torch.allclose(emb[bksp], mean, atol=1e-6)
    if not tied:
        assert torch.allclose(head[bksp], head[:bksp].mean(0), atol=1e-6)


def test_the_backspace_is_one_token_that_merges_with_nothing(tmp_path):
    """Added as a special token, it splits the text around it: the same tokens either side as
    without it, and it decodes back to itself. BOS: the search's encoding adds none (training
    rows and sampling prompts are the same ids), even for a tokenizer that adds one by default."""
    hf = bpe_tokenizer(QWEN2, bos=True)
    tok = SearchTokenizer.wrap(hf, "\n", BKSP)
    left, right = tok.encode("She sold 24 clips."), tok.encode("\nAltogether")
    both = tok.encode("She sold 24 clips." + BKSP + "\nAltogether")
    assert both == [*left, tok.bksp_id, *right]
    assert tok.decode(both) == "She sold 24 clips." + BKSP + "\nAltogether"
    assert hf.bos_token_id in hf.encode("Hi.\n") and hf.bos_token_id not in tok.encode("Hi.\n")


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_the_chat_template_wraps_the_prompt_and_the_steps_follow_the_assistant_turn():
    hf = bpe_tokenizer(QWEN2)
    with pytest.raises(CheckpointError, match="has no chat template"):
        SearchTokenizer.wrap(hf, "\n", BKSP, chat_template=True)
    hf.chat_template = CHATML
    tok = SearchTokenizer.wrap(hf, "\n", BKSP, True, "Be careful.")
    ids = tok.encode_prompt("How many clips?\n")
    assert tok.decode(ids) == (
        "<|im_start|>system\nBe careful.<|im_end|>\n<|im_start|>user\nHow many clips?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert ids[-1] in tok.step_ends  # the first step starts on a fresh line
    plain = SearchTokenizer.wrap(hf, "\n", BKSP)
    assert plain.encode_prompt("How many clips?\n") == plain.encode("How many clips?\n")
    hf.chat_template = CHATML.replace("assistant\n", "assistant:")  # no newline at its end
    tok = SearchTokenizer.wrap(hf, "\n", BKSP, True)
    assert tok.decode(tok.encode_prompt("Q?\n")).endswith("<|im_start|>assistant:\n")


def test_the_config_carries_the_chat_template_to_the_loaded_tokenizer(tmp_path):
    from pipeline.config import ConfigError, load_config
    from pipeline.loading import load_model, task_from_config

    path = qwen2_checkpoint(tmp_path / "instruct")
    hf = load_tokenizer(path)
    hf.chat_template = CHATML
    hf.save_pretrained(path)
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "How many?", "answer": "2 + 3 = 5.\\n#### 5"}\n' * 1)
    sets = [
        "task.name=jsonl",
        f"task.jsonl.path={data}",
        "task.chat_template=true",
        "task.system_prompt=Be careful.",
    ]
    cfg = load_config("arith-tiny", sets)
    assert cfg.hash != load_config("arith-tiny", sets[:2]).hash
    loaded = load_model(cfg, "transformers", path, task_from_config(cfg.task))
    text = loaded.tokenizer.decode(loaded.tokenizer.encode_prompt("How many?\n"))
    assert text.startswith("<|im_start|>system\nBe careful.")
    with pytest.raises(ConfigError, match="system_prompt: it goes in the chat template"):
        load_config("arith-tiny", ["task.system_prompt=Be careful."])
