"""Drive ask/tell searches against a policy (DESIGN §5).

A search is a generator that yields a list of asks and is sent their rollouts; `Search` wraps one
with `ask()` / `tell()`. `run_batched` collects the asks of many problems into one policy call
(lockstep batching), so the policy always sees large batches though each search is sequential.
`run_sequential` runs the problems one at a time: the same trees for the same seeds, slower.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence

from search.tree import SearchResult
from search.types import Ask, Policy, Rollout

SearchGen = Generator[list[Ask], list[list[Rollout]], SearchResult]


class Search:
    """One problem's search as a state machine: `ask()` the pending asks, `tell()` their results."""

    def __init__(self, gen: SearchGen) -> None:
        self._gen = gen
        self._pending: list[Ask] = []
        self.result: SearchResult | None = None
        self._advance(None)

    @property
    def done(self) -> bool:
        return self.result is not None

    def ask(self) -> list[Ask]:
        return self._pending

    def tell(self, rollouts: list[list[Rollout]]) -> None:
        if len(rollouts) != len(self._pending):
            raise ValueError(f"told {len(rollouts)} results for {len(self._pending)} asks")
        for ask, got in zip(self._pending, rollouts, strict=True):
            if len(got) != ask.n:
                raise ValueError(f"policy returned {len(got)} rollouts for an ask of n={ask.n}")
        self._advance(rollouts)

    def _advance(self, sent: list[list[Rollout]] | None) -> None:
        try:
            asks = self._gen.send(sent)  # type: ignore[arg-type]
            while not asks:  # a step that needs nothing from the policy
                asks = self._gen.send([])
            self._pending = asks
        except StopIteration as stop:
            self._pending = []
            self.result = stop.value


def run_batched(
    searches: Sequence[Search],
    policy: Policy,
    on_call: Callable[[int, int], None] | None = None,
) -> list[SearchResult]:
    """Run all searches to the end, one policy call per round of asks from every active search.

    `on_call(n_asks, n_rollouts)` is called after each policy call (for progress bars).
    """
    active = [s for s in searches if not s.done]
    while active:
        asks = [s.ask() for s in active]
        flat = [a for group in asks for a in group]
        results = policy.sample(flat)
        if len(results) != len(flat):
            raise RuntimeError(f"policy answered {len(results)} of {len(flat)} asks")
        pos = 0
        for search, group in zip(active, asks, strict=True):
            search.tell(results[pos : pos + len(group)])
            pos += len(group)
        if on_call is not None:
            on_call(len(flat), sum(a.n for a in flat))
        active = [s for s in active if not s.done]
    return [s.result for s in searches]  # type: ignore[misc]


def run_sequential(searches: Sequence[Search], policy: Policy) -> list[SearchResult]:
    """One search at a time: the reference the batched driver is checked against."""
    return [run_batched([s], policy)[0] for s in searches]
