"""The bootstrap's data: each training problem's solution in the form `bootstrap.data` names (the
solver's path, a Stream-of-Search stream, its backspace form, or a retry), encoded as training rows,
and the batches drawn from them (`pipeline.stages.bootstrap` trains on them)."""

from __future__ import annotations

import dataclasses
import random
import typing
from collections.abc import Callable
from typing import Any

from pipeline.config import BootstrapConfig
from pipeline.config.bootstrap import DataForm
from search.backspace import serialize_stream
from search.errors import HallucError
from search.tasks.countdown import apply_step, children
from search.tasks.countdown_stream import Mode, Piece, search_trace
from search.types import Problem, Task

Example = dict[str, Any]  # input_ids, loss_mask, prompt_len: a row as training collates it
Own = Callable[[list[Problem]], list[list[Piece] | None]]  # own_errors.own_retries on a model


def forms(data: str) -> list[str]:
    """The trace forms `bootstrap.data` names: "optimal+backspace" -> ["optimal", "backspace"]."""
    return data.split("+")


def solutions(
    task: Task, problems: list[Problem], b: BootstrapConfig, own: Own | None = None
) -> list[tuple[Problem, list[Piece]]]:
    """Each problem with its solution in one of `b.data`'s forms (drawn at random, seeded), as
    (text, backspaces) pieces without prompt or end-of-sequence; an optimal one, with
    probability `b.retry_rate`, as a retry (`retry`; a generator of its own, so the rest is the
    same whatever the rate), or with `own` the model's own error on each (`own_errors`: one
    batch for all, after the draw). A problem the search does not solve within `b.max_states`
    states is left out."""
    choices = forms(b.data)
    if choices != ["optimal"] and task.name != "countdown":
        raise HallucError(
            f"bootstrap.data={b.data}: search streams exist for countdown only; "
            f"use bootstrap.data=optimal for {task.name}"
        )
    if b.retry_placement == "at_detection" and task.name != "countdown":
        raise HallucError(
            f"bootstrap.retry_placement=at_detection: a visible dead end exists for countdown, "
            f"not {task.name}; use retry_placement=at_error"
        )
    if b.retry_rate and not task.has_wrong_steps:
        raise HallucError(
            f"bootstrap.retry_rate={b.retry_rate}: synthetic wrong steps exist for arithmetic "
            f"and countdown, not {task.name}; set bootstrap.retry_rate=0"
        )
    rng, retry_rng = random.Random(f"{b.seed}-forms"), random.Random(f"{b.seed}-retry")
    out: list[tuple[Problem, list[Piece]]] = []
    pending: list[int] = []  # indexes in out whose retry is the model's own (filled after)
    for problem in problems:
        form = rng.choice(choices)
        if form == "optimal":
            if retry_rng.random() < b.retry_rate:
                pending += [len(out)] if own else []
                placed = [] if own else retry(task, problem, retry_rng, b.retry_placement)
                out.append((problem, placed))
            else:
                out.append((problem, [(task.step_delimiter.join(task.reference(problem)), 0)]))
            continue
        mode: Mode = "stream" if form == "stream" else "backspace"
        found = search_trace(problem, mode, b.search_order, b.max_states)
        if found is not None:
            out.append((problem, found))
    for i, pieces in zip(pending, own([out[i][0] for i in pending]) if own else [], strict=True):
        out[i] = (out[i][0], pieces or [(task.step_delimiter.join(task.reference(out[i][0])), 0)])
    return out


def retry(
    task: Task, problem: Problem, rng: random.Random, placement: str = "at_error"
) -> list[Piece]:
    """The reference solution with one step (drawn uniformly) first typed wrong
    (`task.wrong_step`), then erased by step backspaces and typed right. `at_error`:
    [(steps before + wrong step + delimiter, 1), (right step + the rest, 0)], the backspace
    taking the delimiter and the wrong step. `at_detection` (countdown): the wrong move and its
    continuation to the dead end (`dead_end`) written without a final delimiter, then one
    backspace for the part-written last move and one per move before it back to the wrong one.
    Either way `apply_backspaces` (step unit) leaves the reference."""
    steps, d = task.reference(problem), task.step_delimiter
    k = rng.randrange(len(steps))
    wrong = task.wrong_step(problem, steps[:k], rng)
    before = "".join(s + d for s in steps[:k])
    more = dead_end(problem, [*steps[:k], wrong], rng) if placement == "at_detection" else None
    if more is None:  # at_error, or a wrong move that is itself invalid: erased where it stands
        return [(before + wrong + d, 1), (d.join(steps[k:]), 0)]
    return [(before + d.join([wrong, *more]), 1 + len(more)), (d.join(steps[k:]), 0)]


