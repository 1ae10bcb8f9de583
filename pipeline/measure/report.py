"""The run report: `report.md` (the comparison table by round) and one self-contained
`report.html`: charts drawn by matplotlib as inline SVG (text drawn as paths: no fonts, no
scripts, no network), a table of every figure and a trace viewer filtered with pure CSS.

    write_verdict(layout, cfg, verdict, traces_from=None)
                                         what `halluc run` calls at the end (one seed or several):
                                         the dict of verdict.json plus per_seed_evals
    write(layout, cfg, evals)            evals alone (no tuning figures): a descriptive page

`evals` is `{"backtrack": [eval_round0, ...], "baseline": [...]}` (eval.json dicts,
`pipeline.measure.evaluation`, with the optional keys `pass_at_k, generated_tokens, truncation_rate,
per_problem` and the optional blocks `controls` and `detector`); a missing figure shows as "–".
`verdict` holds `seeds`, `rounds` (per round: each arm's setting, mean accuracy and per-seed
accuracies, the paired difference with its 95% interval, the best-of-N control, mean detector AUC
and erase precision), `sentence` and `per_seed_evals` (seed -> evals as above). `write` draws
evals alone as a verdict of one seed (`one_seed_verdict`), reading each arm at its most accurate
held-out setting: descriptive only, never the run's verdict.

The page, top to bottom: the verdict sentence (several seeds only), the comparison table (and,
when the run has more arms, such as dpo, a table of each against the baseline), five
charts (backtrack and baseline) (each an `<svg data-metric=NAME>`), every figure, the traces.
  accuracy     accuracy by round per arm (backtrack at its setting, baseline at its best setting,
               best-of-N control): means as lines, seeds as points, 95% intervals as error bars
               where known; beside it the difference by round with its paired 95% interval
  temperature  accuracy against sampling temperature per arm, last round (the decoding sweep)
  precision    erased finished steps that were wrong against chance, by round (backtrack arm)
  detector     each arm's error detector in the last round: ROC, precision-recall, reliability
  tokens       generated tokens per solved sample by round per arm
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Callable, Iterable
from statistics import fmean, stdev
from typing import Any

import matplotlib
import pyarrow.parquet as pq
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, MultipleLocator, PercentFormatter

from pipeline.arms import REQUIRED as ARMS
from pipeline.config import Config
from pipeline.files import write_text
from pipeline.layout import RunLayout

Evals = dict[str, list[dict[str, Any]]]
ARM_STYLE = {
    "backtrack": ("#c0392b", "o"),
    "baseline": ("#2c3e50", "s"),
    "best_of_n": ("#16a085", "^"),
}
_RC: dict[Any, Any] = {
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
BANNED = ", backspace banned"


def write(layout: RunLayout, cfg: Config, evals: Evals) -> str:
    """A page for evals without tuning figures; returns the Markdown table. It reads each arm
    at its most accurate held-out setting: an optimistic reading for both arms and not a verdict
    (no setting may be chosen on held-out problems for that). `halluc run` writes its report
    with `write_verdict`, whose settings `pipeline.measure.verdict` chose on training problems."""
    return _write(layout, cfg, one_seed_verdict(cfg, evals), layout)


def write_verdict(
    layout: RunLayout,
    cfg: Config,
    verdict: dict[str, Any],
    traces_from: RunLayout | None = None,
) -> str:
    """Write the report of a several-seed run into `layout` from its verdict, which must hold
    `per_seed_evals`; the trace viewer shows the last round of `traces_from` (a seed's run
    directory; default `layout`). Returns the Markdown table."""
    if "per_seed_evals" not in verdict:
        raise KeyError(
            "the verdict has no per_seed_evals: add {seed: {'backtrack': [eval, ...], "
            "'baseline': [...]}} (each seed's held-out evals by round) before writing the report"
        )
    return _write(layout, cfg, verdict, traces_from or layout)


def _write(layout: RunLayout, cfg: Config, verdict: dict[str, Any], traced: RunLayout) -> str:
    runs: dict[str, Evals] = verdict["per_seed_evals"]
    first = next(iter(runs.values()))
    others = other_arm_rows(verdict)
    md = markdown(summary_rows(verdict)) + (f"\n\n{markdown(others)}" if len(others) > 1 else "")
    seeds = ", ".join(str(s) for s in verdict["seeds"])
    intro = (
        f"Task `{cfg.task.name}`, {first['backtrack'][0]['n_problems']} held-out problems, "
        f"seed(s) {seeds}; round 0 is the starting model; each arm is read at the decoding "
        f"setting named beside it. Config hash `{cfg.hash}`."
    )
    sentence = verdict.get("sentence") or ""
    head = "\n\n".join(x for x in ("# Halluc run report", intro, sentence) if x)
    write_text(layout.report_md, f"{head}\n\n{md}\n")
    with matplotlib.rc_context(_RC):
        charts = "".join(draw(verdict, runs))
    verdict_html = f"<p class='verdict'>{html.escape(sentence)}</p>" if sentence else ""
    doc = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Halluc run report</title>"
        f"<style>{_CSS}</style></head><body><h1>Halluc run report</h1>{verdict_html}"
        f"<p>{html.escape(intro)}</p>{_html_table(summary_rows(verdict), 'comparison')}"
        f"{_html_table(others, 'arms') if len(others) > 1 else ''}"
        f"<h2>Charts</h2><div class='charts'>{charts}</div>"
        f"<h2>Every figure</h2>{_html_table(figure_rows(runs), 'figures')}"
        f"{_html_table(detector_rows(runs), 'detector')}"
        f"<h2>Traces</h2>{_traces(traced, cfg, len(first['backtrack']) - 1)}</body></html>"
    )
    write_text(layout.report_html, doc)
    return md


# --- a one-seed run as a verdict -------------------------------------------------------------


def one_seed_verdict(cfg: Config, evals: Evals) -> dict[str, Any]:
    """The verdict of one seed without tuning evals: each arm at its most accurate held-out
    setting (the same rule for both; `measure.verdict` chooses on training problems instead),
    with its Wilson interval; the difference's paired interval comes from per-problem accuracies
    when both arms have them (else it is None). Best-of-N: the baseline eval's
    `controls.best_of_n`, else the backtrack eval's; majority vote alike."""
    rounds = [
        _one_round(r, b, a)
        for r, (b, a) in enumerate(zip(evals["backtrack"], evals["baseline"], strict=True))
    ]
    seed = cfg.run.seed
    return {"seeds": [seed], "rounds": rounds, "sentence": "", "per_seed_evals": {str(seed): evals}}


