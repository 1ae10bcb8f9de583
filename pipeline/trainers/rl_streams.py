"""What an rl step samples (trainers/rl.py trains on it): the step's problems, the project's
sampler over the live model, and each stream judged and rewarded (with the tree's credit of its
backspace runs under `train.rl.credit=tree`, from the round's `steps` table; under `value`, the
value model values the prefixes the table lacks).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from pipeline.config import Config, RlConfig
from pipeline.layout import RoundLayout
from pipeline.shards import ShardError, checked_shard_files, read_table
from search.metrics import StreamReport, analyze
from search.tree import Judge, derive_seed
from search.types import Ask, Policy, Problem, Task, Valuer
from workers.grpo import erase_credits
from workers.hf import SearchTokenizer
from workers.policy import Decoding, Loaded, bans, make_policy, pad_of


@dataclass(frozen=True)
class Stream:
    """One sampled stream of a problem: its training row (prompt + tokens, + end-of-sequence
    when it ended; loss on everything after the prompt), what it earned, and the sampler's
    log-probabilities of its tokens."""

    row: dict[str, Any]
    reward: float
    correct: bool
    n_tokens: int
    n_backspaces: int
    logprobs: tuple[float, ...]
    credits: tuple[tuple[tuple[int, ...], float], ...] = ()  # (stream positions, credit)
    # what the erase credit acts on (exact checker; 0 without one), whatever its weights:
    fresh_erases: int = 0  # erases of a fresh error (`rl.erase_bonus` each)
    right_steps_erased: int = 0  # right finished steps erased (`rl.erase_penalty` each)
    repaired: bool = False  # first error erased in time, ended correct (`rl.repair_bonus`)


def step_problems(problems: list[Problem], step: int, per_step: int, seed: int) -> list[Problem]:
    """The problems of optimizer step `step`: the next `per_step` of a sequence of passes over
    `problems`, each pass in its own seeded order."""
    out = []
    for k in range(step * per_step, (step + 1) * per_step):
        epoch, i = divmod(k, len(problems))
        order = list(range(len(problems)))
        random.Random(derive_seed(seed, "rl-order", epoch)).shuffle(order)
        out.append(problems[order[i]])
    return out


def sampler(model: Any, hf: Any, tok: SearchTokenizer, cfg: Config) -> Policy:
    """The project's sampler over the live `model` (its weights as they are at each call), in the
    training attention mode, backspaces allowed, temperature 1, log-probabilities returned."""
    loaded = Loaded(
        "transformers",
        "rl",
        tok,
        model,
        cfg.train.mode,
        cfg.trace.unit,
        True,
        pad_of(hf),
        bans(hf, tok),
    )
    decoding = Decoding(
        temperature=1.0,
        max_new_tokens=cfg.sampling.stream_length,
        max_batch=cfg.sampling.max_batch,
        max_backspaces=cfg.sampling.stream_backspaces,
        backspace_at=cfg.trace.backspace_at,
        logprobs=True,
    )
    return make_policy(loaded, decoding)


def sample(
    policy: Policy,
    model: Any,
    task: Task,
    tok: SearchTokenizer,
    problems: list[Problem],
    step: int,
    cfg: Config,
    values: dict[tuple[int, ...], float],
    valuer: Valuer | None = None,
) -> list[list[Stream]]:
    """`train.rl.group` streams per problem (one list per problem), judged and rewarded; with
    `values` (rl.credit=tree), each with the tree's credit of its backspace runs; with a `valuer`
    (rl.credit=value), the prefixes `values` lacks are valued first, once, and added to it."""
    t = cfg.train
    credit = t.rl.credit != "outcome"
    prompts = [tuple(tok.encode_prompt(p.prompt)) for p in problems]
    asks = [
        Ask(pr, t.rl.group, "end", derive_seed(cfg.run.seed, "rl", cfg.run.round, step, p.id))
        for p, pr in zip(problems, prompts, strict=True)
    ]
    model.eval()
    drawn = policy.sample(asks)
    model.train()
    if valuer is not None:
        value_missing(valuer, values, prompts, drawn, cfg, tok)
    out = []
    for p, pr, rollouts in zip(problems, prompts, drawn, strict=True):
        judge = Judge(task, p, tok, pr, cfg.trace.unit)
        group = []
        for r in rollouts:
            report = analyze(judge, r.tokens, r.finished)
            ids = [*pr, *r.tokens, *([tok.eos_id] if r.finished else [])]
            unit, bksp, delim = cfg.trace.unit, tok.bksp_id, tok.step_ends
            credits = erase_credits(pr, r.tokens, unit, bksp, delim, values) if credit else []
            row = {"input_ids": ids, "loss_mask": [0] * len(pr) + [1] * (len(ids) - len(pr))}
            group.append(
                Stream(
                    row | {"prompt_len": len(pr)},
                    reward(report, t.rl),
                    report.correct,
                    len(r.tokens),
                    report.n_backspaces,
                    tuple(r.logprobs or ()),
                    tuple((c.positions, c.value) for c in credits),
                    report.fresh_erases or 0,
                    report.right_steps_erased,
                    bool(report.first_error_erased and report.correct),
                )
            )
        out.append(group)
    return out


class _Asked(dict[tuple[int, ...], float]):
    """A value table that records the prefixes looked up and missing (`erase_credits` asks it)."""

    def __init__(self, known: dict[tuple[int, ...], float]) -> None:
        super().__init__(known)
        self.asked: dict[tuple[int, ...], None] = {}

    def get(self, key: tuple[int, ...], default: Any = None) -> Any:
        if key not in self:
            self.asked[key] = None
        return super().get(key, default)


def value_missing(
    valuer: Valuer,
    values: dict[tuple[int, ...], float],
    prompts: list[tuple[int, ...]],
    drawn: list[list[Any]],
    cfg: Config,
    tok: SearchTokenizer,
) -> None:
    """Add to `values` the value model's value of every prefix a backspace run of `drawn` would
    be credited with and `values` lacks (one batch)."""
    asked = _Asked(values)
    for pr, rollouts in zip(prompts, drawn, strict=True):
        for r in rollouts:
            erase_credits(pr, r.tokens, cfg.trace.unit, tok.bksp_id, tok.step_ends, asked)
    missing = list(asked.asked)
    if missing:
        values.update(zip(missing, valuer.values(missing), strict=True))


def reward(report: StreamReport, rl: RlConfig) -> float:
    """1 for a correct stream, minus `rl.token_cost` per generated token; with the erase credit,
    plus `erase_bonus` per erase of a fresh error, minus `erase_penalty` per right finished step
    erased, plus `repair_bonus` when the first error was erased in time and the stream ended
    correct (a task without an exact checker earns the outcome part only)."""
    out = float(report.correct) - rl.token_cost * report.n_tokens
    out += rl.erase_bonus * (report.fresh_erases or 0)
    out -= rl.erase_penalty * report.right_steps_erased
    if report.first_error_erased and report.correct:
        out += rl.repair_bonus
    return out


def step_values(rnd: RoundLayout) -> dict[tuple[int, ...], float]:
    """The Monte Carlo value of every prefix the round's search probed, keyed by its token ids
    (prompt included): the `steps` table's prefix_ids + step_ids -> mc."""
    if not checked_shard_files(rnd.search, "steps"):
        raise ShardError(
            f"train.rl.credit=tree reads the round's steps table, and there is none under "
            f"{rnd.search}: run `halluc search` first, or set train.rl.credit=outcome"
        )
    rows = read_table(rnd.search, "steps").select(["prefix_ids", "step_ids", "mc"]).to_pylist()
    return {(*r["prefix_ids"], *r["step_ids"]): float(r["mc"]) for r in rows}