def dead_end(problem: Problem, moves: list[str], rng: random.Random) -> list[str] | None:
    """Countdown: random legal moves (seeded by `rng`) from the state `moves` leave until one
    number is left; None when a move of `moves` is invalid (its failure shows at once)."""
    state: tuple[int, ...] | None = tuple(sorted(problem.meta["numbers"]))
    for move in moves:
        state = apply_step(state, move) if state is not None else None
    if state is None:
        return None
    out = []
    while len(state) > 1:
        move, state = rng.choice(children(state, problem.meta["target"]))
        out.append(move)
    return out


def encode_examples(
    tokenizer: Any,
    solved: list[tuple[Problem, list[Piece]]],
    delimiter: str,
    bksp_token: str,
    erased_loss: bool = False,
) -> list[Example]:
    """Prompt, solution, end-of-sequence. Loss on what follows the prompt, except on the moves a
    backspace erases unless `erased_loss`."""
    bksp = (
        tokenizer.convert_tokens_to_ids(bksp_token) if bksp_token in tokenizer.get_vocab() else -1
    )
    delim = tokenizer.encode(delimiter, add_special_tokens=False)[0]
    out = []
    for problem, found in solved:
        # the ids the search and training use: no BOS or other added token (SearchTokenizer)
        prompt = tokenizer.encode(problem.prompt, add_special_tokens=False)
        completion = [
            i
            for text, n in found
            for i in [*tokenizer.encode(text, add_special_tokens=False), *[bksp] * n]
        ]
        ser = serialize_stream(prompt, [*completion, tokenizer.eos_token_id], "step", bksp, delim)
        mask = ser.loss_mask
        if erased_loss:
            mask = [0] * len(prompt) + [1] * (len(ser.input_ids) - len(prompt))
        out.append({"input_ids": ser.input_ids, "loss_mask": mask, "prompt_len": len(prompt)})
    return out


def replay(
    task: Task, b: BootstrapConfig, tokenizer: Any, n: int, seed: int, bksp_token: str, erase: bool
) -> list[Example]:
    """`train.replay`: `n` rows of the bootstrap's own data for a round to train on beside its
    selection: `n` of the bootstrap's training problems drawn at random (seeded by `seed`), each
    in one of `b.data`'s forms as the bootstrap made them. With `erase` False (an arm trained
    without the backspace token) the forms without backspaces only: no retries, no backspace
    form. Retries are synthetic even where the bootstrap's were the model's own
    (`bootstrap.retry_model`): replay samples no model."""
    if not erase:
        clean = "+".join(f for f in forms(b.data) if f != "backspace") or "optimal"
        b = dataclasses.replace(b, data=typing.cast(DataForm, clean), retry_rate=0.0)
    b = dataclasses.replace(b, seed=seed)
    pool = task.problems("train", b.n_problems)
    picked = random.Random(f"{seed}-replay").sample(pool, min(n, len(pool)))
    solved = solutions(task, picked, b)
    return encode_examples(tokenizer, solved, task.step_delimiter, bksp_token, b.erased_loss)


class Batches:
    """The bootstrap's batches over `examples`: `b.batch_size` examples, or (`b.batch_tokens` > 0)
    examples until their loss-bearing tokens reach `b.batch_tokens`; drawn at random with
    replacement, or (`b.fresh`) in a shuffled order, every example once before any twice.
    `epochs`: passes over the examples so far."""

    def __init__(self, examples: list[Example], b: BootstrapConfig, rng: random.Random) -> None:
        self.examples, self.b, self.rng = examples, b, rng
        self.order: list[int] = []
        self.drawn = 0

    @property
    def epochs(self) -> float:
        return self.drawn / len(self.examples)

    def _one(self) -> Example:
        self.drawn += 1
        if not self.b.fresh:
            return self.rng.choice(self.examples)
        if not self.order:
            self.order = list(range(len(self.examples)))
            self.rng.shuffle(self.order)
        return self.examples[self.order.pop()]

    def next(self) -> list[Example]:
        b, n = self.b, min(self.b.batch_size, len(self.examples))
        if not b.batch_tokens and not b.fresh:
            self.drawn += n
            return self.rng.sample(self.examples, n)
        if not b.batch_tokens:
            return [self._one() for _ in range(b.batch_size)]
        batch, tokens = [], 0
        while tokens < b.batch_tokens:
            batch.append(self._one())
            tokens += sum(batch[-1]["loss_mask"])
        return batch
