"""Byte-level BPE tokenizers like those of users' checkpoints, trained offline with the
`tokenizers` library on task text: the bootstrap's `bootstrap.tokenizer=qwen2-bpe|gpt2-bpe`, and
the tests. The pre-tokenizer patterns are the public ones of GPT-2 and of Qwen2 / Llama-3; the
latter keep punctuation and the newlines after it together, so a step's delimiter merges into
tokens such as `.\\n` (docs/design.md §4: where a step ends)."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
QWEN2 = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
PATTERNS = {"gpt2-bpe": GPT2, "qwen2-bpe": QWEN2}
EOS = "<|endoftext|>"
BOS = "<|begin_of_text|>"


def bpe_tokenizer(
    texts: Iterable[str], pattern: str = QWEN2, vocab_size: int = 400, bos: bool = False
) -> PreTrainedTokenizerFast:
    """A byte-level BPE with the pre-tokenizer `pattern`, trained on `texts` up to `vocab_size`
    tokens; end-of-sequence `<|endoftext|>`, no pad token (like Llama's), and with `bos` a BOS
    token it adds to every encoding that asks for special tokens (like Llama-3's)."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, *([BOS] if bos else [])],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    if bos:
        core.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", special_tokens=[(BOS, core.token_to_id(BOS))]
        )
    extra = {"bos_token": BOS} if bos else {}
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, **extra)