def _one_round(r: int, b: dict[str, Any], a: dict[str, Any]) -> dict[str, Any]:
    key, best = best_setting(b), best_setting(a)
    mb, ma = b["settings"][key], a["settings"][best]
    bon, maj = (_control(name, a, b) for name in ("best_of_n", "majority"))
    return {
        "round": r,
        "backtrack": _arm(key, mb),
        "baseline": _arm(best, ma),
        "difference": paired(mb, ma),
        "best_of_n": bon and _arm(None, bon) | {"difference": paired(mb, bon)},
        "majority": maj and _arm(None, maj) | {"difference": paired(mb, maj)},
        "detector_auc": {
            arm: (e.get("detector") or {}).get("roc_auc")
            for arm, e in zip(ARMS, (b, a), strict=True)
        },
        "precision": {k: mb.get(k) for k in ("step_erase_precision", "chance_precision")},
    }


def _control(name: str, *evals: dict[str, Any]) -> dict[str, Any] | None:
    """Control `name` from the first of `evals` that has it."""
    return next((c for e in evals if (c := (e.get("controls") or {}).get(name))), None)


def _arm(setting: str | None, m: dict[str, Any]) -> dict[str, Any]:
    return {"setting": setting, "accuracy": m["accuracy"], "per_seed": [m["accuracy"]]} | (
        {"ci95": m["ci95"]} if m.get("ci95") else {}
    )


