"""What the report's charts share: the style, the arm colours, a figure, an axis in percent, and
the figure as inline SVG (`pipeline.measure.charts`, `pipeline.measure.token_chart`)."""

from __future__ import annotations

import html
import io
import re
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MultipleLocator, PercentFormatter

ARM_STYLE = {
    "backtrack": ("#c0392b", "o"),
    "baseline": ("#2c3e50", "s"),
    "best_of_n": ("#16a085", "^"),
    "start": ("#7f8c8d", "D"),
    "rl": ("#8e44ad", "v"),
    "dpo": ("#d35400", "P"),
    "sft_rl": ("#2980b9", "X"),
}
RC: dict[Any, Any] = {
    "svg.fonttype": "path",  # glyphs as paths: the page needs no font files
    "svg.hashsalt": "halluc-report",  # the same figures draw the same bytes
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
}


def figure(n: int, width: float) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width, 3.3), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, n, squeeze=False)[0])


def svg(fig: Figure, name: str, title: str) -> str:
    """The figure as an `<svg>` element for an HTML page: no XML prologue, metadata or
    namespace URLs, and every id prefixed with `name` (inline SVGs share the page's ids; glyph
    ids repeat across figures with other glyphs behind them)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg).replace("xlink:href=", "href=")
    svg = re.sub(r'\b(id="|href="#|url\(#)', rf"\g<1>{name}-", svg)
    label = html.escape(title, quote=True)
    return (
        f"<figure><figcaption>{label}</figcaption>"
        + svg.replace("<svg", f"<svg data-metric='{name}' role='img' aria-label='{label}'", 1)
        + "</figure>"
    )


def percent(ax: Axes, label: str, axis: str = "y") -> None:
    """A 0–100% axis with a tick every 20%."""
    a = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_ylim if axis == "y" else ax.set_xlim)(-0.02, 1.02)
    a.set_major_locator(MultipleLocator(0.2))
    a.set_major_formatter(PercentFormatter(1.0, decimals=0))
    a.set_label_text(label)
