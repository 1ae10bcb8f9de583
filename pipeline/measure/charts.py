"""The report's six charts, drawn by matplotlib as inline SVG (text drawn as paths: no fonts, no
scripts, no network), each an `<svg data-metric=NAME>` (`pipeline.measure.report` places them):

  accuracy     accuracy by round per arm (backtrack at its setting, baseline at its best setting,
               best-of-N control): means as lines, seeds as points, 95% intervals as error bars
               where known; beside it the difference by round with its paired 95% interval
  temperature  accuracy against sampling temperature per arm, last round (the decoding sweep)
  precision    erased finished steps that were wrong against chance, by round (backtrack arm)
  detector     each arm's error detector in the last round: ROC, precision-recall, reliability
  tokens       generated tokens per solved sample by round per arm
  budget       accuracy against generated tokens per problem, per round
               (`pipeline.measure.token_chart`)

`verdict` and `runs` are as `pipeline.measure.report` describes them.
"""

from __future__ import annotations

from statistics import fmean
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from pipeline.arms import REQUIRED
from pipeline.measure import token_chart
from pipeline.measure.plot import ARM_STYLE, RC, figure, percent, svg
from pipeline.measure.settings import settings_of
from pipeline.measure.stats import num
from pipeline.measure.verdict import Evals, choose


def draw(verdict: dict[str, Any], runs: dict[str, Evals]) -> str:
    """The six charts as inline SVG `<figure>`s, one after the other."""
    rounds = verdict["rounds"]
    with matplotlib.rc_context(RC):
        return "".join(
            [
                svg(_accuracy_chart(rounds), "accuracy", "Accuracy by round"),
                svg(_temperature_chart(runs), "temperature", "Accuracy against temperature"),
                svg(_precision_chart(runs, rounds), "precision", "Erase precision against chance"),
                svg(_detector_chart(runs, rounds), "detector", "Error detector, last round"),
                svg(_tokens_chart(runs, rounds), "tokens", "Tokens per solved sample"),
                svg(
                    token_chart.draw(runs),
                    "budget",
                    "Accuracy against generated tokens (best-of-N, majority, oracle; decodings)",
                ),
            ]
        )


def _by_round(ax: Axes, xs: list[int]) -> None:
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlim(min(xs) - 0.4, max(xs) + 0.4)
    ax.set_xlabel("round (0 = start model)")


def _series(
    ax: Axes, xs: list[float], per_seed: list[list[float]], style: tuple[str, str], **kw: Any
) -> None:
    """Means over seeds as a line (points without values left out), each seed as a hollow
    point (group id `seeds-GID`) when there are several, 95% intervals `cis` as error bars."""
    color, marker = style
    gid, cis = kw.pop("gid"), kw.pop("cis", None)
    kept = [(x, v, c) for x, v, c in zip(xs, per_seed, cis or [None] * len(xs), strict=True) if v]
    if not kept:
        return
    x, m = [k[0] for k in kept], [fmean(k[1]) for k in kept]
    ax.plot(x, m, color=color, marker=marker, gid=f"mean-{gid}", **kw)
    if any(len(k[1]) > 1 for k in kept):
        sx = [k[0] for k in kept for _ in k[1]]
        ax.scatter(
            sx,
            [v for k in kept for v in k[1]],
            s=16,
            facecolors="none",
            edgecolors=color,
            linewidths=0.8,
            gid=f"seeds-{gid}",
            zorder=3,
        )
    bars = [(xi, mi, c) for xi, mi, (_, _, c) in zip(x, m, kept, strict=True) if c]
    if bars:
        ax.errorbar(
            [b[0] for b in bars],
            [b[1] for b in bars],
            # a percentile interval may miss the mean by a hair: never a negative bar
            yerr=[[max(0, b[1] - b[2][0]) for b in bars], [max(0, b[2][1] - b[1]) for b in bars]],
            fmt="none",
            ecolor=color,
            capsize=3,
        )


ACC_ARMS = {
    "backtrack": "backtrack",
    "baseline": "baseline at its best setting",
    "best_of_n": "best-of-N control",
}


def _accuracy_chart(rounds: list[dict[str, Any]]) -> Figure:
    fig, (ax, diff) = figure(2, 9.4)
    xs = [r["round"] for r in rounds]
    for i, (arm, label) in enumerate(ACC_ARMS.items()):
        entries = [r.get(arm) or {} for r in rounds]
        setting = entries[-1].get("setting")
        _series(
            ax,
            [x + 0.08 * (i - 1) for x in xs],
            [e.get("per_seed") or [] for e in entries],
            ARM_STYLE[arm],
            gid=arm,
            cis=[e.get("ci95") for e in entries],
            label=f"{label} ({setting})" if arm == "backtrack" and setting else label,
        )
    percent(ax, "accuracy (pass@1)")
    _by_round(ax, xs)
    ax.legend(loc="best")
    _difference_panel(diff, rounds)
    return fig