def best_setting(result: dict[str, Any]) -> str:
    """The most accurate setting that allows the backspace (the first of equals)."""
    free = {k: m for k, m in result["settings"].items() if not k.endswith(BANNED)}
    return max(free, key=lambda k: free[k]["accuracy"])


def paired(x: dict[str, Any], y: dict[str, Any], z: float = 1.96) -> dict[str, Any]:
    """x's accuracy minus y's, with a normal 95% interval over the per-problem differences
    (None without two equally long `per_problem` lists of at least 2)."""
    mean = x["accuracy"] - y["accuracy"]
    px, py = x.get("per_problem"), y.get("per_problem")
    if not px or not py or len(px) != len(py) or len(px) < 2:
        return {"mean": mean, "ci95": None}
    d = [u - v for u, v in zip(px, py, strict=True)]
    m, half = fmean(d), z * stdev(d) / math.sqrt(len(d))
    return {"mean": m, "ci95": [m - half, m + half]}


# --- tables ----------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _pts(d: dict[str, Any] | None) -> str:
    if not d or d.get("mean") is None:
        return "–"
    ci = d.get("ci95")
    tail = f" ({100 * ci[0]:+.1f} to {100 * ci[1]:+.1f})" if ci else ""
    return f"{100 * d['mean']:+.1f} pts{tail}"


def _acc(arm: dict[str, Any] | None) -> str:
    if not arm:
        return "–"
    ci = arm.get("ci95")
    seeds = arm.get("per_seed") or []
    tail = f" ({_pct(ci[0])}–{_pct(ci[1])})" if ci else ""
    if len(seeds) > 1:
        tail += " [" + " · ".join(_pct(s) for s in seeds) + "]"
    return f"{_pct(arm.get('accuracy'))}{tail}"


def summary_rows(verdict: dict[str, Any]) -> list[list[str]]:
    """The comparison table: per round both arms' accuracy (95% interval, per-seed values in
    brackets), their difference with its paired interval, the best-of-N control, the share of
    erased steps that were wrong beside chance, and mean detector AUC."""
    rows = [
        [
            "round",
            "backtrack acc. (setting)",
            "baseline acc. (best setting)",
            "difference (95% CI)",
            "best-of-N acc.",
            "backtrack − best-of-N",
            "majority-vote acc.",
            "steps erased: wrong (chance)",
            "detector AUC: backtrack / baseline",
        ]
    ]
    for r in verdict["rounds"]:
        b, a, bon = r["backtrack"], r["baseline"], r.get("best_of_n")
        prec, auc = r.get("precision") or {}, r.get("detector_auc") or {}
        rows.append(
            [
                str(r["round"]),
                f"{_acc(b)} {b.get('setting') or ''}".strip(),
                f"{_acc(a)} {a.get('setting') or ''}".strip(),
                _pts(r.get("difference")),
                _acc(bon),
                _pts((bon or {}).get("difference")),
                _acc(r.get("majority")),
                f"{_pct(prec.get('step_erase_precision'))} ({_pct(prec.get('chance_precision'))})",
                f"{_num(auc.get('backtrack'), 3)} / {_num(auc.get('baseline'), 3)}",
            ]
        )
    return rows


def other_arm_rows(verdict: dict[str, Any]) -> list[list[str]]:
    """The arms beyond backtrack and baseline (dpo), per round: accuracy at the setting chosen on
    training problems, the paired difference with the baseline at its best, the share of erased
    steps that were wrong beside chance, and the detector AUC."""
    rows = [
        [
            "round",
            "arm",
            "acc. (setting)",
            "− baseline (95% CI)",
            "steps erased: wrong (chance)",
            "detector AUC",
        ]
    ]
    for r in verdict["rounds"]:
        for arm, a in (r.get("arms") or {}).items():
            prec = a.get("precision") or {}
            rows.append(
                [
                    str(r["round"]),
                    arm,
                    f"{_acc(a)} {a.get('setting') or ''}".strip(),
                    _pts(a.get("difference")),
                    f"{_pct(prec.get('step_erase_precision'))} "
                    f"({_pct(prec.get('chance_precision'))})",
                    _num(a.get("detector_auc"), 3),
                ]
            )
    return rows


