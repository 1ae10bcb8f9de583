"""Tiny models built in the test, saved as ordinary checkpoint directories (nothing downloaded)."""

from pathlib import Path

import torch

from pipeline.bootstrap import build_model, build_tokenizer
from pipeline.config import BootstrapConfig

ALPHABET = "0123456789+-*/=?:# ans\n"


def tiny_checkpoint(path: Path, arch: str = "gpt2", seed: int = 0) -> Path:
    """A randomly initialised tiny model and its character tokenizer, saved to `path`."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer([ALPHABET])
    model = build_model(BootstrapConfig(arch=arch, n_layer=2, n_embd=32, n_head=2), tokenizer)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
