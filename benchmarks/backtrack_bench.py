"""Training and decoding with backspaces: ratios for BENCHMARKS.md (issue 4).

    .venv/bin/python benchmarks/backtrack_bench.py [--out bench-backtrack.json]

1. Erase-mode vs stream-mode training step (collate + forward + backward + AdamW), same batch of
   32 random traces with backspaces, bootstrap-sized GPT-2.
2. Decoding one sequence with several backtracks: cropped KV cache vs re-encoding the visible
   prefix after each backspace run, at three sizes (the bootstrap model on a short sequence, a
   12-layer 512-wide model on a 384-token prompt, the same on a 960-token prompt).
3. Batched erase-mode decoding (64 rows in one call) vs one sequence per call, same model and
   seeds.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, GPT2Config

from search.backspace import pop_count
from search.types import Ask
from workers.collate import BacktrackCollator
from workers.decode import cropped_logits, reencode_logits
from workers.sampler import TransformersPolicy

VOCAB, BKSP, DELIM, EOS = 40, 39, 4, 1


def model_of(n_layer: int, n_embd: int, n_head: int, n_pos: int = 1024) -> Any:
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=n_pos,
        eos_token_id=EOS,
        bos_token_id=EOS,
    )
    return AutoModelForCausalLM.from_config(cfg).eval()


def stream(rng: random.Random, prompt_len: int, n: int, runs: int) -> list[int]:
    """A prompt, then `n` generated tokens with `runs` backspace runs spread through them."""
    ids = [rng.randrange(5, 30) for _ in range(prompt_len - 1)] + [DELIM]
    visible = list(ids)
    at = set(rng.sample(range(8, n - 4), runs))
    while len(ids) < prompt_len + n:
        if len(ids) - prompt_len in at and pop_count(visible, prompt_len, "token", DELIM):
            for _ in range(rng.randint(2, 5)):
                if not pop_count(visible, prompt_len, "token", DELIM):
                    break
                visible.pop()
                ids.append(BKSP)
            at.discard(len(ids) - prompt_len)
        tok = DELIM if rng.random() < 0.15 else rng.randrange(5, 30)
        ids.append(tok)
        visible.append(tok)
    return ids


def timed(fn: Any, repeat: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def training_step() -> dict[str, Any]:
    rng = random.Random(0)
    rows = [stream(rng, 10, 70, 3) for _ in range(32)]
    feats = [{"input_ids": r, "loss_mask": [1] * len(r), "prompt_len": 10} for r in rows]
    out: dict[str, Any] = {}
    for mode in ("stream", "erase"):
        model = model_of(3, 128, 4).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        collate = BacktrackCollator(mode, "token", BKSP, DELIM)  # type: ignore[arg-type]

        def step(model: Any = model, opt: Any = opt, collate: Any = collate) -> None:
            loss = model(**collate(feats)).loss
            loss.backward()
            opt.step()
            opt.zero_grad()

        out[f"{mode}_step_s"] = timed(step, 20)
        out[f"{mode}_collate_s"] = timed(lambda c=collate: c(feats), 20)
    out["erase_over_stream"] = out["erase_step_s"] / out["stream_step_s"]
    return out


def decoding(
    n_layer: int, n_embd: int, n_head: int, prompt_len: int, n: int, runs: int
) -> dict[str, Any]:
    model = model_of(n_layer, n_embd, n_head)
    ids = stream(random.Random(1), prompt_len, n, runs)
    args = (model, ids, prompt_len, "token", BKSP, DELIM)
    a, b = cropped_logits(*args), reencode_logits(*args)
    assert (a - b).abs().max() < 1e-3  # same logits both ways
    crop_s = timed(lambda: cropped_logits(*args), 3)
    reencode_s = timed(lambda: reencode_logits(*args), 3)
    return {
        "layers": n_layer,
        "width": n_embd,
        "prompt": prompt_len,
        "generated": n,
        "backspace_runs": ids.count(BKSP) and _runs(ids),
        "cropped_s": crop_s,
        "reencode_s": reencode_s,
        "speedup": reencode_s / crop_s,
    }


def _runs(ids: list[int]) -> int:
    return sum(1 for i, t in enumerate(ids) if t == BKSP and (i == 0 or ids[i - 1] != BKSP))


def batched_decoding(rows: int = 64, new: int = 48) -> dict[str, Any]:
    model = model_of(3, 128, 4)
    bias = torch.zeros(VOCAB)
    bias[BKSP] = 2.0  # a random model that backspaces now and then
    model.get_output_embeddings().register_forward_hook(lambda m, i, o: o + bias)
    policy = TransformersPolicy(
        model,
        EOS,
        DELIM,
        1.0,
        new,
        max_batch=256,
        ban_ids=[EOS],
        bksp_id=BKSP,
        mode="erase",
        unit="token",
        max_backspaces=8,
    )
    asks = [Ask((5 + i % 20, 6, 7, DELIM), 1, "end", i) for i in range(rows)]
    t = time.perf_counter()
    together = policy.sample(asks)
    batched = time.perf_counter() - t
    t = time.perf_counter()
    alone = [policy.sample([a])[0] for a in asks]
    single = time.perf_counter() - t
    tokens = sum(len(r[0].tokens) for r in together)
    same = sum(x[0].tokens == y[0].tokens for x, y in zip(together, alone, strict=True))
    return {
        "rows": rows,
        "tokens": tokens,
        "backspaces": sum(r[0].tokens.count(BKSP) for r in together),
        "rows_identical": same,
        "batched_tokens_per_s": tokens / batched,
        "single_tokens_per_s": tokens / single,
        "speedup": single / batched,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-backtrack.json")
    args = ap.parse_args()
    report = {
        "threads": torch.get_num_threads(),
        "training_step": training_step(),
        "decode_small": decoding(3, 128, 4, prompt_len=10, n=80, runs=4),
        "decode_large": decoding(12, 512, 8, prompt_len=384, n=64, runs=4),
        "decode_long_prompt": decoding(12, 512, 8, prompt_len=960, n=64, runs=6),
        "batched_decoding": batched_decoding(),
    }
    print(json.dumps(report, indent=2))
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
