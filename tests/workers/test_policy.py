"""`workers.policy`: the one factory behind the search and evaluation. Sampling never emits a
special token that is not part of the task's output (defect: `<|pad|>` and `<|unk|>` appeared in
14 of 3,794 released traces marked correct)."""

import torch

from search.tasks.arithmetic import ArithmeticTask
from search.tokenizer import CharTokenizer
from search.types import Ask
from tests.models import tiny_checkpoint
from workers.hf import load_checkpoint
from workers.policy import Decoding, load, load_fake, make_policy
from workers.sampler import TransformersPolicy


def pushed_towards_specials(tmp_path):
    """A tiny checkpoint whose padding and unknown logits track (and beat) the delimiter's."""
    path = tiny_checkpoint(tmp_path / "m")
    model, hf = load_checkpoint(path, "cpu")
    delim = hf.convert_tokens_to_ids("\n")
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        for special in (hf.pad_token_id, hf.unk_token_id):
            head[special] = 1.5 * head[delim]
    model.save_pretrained(path, safe_serialization=True)
    return path, hf


def test_sampling_bans_every_special_token_outside_the_task(tmp_path):
    path, hf = pushed_towards_specials(tmp_path)
    loaded = load("transformers", path, "\n", "<|bksp|>", "step", device="cpu")
    tok = loaded.tokenizer
    specials = {hf.pad_token_id, hf.unk_token_id}
    assert specials <= set(loaded.banned)
    assert not {tok.eos_id, tok.delim_id, tok.bksp_id} & set(loaded.banned)
    prompt = tuple(tok.encode("12+34=?\n"))
    asks = [Ask(prompt, 16, "end", seed) for seed in range(4)]
    policy = make_policy(loaded, Decoding(temperature=1.0, max_new_tokens=24))
    emitted = {t for rollouts in policy.sample(asks) for r in rollouts for t in r.tokens}
    assert not emitted & set(loaded.banned)
    # the same model without the factory's bans does emit them: the test can fail
    raw = TransformersPolicy(
        loaded.backend, tok.eos_id, tok.delim_id, temperature=1.0, max_new_tokens=24
    )
    assert specials & {t for rollouts in raw.sample(asks) for r in rollouts for t in r.tokens}


def test_one_load_serves_several_decodings(tmp_path):
    path, _ = pushed_towards_specials(tmp_path)
    loaded = load("transformers", path, "\n", "<|bksp|>", "token", device="cpu")
    greedy = make_policy(loaded, Decoding(temperature=0.0, max_new_tokens=8))
    again = make_policy(loaded, Decoding(temperature=0.0, max_new_tokens=8, ban_backspace=True))
    ask = [Ask(tuple(loaded.tokenizer.encode("1+2=?\n")), 1, "end", 0)]
    assert greedy.sample(ask) == again.sample(
        ask
    )  # an untrained model's backspace is banned anyway
    assert not loaded.trained and loaded.mode == "stream" and loaded.unit == "token"


def test_the_fake_kind_is_the_scripted_policy():
    task = ArithmeticTask(digits=2)
    problems = task.problems("train", 2)
    from search.fake import FakeParams

    loaded = load_fake(
        task, problems, FakeParams(error_rate=0.0, trap_rate=0.0), "<|bksp|>", "token", 0
    )
    policy = make_policy(loaded, Decoding(max_new_tokens=64))
    tok = loaded.tokenizer
    assert isinstance(tok, CharTokenizer)
    [[rollout]] = policy.sample([Ask(tuple(tok.encode(problems[0].prompt)), 1, "end", 0)])
    assert tok.decode(rollout.tokens) == "\n".join(task.reference(problems[0]))


def test_padding_falls_back_to_end_of_sequence_then_zero():
    """One rule for every padded batch (training, sampling, bootstrap): a Llama-family tokenizer
    has no pad token and pads with end-of-sequence; a pad id of 0 is kept, not taken as missing."""
    from types import SimpleNamespace as T

    from workers.policy import pad_of

    assert pad_of(T(pad_token_id=0, eos_token_id=5)) == 0
    assert pad_of(T(pad_token_id=None, eos_token_id=5)) == 5
    assert pad_of(T(pad_token_id=None, eos_token_id=None)) == 0


def test_the_context_limit_is_read_under_every_name_from_a_dict_or_a_config():
    from transformers import GPT2Config, LlamaConfig

    from workers.policy import context_limit

    assert context_limit(GPT2Config(n_positions=96)) == 96
    assert context_limit(LlamaConfig(max_position_embeddings=300)) == 300
    assert context_limit({"n_positions": 64}) == 64
    assert context_limit({"max_sequence_length": 2048}) == 2048
    assert context_limit({"n_layer": 2, "use_cache": True}) is None
