"""Retry data made of a model's own errors (`bootstrap.retry_model`), instead of synthetic ones.

For each problem the bootstrap chose for a retry, the model at `bootstrap.retry_model` samples
`bootstrap.retry_samples` solutions at T=1.0 (backspace banned); the first that the exact checker
rejects gives the retry: the model's own steps up to its first wrong step (all right), that wrong
step as it wrote it, one step backspace, then a right continuation from the model's own prefix
(`continuation`). A problem the model solved in every sample keeps its reference solution. The
errors are then the model's, on its own prefixes (on-policy), where the synthetic retry's are a
rule's slips on the reference's prefix.

`bootstrap.retry_detector=logprob` (issue 27, item 4: a backspace trained on a detector's
decisions): the erased step is instead the first whose mean token log-probability, as the model
drew it, is below `bootstrap.retry_tau`, whether the checker calls it wrong or not; the
continuation is still a right one, so a sample whose steps before the flagged one are not all
right is passed over. The backspace then learns where that score fires; the retries' share of
steps the checker rejects is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import Config
from pipeline.loading import load_model
from pipeline.measure.detector import step_logprobs
from search.errors import HallucError
from search.tasks.countdown import apply_step, solve
from search.tasks.countdown_stream import Piece
from search.tree import Judge, derive_seed
from search.types import Ask, Problem, Task
from workers.policy import Decoding, make_policy

log = logging.getLogger(__name__)


def continuation(task: Task, problem: Problem, before: Sequence[str]) -> list[str]:
    """A right rest of the solution after `before`, steps the exact checker accepts (arithmetic:
    the scratchpad's remaining steps; Countdown: a solver's path from the numbers left)."""
    if not task.has_step_checker or task.first_error(problem, before) is not None:
        raise HallucError(
            f"{task.name}: a continuation needs an exact step checker and a right prefix"
        )
    if task.name == "countdown":
        state: tuple[int, ...] | None = tuple(problem.meta["numbers"])
        for step in before:
            state = apply_step(state, step) if state is not None else None
        rest = solve(state, problem.meta["target"]) if state is not None else None
        if rest is None:
            raise HallucError(f"countdown: no path from {state} after {list(before)}")
        return rest
    return task.reference(problem)[len(before) :]


def own_retries(
    cfg: Config, task: Task, problems: list[Problem], model: Path
) -> list[list[Piece] | None]:
    """Per problem, the retry from the model's own first wrong step as (text, backspaces)
    pieces (as `pipeline.bootstrap_data.retry` gives), or None when every sample was right or
    unfinished."""
    b = cfg.bootstrap
    loaded = load_model(cfg, "transformers", model, task)
    decoding = Decoding(
        temperature=1.0,
        max_new_tokens=cfg.sampling.max_new_tokens,
        max_batch=cfg.sampling.max_batch,
        ban_backspace=True,
        logprobs=b.retry_detector == "logprob",
    )
    policy = make_policy(loaded, decoding)
    tok, d = loaded.tokenizer, task.step_delimiter
    prompts = [tuple(tok.encode_prompt(p.prompt)) for p in problems]
    asks = [
        Ask(pr, b.retry_samples, "end", derive_seed(b.seed, "own-retry", p.id))
        for p, pr in zip(problems, prompts, strict=True)
    ]
    out: list[list[Piece] | None] = []
    wrong = 0  # flagged steps the checker rejects
    for p, pr, rollouts in zip(problems, prompts, policy.sample(asks), strict=True):
        judge = Judge(task, p, tok, pr, loaded.unit)
        out.append(None)
        for r in rollouts:
            split = judge.visible_steps(r.tokens) if r.finished else None
            steps = judge.texts(split) if split else []
            scores = step_logprobs(split, r.logprobs) if split and r.logprobs else ()
            k = flagged(cfg, task, p, steps, scores)
            if k is not None:
                rest = continuation(task, p, steps[:k])
                out[-1] = [("".join(s + d for s in steps[:k]) + steps[k] + d, 1), (d.join(rest), 0)]
                wrong += task.first_error(p, steps[: k + 1]) == k
                break
    found = sum(o is not None for o in out)
    log.info(
        "own-error retries (%s): %d of %d problems had a flagged sample, %d of those steps wrong",
        b.retry_detector,
        found,
        len(problems),
        wrong,
    )
    return out


def flagged(
    cfg: Config, task: Task, p: Problem, steps: list[str], scores: Sequence[tuple[float, float]]
) -> int | None:
    """The step a retry erases in one sample (`steps`, with each step's (mean, least) token
    log-probability in `scores`): the first the checker rejects, or (`retry_detector=logprob`)
    the first whose mean is below `retry_tau` after steps that are all right; None: none."""
    if not steps:
        return None
    if cfg.bootstrap.retry_detector == "checker":
        return task.first_error(p, steps)
    k = next((i for i, (mean, _) in enumerate(scores) if mean < cfg.bootstrap.retry_tau), None)
    if k is None or task.first_error(p, steps[:k]) is not None:
        return None  # nothing flagged, or no right continuation from a wrong prefix
    return k
