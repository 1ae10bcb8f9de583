"""The vocabulary shared by tasks, search, traces and policies (docs/design.md §3).

Everything here is plain data or a Protocol: the search never calls a model itself, it asks for
rollouts (`Ask`) and is told the results (`Rollout`), or asks for a learned value (`ValueAsk`)
and is told a number. Token ids in, token ids out.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from search.backspace import Delim


@dataclass(frozen=True)
class Problem:
    """One problem with a checkable answer.

    `id` is stable across runs (derived from the content), so a resumed run skips exactly the
    finished problems. `answer` is the canonical final answer as text; `meta` holds what the task
    needs to check steps (operands, numbers, target, reference solution).
    """

    id: str
    prompt: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def content_id(task: str, *parts: str) -> str:
    """A stable problem id: the task name and a hash of the problem's content."""
    digest = hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]
    return f"{task}-{digest}"


class Task(Protocol):
    """Makes or loads problems, formats them, and checks answers (and steps, where it can).

    Text conventions: the prompt ends with the step delimiter; a solution is a list of steps, each
    ending with the delimiter except the last, which is followed by end-of-sequence.

    Every capability is a member of every task. Where a task lacks one, the member gives the
    answer that means "nothing to see" (`solution`: the output itself; `detection_step`: None)
    or, where no answer would be honest (`first_error`, `wrong_step`), a flag says so
    (`has_step_checker`, `has_wrong_steps`) and the method raises `TaskCapabilityError`
    (search/tasks/__init__.py), so a caller checks the flag before it starts work.
    """

    name: str
    step_delimiter: str

    def problems(self, split: Literal["train", "validation", "test"], n: int) -> list[Problem]:
        """`n` problems of `split` (train and test never share an id), deterministic."""
        ...

    def reference(self, problem: Problem) -> list[str]:
        """A correct solution as a list of steps (without delimiters)."""
        ...

    def is_correct(self, problem: Problem, steps: Sequence[str]) -> bool:
        """Whether a finished solution (steps without delimiters) reaches the right answer."""
        ...

    def solution(self, problem: Problem, lines: Sequence[str]) -> list[str] | None:
        """The solution an output's visible lines state, for `is_correct` and `first_error`:
        the lines themselves, except on a task whose outputs may be search streams (Countdown:
        the stream's last path); None when the lines state no solution."""
        ...

    @property
    def has_step_checker(self) -> bool: ...

    def first_error(self, problem: Problem, steps: Sequence[str]) -> int | None:
        """Exact step checker: index of the first step after which the problem can no longer be
        solved, or None when every step is still on a path to the answer. Raises
        `TaskCapabilityError` where `has_step_checker` is False."""
        ...

    def detection_step(self, problem: Problem, steps: Sequence[str]) -> int | None:
        """Index of the first step after which a failure is visible to a reader without a
        solver; None when none is before the end (always None on a task where a failure shows
        only at the end of the solution). Correction traces placed `at_detection` erase up to
        it (search/traces.py)."""
        ...

    @property
    def has_wrong_steps(self) -> bool: ...

    def wrong_step(self, problem: Problem, before: Sequence[str], rng: random.Random) -> str:
        """A plausible wrong version of reference step `len(before)` (`before`: the reference's
        first steps) that `first_error` flags, for the bootstrap's retry data
        (`bootstrap.retry_rate`). Raises `TaskCapabilityError` where `has_wrong_steps` is
        False."""
        ...


class Tokenizer(Protocol):
    """The little the search needs from a tokenizer: text for checking, ids for everything else."""

    eos_id: int
    delim_id: int  # the delimiter on its own
    bksp_id: int

    @property
    def step_ends(self) -> Delim:
        """The token(s) that end a step: the delimiter's id, or every id whose text ends with
        it where a tokenizer merges it with what precedes it (search.backspace.Delim)."""
        ...

    def encode(self, text: str) -> list[int]: ...

    def encode_prompt(self, text: str) -> list[int]:
        """A problem's prompt as the model reads it (a chat template's turns around it, for a
        tokenizer that applies one)."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class Ask:
    """A request for `n` continuations of `prefix` (prompt and steps, token ids).

    until="end": sample to end-of-sequence (an MC rollout); until="step": sample one step, up to
    and including the step delimiter. `seed` makes the answer reproducible whatever else is in
    the batch.
    """

    prefix: tuple[int, ...]
    n: int
    until: Literal["end", "step"]
    seed: int


@dataclass(frozen=True)
class Rollout:
    """One sampled continuation: token ids after the prefix, without the end-of-sequence token.

    `finished` is True when the policy emitted end-of-sequence (or, for until="step", the step
    delimiter); False when it ran out of its token budget. `logprobs`, when asked for, has one
    entry per token.
    """

    tokens: tuple[int, ...]
    finished: bool
    logprobs: tuple[float, ...] | None = None


class Policy(Protocol):
    """Samples continuations for a batch of asks: `sample(asks)[i]` has `asks[i].n` rollouts.

    Its counters, which the search stage's stats and evaluation read:
    `generated[i][j]`: after a `sample` call, the tokens drawn for sample j of its ask i: the
    rollout's own, plus, where `discards`, the candidates drawn and thrown away on its way;
    `discards`: whether `generated` counts such tokens (backspace-guided search does), which
    evaluation then reports as the tokens the setting generated;
    `tokens_generated`: tokens a model decoded for this policy since it was built (the compute
    spent, discarded candidates included; 0 for the scripted policy, which runs no model).
    """

    def sample(self, asks: Sequence[Ask]) -> list[list[Rollout]]: ...

    @property
    def generated(self) -> list[list[int]]: ...

    @property
    def discards(self) -> bool: ...

    @property
    def tokens_generated(self) -> int: ...


@dataclass(frozen=True)
class ValueAsk:
    """A request for the learned value of `prefix` (prompt and whole visible steps, token ids):
    the value model's estimate of the probability that a rollout from there ends correct."""

    prefix: tuple[int, ...]


Request = Ask | ValueAsk
Answer = list[Rollout] | float  # to an Ask its `n` rollouts, to a ValueAsk its value in [0, 1]


class Valuer(Protocol):
    """Values a batch of prefixes: `values(prefixes)[i]` in [0, 1] is the estimated probability
    that a rollout from `prefixes[i]` ends correct (the value model of `halluc value`, or a
    scripted one in tests)."""

    def values(self, prefixes: Sequence[tuple[int, ...]]) -> list[float]: ...
