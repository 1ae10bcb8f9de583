"""Evaluation on held-out problems (DESIGN §8). For now: accuracy with a 95% interval.

`solve_rate` samples one full solution per problem (greedy at temperature 0) with the batched
sampler and checks it with the task; the figure is the share solved with a Wilson interval.
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.config import Config
from search.tree import Judge, derive_seed
from search.types import Ask, Problem, Task
from workers.hf import SearchTokenizer
from workers.sampler import TransformersPolicy


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def solve_rate(
    model: Any,
    hf_tokenizer: Any,
    task: Task,
    problems: list[Problem],
    temperature: float,
    cfg: Config,
) -> dict[str, Any]:
    """Share of `problems` whose sampled solution the task accepts, with its 95% interval."""
    tok = SearchTokenizer.wrap(hf_tokenizer, task.step_delimiter, cfg.trace.bksp_token)
    policy = TransformersPolicy(
        model,
        tok.eos_id,
        tok.delim_id,
        temperature=temperature,
        max_new_tokens=cfg.search.max_new_tokens,
        max_batch=cfg.search.max_batch,
        ban_ids=[tok.bksp_id],
        pad_id=hf_tokenizer.pad_token_id or 0,
    )
    prompts = [tuple(tok.encode(p.prompt)) for p in problems]
    asks = [
        Ask(pr, 1, "end", derive_seed(cfg.run.seed, "eval", p.id))
        for p, pr in zip(problems, prompts, strict=True)
    ]
    rollouts = policy.sample(asks)
    solved = 0
    for p, pr, [r] in zip(problems, prompts, rollouts, strict=True):
        solved += Judge(task, p, tok, pr, cfg.trace.unit).correct(r.tokens, r.finished)
    lo, hi = wilson(solved, len(problems))
    return {
        "accuracy": solved / len(problems),
        "ci95": [lo, hi],
        "n": len(problems),
        "temperature": temperature,
    }
