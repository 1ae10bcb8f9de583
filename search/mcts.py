"""MCTS over steps (TS-LLM style), as an ask/tell generator behind the same interface as OmegaPRM.

screen:     K rollouts from the root (its MC value); all right or all wrong -> stop
simulate:   up to S times: descend by PUCT (Q + c * P * sqrt(N_parent) / (1 + N_child), uniform
            prior P over the sampled children) to a leaf; expand it with `width` sampled steps
            (identical steps merge); value each new child by k MC rollouts, the value model, or
            both (`search/values.py`; a child that ends the solution is terminal and its value
            exact); back the mean value up the path
branches:   every edge parent -> child with value(parent) > cut and value(child) <= cut (mc mode:
            cut 0, so a terminal wrong child, or one whose k rollouts all failed) is a failing
            branch
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Generator
from dataclasses import dataclass

from search.backspace import Delim, is_step_end
from search.errors import check_params
from search.tree import FailingBranch, Node, SearchResult, Tree, derive_seed
from search.types import Answer, Ask, Request, Rollout
from search.values import MC, ValueParams, estimate, request

Gen = Generator[list[Request], list[Answer], SearchResult]


@dataclass(frozen=True)
class MctsParams:
    """K screening rollouts, k rollouts per leaf value, `simulations` PUCT descents, at most
    `width` children per node."""

    n_screen: int = 32
    n_mc: int = 8
    simulations: int = 20
    width: int = 4
    c_puct: float = 1.0

    def __post_init__(self) -> None:
        check_params(self, ("n_screen", "n_mc", "simulations", "width"), ())


def mcts(tree: Tree, params: MctsParams, seed: int, value: ValueParams = MC) -> Gen:
    """Search one problem; yields batches of requests (rollout asks, and value asks unless
    `value.mode` is mc), receives their answers, returns the result."""
    counter = itertools.count()
    delim = tree.judge.tokenizer.step_ends

    def ask(node: Node, n: int, until: str = "end") -> Ask:
        return Ask(tree.prefix(node), n, until, derive_seed(seed, next(counter)))  # type: ignore[arg-type]

    root = tree.root
    yield from estimate(tree, [root], params.n_screen, MC, ask)  # screening: always rollouts
    root.n, root.w = 1, root.mc
    if not 0 < root.mc < 1:
        return SearchResult(tree, [])

    for _ in range(params.simulations):
        path = [root]
        while path[-1].expanded and path[-1].children:
            path.append(_select(path[-1], params.c_puct))
        leaf = path[-1]
        if leaf.terminal or leaf.expanded:
            backup = value.of(leaf)  # nothing left to expand below: revisit its value
        else:
            [samples], _ = yield from request([ask(leaf, params.width, "step")], [])
            tree.rollouts_used += len(samples)
            leaf.expanded = True
            new = _expand(tree, leaf, samples, delim)
            yield from estimate(tree, [c for c in new if not c.terminal], params.n_mc, value, ask)
            for child in new:
                child.n, child.w = 1, value.of(child)
            backup = sum(value.of(c) for c in new) / len(new) if new else value.of(leaf)
        for node in path:
            node.n += 1
            node.w += backup
    return SearchResult(tree, _branches(tree, value))


def _select(node: Node, c_puct: float) -> Node:
    prior = 1.0 / len(node.children)

    def puct(child: Node) -> float:
        q = child.w / child.n if child.n else 0.0
        return q + c_puct * prior * math.sqrt(node.n) / (1 + child.n)

    return max(node.children, key=puct)


def _expand(tree: Tree, leaf: Node, samples: list[Rollout], delim: Delim) -> list[Node]:
    """Children of `leaf` for each distinct sampled step; returns the ones that are new."""
    new: list[Node] = []
    for sample in samples:
        steps = tree.rollout_steps(leaf, sample)
        if not steps or len(steps) != 1:
            continue  # empty, deletes into the prefix, or not one step
        child = tree.node(leaf.steps + steps)
        if child in leaf.children:
            continue
        ends_step = sample.finished and is_step_end(steps[0][-1], delim)
        if not ends_step:  # end-of-sequence or out of budget: a finished (or cut) solution
            child.terminal = True
            child.terminal_correct = tree.judge.correct(
                tuple(t for s in child.steps for t in s), sample.finished
            )
        leaf.children.append(child)
        new.append(child)
    return new


def _branches(tree: Tree, value: ValueParams) -> list[FailingBranch]:
    found = []
    for parent in tree.nodes.values():
        if value.of(parent) <= value.cut:
            continue
        for child in parent.children:
            if not value.failing(child):
                continue
            wrong = next(
                (r for r, ok in zip(child.rollouts, child.correct, strict=True) if not ok), None
            )
            found.append(
                FailingBranch(
                    parent=parent.steps,
                    wrong_step=child.steps[-1],
                    wrong_continuation=wrong.tokens if wrong else (),
                    error_mc=value.of(child),
                    error_n=1 if child.terminal else child.n_rollouts,
                    wrong_finished=wrong.finished if wrong else False,
                )
            )
    return found
