"""Detector AUC that difficulty cannot fake (docs/measurement.md): the pooled ROC-AUC mixes
problems and step positions, so a score that only tracks how hard a problem is, or how far into
the solution a step is, already beats 0.5. Beside it:

    within(scores, labels, strata)   the mean over strata holding both classes of the ROC-AUC
                                     inside each (strata: the step's index, or its problem)
    stratified(scores, labels, ...)  pooled, within-step-index and within-problem AUC of the
                                     detector and of trivial scores on the same positions (the
                                     step's index, its length, its mean and least token
                                     log-probability), each trivial score in its better
                                     orientation, and the detector's lift over the best of them;
                                     `roc`: each trivial score's pooled ROC curve (the report
                                     draws them beside the detector's)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from pipeline.measure.detector import Points, roc_auc, roc_curve, thin

ROC_POINTS = 51


def within(
    scores: Sequence[float], labels: Sequence[int], strata: Sequence[Hashable]
) -> float | None:
    """Mean over strata with both classes of the ROC-AUC within each; None when none has both."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, key in enumerate(strata):
        groups[key].append(i)
    aucs = [roc_auc([scores[i] for i in idx], [labels[i] for i in idx]) for idx in groups.values()]
    kept = [a for a in aucs if a is not None]
    return sum(kept) / len(kept) if kept else None


def _measures(
    scores: Sequence[float], labels: Sequence[int], steps: Sequence[int], problems: Sequence[str]
) -> dict[str, float | None]:
    return {
        "pooled": roc_auc(scores, labels),
        "within_step_index": within(scores, labels, steps),
        "within_problem": within(scores, labels, problems),
    }


def _oriented(measures: dict[str, float | None]) -> dict[str, float | None]:
    """A trivial score in its better orientation (1 - AUC where it runs backwards): the
    strongest baseline it can be, so the detector's lift is not flattered."""
    return {k: None if v is None else max(v, 1 - v) for k, v in measures.items()}


def stratified(
    scores: Sequence[float],
    labels: Sequence[int],
    steps: Sequence[int],
    lengths: Sequence[int],
    problems: Sequence[str],
    more: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """The detector's AUC pooled and within strata, the same for the trivial scores `steps`
    (the step's index in its solution), `lengths` (its tokens) and each of `more` (such as the
    step's mean and least token log-probability), and the lift: the detector's figure minus the
    best trivial one's, per measure (None where a figure is missing); `roc`: each trivial
    score's pooled ROC curve in its better orientation, at most `ROC_POINTS` points."""
    mine = _measures(scores, labels, steps, problems)
    named: dict[str, Sequence[float]] = {"step_index": [float(s) for s in steps]}
    named["step_length"] = [float(n) for n in lengths]
    named |= more or {}
    trivial = {k: _oriented(_measures(v, labels, steps, problems)) for k, v in named.items()}
    roc = {}
    for k, score in named.items():
        auc = roc_auc(score, labels)
        backwards = auc is not None and auc < 0.5
        roc[k] = thin(roc_curve([-x for x in score] if backwards else score, labels), ROC_POINTS)
    lift: dict[str, float | None] = {}
    for key, value in mine.items():
        others = [v for t in trivial.values() if (v := t[key]) is not None]
        lift[key] = None if value is None or not others else value - max(others)
    return {"detector": mine, "trivial": trivial, "lift": lift, "roc": roc}


def of_points(points: Sequence[Points], scores: Sequence[float], labels: Sequence[int]) -> Any:
    """`stratified` over the decision points of `points` (`pipeline.measure.detector`), with
    the step's mean and least token log-probability as trivial scores where the samples carry
    them (negated: a step the model found unlikely is the one to suspect)."""
    steps = [i for p in points for i in range(len(p.at))]
    lengths = [n for p in points for n in p.lengths]
    problems = [p.problem for p in points for _ in p.at]
    more = {}
    if all(len(p.logprobs) == len(p.at) for p in points):
        more = {
            "step_mean_logprob": [-m for p in points for m, _ in p.logprobs],
            "step_min_logprob": [-m for p in points for _, m in p.logprobs],
        }
    return stratified(scores, labels, steps, lengths, problems, more)
