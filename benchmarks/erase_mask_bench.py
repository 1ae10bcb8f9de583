"""The erase-mode mask from one `erased_at` vector per row: figures for BENCHMARKS.md (issue 26).

    PYTHONPATH=. .venv/bin/python benchmarks/erase_mask_bench.py [--out bench-erase-mask.json]

1. Building the mask and position ids of a batch (`workers.erase.erase_attention`), B=32 rows of
   L=512 tokens with backspace runs (token unit), boolean and float32, against a plain causal
   mask of the same shape and dtype (what a 4D-mask collator without backspaces would build);
   the construction it replaced (one `attention_views` list per position) for the record, and
   the same at B=8, L=2,048.
2. A training step (collate + forward + backward + AdamW) in erase mode (float mask, the
   collator's default, and boolean; both on SDPA, and the float mask on the blocked SDPA the
   training stages switch models to, `workers.erase.use_blocked_attention`) against stream mode
   (on SDPA, which gets a padding mask from the model and so computes every block too, and on
   blocked SDPA), B=4 rows of L=2,048 on a small GPT-2 from a config (4 layers, 256 wide, 4 heads;
   random weights: timing does not depend on them); and the same at B=16, L=512. `--steps-only`
   measures only these.

Every figure is a median of `--repeats` runs with the arms taking turns, so load from other
processes on a shared machine falls on all of them alike; ratios are within one run. 2 threads.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, GPT2Config

from search.backspace import pop_count
from tests.workers.test_erase import reference_attention
from workers.collate import BacktrackCollator
from workers.erase import BLOCKED_SDPA, erase_attention, use_blocked_attention

VOCAB, BKSP, DELIM, EOS, PROMPT = 40, 39, 4, 1, 16


def stream(rng: random.Random, length: int, unit: str = "token") -> list[int]:
    """A prompt and generated tokens up to `length`, a backspace run of 1-4 every ~40 tokens."""
    ids = [rng.randrange(5, 30) for _ in range(PROMPT - 1)] + [DELIM]
    visible = list(ids)
    while len(ids) < length:
        if rng.random() < 1 / 40 and pop_count(visible, PROMPT, unit, DELIM):  # type: ignore[arg-type]
            for _ in range(min(rng.randint(1, 4), length - len(ids))):
                n = pop_count(visible, PROMPT, unit, DELIM)  # type: ignore[arg-type]
                if not n:
                    break
                del visible[len(visible) - n :]
                ids.append(BKSP)
            continue
        tok = DELIM if rng.random() < 0.1 else rng.randrange(5, 30)
        ids.append(tok)
        visible.append(tok)
    return ids


def medians(arms: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of each arm over `repeats` turns (one warm-up each first)."""
    times: dict[str, list[float]] = {name: [] for name in arms}
    for fn in arms.values():
        fn()
    for _ in range(repeats):
        for name, fn in arms.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def causal(b: int, width: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A plain causal 4D mask `[b, 1, width, width]` of `dtype` and its position ids."""
    allow = torch.ones(width, width, dtype=torch.bool).tril().expand(b, 1, width, width)
    positions = torch.arange(width).expand(b, width).contiguous()
    if dtype == torch.bool:
        return allow.contiguous(), positions
    mask = torch.full(allow.shape, torch.finfo(dtype).min, dtype=dtype)
    return mask.masked_fill_(allow, 0.0), positions


def mask_build(b: int, width: int, repeats: int, old: bool = True) -> dict[str, Any]:
    rng = random.Random(0)
    rows = [stream(rng, width - rng.randrange(0, 16)) for _ in range(b)]
    lens = [PROMPT] * b
    args = (rows, lens, width, "token", BKSP, DELIM)
    arms: dict[str, Callable[[], Any]] = {
        "erase_bool": lambda: erase_attention(*args, torch.bool),  # type: ignore[arg-type]
        "causal_bool": lambda: causal(b, width, torch.bool),
        "erase_float32": lambda: erase_attention(*args, torch.float32),  # type: ignore[arg-type]
        "causal_float32": lambda: causal(b, width, torch.float32),
    }
    if old:
        arms["old_views_float32"] = lambda: reference_attention(*args, torch.float32)
    s = medians(arms, repeats)
    n_bksp = sum(r.count(BKSP) for r in rows)
    out: dict[str, Any] = {"rows": b, "width": width, "backspaces": n_bksp}
    out |= {f"{k}_ms": v * 1e3 for k, v in s.items()}
    out["bool_over_causal"] = s["erase_bool"] / s["causal_bool"]
    out["float32_over_causal"] = s["erase_float32"] / s["causal_float32"]
    if old:
        out["old_over_new_float32"] = s["old_views_float32"] / s["erase_float32"]
    return out


def training_step(b: int, width: int, repeats: int) -> dict[str, Any]:
    """Seconds per step in each mode on one model (same weights moving through every arm)."""
    rng = random.Random(1)
    rows = [stream(rng, width) for _ in range(b)]
    feats = [{"input_ids": r, "loss_mask": [1] * len(r), "prompt_len": PROMPT} for r in rows]
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB, n_layer=4, n_embd=256, n_head=4, n_positions=width, eos_token_id=EOS
    )
    model = AutoModelForCausalLM.from_config(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    collators = {
        "stream": BacktrackCollator("stream", "token", BKSP, DELIM),
        "erase_float32": BacktrackCollator("erase", "token", BKSP, DELIM),
        "erase_bool": BacktrackCollator("erase", "token", BKSP, DELIM, dtype=torch.bool),
    }

    use_blocked_attention(model)

    def step(collate: BacktrackCollator, attention: str = "sdpa") -> None:
        model.set_attn_implementation(attention)
        model(**collate(feats)).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    arms = {k: (lambda c=c: step(c)) for k, c in collators.items()}
    arms["stream_blocked"] = lambda: step(collators["stream"], BLOCKED_SDPA)
    arms["erase_blocked"] = lambda: step(collators["erase_float32"], BLOCKED_SDPA)
    s = medians(arms, repeats)
    out: dict[str, Any] = {"rows": b, "width": width, "model": "gpt2 4x256, 4 heads"}
    out |= {f"{k}_step_s": v for k, v in s.items()}
    for k in ("erase_float32", "erase_bool", "stream_blocked", "erase_blocked"):
        out[f"{k}_over_stream"] = s[k] / s["stream"]
    out["erase_blocked_over_stream_blocked"] = s["erase_blocked"] / s["stream_blocked"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-erase-mask.json")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps-only", action="store_true", help="only the training steps")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    if not args.steps_only:
        report["mask_32x512"] = mask_build(32, 512, args.repeats)
        report["mask_8x2048"] = mask_build(8, 2048, max(3, args.repeats // 2))
    report["train_step_16x512"] = training_step(16, 512, args.repeats)
    report["train_step_4x2048"] = training_step(4, 2048, max(3, args.repeats // 2))
    text = json.dumps(report, indent=2)
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
