"""Tiny models built in the test, saved as ordinary checkpoint directories (nothing downloaded)."""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from transformers import AutoModelForCausalLM, Gemma2Config, MistralConfig, Qwen2Config

from pipeline.config import BootstrapConfig
from pipeline.stages.bootstrap import build_model, build_tokenizer

ALPHABET = "0123456789+-*/=?:# ans\n"
# architectures the bootstrap does not build; 4 query heads share 2 key/value heads (grouped query)
OTHER_ARCHS = {"qwen2": Qwen2Config, "mistral": MistralConfig, "gemma2": Gemma2Config}


def tiny_checkpoint(path: Path, arch: str = "gpt2", seed: int = 0, **config: Any) -> Path:
    """A randomly initialised tiny model and its character tokenizer, saved to `path`. `arch`:
    gpt2 or llama (the bootstrap's builders), or one of `OTHER_ARCHS`, whose config fields
    `config` overrides (e.g. sliding_window=8)."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer([ALPHABET])
    if arch in OTHER_ARCHS:
        fields = {
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "max_position_embeddings": 256,
            "bos_token_id": tokenizer.eos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
        model = AutoModelForCausalLM.from_config(OTHER_ARCHS[arch](**fields | config))
    else:
        model = build_model(BootstrapConfig(arch=arch, n_layer=2, n_embd=32, n_head=2), tokenizer)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


class Relogit(torch.nn.Module):
    """`inner` with its next-token logits changed by `adjust(logits, input_ids)` (in place, on
    a float copy): the hand-set models the decoding tests run."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.inner.get_output_embeddings()

    def adjust(self, logits: torch.Tensor, input_ids: torch.Tensor) -> None:
        raise NotImplementedError

    def forward(self, input_ids, attention_mask, position_ids, cache=None, use_cache=True):
        out = self.inner(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
        )
        logits = out.logits.float().clone()
        self.adjust(logits, input_ids)
        return SimpleNamespace(logits=logits, cache=out.cache)


class FixedBackspace(Relogit):
    """`inner` with its next-token backspace probability replaced: `prob[t]` after reading token
    t, `default` after any other. The other tokens keep their relative probabilities."""

    def __init__(
        self, inner: torch.nn.Module, bksp_id: int, prob: dict[int, float], default: float
    ):
        super().__init__(inner)
        table = torch.full((inner.get_output_embeddings().weight.shape[0],), default)
        for t, p in prob.items():
            table[t] = p
        self.bksp_id, self.table = bksp_id, table

    def adjust(self, logits: torch.Tensor, input_ids: torch.Tensor) -> None:
        last = logits[:, -1]
        others = torch.cat([last[:, : self.bksp_id], last[:, self.bksp_id + 1 :]], dim=1)
        p = self.table[input_ids[:, -1]]
        last[:, self.bksp_id] = torch.logsumexp(others, dim=1) + torch.log(p / (1 - p))


class EndsAfter(Relogit):
    """`inner` made to end the stream (end-of-sequence far likelier than anything else) after
    reading any token of `ends`."""

    def __init__(self, inner: torch.nn.Module, eos_id: int, ends: list[int]):
        super().__init__(inner)
        self.eos_id, self.ends = eos_id, torch.tensor(ends)

    def adjust(self, logits: torch.Tensor, input_ids: torch.Tensor) -> None:
        hit = torch.isin(input_ids[:, -1], self.ends)
        logits[hit, -1, self.eos_id] += 30.0
