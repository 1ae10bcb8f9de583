"""experiments/erase_vs_best_of_n.py on hand-written evaluations and draws: each problem buys N
from its own tokens, and the differences are paired per problem (the sampling is
`pipeline.measure.budget`'s, tested with it)."""

from pathlib import Path

import pytest

from experiments.erase_vs_best_of_n import compare, row, setting_of, sides
from pipeline.files import write_json

# two problems; the base model's samples cost 10 tokens each. Problem 0: the likeliest of any
# prefix is wrong, the third sample is right; problem 1: the first sample is right.
DRAW = [
    [[0, 10, -0.1, "a", None], [0, 10, -0.5, "b", None], [1, 10, -0.9, "c", None]],
    [[1, 10, -0.1, "x", None], [0, 10, -0.2, "y", None], [0, 10, -0.3, "y", None]],
]


def files(tmp_path: Path, erasing: list[float], tokens: list[float]) -> tuple[Path, Path]:
    curve = {"setting": "T=1.0", "temperature": 1.0, "curve": [], "draw": DRAW}
    settings = {
        "T=1.0": {"accuracy": sum(erasing) / 2, "per_problem": erasing, "backtrack_rate": 0.5}
        | {"tokens_per_problem": tokens},
        "T=1.0, backspace banned": {"accuracy": 0.0, "per_problem": [0.0, 0.0]},
    }
    write_json(tmp_path / "curve.json", curve)
    write_json(tmp_path / "eval.json", {"settings": settings})
    return tmp_path / "eval.json", tmp_path / "curve.json"


def test_each_problem_buys_samples_with_its_own_tokens_and_differences_pair_by_problem(tmp_path):
    # 30 tokens on problem 0 buy all three samples (a checker finds the right one, likelihood
    # picks a wrong one), 10 on problem 1 buy its first (right)
    eval_path, curve_path = files(tmp_path, [1.0, 0.5], [30.0, 10.0])
    got = compare([sides(tmp_path, eval_path, "T=1.0", curve_path)], "T=1.0")
    assert got["accuracy"] == 0.75
    assert got["best_of_n"]["accuracy"] == 0.5 and got["best_of_n"]["mean_n"] == 2.0
    assert got["checked"]["accuracy"] == 1.0
    assert got["best_of_n"]["minus"]["mean"] == pytest.approx(0.25)  # (1 - 0 + 0.5 - 1) / 2
    assert got["checked"]["minus"]["mean"] == pytest.approx(-0.25)
    assert got["minus_banned"]["mean"] == pytest.approx(0.75)
    assert "| 75.0% [75.0] |" in row("form", got)


def test_two_seeds_give_means_over_seeds_and_each_seeds_accuracy(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    seeds = [
        sides(a, *files(a, [1.0, 1.0], [10.0, 10.0])[:1], "T=1.0", a / "curve.json"),
        sides(b, *files(b, [0.0, 0.0], [10.0, 10.0])[:1], "T=1.0", b / "curve.json"),
    ]
    got = compare(seeds, "T=1.0")
    assert got["per_seed"] == [1.0, 0.0] and got["accuracy"] == 0.5
    assert got["best_of_n"]["minus"]["per_seed"] == [pytest.approx(0.5), pytest.approx(-0.5)]


def test_a_round_the_keep_best_gate_rejected_is_refused(tmp_path):
    eval_path, curve_path = files(tmp_path, [1.0, 0.5], [30.0, 10.0])
    write_json(tmp_path / "gate.json", {"kept": True})
    assert sides(tmp_path, eval_path, "T=1.0", curve_path)["mine"]["accuracy"] == 0.75
    write_json(tmp_path / "gate.json", {"kept": False})
    with pytest.raises(SystemExit, match="keep-best gate"):
        sides(tmp_path, eval_path, "T=1.0", curve_path)


def test_chosen_reads_the_setting_validation_chose_beside_each_eval(tmp_path):
    eval_path, _ = files(tmp_path, [1.0, 0.5], [30.0, 10.0])
    assert setting_of(eval_path, "T=0.5") == "T=0.5"
    with pytest.raises(SystemExit, match="tune.json"):
        setting_of(eval_path, "chosen")
    tune = {"greedy": 0.4, "T=1.0": 0.5, "T=1.0, backspace banned": 0.9}  # banned: never chosen
    write_json(tmp_path / "tune.json", {"settings": {k: {"accuracy": a} for k, a in tune.items()}})
    assert setting_of(eval_path, "chosen") == "T=1.0"
