"""Accuracy against generated tokens: best-of-N, majority vote, oracle pass@N, at fixed N and at
the backtrack arm's generated tokens (measure.budget)."""

from pipeline.loading import task_from_config
from pipeline.measure.budget import Sample, controls, curve, majority, matched
from pipeline.measure.settings import Setting
from tests.conftest import tiny_cfg


def s(answer, logprob, correct, tokens=10, value=None):
    return Sample(correct, tokens, logprob, answer, value)


def test_majority_votes_on_the_final_step_then_takes_the_likeliest():
    chosen = [
        s("ans 2", -0.1, False),  # likeliest overall, but a minority answer
        s("ans 3", -0.9, False),
        s("ans 3", -0.5, True),  # the likeliest of the majority
    ]
    assert majority(chosen).correct is True
    # a tie goes to the answer with the likeliest sample, whatever its text
    assert majority([s("b", -0.9, False), s("a", -0.1, True)]).correct is True


# two problems, four samples each: problem 0 right only at sample 2 (the likeliest of all four),
# problem 1 right at samples 0 and 2
DRAWN = [
    [s("a", -0.2, False, 10), s("b", -0.9, False, 10), s("c", -0.1, True, 10), s("a", -0.5, False)],
    [
        s("x", -0.3, True, 20),
        s("y", -0.2, False, 20),
        s("x", -0.4, True, 20),
        s("y", -0.9, False, 20),
    ],
]


def test_curve_by_hand():
    rows = {r["n"]: r for r in curve(DRAWN, 1.0)}
    assert sorted(rows) == [1, 2, 4]  # N = 8, 16 need more samples than drawn
    assert rows[1]["tokens_per_problem"] == 15.0
    assert rows[4]["tokens_per_problem"] == 60.0
    # N=1: each problem's first sample
    assert rows[1]["best_of_n"]["per_problem"] == [0.0, 1.0]
    assert rows[1]["oracle"]["per_problem"] == [0.0, 1.0]
    # N=2: likeliest of the first two is sample 0 (problem 0, wrong) and 1 (problem 1, wrong)
    assert rows[2]["best_of_n"]["per_problem"] == [0.0, 0.0]
    assert rows[2]["oracle"]["per_problem"] == [0.0, 1.0]
    # N=4: likeliest is sample 2 (right) and sample 1 (wrong); majority: "a" twice (wrong),
    # x/y tie 2-2 goes to the answer with the likeliest sample, "y" at -0.2 (wrong)
    assert rows[4]["best_of_n"]["per_problem"] == [1.0, 0.0]
    assert rows[4]["majority"]["per_problem"] == [0.0, 0.0]
    assert rows[4]["oracle"]["accuracy"] == 1.0
    assert "value_best_of_n" not in rows[4]  # no value model scored the samples


def test_value_selector_and_oracle_bound_every_selector():
    valued = [
        [Sample(x.correct, x.tokens, x.logprob, x.answer, float(x.correct)) for x in m]
        for m in DRAWN
    ]
    for row in curve(valued, 1.0):
        assert row["value_best_of_n"]["per_problem"] == row["oracle"]["per_problem"]
        for name in ("best_of_n", "majority", "value_best_of_n"):
            assert row[name]["accuracy"] <= row["oracle"]["accuracy"]


def test_matched_buys_n_per_problem_from_its_budget():
    got = matched(DRAWN, [25.0, 1.0], 1.0)  # problem 0: mean 10 tokens -> 3; problem 1: 1
    assert got["best_of_n"]["mean_n"] == 2.0
    assert got["best_of_n"]["per_problem"] == [1.0, 1.0]
    assert got["best_of_n"]["generated_tokens"] == 30 + 20
    assert "oracle" not in got  # a ceiling, not a control
    assert matched(DRAWN, [1e9, 1e9], 1.0)["best_of_n"]["mean_n"] == 4.0  # capped at the draw
    # a checker's pick where answers are checkable: right when any of the N bought is right
    checked = matched(DRAWN, [15.0, 1.0], 1.0, oracle=True)["oracle"]
    assert checked["per_problem"] == [0.0, 1.0]  # problem 0's first two are wrong
    assert matched(DRAWN, [25.0, 1.0], 1.0, oracle=True)["oracle"]["per_problem"] == [1.0, 1.0]


def test_controls_spend_the_given_tokens(trained):
    out, _ = trained
    cfg = tiny_cfg(out)
    task = task_from_config(cfg.task)
    problems = task.problems("test", 6)
    model = out / "bootstrap" / "model"
    one = controls(model, task, problems, cfg, Setting(1.0, 2), budget=[1.0] * 6)
    assert one["best_of_n"]["mean_n"] == 1.0  # a budget under one sample buys one sample
    assert one["best_of_n"]["per_problem"] == one["majority"]["per_problem"]
    big = controls(model, task, problems, cfg, Setting(1.0, 2), budget=[60.0] * 6)
    assert big["best_of_n"]["mean_n"] > 1
    assert big["best_of_n"]["generated_tokens"] <= 6 * 60 + 6 * 2 * cfg.sampling.max_new_tokens


def test_by_target_groups_problems_in_target_order():
    from pipeline.measure.evaluation import by_target
    from search.types import Problem

    ps = [Problem(str(i), "", "", {"target": t}) for i, t in enumerate([12, 7, 12])]
    got = by_target(ps, [1.0, 0.0, 0.5])
    assert list(got) == ["7", "12"]
    assert got == {"7": {"accuracy": 0.0, "n": 1}, "12": {"accuracy": 0.75, "n": 2}}
