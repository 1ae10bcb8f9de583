"""`pipeline.measure.strata`: AUC within strata, and trivial scores beside the detector's."""

from pipeline.measure.strata import stratified, within


def test_pooled_auc_from_difficulty_alone_is_one_half_within_each_problem():
    """Problem A is hard (two of its three steps wrong), B easy (one of three): a score that is
    only the problem's difficulty (0.9 on A, 0.1 on B) has pooled AUC 6/9 (hand-counted pairs:
    4 wins, 4 ties at half, 1 loss), and 0.5 within each problem."""
    scores = [0.9, 0.9, 0.9, 0.1, 0.1, 0.1]
    labels = [1, 1, 0, 1, 0, 0]
    problems = ["A", "A", "A", "B", "B", "B"]
    steps = [0, 1, 2, 0, 1, 2]
    got = stratified(scores, labels, steps, [3] * 6, problems)
    assert abs(got["detector"]["pooled"] - 6 / 9) < 1e-12
    assert got["detector"]["within_problem"] == 0.5
    assert within(scores, labels, problems) == 0.5


def test_trivial_scores_take_their_better_orientation_and_the_lift_is_against_the_best():
    """Wrong steps come late (index 2): the step index alone separates them perfectly, so a
    detector with pooled AUC 13/15 (hand-counted) has a lift of 13/15 - 1 over it; within a step
    index the index says nothing, and the detector's own ordering is what remains."""
    labels = [0, 0, 1, 0, 0, 1, 0, 1]
    steps = [0, 1, 2, 0, 1, 2, 0, 2]
    lengths = [5, 5, 5, 5, 5, 5, 5, 5]
    scores = [0.1, 0.2, 0.6, 0.3, 0.7, 0.8, 0.2, 0.4]
    got = stratified(scores, labels, steps, lengths, ["p"] * 8)
    assert abs(got["detector"]["pooled"] - 13 / 15) < 1e-12
    assert got["trivial"]["step_index"]["pooled"] == 1.0
    assert got["trivial"]["step_length"]["pooled"] == 0.5  # constant: no information
    assert abs(got["lift"]["pooled"] - (got["detector"]["pooled"] - 1.0)) < 1e-12
    assert got["trivial"]["step_index"]["within_step_index"] is None  # no stratum has both
    backwards = stratified([1 - s for s in scores], labels, steps, lengths, ["p"] * 8)
    assert backwards["trivial"] == got["trivial"]  # a trivial score in its better orientation
    # the ROC curves the report draws: the index separates perfectly (through [0, 1]); the
    # constant length is the diagonal; a backwards score is drawn the right way round
    assert got["roc"]["step_index"] == [[0.0, 0.0], [0.0, 1.0], [0.4, 1.0], [1.0, 1.0]]
    assert got["roc"]["step_length"] == [[0.0, 0.0], [1.0, 1.0]]
    late_first = stratified(scores, labels, [2 - s for s in steps], lengths, ["p"] * 8)
    assert late_first["roc"]["step_index"] == got["roc"]["step_index"]


def test_more_trivial_scores_enter_the_lift():
    """A trivial score as good as the detector (here: the detector's own scores, as a step's
    log-probability might be) leaves no lift."""
    labels = [0, 0, 1, 0, 0, 1, 0, 1]
    steps = [0, 1, 2, 0, 1, 2, 0, 2]
    scores = [0.1, 0.2, 0.6, 0.3, 0.7, 0.8, 0.2, 0.4]
    got = stratified(scores, labels, [0] * 8, [5] * 8, ["p"] * 8, {"step_mean_logprob": scores})
    assert got["trivial"]["step_mean_logprob"]["pooled"] == got["detector"]["pooled"]
    assert got["lift"]["pooled"] == 0.0
    assert (
        "step_mean_logprob" not in stratified(scores, labels, steps, [5] * 8, ["p"] * 8)["trivial"]
    )
