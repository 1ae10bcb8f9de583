"""The run report: `report.md` and a self-contained `report.html` (inline SVG, no scripts, no
network), comparing the backtrack arm with the no-backtrack baseline round by round, and a trace
viewer (erased text struck through, backspaces shown as ⌫)."""

from __future__ import annotations

import html
from typing import Any

import pyarrow.parquet as pq

from pipeline.config import Config
from pipeline.files import write_text
from pipeline.layout import RunLayout

COLORS = {"backtrack": "#c0392b", "baseline": "#2c3e50"}
METRICS = [
    ("accuracy", "accuracy at T (95% CI)"),
    ("backtrack_rate", "backtrack rate"),
    ("erase_precision", "erase precision"),
    ("recovery", "recovery"),
    ("tokens_per_solved", "tokens per solved sample"),
]


def _setting(cfg: Config) -> str:
    return f"T={cfg.eval.temperatures[-1]}"


def table(cfg: Config, evals: dict[str, list[dict[str, Any]]]) -> str:
    """The Markdown comparison table: both arms' accuracy at T per round, and the backtrack
    arm's backspace figures."""
    key = _setting(cfg)
    lines = [
        f"| round | backtrack acc. {key} (95% CI) | baseline acc. {key} (95% CI) | "
        "difference | backtrack rate | erase precision | steps erased: wrong (chance) | "
        "recovery |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r, (b, a) in enumerate(zip(evals["backtrack"], evals["baseline"], strict=True)):
        mb, ma = b["settings"][key], a["settings"][key]
        lines.append(
            f"| {r} | {_pct(mb['accuracy'])} ({_pct(mb['ci95'][0])}–{_pct(mb['ci95'][1])}) | "
            f"{_pct(ma['accuracy'])} ({_pct(ma['ci95'][0])}–{_pct(ma['ci95'][1])}) | "
            f"{100 * (mb['accuracy'] - ma['accuracy']):+.1f} pts | "
            f"{_pct(mb['backtrack_rate'])} | {_pct(mb['erase_precision'])} | "
            f"{_pct(mb.get('step_erase_precision'))} ({_pct(mb.get('chance_precision'))}) | "
            f"{_pct(mb['recovery'])} |"
        )
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def write(layout: RunLayout, cfg: Config, evals: dict[str, list[dict[str, Any]]]) -> str:
    """Write the run's report.md and report.html; returns the Markdown table."""
    md = table(cfg, evals)
    n = evals["backtrack"][0]["n_problems"]
    intro = (
        f"# Halluc run report\n\nTask `{cfg.task.name}`, {n} held-out problems, "
        f"{cfg.eval.samples} sample(s) per problem at {_setting(cfg)}; round 0 is the "
        f"starting model. Config hash `{cfg.hash}`.\n\n"
    )
    write_text(layout.report_md, intro + md + "\n")
    traces = _traces(layout, cfg, len(evals["backtrack"]) - 1)
    charts = "".join(_chart(evals, cfg, metric, title) for metric, title in METRICS)
    doc = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Halluc run report</title>"
        f"<style>{_CSS}</style></head><body><h1>Halluc run report</h1>"
        f"<p>{html.escape(intro.splitlines()[2])}</p>{_html_table(md)}"
        f"<h2>By round</h2><div class='charts'>{charts}</div>"
        f"<h2>Traces</h2>{traces}</body></html>"
    )
    write_text(layout.report_html, doc)
    return md


def _html_table(md: str) -> str:
    rows = [r.strip("|").split("|") for r in md.splitlines() if not r.startswith("|---")]
    head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>"
        for r in rows[1:]
    )
    return f"<table id='comparison'><tr>{head}</tr>{body}</table>"


