"""bf16 autocast against fp32 on this machine's CPU: the training step and the sampler, at the
model-size ladder's three sizes (`pipeline.config.SIZES`). Figures for BENCHMARKS.md (scale).

    PYTHONPATH=. .venv/bin/python benchmarks/precision_bench.py [--turns 5] [--out FILE]

Training step: GPT-2 from a config over a 40-token character vocabulary, 64 rows of 64 tokens
(a Countdown bootstrap batch is 64 rows of about 50), forward + backward + AdamW, the model's
forward under `workers.hf.set_precision` (fp32, or bf16 autocast with fp32 weights). Sampler:
`TransformersPolicy`, 128 prompts of 20 tokens, 48 new tokens each (end-of-sequence banned), T=1.0,
fp32 / bf16 autocast / weights cast to bf16 (`model.dtype=bfloat16`). The arms take turns; medians
of `--turns` turns after one warm-up each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from pipeline.config import SIZES, BootstrapConfig
from pipeline.stages import bootstrap
from search.types import Ask
from workers.hf import set_precision
from workers.sampler import TransformersPolicy

CHARS = "0123456789+-*/=?,()\nabcdefghijklmnopqrs "


def build(size: str, tokenizer: Any) -> torch.nn.Module:
    shape = SIZES[size]
    b = BootstrapConfig(n_layer=shape[0], n_embd=shape[1], n_head=shape[2], n_positions=128)
    torch.manual_seed(0)
    return bootstrap.build_model(b, tokenizer)


def train_step(model: torch.nn.Module, opt: Any, ids: torch.Tensor) -> float:
    t = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def train_ratio(size: str, tokenizer: Any, turns: int) -> dict[str, Any]:
    ids = torch.randint(3, len(tokenizer), (64, 64), generator=torch.Generator().manual_seed(0))
    arms = {}
    for precision in ("fp32", "bf16"):
        model = set_precision(build(size, tokenizer).train(), precision)  # type: ignore[arg-type]
        arms[precision] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
    times: dict[str, list[float]] = {p: [] for p in arms}
    for turn in range(turns + 1):
        for precision, (model, opt) in arms.items():
            s = train_step(model, opt, ids)
            if turn:
                times[precision].append(s)
    med = {p: statistics.median(v) for p, v in times.items()}
    return {"step_s": med, "bf16_speedup": med["fp32"] / med["bf16"]}


def sample_ratio(size: str, tokenizer: Any, turns: int) -> dict[str, Any]:
    prompts = [
        tokenizer.encode(f"{10 + i % 40},{3 + i % 17},{i % 9 + 1}=?{i}\n") for i in range(128)
    ]
    eos = tokenizer.eos_token_id
    arms = {
        "fp32": build(size, tokenizer).eval(),
        "bf16": set_precision(build(size, tokenizer).eval(), "bf16"),  # type: ignore[arg-type]
        "bf16_weights": build(size, tokenizer).eval().to(torch.bfloat16),
    }
    policies = {
        name: TransformersPolicy(
            m,
            eos,
            tokenizer.encode("\n")[0],
            1.0,
            48,
            max_batch=256,
            ban_ids=[eos],
            pad_id=tokenizer.pad_token_id,
        )
        for name, m in arms.items()
    }
    rate: dict[str, list[float]] = {n: [] for n in policies}
    for turn in range(turns + 1):
        for name, policy in policies.items():
            t = time.perf_counter()
            out = policy.sample([Ask(tuple(p), 1, "end", i) for i, p in enumerate(prompts)])
            s = time.perf_counter() - t
            if turn:
                rate[name].append(sum(len(rs[0].tokens) for rs in out) / s)
    med = {n: statistics.median(v) for n, v in rate.items()}
    return {
        "tokens_per_s": med,
        "bf16_speedup": med["bf16"] / med["fp32"],
        "bf16_weights_speedup": med["bf16_weights"] / med["fp32"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tokenizer = bootstrap.build_tokenizer([CHARS])
    report: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    for size in SIZES:
        params = sum(p.numel() for p in build(size, tokenizer).parameters())
        report[size] = {
            "parameters": params,
            "train": train_ratio(size, tokenizer, args.turns),
            "sample": sample_ratio(size, tokenizer, args.turns),
        }
        print(json.dumps({size: report[size]}), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
