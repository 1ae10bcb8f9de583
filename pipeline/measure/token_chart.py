"""The report's accuracy-against-tokens chart: one panel per round (round 0: the start model),
generated tokens per problem on a log axis, accuracy up the side.

Per arm (its colour), from the held-out `curve` of each eval (`pipeline.measure.budget`), means
over seeds: best-of-N by likelihood (solid), majority vote (dashed), value best-of-N (dash-dot,
with a value model) and oracle pass@N (dotted, the ceiling), at N = 1, 2, 4, 8, 16; greedy as a
filled point of its own; and the arm's other decodings that keep the backspace (sampled,
threshold, guided search: the eval's settings) as hollow points. Where the backtrack arm's
points sit above the baseline's lines at their tokens, backtracking beat sampling more.
"""

from __future__ import annotations

import math
from statistics import fmean
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MultipleLocator

from pipeline.measure.plot import ARM_STYLE, figure, percent
from pipeline.measure.settings import settings_of
from pipeline.measure.verdict import Evals

SELECTOR_STYLE: dict[str, tuple[Any, str]] = {
    "best_of_n": ("-", "best-of-N (likelihood)"),
    "majority": ("--", "majority vote"),
    "value_best_of_n": ("-.", "value best-of-N"),
    "oracle": (":", "oracle pass@N"),
}


def draw(runs: dict[str, Evals]) -> Figure:
    seeds = list(runs.values())
    arms = list(seeds[0])
    n_rounds = len(seeds[0][arms[0]])
    fig, axes = figure(n_rounds, 3.4 * n_rounds + 1.8)
    found = set()
    for r, ax in enumerate(axes):
        panel = {"start": [s[arms[0]][0] for s in seeds]} if r == 0 else {}
        panel |= {a: [s[a][r] for s in seeds] for a in arms} if r else {}
        for arm, evals in panel.items():
            found |= _arm(ax, arm, evals, r)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(LogLocator(base=2))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("generated tokens per problem")
        ax.set_title("start model" if r == 0 else f"round {r}", fontsize=9)
        percent(ax, "accuracy")
        _zoom(ax)
    shown = [a for a in ARM_STYLE if a in {"start", *arms}]
    handles = [
        Line2D([], [], color=ARM_STYLE[a][0], marker=ARM_STYLE[a][1], label=a) for a in shown
    ]
    handles += [
        Line2D([], [], color="#555", linestyle=ls, label=label)
        for name, (ls, label) in SELECTOR_STYLE.items()
        if name in found
    ]
    handles += [
        Line2D([], [], color="#555", marker="o", linestyle="none", label="greedy"),
        Line2D([], [], color="#555", marker="o", mfc="none", linestyle="none", label="decodings"),
    ]
    axes[-1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5))
    if not found:
        axes[0].text(
            0.5,
            0.5,
            "no curves in these evaluations",
            ha="center",
            color="#888",
            transform=axes[0].transAxes,
        )
    return fig


def _arm(ax: Axes, arm: str, evals: list[dict[str, Any]], r: int) -> set[str]:
    """One arm's lines and points in one round (means over its seeds); the selectors drawn."""
    color, marker = ARM_STYLE.get(arm, ("#555", "o"))
    curves = [e["curve"]["curve"] for e in evals if e.get("curve")]
    drawn = set()
    if len(curves) == len(evals) and curves:
        rows = min(map(len, curves))
        for name, (ls, _) in SELECTOR_STYLE.items():
            if not all(name in c[i] for c in curves for i in range(rows)):
                continue
            xs = [fmean(c[i]["tokens_per_problem"] for c in curves) for i in range(rows)]
            ys = [fmean(c[i][name]["accuracy"] for c in curves) for i in range(rows)]
            ax.plot(xs, ys, color=color, linestyle=ls, linewidth=1.2, marker=".", markersize=3,
                    gid=f"round{r}-{name}-{arm}")  # fmt: skip
            drawn.add(name)
    for name, s in settings_of(evals[0]).items():
        figs = [e["settings"].get(name) or {} for e in evals]
        if s.backspace_banned or not all(f.get("tokens_per_problem") for f in figs):
            continue
        x = fmean(fmean(f["tokens_per_problem"]) for f in figs)
        y = fmean(f["accuracy"] for f in figs)
        greedy = not s.sampling
        ax.plot(
            [x],
            [y],
            marker=marker,
            color=color,
            mfc=color if greedy else "none",
            linestyle="none",
            markersize=6 if greedy else 4,
            gid=f"round{r}-{name}-{arm}",
            zorder=3,
        )
    return drawn


def _zoom(ax: Axes) -> None:
    """Start the accuracy axis at the 10% below the lowest point (a task near its ceiling
    would otherwise squeeze every curve into the top of the panel)."""
    if not ax.has_data():
        return
    low = math.floor(ax.dataLim.y0 * 10) / 10
    ax.set_ylim(max(-0.02, low - 0.02), 1.02)
    ax.yaxis.set_major_locator(MultipleLocator(0.1 if low >= 0.5 else 0.2))