def _difference_panel(ax: Axes, rounds: list[dict[str, Any]]) -> None:
    """Backtrack minus baseline and minus best-of-N by round, bars where an interval is known."""
    xs = [r["round"] for r in rounds]
    pairs = {
        "backtrack − baseline": ([r.get("difference") for r in rounds], "baseline"),
        "backtrack − best-of-N": (
            [(r.get("best_of_n") or {}).get("difference") for r in rounds],
            "best_of_n",
        ),
    }
    for i, (label, (ds, arm)) in enumerate(pairs.items()):
        ds = [d if d and d.get("mean") is not None else None for d in ds]
        cis = [d.get("ci95") if d else None for d in ds]
        _series(
            ax,
            [x + 0.08 * i for x in xs],
            [[d["mean"]] if d else [] for d in ds],
            ARM_STYLE[arm],
            gid=f"difference-{arm}",
            cis=cis,
            label=f"{label} (paired 95% CI)" if any(cis) else label,
            linestyle="none",
        )
    ax.axhline(0, color="#888", linewidth=0.8)
    ax.yaxis.set_major_locator(MaxNLocator(6))
    ax.yaxis.set_major_formatter(
        FuncFormatter(lambda v, _: f"{100 * v:+.3g}" if abs(v) > 1e-12 else "0")
    )
    ax.set_ylabel("accuracy difference (percentage points)")
    _by_round(ax, xs)
    ax.legend(loc="best")


def _sweep(result: dict[str, Any], banned: bool) -> dict[float, dict[str, Any]]:
    """The settings of one eval by temperature (0: greedy), with or without the backspace."""
    figures = result["settings"]
    return {
        s.temperature: figures[name]
        for name, s in settings_of(result).items()
        if s.backspace_banned == banned
    }


def _temperature_chart(runs: dict[str, Evals]) -> Figure:
    fig, (ax,) = figure(1, 4.8)
    lines = [
        ("backtrack", False, "backtrack", "-"),
        ("backtrack", True, "backtrack, backspace banned", "--"),
        ("baseline", False, "baseline", "-"),
    ]
    temps: set[float] = set()
    for arm, banned, label, ls in lines:
        sweeps = [_sweep(e[arm][-1], banned) for e in runs.values()]
        ts = sorted({t for s in sweeps for t in s})
        temps.update(ts)
        one = len(sweeps) == 1
        _series(
            ax,
            ts,
            [[s[t]["accuracy"] for s in sweeps if t in s] for t in ts],
            ARM_STYLE[arm],
            gid=f"{arm}{'-banned' if banned else ''}",
            label=label,
            linestyle=ls,
            cis=[sweeps[0][t].get("ci95") if one else None for t in ts],
        )
    ax.set_xticks(sorted(temps), [f"{t:g}" if t else "greedy" for t in sorted(temps)])
    ax.set_xlabel("sampling temperature (last round)")
    percent(ax, "accuracy (pass@1)")
    ax.legend(loc="best")
    return fig


def _per_seed(
    runs: dict[str, Evals], rounds: list[dict[str, Any]], arm: str, key: str
) -> list[list[float]]:
    """`key` at the arm's setting of each round, one list of the seeds' values per round."""
    out = []
    for r in rounds:
        setting = r[arm].get("setting") or choose(next(iter(runs.values()))[arm][0])
        vals = [e[arm][r["round"]]["settings"].get(setting, {}).get(key) for e in runs.values()]
        out.append([v for v in vals if v is not None])
    return out


def _precision_chart(runs: dict[str, Evals], rounds: list[dict[str, Any]]) -> Figure:
    fig, (ax,) = figure(1, 4.8)
    xs = [r["round"] for r in rounds]
    lines = [
        ("step_erase_precision", "erased finished steps that were wrong", "#c0392b", "o"),
        ("chance_precision", "chance: written finished steps that were wrong", "#7f8c8d", "s"),
        ("erase_precision", "erase events that erased a wrong step", "#e67e22", "^"),
    ]
    for key, label, color, marker in lines:
        _series(
            ax,
            [float(x) for x in xs],
            _per_seed(runs, rounds, "backtrack", key),
            (color, marker),
            gid=key,
            label=label,
        )
    percent(ax, "share (backtrack arm)")
    _by_round(ax, xs)
    ax.legend(loc="best")
    return fig


