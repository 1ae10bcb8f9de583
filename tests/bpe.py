"""Byte-level BPE tokenizers like the ones users' checkpoints bring, built offline with the
`tokenizers` library and trained on task text, with tiny random models: the pre-tokenizer patterns
are the public ones of GPT-2 and of Qwen2 / Llama-3 (which keep punctuation and the newlines after
it together, so a step's delimiter merges into tokens such as `.\\n`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.bpe import BOS, EOS, GPT2, QWEN2
from pipeline.bpe import bpe_tokenizer as trained_bpe

__all__ = ["BOS", "EOS", "GPT2", "QWEN2", "bpe_tokenizer", "checkpoint", "qwen2_checkpoint"]

# GSM8K-style steps: each ends with punctuation and the delimiter, which Qwen2's pattern merges
TEXTS = [
    "Natalia sold 48 clips in April.\nShe sold half as many in May: 48/2 = 24 clips.\n"
    "Altogether she sold 48+24 = 72 clips.\n#### 72\n",
    "Weng earns 12/60 = 0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = 10.\n#### 10\n",
    "Betty has only 100 / 2 = 50.\nHer grandparents gave her 15 * 2 = 30.\n"
    "She needs 100 - 50 - 30 - 15 = 5 more.\n#### 5\n",
    "James writes 3 * 2 = 6 pages a week.\nSo he writes 6 * 52 = 312 pages a year.\n#### 312\n",
    "Question: how many?\nAnswer: 2 + 3 = 5.\nThen 5 * 4 = 20.\n#### 20\n",
] * 8


def bpe_tokenizer(pattern: str, vocab_size: int = 400, bos: bool = False) -> Any:
    """`pipeline.bpe.bpe_tokenizer` trained on `TEXTS`."""
    return trained_bpe(TEXTS, pattern, vocab_size, bos)


def checkpoint(
    out: Path,
    arch: str = "qwen2",
    pattern: str = QWEN2,
    bos: bool = False,
    spare_rows: int = 0,
    tied: bool = True,
) -> Path:
    """A tiny random model (`arch`: a Qwen2 or a Llama config) with a BPE tokenizer of `pattern`
    (no pad token; with `bos`, one that adds a BOS token), saved at `out` as an ordinary checkpoint
    directory (safetensors, tokenizer.json). `spare_rows`: embedding rows beyond the tokenizer's
    (released models pad their matrices to a round size)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = bpe_tokenizer(pattern, bos=bos)
    common = {
        "vocab_size": len(tok) + spare_rows,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": tok.bos_token_id,
        "tie_word_embeddings": tied,
    }
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def qwen2_checkpoint(out: Path, pattern: str = QWEN2, bos: bool = False) -> Path:
    """`checkpoint` with a Qwen2 config."""
    return checkpoint(out, "qwen2", pattern, bos)
