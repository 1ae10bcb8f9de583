"""Search trees over steps, and judging rollouts against a problem (docs/design.md §3, §5).

A node is a visible prefix: the prompt plus whole steps (token ids, each step ending with the step
delimiter). Identical prefixes are one node, so rollouts from a prefix are counted once however the
search reaches it. `mc` is the share of a node's rollouts that ended correct.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from search.backspace import BackspaceError, Delim, Unit, apply_backspaces, is_step_end
from search.types import Problem, Rollout, Task, Tokenizer

Steps = tuple[tuple[int, ...], ...]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from its parts (run seed, round, problem id, counter...), order-sensitive."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def split_steps(tokens: Sequence[int], delim_id: Delim) -> list[tuple[int, ...]]:
    """Cut token ids after each token that ends a step; a trailing piece without one is the last
    step."""
    steps: list[tuple[int, ...]] = []
    start = 0
    for i, tok in enumerate(tokens):
        if is_step_end(tok, delim_id):
            steps.append(tuple(tokens[start : i + 1]))
            start = i + 1
    if start < len(tokens):
        steps.append(tuple(tokens[start:]))
    return steps


def flatten(steps: Sequence[Sequence[int]]) -> tuple[int, ...]:
    return tuple(t for step in steps for t in step)


@dataclass(frozen=True)
class Judge:
    """Checks generated tokens of one problem: visible steps, final answer, exact first error."""

    task: Task
    problem: Problem
    tokenizer: Tokenizer
    prompt: tuple[int, ...]
    unit: Unit = "token"

    def visible_steps(self, generated: Sequence[int]) -> list[tuple[int, ...]] | None:
        """Steps left after backspaces; None when a backspace would delete into the prompt."""
        tok = self.tokenizer
        if tok.bksp_id not in generated:
            return split_steps(generated, tok.step_ends)
        try:
            ids = apply_backspaces(
                [*self.prompt, *generated], len(self.prompt), self.unit, tok.bksp_id, tok.step_ends
            )
        except BackspaceError:
            return None
        return split_steps(ids[len(self.prompt) :], tok.step_ends)

    def texts(self, steps: Sequence[Sequence[int]]) -> list[str]:
        """Each step's text without the delimiter that ends it (which a BPE token may share with
        the step's last characters, as in `.\n`)."""
        delim = self.task.step_delimiter
        return [self.tokenizer.decode(list(s)).removesuffix(delim) for s in steps]

    def correct(self, generated: Sequence[int], finished: bool) -> bool:
        """A finished generation whose visible steps the task accepts: the right final answer
        and, on a task with an exact step checker, no wrong visible step (a right answer reached
        through a wrong step is not a solution to learn from). The visible steps are first
        reduced to the solution they state (`Task.solution`: on Countdown a search stream's last
        path). The one definition of correct for rollouts, traces and evaluation."""
        if not finished:
            return False
        steps = self.visible_steps(generated)
        if steps is None:
            return False
        texts = self.task.solution(self.problem, self.texts(steps))
        if texts is None:
            return False
        if not self.task.is_correct(self.problem, texts):
            return False
        return not self.task.has_step_checker or self.task.first_error(self.problem, texts) is None

    def first_error(self, steps: Sequence[Sequence[int]]) -> int | None:
        """The exact checker's first wrong step of visible `steps`; None if none or no checker."""
        if not self.task.has_step_checker:
            return None
        return self.task.first_error(self.problem, self.texts(steps))

    def detection_step(self, steps: Sequence[Sequence[int]]) -> int | None:
        """Index of the step of visible `steps` after which the task's `detection_step` sees
        that they fail; None when it sees nothing (always on arithmetic and jsonl, where a
        failure shows only at the end)."""
        return self.task.detection_step(self.problem, self.texts(steps))


@dataclass(eq=False)
class Node:
    """A visible prefix with its rollouts. `visits` counts OmegaPRM selections; `n`/`w` are the
    MCTS visit count and value sum; `terminal` marks a finished solution (its value is exact);
    `value` is the value model's estimate where the search asked for one (search/values.py)."""

    steps: Steps
    rollouts: list[Rollout] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    visits: int = 0
    n: int = 0
    w: float = 0.0
    children: list[Node] = field(default_factory=list)
    expanded: bool = False
    terminal: bool = False
    terminal_correct: bool = False
    value: float | None = None

    @property
    def mc(self) -> float:
        """Share of rollouts that ended correct (exact 0/1 for a terminal node; 0 when none)."""
        if self.terminal:
            return float(self.terminal_correct)
        return sum(self.correct) / len(self.correct) if self.correct else 0.0

    @property
    def n_rollouts(self) -> int:
        return len(self.rollouts)


class Tree:
    """All nodes of one problem's search, keyed by their steps."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.root = Node(steps=())
        self.nodes: dict[Steps, Node] = {(): self.root}
        self.rollouts_used = 0
        self.values_used = 0  # prefixes the value model valued

    def node(self, steps: Steps) -> Node:
        """The node of `steps`, created on first use (identical prefixes merge)."""
        found = self.nodes.get(steps)
        if found is None:
            found = self.nodes[steps] = Node(steps=steps)
        return found

    def prefix(self, node: Node) -> tuple[int, ...]:
        return self.judge.prompt + flatten(node.steps)

    def add_rollouts(self, node: Node, rollouts: Sequence[Rollout]) -> list[bool]:
        """Record rollouts from `node` and return whether each ended correct."""
        base = flatten(node.steps)
        verdicts = [self.judge.correct(base + r.tokens, r.finished) for r in rollouts]
        node.rollouts.extend(rollouts)
        node.correct.extend(verdicts)
        self.rollouts_used += len(rollouts)
        return verdicts

    def rollout_steps(self, node: Node, rollout: Rollout) -> Steps | None:
        """The visible steps a rollout adds after `node` (None if it deletes into the prompt)."""
        base = flatten(node.steps)
        steps = self.judge.visible_steps(base + rollout.tokens)
        if steps is None:
            return None
        # a backspace may reach into the node's own steps: keep only what extends the node
        if tuple(steps[: len(node.steps)]) != node.steps:
            return None
        return tuple(steps[len(node.steps) :])


@dataclass(frozen=True)
class FailingBranch:
    """A located first error: from `parent` (mc > 0) the model took `wrong_step`, after which it
    fails. `wrong_continuation` is the rest of the rollout that made the error (visible steps,
    without end-of-sequence); `wrong_finished` is whether that rollout ended with
    end-of-sequence (False: it ran out of tokens, or the search does not know)."""

    parent: Steps
    wrong_step: tuple[int, ...]
    wrong_continuation: tuple[int, ...]
    error_mc: float
    error_n: int
    wrong_finished: bool = False


@dataclass
class SearchResult:
    """What one problem's search produced: the tree and its failing branches."""

    tree: Tree
    branches: list[FailingBranch]

    @property
    def rollouts_used(self) -> int:
        return self.tree.rollouts_used