def _tokens_chart(runs: dict[str, Evals], rounds: list[dict[str, Any]]) -> Figure:
    fig, (ax,) = figure(1, 4.8)
    xs = [r["round"] for r in rounds]
    for i, arm in enumerate(REQUIRED):
        _series(
            ax,
            [x + 0.08 * i for x in xs],
            _per_seed(runs, rounds, arm, "tokens_per_solved"),
            ARM_STYLE[arm],
            gid=arm,
            label=ACC_ARMS[arm],
        )
    ax.set_ylim(0, ax.get_ylim()[1] * 1.1)
    ax.yaxis.set_major_locator(MaxNLocator(6, integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_ylabel("generated tokens per solved sample")
    _by_round(ax, xs)
    ax.legend(loc="best")
    return fig


def _detector_chart(runs: dict[str, Evals], rounds: list[dict[str, Any]]) -> Figure:
    fig, axes = figure(3, 10.5)
    roc, pr, rel = axes
    for ax, (x, y) in zip(axes, DETECTOR_AXES, strict=True):
        percent(ax, x, "x")
        percent(ax, y)
    roc.plot([0, 1], [0, 1], ":", color="#888", label="chance")
    rel.plot([0, 1], [0, 1], ":", color="#888", label="calibrated")
    found = False
    for arm in REQUIRED:
        dets = [d for e in runs.values() if (d := e[arm][-1].get("detector"))]
        found |= bool(dets)
        auc = (rounds[-1].get("detector_auc") or {}).get(arm)
        _detector_arm(axes, dets, arm, f"{arm} (ROC AUC {num(auc, 3)})")
        if arm == "backtrack" and dets:
            _trivial_rocs(roc, dets[0])
    for ax in axes:
        if not found:
            ax.text(
                0.5,
                0.5,
                "no detector figures\nin these evaluations",
                ha="center",
                va="center",
                color="#888",
                transform=ax.transAxes,
            )
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
    roc.set_title("ROC", fontsize=9)
    pr.set_title("precision–recall", fontsize=9)
    rel.set_title("reliability", fontsize=9)
    return fig


DETECTOR_AXES = [
    ("false positive rate", "true positive rate"),
    ("recall", "precision"),
    ("predicted error probability", "observed error rate"),
]


TRIVIAL_STYLE = {  # the trivial scores' ROC curves: first seed of the backtrack arm
    "step_mean_logprob": ("step mean log-prob", "--"),
    "step_min_logprob": ("step least log-prob", "-."),
    "step_index": ("step index", ":"),
    "step_length": ("step length", (0, (1, 3))),
}


def _trivial_rocs(ax: Axes, det: dict[str, Any]) -> None:
    """The trivial scores' ROC curves on the same positions as the backtrack arm's detector
    (its first seed), grey, each with its pooled AUC: the detectors on one chart."""
    strata = det.get("stratified") or {}
    for name, (label, style) in TRIVIAL_STYLE.items():
        curve = (strata.get("roc") or {}).get(name)
        if not curve:
            continue
        auc = ((strata.get("trivial") or {}).get(name) or {}).get("pooled")
        xs, ys = zip(*curve, strict=True)
        ax.plot(xs, ys, linestyle=style, color="#777", linewidth=1,
                label=f"{label} ({num(auc, 3)})", gid=f"roc-trivial-{name}")  # fmt: skip


def _detector_arm(axes: list[Axes], dets: list[dict[str, Any]], arm: str, label: str) -> None:
    """One arm's curves, one per seed (the first labelled), and its base rate on the PR axes."""
    color, marker = ARM_STYLE[arm]
    roc, pr, rel = axes
    for i, det in enumerate(dets):
        lab = arm if i == 0 else None
        for ax, name in ((roc, "roc"), (pr, "pr")):
            if curve := det.get(name):
                xy = zip(*curve, strict=True)
                first = label if ax is roc and i == 0 else lab
                ax.plot(*xy, color=color, alpha=0.8, label=first, gid=f"{name}-{arm}-{i}")
        bins = [b for b in det.get("reliability") or [] if b.get("observed") is not None]
        if bins:
            rel.plot(
                [b["mean_p"] for b in bins],
                [b["observed"] for b in bins],
                color=color,
                marker=marker,
                markersize=3,
                label=lab,
                gid=f"reliability-{arm}-{i}",
            )
        if det.get("base_rate") is not None:
            pr.axhline(det["base_rate"], color=color, linestyle=":", linewidth=0.8)
