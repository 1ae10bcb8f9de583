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
