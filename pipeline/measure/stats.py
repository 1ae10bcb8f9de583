"""The intervals behind every figure, and how figures are written in tables.

    wilson(k, n)                95% Wilson interval of a proportion
    paired_bootstrap(a, b)      mean of a - b over seeds and problems, 95% percentile interval
                                resampling problems (the same draw for every seed)
    seeds_then_problems(a, b)   the same mean, each seed's own, and a two-level interval:
                                resample seeds, then problems within each (the seed is the unit)
    interval(values)            one side's mean and interval by the same bootstrap
    paired_normal(x, y)         one seed's accuracy difference, 95% normal interval over the
                                per-problem differences
    pct, pts, num, fmt          a share, a difference in points, a number, any figure as tables
                                show them ("–" when missing)

Which interval feeds which output: `seeds_then_problems` gives every difference of `halluc run`
(verdict.json, its sentence, the report's comparison tables and charts; with one seed it is
`paired_bootstrap`'s, problems only) and `paired_bootstrap`, through `interval`, each setting's
`ci95` in an evaluation file. `paired_normal` gives only the difference of a report
drawn from evaluations without tuning figures (`verdict.one_seed_verdict`, `report.write`): one
seed, no setting chosen on validation problems, a descriptive page. The two are kept apart on
purpose: the figures each output shows were made with its own, and giving one output the other's
interval would change what it prints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import fmean, stdev
from typing import Any

import numpy as np

from search.errors import HallucError

RESAMPLES = 2000


class PairingError(HallucError, ValueError):
    """Two sides of a paired difference that do not hold the same seeds and problems."""


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _differences(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> np.ndarray:
    """a - b as a seeds × problems array; `PairingError` unless both sides have that shape
    (seeds holding different problem counts included, which numpy cannot make an array of)."""
    for side, rows in (("first", a), ("second", b)):
        counts = sorted({len(r) for r in rows})
        if len(counts) > 1:
            raise PairingError(
                f"paired figures need every seed to hold the same problems; the {side} side's "
                f"seeds hold {', '.join(map(str, counts))} problems"
            )
    left, right = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if left.shape != right.shape or left.ndim != 2 or left.size == 0:
        raise PairingError(
            f"paired figures need the same seeds and problems on both sides, got "
            f"{left.shape} and {right.shape} (seeds × problems)"
        )
    return left - right


def paired_bootstrap(
    a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], seed: int = 0
) -> dict[str, Any]:
    """Mean over seeds and problems of a - b (`a[s][p]`: seed s, problem p) and its 95%
    percentile interval over `RESAMPLES` resamplings of the problems (the same problems for
    every seed: it reflects which problems were drawn, not which seeds)."""
    diffs = _differences(a, b)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diffs.shape[1], size=(RESAMPLES, diffs.shape[1]))
    means = diffs[:, idx].mean(axis=(0, 2))
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diffs.mean()), "ci95": [float(lo), float(hi)]}


def seeds_then_problems(
    a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], seed: int = 0
) -> dict[str, Any]:
    """Mean over seeds and problems of a - b (`a[s][p]`: seed s, problem p), each seed's own
    mean difference (`per_seed`), and a 95% percentile interval from a two-level bootstrap:
    each of `RESAMPLES` draws resamples the seeds (with replacement), then the problems within
    each drawn seed. The seed is the unit: two seeds that disagree widen the interval however
    many problems each has. With one seed there is no seed level to resample, and the interval is
    `paired_bootstrap`'s (problems only), stated as such by the callers."""
    diffs = _differences(a, b)
    per_seed = [float(x) for x in diffs.mean(axis=1)]
    if diffs.shape[0] == 1:
        return paired_bootstrap(a, b, seed) | {"per_seed": per_seed, "unit": "problems"}
    n_seeds, n_problems = diffs.shape
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(RESAMPLES, n_seeds))
    problems = rng.integers(0, n_problems, size=(RESAMPLES, n_seeds, n_problems))
    means = diffs[seeds[:, :, None], problems].mean(axis=(1, 2))
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {
        "mean": float(diffs.mean()),
        "ci95": [float(lo), float(hi)],
        "per_seed": per_seed,
        "unit": "seeds, then problems",
    }


def interval(values: Sequence[Sequence[float]], seed: int = 0) -> dict[str, Any]:
    """Mean and 95% interval of one side's per-problem figures (`paired_bootstrap` with 0)."""
    zero = [[0.0] * len(v) for v in values]
    return paired_bootstrap(values, zero, seed)


def paired_normal(x: dict[str, Any], y: dict[str, Any], z: float = 1.96) -> dict[str, Any]:
    """x's accuracy minus y's (two settings' figures of one seed), with a normal 95% interval
    over the per-problem differences (None without two equally long `per_problem` lists of at
    least 2)."""
    mean = x["accuracy"] - y["accuracy"]
    px, py = x.get("per_problem"), y.get("per_problem")
    if not px or not py or len(px) != len(py) or len(px) < 2:
        return {"mean": mean, "ci95": None}
    d = [u - v for u, v in zip(px, py, strict=True)]
    m, half = fmean(d), z * stdev(d) / math.sqrt(len(d))
    return {"mean": m, "ci95": [m - half, m + half]}


# --- how tables write figures ----------------------------------------------------------------

# fmt: off
SHARES = {
    "accuracy", "backtrack_rate", "erase_precision", "step_erase_precision", "chance_precision",
    "recovery", "truncation_rate", "base_rate", "pass_at_k", "mean_p_wrong", "mean_p_right",
}
# fmt: on


def pct(x: float | None) -> str:
    """A share as a percentage with one decimal."""
    return "–" if x is None else f"{100 * x:.1f}%"


def num(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def pts(d: dict[str, Any] | None) -> str:
    """A difference ({"mean", "ci95"}) in percentage points, with its interval when known."""
    if not d or d.get("mean") is None:
        return "–"
    ci = d.get("ci95")
    tail = f" ({100 * ci[0]:+.1f} to {100 * ci[1]:+.1f})" if ci else ""
    return f"{100 * d['mean']:+.1f} pts{tail}"


def fmt(key: str, v: Any) -> str:
    """The figure `key` of an evaluation as the tables show it ("–" when missing)."""
    if v is None:
        return "–"
    if key == "ci95":
        return f"{pct(v[0])}–{pct(v[1])}"
    if isinstance(v, list):  # per problem
        mean = pct(fmean(v)) if key == "per_problem" else num(fmean(v))
        return f"{len(v)} problems, mean {mean}" if v else "–"
    if isinstance(v, dict):  # pass@k by k
        return ", ".join(f"@{k} {pct(x)}" for k, x in v.items())
    if key in SHARES:
        return pct(v)
    if key == "temperature":
        return f"{v:g}"
    if isinstance(v, float):
        return num(v, 3 if key.endswith("auc") else 1)
    return f"{v:,}" if isinstance(v, int) else str(v)
