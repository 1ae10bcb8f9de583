"""OmegaPRM adapted to step-delimited tasks, as an ask/tell generator (docs/design.md §5).

    screen: K rollouts from the root; all right or all wrong -> no failing branch, stop
    pool:   every wrong rollout from a node with 0 < mc < 1
    loop:   up to B times: pop the (node, rollout) maximising Q + U, count one visit on the node,
            then locate the rollout's first wrong step by binary search over its steps, estimating
            MC(probe) with k rollouts (mc > 0: the error is to the right; mc == 0: to the left)

With a value model (`value`, search/values.py) the probes are valued by the model instead of
(model) or as well as (mix) their k rollouts, and a probe is failing when its value is at most the
threshold. The screening stays K rollouts in every mode: its wrong rollouts are what the loop
locates errors in, and no value can make them. In model mode probes make no rollouts, so the pool
holds the screening's wrong rollouts only.

The screening rollouts are the root's MC estimate (no separate k rollouts at the root): they are
rollouts from the same prefix, and K > k makes the estimate better for free.

`locate="exhaustive"` estimates MC at every step prefix of the rollout instead and takes the first
with mc == 0: the baseline the binary search is measured against (BENCHMARKS.md).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Literal

from search.errors import ParamError, check_params
from search.tree import FailingBranch, Node, SearchResult, Steps, Tree, derive_seed, flatten
from search.types import Answer, Ask, Request, Rollout
from search.values import MC, ValueParams, estimate

Gen = Generator[list[Request], list[Answer], SearchResult]
Locate = Generator[list[Request], list[Answer], FailingBranch]
Estimate = Callable[[list[Node], int], Generator[list[Request], list[Answer], None]]


@dataclass(frozen=True)
class OmegaParams:
    """K screening rollouts, k rollouts per MC estimate, B selections; Q = alpha**(1-mc) *
    beta**(len/L), U = c_puct * sqrt(total visits) / (1 + node visits)."""

    n_screen: int = 32
    n_mc: int = 8
    budget: int = 100
    alpha: float = 0.5
    beta: float = 0.9
    length_scale: float = 500.0
    c_puct: float = 0.125
    locate: Literal["binary", "exhaustive"] = "binary"

    def __post_init__(self) -> None:
        check_params(self, ("n_screen", "n_mc", "budget"), ("alpha", "beta"))
        if self.length_scale <= 0 or self.c_puct < 0:
            raise ParamError("length_scale must be > 0 and c_puct >= 0")


@dataclass
class _PoolItem:
    node: Node
    steps: Steps  # visible steps the wrong rollout adds after node
    length: int  # its length in tokens
    finished: bool  # it ended with end-of-sequence


def omegaprm(tree: Tree, params: OmegaParams, seed: int, value: ValueParams = MC) -> Gen:
    """Search one problem; yields batches of requests (rollout asks, and value asks unless
    `value.mode` is mc), receives their answers, returns the result."""
    counter = itertools.count()
    pool: list[_PoolItem] = []
    branches: dict[tuple[Steps, tuple[int, ...]], FailingBranch] = {}

    def ask(node: Node, n: int) -> Ask:
        return Ask(tree.prefix(node), n, "end", derive_seed(seed, next(counter)))

    def assess(
        nodes: list[Node], n: int, p: ValueParams = value
    ) -> Generator[list[Request], list[Answer], None]:
        # merged prefixes reuse their rollouts and values
        for nd, rollouts, verdicts in (yield from estimate(tree, nodes, n, p, ask)):
            if 0 < nd.mc < 1:
                pool.extend(_pool_items(tree, nd, rollouts, verdicts))

    yield from assess([tree.root], params.n_screen, MC)
    if not 0 < tree.root.mc < 1:
        return SearchResult(tree, [])

    for total_visits in range(params.budget):  # one visit per selection so far
        if not pool:
            break
        item = max(pool, key=lambda it: _score(it, params, total_visits))
        pool.remove(item)
        item.node.visits += 1
        locate = _binary if params.locate == "binary" else _exhaustive
        branch = yield from locate(tree, item, params.n_mc, assess, value)
        branches.setdefault((branch.parent, branch.wrong_step), branch)
    return SearchResult(tree, list(branches.values()))


def _pool_items(
    tree: Tree, node: Node, rollouts: list[Rollout], verdicts: list[bool]
) -> Iterator[_PoolItem]:
    for rollout, ok in zip(rollouts, verdicts, strict=True):
        steps = None if ok else tree.rollout_steps(node, rollout)
        if steps:
            yield _PoolItem(node, steps, len(rollout.tokens), rollout.finished)


def _score(item: _PoolItem, p: OmegaParams, total_visits: int) -> float:
    q = p.alpha ** (1 - item.node.mc) * p.beta ** (item.length / p.length_scale)
    u = p.c_puct * math.sqrt(total_visits) / (1 + item.node.visits)
    return q + u


def _branch(
    item: _PoolItem, left: int, right_node: Node | None, value: ValueParams
) -> FailingBranch:
    """The error is step `left` of the rollout: after left steps the value is above the cut
    (mc > 0), after left+1 it is at most the cut (mc == 0)."""
    error_mc, error_n = (
        (0.0, 1) if right_node is None else (value.of(right_node), right_node.n_rollouts)
    )
    return FailingBranch(
        parent=item.node.steps + item.steps[:left],
        wrong_step=item.steps[left],
        wrong_continuation=flatten(item.steps[left + 1 :]),
        error_mc=error_mc,
        error_n=error_n,
        wrong_finished=item.finished,
    )


def _binary(tree: Tree, item: _PoolItem, k: int, assess: Estimate, value: ValueParams) -> Locate:
    left, right = 0, len(item.steps)  # value(prefix of `left` steps) > cut, value(`right`) <= cut
    right_node: Node | None = None
    while right - left > 1:
        mid = (left + right) // 2
        probe = tree.node(item.node.steps + item.steps[:mid])
        yield from assess([probe], k)
        if value.of(probe) > value.cut:
            left = mid
        else:
            right, right_node = mid, probe
    return _branch(item, left, right_node, value)


def _exhaustive(
    tree: Tree, item: _PoolItem, k: int, assess: Estimate, value: ValueParams
) -> Locate:
    probes = [tree.node(item.node.steps + item.steps[:i]) for i in range(1, len(item.steps))]
    yield from assess(probes, k)
    for i, probe in enumerate(probes):
        if value.of(probe) <= value.cut:
            return _branch(item, i, probe, value)
    return _branch(item, len(item.steps) - 1, None, value)
