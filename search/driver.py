"""Drive ask/tell searches against a policy, and a valuer (docs/design.md §5).

A search is a generator that yields a list of requests and is sent their answers: rollouts for an
`Ask`, a value for a `ValueAsk`; `Search` wraps one with `ask()` / `tell()`. `run_batched`
collects the requests of many problems into one policy call and one valuer call per round
(lockstep batching), so both always see large batches though each search is sequential.
`run_sequential` runs the problems one at a time: the same trees for the same seeds, slower.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence

from search.errors import HallucError
from search.tree import SearchResult
from search.types import Answer, Ask, Policy, Request, ValueAsk, Valuer

SearchGen = Generator[list[Request], list[Answer], SearchResult]


class Search:
    """One problem's search as a state machine: `ask()` the pending asks, `tell()` their results."""

    def __init__(self, gen: SearchGen) -> None:
        self._gen = gen
        self._pending: list[Request] = []
        self.result: SearchResult | None = None
        self._advance(None)

    @property
    def done(self) -> bool:
        return self.result is not None

    def ask(self) -> list[Request]:
        return self._pending

    def tell(self, answers: list[Answer]) -> None:
        if len(answers) != len(self._pending):
            raise ValueError(f"told {len(answers)} results for {len(self._pending)} asks")
        for ask, got in zip(self._pending, answers, strict=True):
            if isinstance(ask, ValueAsk):
                if not isinstance(got, float) or not 0 <= got <= 1:
                    raise ValueError(f"valuer answered {got!r} for a value; expected [0, 1]")
            elif isinstance(got, float) or len(got) != ask.n:
                n = got if isinstance(got, float) else len(got)
                raise ValueError(f"policy returned {n} rollouts for an ask of n={ask.n}")
        self._advance(answers)

    def _advance(self, sent: list[Answer] | None) -> None:
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
    valuer: Valuer | None = None,
) -> list[SearchResult]:
    """Run all searches to the end: per round of requests from every active search, one policy
    call for their asks and one `valuer` call for their value asks (each only when there are
    some). A value ask without a valuer is an error.

    `on_call(n_asks, n_rollouts)` is called after each round (for progress bars).
    """
    active = [s for s in searches if not s.done]
    while active:
        requests = [s.ask() for s in active]
        flat = [a for group in requests for a in group]
        answers = _answer(flat, policy, valuer)
        pos = 0
        for search, group in zip(active, requests, strict=True):
            search.tell(answers[pos : pos + len(group)])
            pos += len(group)
        if on_call is not None:
            asks = [a for a in flat if isinstance(a, Ask)]
            on_call(len(asks), sum(a.n for a in asks))
        active = [s for s in active if not s.done]
    return [s.result for s in searches]  # type: ignore[misc]


def _answer(flat: list[Request], policy: Policy, valuer: Valuer | None) -> list[Answer]:
    """The answers to `flat`, in order: the policy samples the asks, the valuer the rest."""
    asks = [a for a in flat if isinstance(a, Ask)]
    prefixes = [a.prefix for a in flat if isinstance(a, ValueAsk)]
    rollouts = policy.sample(asks) if asks else []
    if len(rollouts) != len(asks):
        raise RuntimeError(f"policy answered {len(rollouts)} of {len(asks)} asks")
    if prefixes and valuer is None:
        raise HallucError(
            "the search asked for learned values but has no value model; give "
            "search.value_model=PATH (a `halluc value` model) or set search.value=mc"
        )
    values = [float(v) for v in valuer.values(prefixes)] if prefixes and valuer else []
    if len(values) != len(prefixes):
        raise RuntimeError(f"valuer answered {len(values)} of {len(prefixes)} prefixes")
    got_rollouts, got_values = iter(rollouts), iter(values)
    return [next(got_rollouts) if isinstance(a, Ask) else next(got_values) for a in flat]


def run_sequential(
    searches: Sequence[Search], policy: Policy, valuer: Valuer | None = None
) -> list[SearchResult]:
    """One search at a time: the reference the batched driver is checked against."""
    return [run_batched([s], policy, valuer=valuer)[0] for s in searches]
