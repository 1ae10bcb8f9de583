"""Where a node's value comes from: Monte Carlo rollouts, a learned value model, or both (issue 16,
item 3; TS-LLM guides its tree search with a learned value instead of rollouts).

    mc     the share of the node's k rollouts that ended correct: the search as it was before
           value models, bit for bit (the default)
    model  the value model's estimate for the node's prefix (a `ValueAsk`, answered by the
           driver's `Valuer`); no rollouts
    mix    (1 - λ) · mc + λ · model with λ = `mix`: k rollouts and the estimate

A terminal node (a finished solution) is valued exactly in every mode, and a node the model was
not asked about (the root: its screening rollouts decide whether to search at all) by its
rollouts. A node is *failing* when it has a value and the value is at most `cut`: 0 in mc mode
(mc == 0, no rollout succeeded), `threshold` otherwise (a learned value is never exactly 0).

Rollout asks are numbered (their seeds drawn) alike in every mode, sent or not, so the steps a
search samples are the same whichever values guide it, and two modes differ only by their values.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Literal

from search.errors import ParamError, check_params
from search.tree import Node, Tree
from search.types import Answer, Ask, Request, Rollout, ValueAsk, Valuer

ValueMode = Literal["mc", "model", "mix"]
MODES: tuple[ValueMode, ...] = ("mc", "model", "mix")
Estimated = list[tuple[Node, list[Rollout], list[bool]]]


@dataclass(frozen=True)
class ValueParams:
    """Node values from `mode` (module docstring); `mix` is the weight of the model's value in
    mix mode; a node whose value is at most `threshold` is failing in model and mix modes."""

    mode: ValueMode = "mc"
    mix: float = 0.5
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ParamError(f"value: {self.mode!r} is not one of {list(MODES)}")
        check_params(self, (), ("mix",))
        if not 0 <= self.threshold < 1:
            raise ParamError(f"value_threshold: must be in [0, 1), got {self.threshold}")

    @property
    def cut(self) -> float:
        """The value at or below which a node is failing."""
        return 0.0 if self.mode == "mc" else self.threshold

    def of(self, node: Node) -> float:
        """The node's value in this mode (its mc where the model has not valued it)."""
        if self.mode == "mc" or node.terminal or node.value is None:
            return node.mc
        if self.mode == "model":
            return node.value
        return (1 - self.mix) * node.mc + self.mix * node.value

    def failing(self, node: Node) -> bool:
        """Whether the node has a value (exact, rollouts or the model's) and it is at most `cut`."""
        valued = node.terminal or node.n_rollouts > 0 or node.value is not None
        return valued and self.of(node) <= self.cut


MC = ValueParams()


def request(
    asks: list[Ask], value_asks: list[ValueAsk]
) -> Generator[list[Request], list[Answer], tuple[list[list[Rollout]], list[float]]]:
    """Send `asks` and `value_asks` in one round; returns their rollouts and their values (the
    driver has checked each answer's kind)."""
    if not asks and not value_asks:
        return [], []
    got = yield [*asks, *value_asks]
    rollouts = [g for g in got[: len(asks)] if not isinstance(g, float)]
    values = [g for g in got[len(asks) :] if isinstance(g, float)]
    return rollouts, values


def estimate(
    tree: Tree,
    nodes: list[Node],
    n: int,
    p: ValueParams,
    ask: Callable[[Node, int], Ask],
) -> Generator[list[Request], list[Answer], Estimated]:
    """Value `nodes` as `p.mode` says: rollouts up to `n` at each (mc, mix; merged prefixes reuse
    theirs) and the model's value once per node (model, mix; never for a terminal node), in one
    round. `ask(node, k)` makes a rollout ask, and is called in every mode. Returns the nodes
    rolled out now, each with its new rollouts and their verdicts."""
    todo = [nd for nd in nodes if nd.n_rollouts < n]
    asks = [ask(nd, n - nd.n_rollouts) for nd in todo]  # numbered even when not sent
    if p.mode == "model":
        todo, asks = [], []
    learn = [] if p.mode == "mc" else list(dict.fromkeys(nodes))
    learn = [nd for nd in learn if nd.value is None and not nd.terminal]
    rollouts, values = yield from request(asks, [ValueAsk(tree.prefix(nd)) for nd in learn])
    for nd, v in zip(learn, values, strict=True):
        nd.value = v
    tree.values_used += len(learn)
    return [(nd, got, tree.add_rollouts(nd, got)) for nd, got in zip(todo, rollouts, strict=True)]


def least_values(
    valuer: Valuer, samples: Sequence[tuple[tuple[int, ...], Sequence[Sequence[int]]]]
) -> list[float]:
    """Per sample (prompt ids, visible steps): the least value over its step prefixes, the prompt
    with its first i steps for each i (the prompt alone for a sample without a step). Every
    distinct prefix is valued once, all in one `valuer` call. What value best-of-N ranks by: a
    solution is only as good as its worst step (Math-Shepherd's min)."""
    prefixes = []
    for prompt, steps in samples:
        ends = list(itertools.accumulate((tuple(s) for s in steps), initial=prompt))
        prefixes.append(ends[1:] or ends)
    unique = list(dict.fromkeys(p for mine in prefixes for p in mine))
    value = dict(zip(unique, valuer.values(unique), strict=True))
    return [min(value[p] for p in mine) for mine in prefixes]