# fmt: off
FIGURES = [
    "temperature", "samples_per_problem", "samples", "accuracy", "ci95", "pass_at_k",
    "backtrack_rate", "erase_events", "erase_precision", "erased_steps", "step_erase_precision",
    "chance_precision", "made_error", "recovery", "tokens_per_solved", "generated_tokens",
    "truncation_rate", "per_problem", "tokens_per_problem", "n", "mean_n",
]
SHARES = {
    "accuracy", "backtrack_rate", "erase_precision", "step_erase_precision", "chance_precision",
    "recovery", "truncation_rate", "base_rate", "pass_at_k", "mean_p_wrong", "mean_p_right",
}
# fmt: on


def _num(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def fmt(key: str, v: Any) -> str:
    """One figure as the tables show it ("–" when missing)."""
    if v is None:
        return "–"
    if key == "ci95":
        return f"{_pct(v[0])}–{_pct(v[1])}"
    if isinstance(v, list):  # per problem
        mean = _pct(fmean(v)) if key == "per_problem" else _num(fmean(v))
        return f"{len(v)} problems, mean {mean}" if v else "–"
    if isinstance(v, dict):  # pass@k by k
        return ", ".join(f"@{k} {_pct(x)}" for k, x in v.items())
    if key in SHARES:
        return _pct(v)
    if key == "temperature":
        return f"{v:g}"
    if isinstance(v, float):
        return _num(v, 3 if key.endswith("auc") else 1)
    return f"{v:,}" if isinstance(v, int) else str(v)


def figure_rows(runs: dict[str, Evals]) -> list[list[str]]:
    """Every figure of every evaluation: a row per seed, arm, round and setting (and control)."""
    rows = [["seed", "arm", "round", "setting", *FIGURES]]
    for seed, evals in runs.items():
        for arm in evals:
            for r, e in enumerate(evals[arm]):
                named = list(e["settings"].items())
                named += [(f"control: {k}", m) for k, m in (e.get("controls") or {}).items()]
                rows += [
                    [seed, arm, str(r), n, *(fmt(k, m.get(k)) for k in FIGURES)] for n, m in named
                ]
    return rows


DETECTOR = ["n_positions", "positives", "base_rate", "roc_auc", "pr_auc", "mean_p_wrong",
            "mean_p_right", "note"]  # fmt: skip


def detector_rows(runs: dict[str, Evals]) -> list[list[str]]:
    """The detector block of every evaluation that has one."""
    rows = [["seed", "arm", "round", *DETECTOR]]
    for seed, evals in runs.items():
        for arm in evals:
            for r, e in enumerate(evals[arm]):
                if det := e.get("detector"):
                    rows.append([seed, arm, str(r), *(fmt(k, det.get(k)) for k in DETECTOR)])
    return rows


def markdown(rows: list[list[str]]) -> str:
    """`rows` (the first the header) as a Markdown table."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def _html_table(rows: list[list[str]], name: str) -> str:
    if len(rows) < 2:
        return f"<p id='{name}'>No {name} figures in these evaluations.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:]
    )
    return f"<div class='scroll'><table id='{name}'><tr>{head}</tr>{body}</table></div>"


# --- charts ----------------------------------------------------------------------------------


def draw(verdict: dict[str, Any], runs: dict[str, Evals]) -> list[str]:
    """The five charts as inline SVG (call inside `matplotlib.rc_context(_RC)`)."""
    rounds = verdict["rounds"]
    return [
        _svg(_accuracy_chart(rounds), "accuracy", "Accuracy by round"),
        _svg(_temperature_chart(runs), "temperature", "Accuracy against temperature"),
        _svg(_precision_chart(runs, rounds), "precision", "Erase precision against chance"),
        _svg(_detector_chart(runs, rounds), "detector", "Error detector, last round"),
        _svg(_tokens_chart(runs, rounds), "tokens", "Tokens per solved sample"),
    ]


def _figure(n: int, width: float) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width, 3.3), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, n, squeeze=False)[0])


def _svg(fig: Figure, name: str, title: str) -> str:
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


def _percent(ax: Axes, label: str, axis: str = "y") -> None:
    """A 0–100% axis with a tick every 20%."""
    a = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_ylim if axis == "y" else ax.set_xlim)(-0.02, 1.02)
    a.set_major_locator(MultipleLocator(0.2))
    a.set_major_formatter(PercentFormatter(1.0, decimals=0))
    a.set_label_text(label)


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
    fig, (ax, diff) = _figure(2, 9.4)
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
    _percent(ax, "accuracy (pass@1)")
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
    return {
        m["temperature"]: m for k, m in result["settings"].items() if k.endswith(BANNED) == banned
    }


def _temperature_chart(runs: dict[str, Evals]) -> Figure:
    fig, (ax,) = _figure(1, 4.8)
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
    _percent(ax, "accuracy (pass@1)")
    ax.legend(loc="best")
    return fig


def _per_seed(
    runs: dict[str, Evals], rounds: list[dict[str, Any]], arm: str, key: str
) -> list[list[float]]:
    """`key` at the arm's setting of each round, one list of the seeds' values per round."""
    out = []
    for r in rounds:
        setting = r[arm].get("setting") or best_setting(next(iter(runs.values()))[arm][0])
        vals = [e[arm][r["round"]]["settings"].get(setting, {}).get(key) for e in runs.values()]
        out.append([v for v in vals if v is not None])
    return out


def _precision_chart(runs: dict[str, Evals], rounds: list[dict[str, Any]]) -> Figure:
    fig, (ax,) = _figure(1, 4.8)
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
    _percent(ax, "share (backtrack arm)")
    _by_round(ax, xs)
    ax.legend(loc="best")
    return fig


def _tokens_chart(runs: dict[str, Evals], rounds: list[dict[str, Any]]) -> Figure:
    fig, (ax,) = _figure(1, 4.8)
    xs = [r["round"] for r in rounds]
    for i, arm in enumerate(ARMS):
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
    fig, axes = _figure(3, 10.5)
    roc, pr, rel = axes
    for ax, (x, y) in zip(axes, DETECTOR_AXES, strict=True):
        _percent(ax, x, "x")
        _percent(ax, y)
    roc.plot([0, 1], [0, 1], ":", color="#888", label="chance")
    rel.plot([0, 1], [0, 1], ":", color="#888", label="calibrated")
    found = False
    for arm in ARMS:
        dets = [d for e in runs.values() if (d := e[arm][-1].get("detector"))]
        found |= bool(dets)
        auc = (rounds[-1].get("detector_auc") or {}).get(arm)
        _detector_arm(axes, dets, arm, f"{arm} (ROC AUC {_num(auc, 3)})")
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


# --- traces ----------------------------------------------------------------------------------

TRACE_CLASSES = {
    "all": "all",
    "precise": "precise erases",
    "right-step": "erases of right steps",
    "missed": "missed errors",
    "unlabelled": "unlabelled",
}


def trace_class(row: dict[str, Any], has_checker: bool) -> str:
    """The viewer's class of a selected trace row (`pipeline.shards.FEATURES["traces"]`).

    A correction row erases one step, the wrong step at index `mc_error_step` (the Monte Carlo
    label); `exact_error_step` is the exact checker's first error on the kept steps plus that
    step. "precise": the two agree, the erased step is the first wrong one. "right-step": the
    checker finds no error there, so the erased step was right. "missed": the first error is
    earlier, in the kept steps, so it stays visible. Clean and self-correction rows are selected
    only when correct, which on a task with a checker means no wrong visible step, so they never
    show a missed error: they are "unlabelled", as is every row of a task without a checker."""
    if row["kind"] != "correction" or not has_checker:
        return "unlabelled"
    exact = row["exact_error_step"]
    if exact is None:
        return "right-step"
    return "precise" if exact == row["mc_error_step"] else "missed"


def trace_html(row: dict[str, Any], decode: Callable[[int], str], bksp: int) -> str:
    """One trace token by token: the prompt grey, erased tokens struck through, backspaces ⌫."""
    erased = {p for a, b in row["erase_spans"] for p in range(a, b)}
    out = [f"<span class='prompt'>{html.escape(row['prompt_text'])}</span>"]
    for pos in range(row["prompt_len"], len(row["input_ids"])):
        t = row["input_ids"][pos]
        if t == bksp:
            out.append("<span class='bksp'>⌫</span>")
            continue
        piece = html.escape(decode(t))
        out.append(f"<del>{piece}</del>" if pos in erased else piece)
    return "".join(out)


def trace_viewer(items: Iterable[tuple[str, str, str]]) -> str:
    """(class, kind, trace html) items behind radio-button filters: pure CSS, no script
    (`#tf-C:checked ~ .traces` hides the other classes)."""
    items = list(items)
    if not items:
        return "<p>No traces.</p>"
    count = {c: sum(c in ("all", i[0]) for i in items) for c in TRACE_CLASSES}
    radios = "".join(
        f"<input type='radio' name='trace-filter' id='tf-{c}'{' checked' * (c == 'all')}>"
        f"<label for='tf-{c}'>{label} ({count[c]})</label>"
        for c, label in TRACE_CLASSES.items()
    )
    lis = "".join(
        f"<li class='trace' data-kind='{k}' data-class='{c}'><pre>{t}</pre></li>"
        for c, k, t in items
    )
    return f"<div class='viewer'>{radios}<ol class='traces'>{lis}</ol></div>"


def _traces(layout: RunLayout, cfg: Config, rounds: int, per_class: int = 4) -> str:
    """Up to `per_class` traces with backspaces of each class from the last round's backtrack
    selection, decoded with the tokenizer of the model trained on it."""
    if rounds < 1:
        return "<p>No traces.</p>"
    last = layout.round(rounds - 1, "backtrack")
    if not (last.model / "config.json").exists() or not last.selected.exists():
        return "<p>No traces.</p>"
    from transformers import AutoTokenizer

    from pipeline.loading import task_from_config

    tok: Any = AutoTokenizer.from_pretrained(last.model)
    bksp = int(tok.convert_tokens_to_ids(cfg.trace.bksp_token))
    has_checker = task_from_config(cfg.task).has_step_checker
    shown: dict[str, int] = {}
    items = []
    for r in pq.read_table(last.selected).to_pylist():
        c = trace_class(r, has_checker)
        if r["n_backspaces"] > 0 and shown.get(c, 0) < per_class:
            shown[c] = shown.get(c, 0) + 1
            decode = lambda t: str(tok.decode([t], skip_special_tokens=True))  # noqa: E731
            items.append((c, r["kind"], trace_html(r, decode, bksp)))
    return trace_viewer(items)


_FILTERS = "".join(
    f"#tf-{c}:checked~.traces .trace:not([data-class='{c}']){{display:none}}"
    for c in TRACE_CLASSES
    if c != "all"
)
_CSS = (
    """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}
.scroll{overflow-x:auto;margin:1em 0}.charts{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0}figcaption{font-weight:600;font-size:14px}svg{max-width:100%;height:auto}
.verdict{font-size:18px;font-weight:600;border-left:4px solid #c0392b;padding-left:10px}
del{color:#c0392b}.bksp{background:#fde2e2;color:#c0392b;border-radius:3px;padding:0 1px}
.prompt{color:#888}pre{white-space:pre-wrap;margin:0}
.viewer input{position:absolute;opacity:0}.viewer label{display:inline-block;cursor:pointer;
border:1px solid #ccc;border-radius:4px;padding:2px 8px;margin:0 4px 8px 0;font-size:13px}
.viewer input:checked+label{background:#2c3e50;color:#fff}
.viewer input:focus-visible+label{outline:2px solid #2980b9}
"""
    + _FILTERS
)
