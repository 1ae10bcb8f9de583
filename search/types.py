"""The vocabulary shared by tasks, search, traces and policies (docs/design.md §3).

Everything here is plain data or a Protocol: the search never calls a model itself, it asks for
rollouts (`Ask`) and is told the results (`Rollout`), or asks for a learned value (`ValueAsk`)
and is told a number. Token ids in, token ids out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


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

    Optional, not part of the protocol: `detection_step(problem, steps) -> int | None`, the index
    of the first step after which a failure is visible to a reader without a solver (None: not
    before the end). Correction traces placed `at_detection` erase up to it (search/traces.py);
    a task without it shows a failure only at the end of the solution. Likewise
    `wrong_step(problem, before, rng) -> str`: a plausible wrong version of reference step
    `len(before)` that `first_error` flags, for the bootstrap's retry data (`bootstrap.retry_rate`).
    """

    name: str
    step_delimiter: str

    def problems(self, split: Literal["train", "test"], n: int) -> list[Problem]:
        """`n` problems of `split` (train and test never share an id), deterministic."""
        ...

    def reference(self, problem: Problem) -> list[str]:
        """A correct solution as a list of steps (without delimiters)."""
        ...

    def is_correct(self, problem: Problem, steps: Sequence[str]) -> bool:
        """Whether a finished solution (steps without delimiters) reaches the right answer."""
        ...

    def first_error(self, problem: Problem, steps: Sequence[str]) -> int | None:
        """Exact step checker: index of the first step after which the problem can no longer be
        solved, or None when every step is still on a path to the answer. Raises
        NotImplementedError for tasks without an exact checker (see `has_step_checker`)."""
        ...

    @property
    def has_step_checker(self) -> bool: ...


class Tokenizer(Protocol):
    """The little the search needs from a tokenizer: text for checking, ids for everything else."""

    eos_id: int
    delim_id: int
    bksp_id: int

    def encode(self, text: str) -> list[int]: ...

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
    """Samples continuations for a batch of asks: `sample(asks)[i]` has `asks[i].n` rollouts."""

    def sample(self, asks: Sequence[Ask]) -> list[list[Rollout]]: ...


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
