"""experiments/erase_tau.py's candidate thresholds, on scores built by hand (the guided search it
evaluates with is `workers.guided`, tested there)."""

from experiments.erase_tau import quantile_taus


def test_each_candidate_flags_the_share_asked_of_the_steps():
    means = [-0.1 * i for i in range(20)]  # -1.9 .. 0.0, distinct
    got = quantile_taus(means, [0.05, 0.1, 0.5])
    assert [share for _, share in got] == [0.05, 0.1, 0.5]
    for tau, share in got:
        assert sum(m < tau for m in means) == round(share * 20)
    # a share under one step still flags one; one over all but one flags all but one
    assert [s for _, s in quantile_taus(means, [0.001, 0.999])] == [0.05, 0.95]


def test_the_choice_takes_the_best_accuracy_and_ties_to_fewer_flags():
    from experiments.erase_tau import best

    rows = [
        {"tau": None, "flagged_share": 0.0, "greedy": 0.30, "T=1.0": 0.25},
        {"tau": -0.9, "flagged_share": 0.02, "greedy": 0.30, "T=1.0": 0.28},
        {"tau": -0.2, "flagged_share": 0.40, "greedy": 0.29, "T=1.0": 0.30},
    ]
    assert best(rows) == {"tau": None, "setting": "greedy", "validation_accuracy": 0.30,
                          "flagged_share": 0.0}  # fmt: skip
    assert best(rows[1:])["tau"] == -0.9  # 0.30 greedy twice: the fewer flags
