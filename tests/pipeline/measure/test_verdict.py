"""The verdict's arithmetic on hand-made eval files: settings chosen on validation problems, the
paired interval, the aggregation over seeds, the strongest control, and the sentence."""

import numpy as np
import pytest

from pipeline.measure import verdict as v
from pipeline.measure.stats import paired_bootstrap


def ev(per_problem, setting="T=1.0", tokens=None, auc=None, **more):
    """A hand-made eval with one non-banned setting (plus greedy) holding `per_problem`."""
    acc = sum(per_problem) / len(per_problem)
    figures = {"accuracy": acc, "per_problem": per_problem, **more}
    if tokens is not None:
        figures["tokens_per_problem"] = tokens
    out = {"settings": {"greedy": {"accuracy": 0.0, "per_problem": [0.0] * len(per_problem)}}}
    out["settings"][setting] = figures
    if auc is not None:
        out["detector"] = {"roc_auc": auc}
    return out


def tune(best):
    """A tuning eval on validation problems whose best non-banned setting is `best`."""
    return {
        "settings": {
            "greedy": {"accuracy": 0.5},
            "T=1.0": {"accuracy": 0.9 if best == "T=1.0" else 0.1},
            "T=1.0, backspace banned": {"accuracy": 1.0},  # never chosen
        }
    }


def test_choose_takes_the_best_allowed_setting_first_among_equals():
    assert v.choose(tune("T=1.0")) == "T=1.0"
    assert v.choose(tune("greedy")) == "greedy"
    equal = {"settings": {"greedy": {"accuracy": 0.5}, "T=0.5": {"accuracy": 0.5}}}
    assert v.choose(equal) == "greedy"
    temps = {
        "settings": {
            "greedy": {"accuracy": 0.9, "temperature": 0.0},
            "T=0.5": {"accuracy": 0.6, "temperature": 0.5},
            "T=1.0": {"accuracy": 0.7, "temperature": 1.0},
        }
    }
    assert v.choose(temps) == "greedy" and v.choose(temps, sampling=True) == "T=1.0"


def test_paired_mean_and_interval_by_hand():
    a = [[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0]]
    b = [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]]
    got = paired_bootstrap(a, b)
    assert got["mean"] == pytest.approx(np.mean(np.subtract(a, b)))  # (2 + 0) / 8 = 0.25
    assert got["mean"] == pytest.approx(0.25)
    lo, hi = got["ci95"]
    assert lo <= 0.25 <= hi and hi - lo > 0
    # identical sides: no difference and no width
    assert paired_bootstrap(a, a) == {"mean": 0.0, "ci95": [0.0, 0.0]}
    # a constant difference has a zero-width interval at that difference
    shifted = [[x + 0.5 for x in row] for row in b]
    assert paired_bootstrap(shifted, b)["ci95"] == pytest.approx([0.5, 0.5])


def test_paired_resamples_problems_jointly_across_seeds():
    """Problem p of seed 0 and problem p of seed 1 move together: when the seeds' differences
    cancel problem by problem, every resample's mean is 0."""
    a = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    b = [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]
    assert paired_bootstrap(a, b)["ci95"] == [0.0, 0.0]


def test_paired_refuses_unpaired_sides():
    with pytest.raises(ValueError, match="same seeds and problems"):
        paired_bootstrap([[1.0, 0.0]], [[1.0, 0.0, 1.0]])


def seed_run(bt, bl, controls=None, auc=(None, None)):
    """One seed as pipeline.stages.run keeps it: round 0 (the start model) and round 1."""
    start = {"eval": ev([0.5, 0.5, 0.5, 0.5]), "tune": tune("T=1.0")}
    return {
        "backtrack": [start, {"eval": ev(bt, auc=auc[0]), "tune": tune("T=1.0")}],
        "baseline": [start, {"eval": ev(bl, auc=auc[1]), "tune": tune("T=1.0")}],
        "controls": [None, controls],
    }


def test_verdict_aggregates_seeds_and_states_the_interval():
    seeds = [
        seed_run([1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], auc=(0.8, 0.6)),
        seed_run([1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0], auc=(0.6, 0.4)),
    ]
    out = v.verdict(seeds, [0, 1])
    assert out["seeds"] == [0, 1] and [r["round"] for r in out["rounds"]] == [0, 1]
    last = out["rounds"][1]
    assert last["backtrack"]["per_seed"] == [0.75, 0.75]
    assert last["baseline"]["per_seed"] == [0.25, 0.25]
    assert last["difference"]["mean"] == pytest.approx(0.5)
    assert last["detector_auc"] == {"backtrack": pytest.approx(0.7), "baseline": pytest.approx(0.5)}
    assert out["rounds"][0]["difference"]["mean"] == 0.0  # round 0: the same start model
    lo, hi = last["difference"]["ci95"]
    assert out["sentence"].startswith("After round 1, the backtrack arm (T=1.0) ")
    verb = "beats" if lo > 0 else "cannot be told apart from"
    assert verb in out["sentence"] and f"{100 * lo:+.1f} to {100 * hi:+.1f}" in out["sentence"]
    assert "(2 seeds)" in out["sentence"]


def test_controls_enter_the_verdict_only_when_every_seed_has_them():
    control = {
        name: {"accuracy": 0.5, "per_problem": [1.0, 0.0, 1.0, 0.0], "mean_n": 2.0}
        for name in ("best_of_n", "majority")
    }
    seeds = [seed_run([1.0] * 4, [0.0] * 4, control), seed_run([1.0] * 4, [0.0] * 4, control)]
    last = v.verdict(seeds, [0, 1])["rounds"][1]
    assert last["best_of_n"]["difference"]["mean"] == pytest.approx(0.5)
    assert last["best_of_n"]["mean_n"] == 2.0 and last["majority"]["per_seed"] == [0.5, 0.5]
    one_missing = [seed_run([1.0] * 4, [0.0] * 4, control), seed_run([1.0] * 4, [0.0] * 4)]
    assert "best_of_n" not in v.verdict(one_missing, [0, 1])["rounds"][1]


