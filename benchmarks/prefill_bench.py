"""The sampler's prefill with a user-sized vocabulary: the last position's logits only, against
every prompt position's (figures for BENCHMARKS.md).

    PYTHONPATH=. .venv/bin/python benchmarks/prefill_bench.py [--rows 64] [--prompt 192] [--new 8]

A random 2-layer, 128-wide GPT-2 from a config with GPT-2's vocabulary (50,257 tokens), `rows`
prompts of `prompt` random tokens, `new` tokens sampled at T=1.0 each (end-of-sequence banned, so
every row samples to the budget). Arms, taking turns `--repeats` times (medians):

- last: `TransformersPolicy` as it runs (the forward's `logits_to_keep=1`);
- full (baseline): the same policy with every position's logits computed, as before it asked for
  the last only. Both sample the same tokens (checked).

The prefill's logits are `rows x prompt x vocab` floats in the full arm and `rows x vocab` in the
last; the table gives both sizes. A few seconds on one thread at the defaults.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from search.types import Ask
from workers.sampler import TransformersPolicy

VOCAB = 50_257


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=192)
    ap.add_argument("--new", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab_size=VOCAB, n_positions=512)
    model = GPT2LMHeadModel(config).eval()
    eos = VOCAB - 1
    prompts = torch.randint(0, eos, (args.rows, args.prompt)).tolist()
    asks = [Ask(tuple(p), 1, "end", i) for i, p in enumerate(prompts)]
    policies = {}
    for arm in ("last", "full"):
        policies[arm] = TransformersPolicy(
            model, eos, eos - 1, 1.0, args.new, max_batch=args.rows, ban_ids=[eos], pad_id=0
        )
    policies["full"]._last_only = {}  # every position's logits, the baseline
    times: dict[str, list[float]] = {arm: [] for arm in policies}
    tokens = {}
    for _ in range(args.repeats):
        for arm, policy in policies.items():
            start = time.perf_counter()
            tokens[arm] = [r[0].tokens for r in policy.sample(asks)]
            times[arm].append(time.perf_counter() - start)
    assert tokens["last"] == tokens["full"], "the two arms sampled different tokens"
    gib = 4 / 2**30
    median = {arm: statistics.median(t) for arm, t in times.items()}
    print(
        json.dumps(
            {
                "rows": args.rows,
                "prompt": args.prompt,
                "new": args.new,
                "threads": torch.get_num_threads(),
                "seconds": {arm: round(s, 3) for arm, s in median.items()},
                "speedup": round(median["full"] / median["last"], 2),
                "prefill_logits_gib": {
                    "full": round(args.rows * args.prompt * VOCAB * gib, 2),
                    "last": round(args.rows * VOCAB * gib, 3),
                },
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
