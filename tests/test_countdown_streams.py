"""Countdown detection points: where the target goes out of reach (exact) or where that shows
(visible), on hand-made cases and on random rollouts against the task's own step checker."""

from __future__ import annotations

import random

import pytest

from search.tasks.countdown import (
    CountdownTask,
    children,
    detection_point,
    solvable,
    visibly_dead,
)

TINY = CountdownTask(n_numbers=3, min_number=1, max_number=20, min_target=10, max_target=50)
PROBLEMS = TINY.problems("train", 100) + CountdownTask().problems("train", 40)


def test_detection_point_by_hand() -> None:
    # 7+3=10 leaves 8 10, from which 12 is out of reach; it shows only at the last number.
    assert not solvable((8, 10), 12) and solvable((4, 8), 12)
    wrong = ["7+3=10", "10+8=18"]
    assert detection_point([3, 8, 7], 12, wrong) == 0
    assert detection_point([3, 8, 7], 12, wrong, "visible") == 1
    assert detection_point([3, 8, 7], 12, wrong[:1], "visible") is None
    assert detection_point([3, 8, 7], 12, ["7-3=4", "8+4=12"]) is None
    assert detection_point([3, 8, 7], 12, ["7-3=4", "8+4=12"], "visible") is None
    assert detection_point([3, 8, 7], 12, ["7+3=11"], "visible") == 0  # invalid: seen at once
    # Four numbers: 9*7=63 leaves 3 5 63, already out of reach of 24; seen two steps later.
    four = ["9*7=63", "63-5=58", "58-3=55"]
    assert detection_point([3, 5, 7, 9], 24, four) == 0
    assert detection_point([3, 5, 7, 9], 24, four, "visible") == 2
    # Pruning shows it earlier: 99+98=197 leaves 2 197, mean distance 97.5 above 10.
    assert visibly_dead((2, 197), 10, prune=True) and not visibly_dead((2, 197), 10)
    assert detection_point([99, 98, 2], 10, ["99+98=197"], "visible", prune=True) == 0
    assert detection_point([99, 98, 2], 10, ["99+98=197", "197+2=199"], "visible") == 1
    with pytest.raises(ValueError, match="detector"):
        detection_point([3, 8, 7], 12, wrong, "late")  # type: ignore[arg-type]


def test_detection_never_precedes_the_error_and_first_error_is_exact() -> None:
    rng = random.Random(0)
    later = 0
    for problem in PROBLEMS:
        numbers, target = problem.meta["numbers"], problem.meta["target"]
        state, steps = tuple(sorted(numbers)), []
        while len(state) > 1:
            step, state = rng.choice(children(state, target))
            steps.append(step)
        exact = detection_point(numbers, target, steps)
        visible = detection_point(numbers, target, steps, "visible")
        assert TINY.first_error(problem, steps) == exact
        assert (exact is None) == (visible is None)
        if exact is not None and visible is not None:
            assert visible == len(steps) - 1 >= exact
            later += visible > exact
    assert later > 10