def test_the_strongest_control_is_the_better_of_the_baseline_and_its_best_of_n_per_seed():
    """Seed 0: the baseline (0.75, 10 tokens a problem against the arm's 12) beats its best-of-N
    (0.5), so it is the control; seed 1: the same baseline generates more than the arm (14), so
    best-of-N stands whatever the accuracies; seed 2: best-of-N (1.0) beats the baseline."""
    bon = [1.0, 0.0, 1.0, 0.0]
    seeds = []
    for base_tokens, control in ((10, bon), (14, bon), (10, [1.0] * 4)):
        run = seed_run([1.0] * 4, [1.0, 1.0, 1.0, 0.0])
        run["backtrack"][1]["eval"] = ev([1.0] * 4, tokens=[12] * 4)
        run["baseline"][1]["eval"] = ev([1.0, 1.0, 1.0, 0.0], tokens=[base_tokens] * 4)
        acc = sum(control) / 4
        run["controls"][1] = {"best_of_n": {"accuracy": acc, "per_problem": control, "mean_n": 1.0}}
        seeds.append(run)
    out = v.verdict(seeds, [0, 1, 2])
    st = out["rounds"][1]["strongest"]
    assert st["picked"] == ["T=1.0", "best-of-N (N≈1.0)", "best-of-N (N≈1.0)"]
    assert st["per_seed"] == [0.75, 0.5, 1.0]
    assert st["difference"]["per_seed"] == pytest.approx([0.25, 0.5, 0.0])
    assert "against the stronger of the two per seed" in out["sentence"]
    # an eval without tokens per problem cannot show the baseline fits: best-of-N stands
    for run in seeds:
        del run["baseline"][1]["eval"]["settings"]["T=1.0"]["tokens_per_problem"]
    assert v.verdict(seeds, [0, 1, 2])["rounds"][1]["strongest"]["per_seed"] == [0.5, 0.5, 1.0]


def test_another_arm_is_compared_with_the_baseline_and_named_in_the_sentence():
    seeds = []
    for dpo in ([1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]):
        run = seed_run([1.0] * 4, [0.0, 1.0, 0.0, 0.0])
        start = run["backtrack"][0]
        run["dpo"] = [start, {"eval": ev(dpo, auc=0.7, backtrack_rate=0.2), "tune": tune("T=1.0")}]
        seeds.append(run)
    out = v.verdict(seeds, [0, 1])
    last = out["rounds"][1]
    dpo = last["arms"]["dpo"]
    assert dpo["per_seed"] == [0.5, 0.5] and dpo["chosen"] == ["T=1.0", "T=1.0"]
    assert dpo["difference"]["mean"] == pytest.approx(0.5 - 0.25)
    assert dpo["detector_auc"] == pytest.approx(0.7)
    assert dpo["precision"]["backtrack_rate"] == pytest.approx(0.2)
    assert last["difference"]["mean"] == pytest.approx(1.0 - 0.25)  # backtrack − baseline as before
    assert "the dpo arm (T=1.0) against the baseline: +25.0 points" in out["sentence"]
    assert "arms" not in v.verdict([seed_run([1.0] * 4, [0.0] * 4)], [0])["rounds"][1]


def test_the_seed_is_the_unit_of_the_interval():
    """Hand computation: seed 0's problems all differ by +1, seed 1's by -1. Resampling problems
    alone (the same draw for both seeds) always averages to 0, so that interval is [0, 0]; with
    seeds resampled first, a draw holds seed 0 twice (+1, probability 1/4), seed 1 twice (-1,
    1/4) or one of each (0, 1/2), so the 95% interval is [-1, +1]."""
    from pipeline.measure.stats import paired_bootstrap, seeds_then_problems

    a = [[1.0] * 20, [0.0] * 20]
    b = [[0.0] * 20, [1.0] * 20]
    assert paired_bootstrap(a, b)["ci95"] == [0.0, 0.0]
    got = seeds_then_problems(a, b)
    assert got["mean"] == 0.0 and got["ci95"] == [-1.0, 1.0]
    assert got["per_seed"] == [1.0, -1.0] and got["unit"] == "seeds, then problems"
    same = seeds_then_problems([[0.5] * 7] * 3, [[0.25] * 7] * 3)  # seeds that agree
    assert same["ci95"] == [0.25, 0.25] and same["per_seed"] == [0.25] * 3
    one = seeds_then_problems(a[:1], b[:1])  # one seed: problems only, as before
    assert {k: one[k] for k in ("mean", "ci95")} == paired_bootstrap(a[:1], b[:1])
    assert one["unit"] == "problems"


def test_seeds_with_different_problem_counts_are_a_pairing_error_that_names_the_counts():
    """A seed evaluated on fewer problems (another preset, a cut-short run) cannot be paired by
    position; the error says which side and which counts, not numpy's inhomogeneous-shape one."""
    from pipeline.measure.stats import PairingError, seeds_then_problems

    with pytest.raises(PairingError, match="second side's seeds hold 3, 4 problems"):
        seeds_then_problems([[1.0] * 4, [0.0] * 4], [[0.0] * 4, [1.0] * 3])
    with pytest.raises(PairingError, match=r"\(2, 4\) and \(2, 3\)"):
        seeds_then_problems([[1.0] * 4, [0.0] * 4], [[0.0] * 3, [1.0] * 3])