def _chart(evals: dict[str, list[dict[str, Any]]], cfg: Config, metric: str, title: str) -> str:
    key = _setting(cfg)
    w, h, pad = 360, 220, 40
    series = {arm: [e["settings"][key] for e in es] for arm, es in evals.items()}
    values = [m[metric] for ms in series.values() for m in ms if m[metric] is not None]
    top = 1.0 if metric != "tokens_per_solved" else max(values + [1.0]) * 1.1
    rounds = max(len(ms) for ms in series.values())

    def xy(i: int, v: float) -> tuple[float, float]:
        x = pad + (w - 2 * pad) * (i / max(1, rounds - 1))
        return x, h - pad - (h - 2 * pad) * (v / top)

    parts = [
        f"<line x1='{pad}' y1='{h - pad}' x2='{w - pad}' y2='{h - pad}' class='axis'/>",
        f"<line x1='{pad}' y1='{pad}' x2='{pad}' y2='{h - pad}' class='axis'/>",
        f"<text x='{pad - 4}' y='{pad + 4}' class='tick' text-anchor='end'>"
        f"{top if metric == 'tokens_per_solved' else '100%'}</text>",
    ]
    for i in range(rounds):
        x, _ = xy(i, 0)
        parts.append(f"<text x='{x}' y='{h - pad + 16}' class='tick'>{i}</text>")
    for arm, ms in series.items():
        pts = [(i, m[metric]) for i, m in enumerate(ms) if m[metric] is not None]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in pts))
        parts.append(
            f"<polyline points='{coords}' fill='none' stroke='{COLORS[arm]}' "
            f"stroke-width='2' class='series-{arm}'/>"
        )
        for i, m in enumerate(ms):
            if metric == "accuracy":
                (x, y1), (_, y2) = xy(i, m["ci95"][0]), xy(i, m["ci95"][1])
                parts.append(
                    f"<line x1='{x}' y1='{y1}' x2='{x}' y2='{y2}' "
                    f"stroke='{COLORS[arm]}' class='ci'/>"
                )
    legend = " ".join(f"<tspan fill='{COLORS[a]}'>■ {a}</tspan>" for a in series)
    parts.append(f"<text x='{pad}' y='{pad - 14}' class='legend'>{legend}</text>")
    return (
        f"<figure><figcaption>{html.escape(title)} by round</figcaption>"
        f"<svg width='{w}' height='{h}' role='img' data-metric='{metric}'>"
        f"{''.join(parts)}</svg></figure>"
    )


def _traces(layout: RunLayout, cfg: Config, rounds: int, n: int = 6) -> str:
    """A few backtrack traces from the last round's selection, rendered token by token."""
    from transformers import AutoTokenizer

    if rounds < 1:
        return "<p>No traces.</p>"
    last = layout.round(rounds - 1, "backtrack")
    # the model trained on that selection: its tokenizer has the backspace token
    if not (last.model / "config.json").exists() or not last.selected.exists():
        return "<p>No traces.</p>"
    tok = AutoTokenizer.from_pretrained(last.model)
    rows = [r for r in pq.read_table(last.selected).to_pylist() if r["n_backspaces"] > 0][:n]
    bksp = tok.convert_tokens_to_ids(cfg.trace.bksp_token)
    items = []
    for r in rows:
        erased = {p for a, b in r["erase_spans"] for p in range(a, b)}
        out = [f"<span class='prompt'>{html.escape(r['prompt_text'])}</span>"]
        for pos in range(r["prompt_len"], len(r["input_ids"])):
            t = r["input_ids"][pos]
            if t == bksp:
                out.append("<span class='bksp'>⌫</span>")
                continue
            piece = html.escape(str(tok.decode([t], skip_special_tokens=True)))
            out.append(f"<del>{piece}</del>" if pos in erased else piece)
        items.append(f"<li class='trace' data-kind='{r['kind']}'><pre>{''.join(out)}</pre></li>")
    return f"<ol class='traces'>{''.join(items)}</ol>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}
.charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}.axis{stroke:#888}
.tick,.legend{font-size:11px}.ci{stroke-width:1;opacity:.6}del{color:#c0392b}
.bksp{background:#fde2e2;color:#c0392b;border-radius:3px;padding:0 1px}
.prompt{color:#888}pre{white-space:pre-wrap;margin:0}"""
