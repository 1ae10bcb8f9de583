"""Countdown search streams and detection points: what the backspaces leave visible is the found
solution, a stream's last path is the same solution, and both pass the task's own checkers; the
detection point is where the target goes out of reach (exact) or where that shows (visible)."""

from __future__ import annotations

import random

import pytest

from search.backspace import apply_backspaces, serialize_stream
from search.tasks.countdown import (
    CountdownTask,
    apply_step,
    children,
    detection_point,
    solvable,
    solve,
    visibly_dead,
)
from search.tasks.countdown_stream import (
    backspace_pieces,
    pieces_ids,
    render,
    search_moves,
    search_trace,
    stream_path,
)
from search.tokenizer import CharTokenizer

TOK = CharTokenizer()
TINY = CountdownTask(n_numbers=3, min_number=1, max_number=20, min_target=10, max_target=50)
PROBLEMS = TINY.problems("train", 100) + CountdownTask().problems("train", 40)


def _visible(prompt: str, pieces: list[tuple[str, int]]) -> str:
    ids = TOK.encode(prompt) + pieces_ids(pieces, TOK)
    n = len(prompt)
    return TOK.decode(apply_backspaces(ids, n, "step", TOK.bksp_id, TOK.delim_id)[n:])


@pytest.mark.parametrize("order", ["dfs", "bfs"])
def test_backspaces_leave_the_solution_the_stream_ends_on(order: str) -> None:
    solved = 0
    for problem in PROBLEMS:
        numbers, target = problem.meta["numbers"], problem.meta["target"]
        tried = search_moves(numbers, target, order, max_states=100)
        if tried is None:
            continue
        solved += 1
        found = list(tried[-1].path)
        visible = _visible(problem.prompt, search_trace(problem, "backspace", order) or [])
        assert visible == "\n".join(found)
        assert TINY.is_correct(problem, visible.split("\n"))
        assert TINY.first_error(problem, visible.split("\n")) is None
        stream = (search_trace(problem, "stream", order) or [("", 0)])[0][0]
        assert stream_path(numbers, stream.split("\n")) == found
    assert solved >= 130


def test_backspace_trace_serializes_with_erased_dead_ends_unlearned() -> None:
    problem = TINY.make_problem(12, [3, 8, 7])
    pieces = search_trace(problem, "backspace")
    assert pieces == [
        ("7+3=10\n10+8=18\n", 1),
        ("10-8=2\n", 1),
        ("10*8=80\n", 2),
        ("8+3=11\n11-7=4\n", 1),
        ("11*7=77\n", 2),
        ("7-3=4\n8+4=12", 0),
    ]
    prompt = TOK.encode(problem.prompt)
    ser = serialize_stream(
        prompt, pieces_ids(pieces, TOK) + [TOK.eos_id], "step", TOK.bksp_id, TOK.delim_id
    )
    assert ser.n_backspaces == 7
    learned = [t for t, m in zip(ser.input_ids, ser.loss_mask, strict=True) if m]
    assert TOK.decode(learned) == render([("", 7), ("7-3=4\n8+4=12", 0)])


def test_stream_shows_dead_ends_and_back_lines() -> None:
    problem = TINY.make_problem(12, [3, 8, 7])
    assert search_trace(problem, "stream") == [
        (
            "7+3=10\n10+8=18\nback 8 10\n10-8=2\nback 8 10\n10*8=80\nback 3 7 8\n8+3=11\n"
            "11-7=4\nback 7 11\n11*7=77\nback 3 7 8\n7-3=4\n8+4=12",
            0,
        )
    ]
    assert search_trace(problem, "optimal") == [("\n".join(solve([3, 8, 7], 12) or []), 0)]


def test_search_orders() -> None:
    """Depth-first: each move starts from a state on the last path. Breadth-first: never deeper
    before the shallower level is done. Both try a state at most once."""
    for problem in PROBLEMS[:60]:
        numbers, target = problem.meta["numbers"], problem.meta["target"]
        dfs = search_moves(numbers, target, "dfs", 100) or []
        for before, t in zip(dfs, dfs[1:], strict=False):
            assert before.path[: len(t.path) - 1] == t.path[:-1]
        bfs = search_moves(numbers, target, "bfs", 100) or []
        assert [len(t.path) for t in bfs] == sorted(len(t.path) for t in bfs)
        for tried in (dfs, bfs):
            assert len({t.state for t in tried}) == len(tried)
            assert all(t.outcome == "solved" for t in tried[-1:])
            assert all(t.outcome != "solved" for t in tried[:-1])


def test_budget_only_cuts_the_search_short() -> None:
    problem = CountdownTask().problems("train", 1)[0]
    numbers, target = problem.meta["numbers"], problem.meta["target"]
    full = search_moves(numbers, target, "dfs", 10_000)
    assert full is not None
    results = [search_moves(numbers, target, "dfs", k) for k in range(1, 40)]
    assert None in results and all(r in (None, full) for r in results)
    assert search_moves([1, 1], 50) is None and search_moves([1, 1], 50, "bfs") is None
    assert search_trace(TINY.make_problem(50, [1, 1]), "optimal") is None


def test_children_are_every_legal_move_best_first() -> None:
    moves = children((3, 8, 10), 12)
    assert all(apply_step((3, 8, 10), step) == state for step, state in moves)
    assert len(moves) == 3 * 3  # three pairs, + - *, no exact division among them
    distances = [sum(abs(x - 12) for x in state) / len(state) for _, state in moves]
    assert distances == sorted(distances)


def test_stream_path_rejects_what_is_not_a_stream() -> None:
    assert stream_path([3, 8, 7], ["7+3=10", "back 3 7 8", "7-3=4", "8+4=12"]) == [
        "7-3=4",
        "8+4=12",
    ]
    assert stream_path([3, 8, 7], ["7+3=10", "back 4 8"]) is None  # never reached
    assert stream_path([3, 8, 7], ["7+3=10", "back 8 x"]) is None
    assert stream_path([3, 8, 7], ["7+3=11"]) is None
    assert stream_path([3, 8, 7], []) == []


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"mode": "tree"}, "mode"),
        ({"order": "astar"}, "order"),
        ({"max_states": 0}, "max_states"),
        ({"beam": 0}, "beam"),
    ],
)
def test_bad_trace_options_name_the_option(options: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        search_trace(TINY.make_problem(12, [3, 8, 7]), **options)


def test_backspace_pieces_of_nothing() -> None:
    assert backspace_pieces([]) == []


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
