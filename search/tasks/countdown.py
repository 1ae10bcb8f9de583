"""Countdown, the Stream-of-Search game: combine all the numbers with + - * / to reach the target.

Prompt "24:3 5 7 9\\n"; a solution is n-1 steps such as "9-7=2", each taking two numbers of the
current multiset and putting back the result. Larger operand first; subtraction never negative;
division exact. Held-out targets make the test split, as many others the validation split (where
choices are made): those problems use only their own targets, and train neither.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from typing import Literal

from search.tasks import TaskDataError, check_split
from search.types import Problem, content_id

_STEP = re.compile(r"([0-9]+)([-+*/])([0-9]+)=([0-9]+)")
_MAX_NUMBER_DRAWS = 10_000


def _moves(x: int, y: int) -> list[tuple[str, int]]:
    """The allowed results of combining x >= y, in the solver's order: + - * /."""
    moves = [("+", x + y), ("-", x - y), ("*", x * y)]
    if y != 0 and x % y == 0:
        moves.append(("/", x // y))
    return moves


@functools.lru_cache(maxsize=1 << 18)
def _solve_sorted(numbers: tuple[int, ...], target: int) -> tuple[str, ...] | None:
    """Depth-first search over pairs (i < j) and operations; `numbers` sorted ascending."""
    if len(numbers) == 1:
        return () if numbers[0] == target else None
    seen: set[tuple[int, int]] = set()
    for i in range(len(numbers)):
        for j in range(i + 1, len(numbers)):
            y, x = numbers[i], numbers[j]
            if (x, y) in seen:
                continue
            seen.add((x, y))
            rest = numbers[:i] + numbers[i + 1 : j] + numbers[j + 1 :]
            for op, c in _moves(x, y):
                if rest:
                    tail = _solve_sorted(tuple(sorted((*rest, c))), target)
                else:
                    tail = () if c == target else None
                if tail is not None:
                    return (f"{x}{op}{y}={c}", *tail)
    return None


def solve(numbers: Sequence[int], target: int) -> list[str] | None:
    """The steps of the first solution found by exhaustive search, or None when none exists.

    Deterministic for a given multiset of `numbers` (their order does not matter); memoized.
    """
    steps = _solve_sorted(tuple(sorted(numbers)), target)
    return None if steps is None else list(steps)


def solvable(numbers: Sequence[int], target: int) -> bool:
    """Whether combining all of `numbers` (a state: the multiset left) can reach `target`.

    Memoized on the sorted multiset, so checking every state along many traces stays cheap.
    """
    return _solve_sorted(tuple(sorted(numbers)), target) is not None


def sum_heuristic(state: Sequence[int], target: int) -> float:
    """Stream of Search's "sum heuristic": the mean distance of the numbers to the target (lower
    looks more promising)."""
    return sum(abs(x - target) for x in state) / len(state)


def visibly_dead(state: Sequence[int], target: int, prune: bool = False) -> bool:
    """Whether a state is a dead end that shows without searching: one number left that is not
    the target, or (`prune`) Stream of Search's pruning rule, a sum heuristic above the target.

    The pruning rule is a heuristic, not a proof: a pruned state can still be solvable (30 3 for
    10: mean distance 13.5, yet 30/3=10), hence off by default; on the default task it loses
    about one problem in six. `solvable` is the exact check.
    """
    if len(state) == 1:
        return state[0] != target
    return prune and sum_heuristic(state, target) > target


def children(state: tuple[int, ...], target: int) -> list[tuple[str, tuple[int, ...]]]:
    """Every move from `state` (ascending) with the state it leaves, best first by the sum
    heuristic, ties in the solver's order (pairs left to right, then + - * /)."""
    out = []
    for i in range(len(state)):
        for j in range(i + 1, len(state)):
            y, x = state[i], state[j]
            rest = state[:i] + state[i + 1 : j] + state[j + 1 :]
            for op, c in _moves(x, y):
                out.append((f"{x}{op}{y}={c}", tuple(sorted((*rest, c)))))
    return sorted(out, key=lambda move: sum_heuristic(move[1], target))


def apply_step(state: Sequence[int], step: str) -> tuple[int, ...] | None:
    """The multiset (sorted) after a valid `step` on `state`, or None if the step is invalid.

    Invalid: unparsable, an operand not available, wrong arithmetic, a negative subtraction or a
    smaller-by-larger subtraction or division, an inexact or by-zero division. Never raises.
    """
    match = _STEP.fullmatch(step.strip())
    if match is None:
        return None
    try:
        a, b, c = int(match[1]), int(match[3]), int(match[4])
    except ValueError:  # absurdly long digit strings
        return None
    op = match[2]
    if op in "-/" and a < b:
        return None
    if op == "/" and (b == 0 or a % b != 0):
        return None
    if dict(_moves(max(a, b), min(a, b))).get(op) != c:
        return None
    remaining = list(state)
    for operand in (a, b):
        if operand not in remaining:
            return None
        remaining.remove(operand)
    return tuple(sorted((*remaining, c)))


def draw_heldout_targets(min_target: int, max_target: int, n: int) -> list[int]:
    """The `n` test targets in [min_target, max_target]: fixed, whatever the task's seed."""
    return sorted(random.Random("countdown-heldout").sample(range(min_target, max_target + 1), n))


def _check_ranges(
    n_numbers: int, min_number: int, max_number: int, min_target: int, max_target: int
) -> None:
    """Raise a ValueError naming the option when a count or range cannot make problems."""
    if n_numbers < 2:
        raise TaskDataError(f"countdown n_numbers must be at least 2, got {n_numbers}")
    if min_number < 1:
        raise TaskDataError(f"countdown min_number must be at least 1 (not 0), got {min_number}")
    if max_number < min_number:
        raise TaskDataError(
            f"countdown max_number ({max_number}) must be at least min_number ({min_number})"
        )
    if min_target < 0:
        raise TaskDataError(f"countdown min_target must be at least 0, got {min_target}")
    if max_target <= min_target:
        raise TaskDataError(
            f"countdown max_target ({max_target}) must exceed min_target ({min_target}): train "
            "and test each need a target"
        )


def sos_heldout_targets(min_target: int, max_target: int, seed: int = 4) -> list[int]:
    """The held-out targets of Stream of Search's Countdown generator: it seeds Python's `random`
    with `seed` (4 in its published scripts), shuffles the targets min_target..max_target (10..100
    there) and holds out the first tenth. Python's seeded shuffle is the same on every version."""
    targets = list(range(min_target, max_target + 1))
    random.Random(seed).shuffle(targets)
    return sorted(targets[: len(targets) // 10])


def _heldout(
    targets: range,
    n: int,
    share: float | None,
    explicit: Sequence[int] | None,
    sos_seed: int | None = None,
) -> list[int]:
    """The test targets from exactly one of: `explicit`, Stream of Search's split with
    `sos_seed`, `share` of `targets`, or `n` of them."""
    where = f"the targets {targets.start}..{targets.stop - 1}"
    given = [
        k
        for k, v in [
            ("heldout_targets", explicit),
            ("heldout_share", share),
            ("heldout_sos_seed", sos_seed),
        ]
        if v is not None
    ]
    if len(given) > 1:
        raise TaskDataError(f"countdown: give at most one of {given}")
    if sos_seed is not None:
        explicit = sos_heldout_targets(targets.start, targets.stop - 1, sos_seed)
    if explicit is not None:
        outside = sorted(set(explicit) - set(targets))
        if outside:
            raise TaskDataError(f"countdown heldout_targets {outside} lie outside {where}")
        held = sorted(set(explicit))
        if not 0 < len(held) < len(targets):
            raise TaskDataError(
                f"countdown heldout_targets must hold 1 to {len(targets) - 1} distinct targets "
                f"of {where} (at least one is left for train), got {len(held)}"
            )
        return held
    if share is not None:
        if not 0 < share < 1:
            raise TaskDataError(f"countdown heldout_share must lie in (0, 1), got {share}")
        n = min(max(1, round(share * len(targets))), len(targets) - 1)
    elif not 0 < n < len(targets):
        raise TaskDataError(
            f"countdown n_heldout_targets must be between 1 and {len(targets) - 1} ({where} "
            f"less at least one for train), got {n}"
        )
    return draw_heldout_targets(targets.start, targets.stop - 1, n)


class CountdownTask:
    """Reach a target in [min_target, max_target] from `n_numbers` numbers in
    [min_number, max_number].

    Test targets: `heldout_targets` when given, else Stream of Search's split
    (`heldout_sos_seed`: its generator's seed, 4 in its scripts; `sos_heldout_targets`), else a
    `heldout_share` of the targets, else `n_heldout_targets` of them (drawn by a fixed generator,
    the same whatever the seed).
    `seed` picks the problems. Bad options raise a ValueError that names the option.
    """

    name = "countdown"
    step_delimiter = "\n"

    def __init__(
        self,
        seed: int = 0,
        n_numbers: int = 4,
        min_number: int = 1,
        max_number: int = 99,
        min_target: int = 10,
        max_target: int = 100,
        n_heldout_targets: int = 10,
        heldout_share: float | None = None,
        heldout_targets: Sequence[int] | None = None,
        heldout_sos_seed: int | None = None,
    ) -> None:
        _check_ranges(n_numbers, min_number, max_number, min_target, max_target)
        self.seed = seed
        self.n_numbers = n_numbers
        self.min_number, self.max_number = min_number, max_number
        targets = range(min_target, max_target + 1)
        self.heldout = _heldout(
            targets, n_heldout_targets, heldout_share, heldout_targets, heldout_sos_seed
        )
        rest = [t for t in targets if t not in self.heldout]
        # validation: as many targets as the test's, drawn from the rest (all three disjoint)
        k = min(len(self.heldout), len(rest) // 2)
        self.validation = sorted(random.Random("countdown-validation").sample(rest, k))
        train = [t for t in rest if t not in self.validation]
        self.targets = {"train": train, "validation": self.validation, "test": self.heldout}

    @property
    def has_step_checker(self) -> bool:
        return True

    def make_problem(self, target: int, numbers: Sequence[int]) -> Problem:
        """The problem of reaching `target` from `numbers` (kept in the given order)."""
        prompt = f"{target}:{' '.join(map(str, numbers))}{self.step_delimiter}"
        return Problem(
            id=content_id(self.name, prompt),
            prompt=prompt,
            answer=str(target),
            meta={"target": target, "numbers": list(numbers)},
        )

    def _draw(self, rng: random.Random, targets: list[int]) -> Problem:
        target = rng.choice(targets)
        for _ in range(_MAX_NUMBER_DRAWS):
            numbers = [rng.randint(self.min_number, self.max_number) for _ in range(self.n_numbers)]
            if solvable(numbers, target):
                return self.make_problem(target, numbers)
        raise TaskDataError(
            f"no solvable set of {self.n_numbers} numbers in {self.min_number}..{self.max_number} "
            f"found for target {target} in {_MAX_NUMBER_DRAWS} draws; widen the number range "
            "or raise n_numbers"
        )

    def problems(self, split: Literal["train", "validation", "test"], n: int) -> list[Problem]:
        """Exactly `n` distinct solvable problems of `split`; in validation and test the same
        numbers reordered are one problem (training keeps each order: a different input)."""
        check_split(split)
        if n < 0:
            raise TaskDataError(f"number of problems must be non-negative, got {n}")
        targets, rng = self.targets[split], random.Random(f"{self.seed}-{split}")
        found: dict[tuple[int, ...], Problem] = {}
        max_attempts = 1_000 + 100 * n
        for _ in range(max_attempts):
            if len(found) == n:
                break
            p = self._draw(rng, targets)
            key = p.meta["numbers"] if split == "train" else sorted(p.meta["numbers"])
            found.setdefault((p.meta["target"], *key), p)
        if len(found) < n:
            raise TaskDataError(
                f"found only {len(found)} distinct countdown {split} problems in {max_attempts} "
                f"draws, {n} asked; ask for fewer or raise max_number"
            )
        return list(found.values())

    def reference(self, problem: Problem) -> list[str]:
        """The first solution of the exhaustive solver."""
        steps = solve(problem.meta["numbers"], problem.meta["target"])
        if steps is None:
            raise TaskDataError(f"countdown problem {problem.prompt.strip()!r} has no solution")
        return steps

    def is_correct(self, problem: Problem, steps: Sequence[str]) -> bool:
        """True iff exactly n-1 valid steps use every number once and leave only the target."""
        state = tuple(problem.meta["numbers"])
        if len(steps) != len(state) - 1:
            return False
        for step in steps:
            after = apply_step(state, step)
            if after is None:
                return False
            state = after
        return state == (problem.meta["target"],)

    def solution(self, problem: Problem, lines: Sequence[str]) -> list[str] | None:
        """The solution an output states: the output itself, or for a Stream-of-Search stream
        (it has "back" lines) the last path it took (`countdown_stream.stream_path`; None when
        a line is neither a valid move nor a return to a state reached before)."""
        from search.tasks.countdown_stream import BACK, stream_path

        if not any(line.startswith(BACK) for line in lines):
            return list(lines)
        return stream_path(problem.meta["numbers"], lines)

    def first_error(self, problem: Problem, steps: Sequence[str]) -> int | None:
        """Index of the first step that is invalid or after which the target is out of reach (a
        step past the last possible one included); None while every step keeps it reachable."""
        return detection_point(problem.meta["numbers"], problem.meta["target"], steps)

    def detection_step(self, problem: Problem, steps: Sequence[str]) -> int | None:
        """Index of the first step after which the failure is visible without a solver: an
        invalid step, or one number left that is not the target; None when none is (a
        continuation that stops early). Where a correction placed `at_detection` erases to."""
        return detection_point(
            problem.meta["numbers"], problem.meta["target"], steps, detector="visible"
        )

    @property
    def has_wrong_steps(self) -> bool:
        return True

    def wrong_step(self, problem: Problem, before: Sequence[str], rng: random.Random) -> str:
        """A plausible wrong version of reference step `len(before)` (`before`: valid steps):
        a legal move from the state `before` leaves after which the target is out of reach,
        drawn uniformly; where every legal move keeps it in reach, the reference step with its
        result one off, which `apply_step` rejects. Either way `first_error` flags it."""
        target, state = problem.meta["target"], tuple(sorted(problem.meta["numbers"]))
        for step in before:
            after = apply_step(state, step)
            if after is None:
                raise TaskDataError(
                    f"{step!r} is not a valid step from {' '.join(map(str, state))}"
                )
            state = after
        moves = dict.fromkeys(
            s for s, left in children(state, target) if not solvable(left, target)
        )
        if moves:
            return rng.choice(list(moves))
        head, value = self.reference(problem)[len(before)].split("=")
        return f"{head}={rng.choice([v for v in (int(value) + 1, int(value) - 1) if v >= 0])}"


def detection_point(
    numbers: Sequence[int],
    target: int,
    steps: Sequence[str],
    detector: Literal["exact", "visible"] = "exact",
    prune: bool = False,
) -> int | None:
    """Index of the first step after which `detector` sees that `target` cannot be reached from
    `numbers`, or None when it never does. An invalid step is seen at once, by either detector.

    "exact": the target is no longer reachable (`solvable`): the step that made the mistake.
    "visible": the state is a visible dead end (`visibly_dead` with `prune`): where a searcher
    without a solver notices, often steps later. The gap is where a backspace "at detection"
    and one "at the error" differ.
    """
    if detector not in ("exact", "visible"):
        raise TaskDataError(f"countdown detector must be 'exact' or 'visible', got {detector!r}")
    state = tuple(numbers)
    for i, step in enumerate(steps):
        after = apply_step(state, step)
        if after is None:
            return i
        if detector == "exact" and not solvable(after, target):
            return i
        if detector == "visible" and visibly_dead(after, target, prune):
            return i
        state = after
    return None
