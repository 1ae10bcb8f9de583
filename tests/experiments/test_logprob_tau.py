"""experiments/logprob_tau.py's threshold choice, on scores built by hand (the sampling is
`pipeline.measure.detector.sample_points`, tested with the detector)."""

import pytest

from experiments.logprob_tau import youden


def test_youden_flags_below_the_threshold_that_best_separates():
    # wrong steps (1) are the unlikely ones, but for one right step among them
    scores = [-3.0, -2.5, -2.0, -1.5, -0.5, -0.4, -0.3, -2.2]
    labels = [1, 1, 0, 1, 0, 0, 0, 1]
    got = youden(scores, labels)
    # below -2.1: 3 of 4 wrong, no right one (J = 0.75); below -1.0 ties it (4 of 4 wrong, 1 of 4
    # right): the first, the fewer flags, is kept
    assert got["tau"] == pytest.approx(-2.1) and got["j"] == pytest.approx(0.75)
    assert got["tpr"] == 0.75 and got["fpr"] == 0.0
    assert got["flagged_share"] == 3 / 8 and got["precision"] == 1.0
    assert sum(s < got["tau"] for s in scores) == 3


def test_equal_scores_are_never_split_and_one_class_is_refused():
    got = youden([-1.0, -1.0, 0.0], [1, 0, 0])
    assert got["tau"] == pytest.approx(-0.5)  # both -1.0 flagged together
    with pytest.raises(ValueError, match="both classes"):
        youden([-1.0, 0.0], [0, 0])
