"""A long tail in one batch: rows that stop leave the batch (figures for BENCHMARKS.md).

    .venv/bin/python benchmarks/tail_bench.py [--rows 256] [--long 4] [--new 128]

A random bootstrap-sized GPT-2 (3 layers, 128 wide) from a config, `rows` rows sampled at T=1.0
with end-of-sequence banned: `long` of them sample to the budget (`until="end"`, `new` tokens),
the others one step (`until="step"`: they stop at their first delimiter, a few tokens in). Arms:

- tail: that batch, stopped rows leaving it (what `TransformersPolicy` does);
- full (baseline): every row samples to the budget, the work a sampler that keeps stopped rows in
  the batch until the longest finishes does on the tail batch (same batch shape every step).

The ratio is full seconds / tail seconds (medians of `--repeats`, arms taking turns); about 40 s
on one thread. Run from the repository root with `PYTHONPATH=.` so the working tree's code is
the one measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from pipeline.config import BootstrapConfig
from pipeline.stages import bootstrap
from search.types import Ask
from workers.sampler import TransformersPolicy


def timed(policy: TransformersPolicy, arms: dict[str, list[Ask]], repeats: int) -> dict[str, Any]:
    """Per arm: median seconds of `policy.sample(asks)` and the tokens sampled. The arms take
    turns, so load from other processes on a shared machine falls on both alike."""
    times: dict[str, list[float]] = {name: [] for name in arms}
    tokens = {}
    for _ in range(repeats):
        for name, asks in arms.items():
            t = time.perf_counter()
            out = policy.sample(asks)
            times[name].append(time.perf_counter() - t)
            tokens[name] = sum(len(r.tokens) for rs in out for r in rs)
    return {
        name: {"s": statistics.median(ts), "all_s": ts, "tokens": tokens[name]}
        for name, ts in times.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--long", type=int, default=4)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # 2 threads on 2 shared cores thrash under others' load
    torch.manual_seed(0)
    tokenizer = bootstrap.build_tokenizer(["0123456789+*=?\nans "])
    model = bootstrap.build_model(BootstrapConfig(), tokenizer).eval()
    eos, delim = tokenizer.eos_token_id, tokenizer.encode("\n")[0]
    policy = TransformersPolicy(
        model, eos, delim, 1.0, args.new, 512, ban_ids=[eos], pad_id=tokenizer.pad_token_id
    )
    prompts = [
        tuple(tokenizer.encode(f"{100 + 7 * i}+{200 + 3 * i}=?\n")) for i in range(args.rows)
    ]
    tail = [Ask(p, 1, "end" if i < args.long else "step", i) for i, p in enumerate(prompts)]
    full = [Ask(p, 1, "end", i) for i, p in enumerate(prompts)]
    policy.sample(tail[:2])  # warm-up
    arms = timed(policy, {"tail": tail, "full": full}, args.repeats)
    report: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "rows": args.rows,
        "long_rows": args.long,
        "new_tokens": args.new,
        **arms,
        "speedup": arms["full"]["s"] / arms["tail"]["s"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
