"""Tasks: reference solutions pass their own checkers, step checkers locate known mistakes, splits
are disjoint and deterministic, and data files fail loudly where they are wrong."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.tasks import TaskCapabilityError, TaskDataError, make_task
from search.tasks.arithmetic import ArithmeticTask
from search.tasks.countdown import CountdownTask, apply_step, solvable, solve
from search.tasks.jsonl import JsonlTask, answers_match, extract_answer, normalize_number

CHECKED_TASKS = {
    "add3": lambda: ArithmeticTask("add", 3),
    "add8": lambda: ArithmeticTask("add", 8),
    "mul3": lambda: ArithmeticTask("mul", 3),
    "mul8": lambda: ArithmeticTask("mul", 8),
    "countdown": lambda: CountdownTask(),
}


@pytest.mark.parametrize("name", sorted(CHECKED_TASKS))
@pytest.mark.parametrize("split", ["train", "test"])
def test_references_are_correct_and_error_free(name: str, split: str) -> None:
    task = CHECKED_TASKS[name]()
    problems = task.problems(split, 200)
    assert len(problems) == 200
    for problem in problems:
        steps = task.reference(problem)
        assert task.is_correct(problem, steps), (problem, steps)
        assert task.first_error(problem, steps) is None
        assert not any(task.step_delimiter in step for step in steps)
        assert problem.prompt.endswith(task.step_delimiter)


@pytest.mark.parametrize("name", sorted(CHECKED_TASKS))
def test_splits_disjoint_and_deterministic(name: str) -> None:
    first, second = CHECKED_TASKS[name](), CHECKED_TASKS[name]()
    train, test = first.problems("train", 200), first.problems("test", 100)
    assert len({p.id for p in train}) == 200
    assert not {p.id for p in train} & {p.id for p in test}
    assert second.problems("train", 200) == train
    assert second.problems("test", 100) == test


def test_seed_changes_problems() -> None:
    assert ArithmeticTask(seed=0).problems("train", 20) != ArithmeticTask(seed=1).problems(
        "train", 20
    )
    assert CountdownTask(seed=0).problems("train", 20) != CountdownTask(seed=1).problems(
        "train", 20
    )


def test_arithmetic_scratchpad_by_hand() -> None:
    task = ArithmeticTask("add", 3)
    problem = task.make_problem(347, 589)
    assert problem.prompt == "347+589=?\n" and problem.answer == "936"
    assert task.reference(problem) == ["7+9+0=16", "4+8+1=13", "3+5+1=9", "ans 936"]
    mul = ArithmeticTask("mul", 3)
    assert mul.reference(mul.make_problem(347, 9)) == [
        "7*9+0=63",
        "4*9+6=42",
        "3*9+4=31",
        "ans 3123",
    ]


def test_arithmetic_eight_digits_has_a_step_per_digit() -> None:
    for op in ("add", "mul"):
        task = ArithmeticTask(op, 8)
        for problem in task.problems("train", 20):
            assert len(task.reference(problem)) == 9


def _bump_digit(step: str, rng: random.Random) -> str:
    positions = [k for k, ch in enumerate(step) if ch.isdigit()]
    k = rng.choice(positions)
    return step[:k] + str((int(step[k]) + rng.randint(1, 9)) % 10) + step[k + 1 :]


@pytest.mark.parametrize("op", ["add", "mul"])
def test_arithmetic_perturbed_digit_is_located(op: str) -> None:
    task, rng = ArithmeticTask(op, 5), random.Random(0)
    for problem in task.problems("train", 30):
        reference = task.reference(problem)
        for i in range(len(reference)):
            steps = list(reference)
            steps[i] = _bump_digit(steps[i], rng)
            assert task.first_error(problem, steps) == i
            assert task.first_error(problem, steps[: i + 1]) == i
        wrong_answer = [*reference[:-1], _bump_digit(reference[-1], rng)]
        assert not task.is_correct(problem, wrong_answer)


def test_arithmetic_prefix_extra_and_whitespace() -> None:
    task = ArithmeticTask("add", 3)
    problem = task.problems("test", 1)[0]
    reference = task.reference(problem)
    assert task.first_error(problem, reference[:2]) is None
    assert task.first_error(problem, []) is None
    assert task.first_error(problem, [*reference, "ans 1"]) == len(reference)
    assert task.is_correct(problem, [f" {s} " for s in reference])
    assert not task.is_correct(problem, [])


def test_arithmetic_too_many_problems_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="raise digits"):
        ArithmeticTask("add", 1).problems("test", 500)
    with pytest.raises(ValueError, match="add, mul"):
        ArithmeticTask("sub")  # type: ignore[arg-type]


def test_countdown_targets_held_out() -> None:
    task = CountdownTask()
    held = set(task.heldout)
    assert len(held) == 10 and CountdownTask(seed=7).heldout == task.heldout
    assert {p.meta["target"] for p in task.problems("test", 200)} <= held
    assert not {p.meta["target"] for p in task.problems("train", 500)} & held


def test_countdown_counts_reordered_numbers_once() -> None:
    """An evaluation split holds as many problems as it has distinct (target, numbers multiset)
    pairs, not ordered draws: asking for one more fails. Training keeps each order."""
    task = CountdownTask(n_numbers=2, min_number=1, max_number=5, min_target=2, max_target=9,
                         n_heldout_targets=2)  # fmt: skip
    pairs = {
        (t, a, b)
        for t in task.heldout
        for a in range(1, 6)
        for b in range(a, 6)
        if solvable([a, b], t)
    }
    got = task.problems("test", len(pairs))
    assert {(p.meta["target"], *sorted(p.meta["numbers"])) for p in got} == pairs
    with pytest.raises(TaskDataError, match="distinct countdown test problems"):
        task.problems("test", len(pairs) + 1)
    ordered = {
        (t, a, b)
        for t in task.targets["train"]
        for a in range(1, 6)
        for b in range(1, 6)
        if solvable([a, b], t)
    }
    train = task.problems("train", len(ordered))  # every order of every solvable pair
    assert {(p.meta["target"], *p.meta["numbers"]) for p in train} == ordered


def test_countdown_default_problems_unchanged() -> None:
    """The default task keeps every test problem it had; its training problems changed once,
    when the validation targets were carved out of the training ones (a draw over fewer targets)."""
    task = CountdownTask()
    assert task.heldout == [11, 23, 26, 40, 58, 62, 67, 74, 83, 89]
    assert task.validation == [22, 39, 44, 46, 52, 64, 69, 80, 84, 91]
    assert [(p.id, p.prompt) for p in task.problems("train", 3)] == [
        ("countdown-3e8e5fd218357f9d", "16:20 60 10 30\n"),
        ("countdown-dbdff3904bd8fa82", "43:81 25 73 22\n"),
        ("countdown-657287386add1ff5", "100:12 92 50 98\n"),
    ]
    assert [p.id for p in task.problems("test", 3)] == [
        "countdown-a0ac9c9b4517b133",
        "countdown-263c8b3abdda5907",
        "countdown-ad85b0bb4e9f8ff5",
    ]


def test_countdown_options_shape_problems() -> None:
    tiny = CountdownTask(n_numbers=3, min_number=1, max_number=20, min_target=10, max_target=50)
    for split in ("train", "test"):
        for p in tiny.problems(split, 100):
            assert len(p.meta["numbers"]) == 3 and min(p.meta["numbers"]) >= 1
            assert max(p.meta["numbers"]) <= 20 and 10 <= p.meta["target"] <= 50
            assert (p.meta["target"] in tiny.heldout) == (split == "test")
    narrow = CountdownTask(min_number=5, max_number=30)
    assert all(5 <= n <= 30 for p in narrow.problems("train", 50) for n in p.meta["numbers"])


def test_countdown_heldout_by_share_or_list() -> None:
    by_share = CountdownTask(min_target=10, max_target=50, heldout_share=0.2)
    assert len(by_share.heldout) == 8  # round(0.2 * 41)
    assert (
        by_share.heldout == CountdownTask(min_target=10, max_target=50, n_heldout_targets=8).heldout
    )
    listed = CountdownTask(heldout_targets=[36, 12, 24])
    assert listed.heldout == [12, 24, 36]
    assert {p.meta["target"] for p in listed.problems("test", 30)} <= {12, 24, 36}
    assert not {p.meta["target"] for p in listed.problems("train", 200)} & {12, 24, 36}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"n_numbers": 1}, "n_numbers"),
        ({"min_number": 0}, "min_number"),
        ({"min_number": 30, "max_number": 20}, "max_number"),
        ({"min_target": -1}, "min_target"),
        ({"min_target": 50, "max_target": 50}, "max_target"),
        ({"n_heldout_targets": 0}, "n_heldout_targets"),
        ({"min_target": 10, "max_target": 12, "n_heldout_targets": 3}, "n_heldout_targets"),
        ({"heldout_share": 1.0}, "heldout_share"),
        ({"heldout_targets": [5, 20]}, "heldout_targets"),
        ({"heldout_targets": []}, "heldout_targets"),
        ({"heldout_targets": [20], "heldout_share": 0.1}, "at most one of"),
        ({"heldout_sos_seed": 4, "heldout_share": 0.1}, "heldout_sos_seed"),
    ],
)
def test_countdown_bad_options_name_the_option(options: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        CountdownTask(**options)


def _brute_reachable(numbers: list[int]) -> set[int]:
    """Every value reachable using all numbers, by ordered pairs (independent of the solver)."""
    if len(numbers) == 1:
        return {numbers[0]}
    out: set[int] = set()
    for i, x in enumerate(numbers):
        for j, y in enumerate(numbers):
            if i == j:
                continue
            rest = [v for k, v in enumerate(numbers) if k not in (i, j)]
            results = [x + y, x * y] + ([x - y] if x >= y else [])
            results += [x // y] if x >= y and y and x % y == 0 else []
            for c in results:
                out |= _brute_reachable([*rest, c])
    return out


def test_countdown_solver_agrees_with_brute_force() -> None:
    rng, task = random.Random(0), CountdownTask()
    for _ in range(60):
        numbers = [rng.randint(1, 30) for _ in range(rng.choice([2, 3, 4]))]
        reachable = _brute_reachable(numbers)
        for target in range(0, 60):
            assert solvable(numbers, target) == (target in reachable), (numbers, target)
            steps = solve(numbers, target)
            if steps is not None:
                problem = task.make_problem(target, numbers)
                assert task.is_correct(problem, steps) and len(steps) == len(numbers) - 1


def test_countdown_wrong_arithmetic_is_located() -> None:
    task = CountdownTask()
    for problem in task.problems("train", 50):
        reference = task.reference(problem)
        for i, step in enumerate(reference):
            lhs, result = step.split("=")
            steps = [*reference[:i], f"{lhs}={int(result) + 1}", *reference[i + 1 :]]
            assert task.first_error(problem, steps) == i
            assert not task.is_correct(problem, steps)


def test_countdown_dead_end_step_is_located() -> None:
    task, found = CountdownTask(), 0
    for problem in task.problems("train", 50):
        numbers, target = problem.meta["numbers"], problem.meta["target"]
        x, y = max(numbers[:2]), min(numbers[:2])
        for step in (f"{x}+{y}={x + y}", f"{x}*{y}={x * y}", f"{x}-{y}={x - y}"):
            state = apply_step(numbers, step)
            assert state is not None
            if not solvable(state, target):
                assert task.first_error(problem, [step]) == 0
                assert task.first_error(problem, [step, *task.reference(problem)[1:]]) == 0
                found += 1
    assert found > 10


def test_countdown_rejects_illegal_steps() -> None:
    task = CountdownTask()
    problem = task.make_problem(24, [3, 5, 7, 9])
    assert task.is_correct(problem, ["5+3=8", "8+7=15", "15+9=24"])
    assert task.is_correct(problem, ["3+5=8", "7+8=15", "9+15=24"])  # + and * in either order
    assert task.first_error(problem, ["3-5=-2"]) == 0  # smaller first
    assert task.first_error(problem, ["5+3=8", "8+7=15"]) is None  # the result is available
    assert task.first_error(problem, ["5+3=8", "3+7=10"]) == 1  # the 3 was used
    assert task.first_error(problem, ["9/2=4"]) == 0  # 2 is not there, and inexact
    assert task.first_error(problem, ["7/3=2"]) == 0  # inexact
    assert task.first_error(problem, ["5+3=8", "8+7=15", "15+9=24", "24+0=24"]) == 3
    assert not task.is_correct(problem, ["5+3=8", "8+7=15"])  # unfinished


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="0123456789+-*/= x\n", max_size=12), max_size=5))
def test_countdown_checkers_never_raise_on_model_output(steps: list[str]) -> None:
    task = CountdownTask()
    problem = task.make_problem(24, [3, 5, 7, 9])
    assert isinstance(task.is_correct(problem, steps), bool)
    error = task.first_error(problem, steps)
    assert error is None or 0 <= error < len(steps)


GSM_ROWS = [
    {"question": "Tom has 3 apples and buys 997. How many?", "answer": "3+997=1000\n#### 1,000"},
    {"question": "What is 2+2?", "answer": "Two and two.\n\nmake 4\n#### 4"},
    {"question": "Half of 5?", "answer": "2.5"},
] + [
    {"question": f"What is {k} plus one?", "answer": f"It is {k + 1}.\n#### {k + 1}"}
    for k in range(60)
]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n\n" for row in rows))


def test_jsonl_file_loads_and_checks(tmp_path: Path) -> None:
    path = tmp_path / "gsm.jsonl"
    _write_jsonl(path, GSM_ROWS)
    task = JsonlTask(str(path))
    train, test = task.problems("train", 0), task.problems("test", 0)
    validation = task.problems("validation", 0)
    assert len(train) + len(validation) + len(test) == len(GSM_ROWS) and test and validation
    assert not {p.id for p in train} & {p.id for p in test}
    by_prompt = {p.prompt: p for p in train + test}
    apples = by_prompt["Tom has 3 apples and buys 997. How many?\n"]
    assert apples.answer == "1,000"
    assert task.reference(apples) == ["3+997=1000", "#### 1,000"]
    assert task.is_correct(apples, ["3+997=1000", "#### 1000.0"])
    assert not task.is_correct(apples, ["#### 1001"]) and not task.is_correct(apples, ["1000"])
    assert task.reference(by_prompt["What is 2+2?\n"]) == ["Two and two.", "make 4", "#### 4"]
    assert by_prompt["Half of 5?\n"].answer == "2.5"
    assert task.problems("train", 3) == train[:3]
    assert not task.has_step_checker
    with pytest.raises(TaskCapabilityError, match="no exact step checker"):
        task.first_error(apples, ["#### 1000"])
    # what it cannot do: the lines are the solution, no failure shows early, no wrong steps
    assert task.solution(apples, ["3+997=1000", "#### 1000"]) == ["3+997=1000", "#### 1000"]
    assert task.detection_step(apples, ["3+997=1001", "#### 1001"]) is None
    assert not task.has_wrong_steps
    with pytest.raises(TaskCapabilityError, match="retry_rate=0"):
        task.wrong_step(apples, [], random.Random(0))


def test_answer_helpers() -> None:
    assert extract_answer("a\n#### b #### 42 ") == "42" and extract_answer("42") is None
    assert normalize_number(" $1,000. ") == 1000.0 and normalize_number("ten") is None
    assert normalize_number("nan") is None and normalize_number("-.5") == -0.5
    assert answers_match("1,000", "1000.0") and answers_match("0.1", "0.1000001")
    assert not answers_match("1000001", "1000000") and answers_match(" x^2 ", "x^2")


@pytest.mark.parametrize(
    "line, problem",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"question": "q"}', "missing field 'answer'"),
        ('{"question": "q", "answer": 4}', "must be a string"),
        ('{"question": "q", "answer": "no final answer"}', "no '####"),
    ],
)
def test_jsonl_malformed_line_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "broken.jsonl"
    good = json.dumps(GSM_ROWS[0])
    path.write_text(f"{good}\n{good}\n{line}\n{good}\n")
    with pytest.raises(TaskDataError, match=problem) as info:
        JsonlTask(str(path)).problems("train", 0)
    assert "broken.jsonl" in str(info.value) and "line 3" in str(info.value)


def test_jsonl_bytes_that_are_not_utf8_name_file_line_and_byte(tmp_path: Path) -> None:
    """Before: a UnicodeDecodeError traceback that named neither the file nor the line."""
    path = tmp_path / "latin1.jsonl"
    good = json.dumps(GSM_ROWS[0]).encode()
    path.write_bytes(good + b"\n" + b'{"question": "caf\xe9", "answer": "#### 1"}\n' + good + b"\n")
    with pytest.raises(TaskDataError, match=r"latin1.jsonl, line 2: not UTF-8 \(byte 0xe9 at"):
        JsonlTask(str(path)).problems("train", 0)


def test_jsonl_directory_and_split_map(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "train.jsonl", GSM_ROWS[:10])
    _write_jsonl(tmp_path / "validation.jsonl", GSM_ROWS[:2] + GSM_ROWS[10:15])
    task = JsonlTask(str(tmp_path), split_field_map={"test": "validation"})
    test, train = task.problems("test", 0), task.problems("train", 0)
    assert len(test) == 7 and len(train) == 8  # the two shared problems stay in test only
    assert not {p.id for p in train} & {p.id for p in test}
    with pytest.raises(TaskDataError, match="no test problems"):
        JsonlTask(str(tmp_path)).problems("test", 5)


def test_jsonl_saved_hf_datasets(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [{"problem": r["question"], "solution": r["answer"]} for r in GSM_ROWS]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "flat"))
    flat = JsonlTask(str(tmp_path / "flat"), question_field="problem", answer_field="solution")
    from_file = tmp_path / "gsm.jsonl"
    _write_jsonl(from_file, GSM_ROWS)
    assert flat.problems("test", 0) == JsonlTask(str(from_file)).problems("test", 0)

    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(GSM_ROWS[:5]),
            "test": datasets.Dataset.from_list(GSM_ROWS[5:8]),
        }
    )
    splits.save_to_disk(str(tmp_path / "dict"))
    task = JsonlTask(str(tmp_path / "dict"))
    assert [p.prompt for p in task.problems("test", 0)] == [
        r["question"] + "\n" for r in GSM_ROWS[5:8]
    ]
    assert len(task.problems("train", 2)) == 2


def test_make_task() -> None:
    assert make_task("arithmetic", op="mul", digits=2).problems("train", 3)
    assert isinstance(make_task("countdown", seed=3), CountdownTask)
    tiny = make_task(
        "countdown",
        seed=1,
        n_numbers=3,
        min_number=1,
        max_number=20,
        min_target=10,
        max_target=50,
        n_heldout_targets=10,
        heldout_share=None,
        heldout_targets=None,
    )
    assert tiny.problems("train", 5)[0].prompt.count(" ") == 2
    with pytest.raises(ValueError, match="min_number, max_number, min_target"):
        make_task("countdown", max_numbers=20)
    with pytest.raises(ValueError, match="arithmetic, countdown, jsonl"):
        make_task("nope")
    with pytest.raises(ValueError, match="accepts the options: op, digits, seed"):
        make_task("arithmetic", digit=3)


@pytest.mark.parametrize("name", ["arithmetic", "countdown", "jsonl"])
def test_train_validation_and_test_are_disjoint(name: str, tmp_path: Path) -> None:
    """Choices are made on validation problems: never a training or a test problem. Countdown:
    the three splits' targets are disjoint too (a problem's target decides its split)."""
    if name == "jsonl":
        rows = [{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(400)]
        path = tmp_path / "qa.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        task = make_task("jsonl", path=str(path))
        n = 0  # all of each split
    else:
        task = make_task(name, seed=3)
        n = 60
    splits = {s: task.problems(s, n) for s in ("train", "validation", "test")}  # type: ignore[arg-type]
    ids = {s: {p.id for p in ps} for s, ps in splits.items()}
    assert all(ids.values())
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    if name == "countdown":
        targets = {s: {p.meta["target"] for p in ps} for s, ps in splits.items()}
        assert not targets["validation"] & (targets["train"] | targets["test"])
        assert not targets["train"] & targets["test"]
        for ps in (splits["validation"], splits["test"]):  # reordered numbers: one problem
            keys = [(p.meta["target"], *sorted(p.meta["numbers"])) for p in ps]
            assert len(set(keys)) == len(keys)
