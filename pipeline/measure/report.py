"""The run report: `report.md` (the comparison table by round) and one self-contained
`report.html`: the charts (`pipeline.measure.charts`), a table of every figure and the trace viewer
(`pipeline.measure.traces`). It renders only: what it shows was computed by
`pipeline.measure.verdict`, and figures are written as `pipeline.measure.stats` writes them.

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
evals alone as a verdict of one seed (`verdict.one_seed_verdict`), reading each arm at its most
accurate held-out setting: descriptive only, never the run's verdict.

The page, top to bottom: the verdict sentence (several seeds only), the comparison table (and,
when the run has more arms, such as dpo, a table of each against the baseline), the six charts,
accuracy against generated tokens and (Countdown) accuracy by target in the last round, every
figure, the traces.
"""

from __future__ import annotations

import html
from typing import Any

from pipeline.config import Config
from pipeline.files import write_text
from pipeline.layout import RunLayout
from pipeline.measure import charts, traces
from pipeline.measure.stats import fmt, num, pct, pts
from pipeline.measure.verdict import Evals, one_seed_verdict


def write(layout: RunLayout, cfg: Config, evals: Evals) -> str:
    """A page for evals without tuning figures; returns the Markdown table. It reads each arm
    at its most accurate held-out setting: an optimistic reading for both arms and not a verdict
    (no setting may be chosen on held-out problems for that). `halluc run` writes its report
    with `write_verdict`, whose settings `pipeline.measure.verdict` chose on validation problems."""
    return _write(layout, cfg, one_seed_verdict(cfg.run.seed, evals), layout)


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
    curves, targets = curve_rows(runs), target_rows(verdict)
    if curves:
        md += f"\n\nAccuracy against generated tokens, last round:\n\n{markdown(curves)}"
    if targets:
        md += f"\n\nAccuracy by target, last round:\n\n{markdown(targets)}"
    seeds = ", ".join(str(s) for s in verdict["seeds"])
    intro = (
        f"Task `{cfg.task.name}`, {first['backtrack'][0]['n_problems']} held-out problems, "
        f"seed(s) {seeds}; round 0 is the starting model; each arm is read at the decoding "
        f"setting named beside it. Config hash `{cfg.hash}`."
    )
    sentence = verdict.get("sentence") or ""
    intro += gate_note(verdict.get("gates") or [])
    head = "\n\n".join(x for x in ("# Halluc run report", intro, sentence) if x)
    write_text(layout.report_md, f"{head}\n\n{md}\n")
    verdict_html = f"<p class='verdict'>{html.escape(sentence)}</p>" if sentence else ""
    doc = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Halluc run report</title>"
        f"<style>{_CSS}</style></head><body><h1>Halluc run report</h1>{verdict_html}"
        f"<p>{html.escape(intro)}</p>{_html_table(summary_rows(verdict), 'comparison')}"
        f"{_html_table(others, 'arms') if len(others) > 1 else ''}"
        f"<h2>Charts</h2><div class='charts'>{charts.draw(verdict, runs)}</div>"
        f"{_html_table(curves, 'curves') if curves else ''}"
        f"{_html_table(targets, 'targets') if targets else ''}"
        f"<h2>Every figure</h2>{_html_table(figure_rows(runs), 'figures')}"
        f"{_html_table(detector_rows(runs), 'detector')}"
        f"<h2>Traces</h2>{traces.traces(traced, cfg, len(first['backtrack']) - 1)}</body></html>"
    )
    write_text(layout.report_html, doc)
    return md


def gate_note(gates: list[dict[str, Any]]) -> str:
    """What the keep-best gate (`train.keep_best`) decided, for the report's introduction."""
    if not gates:
        return ""
    out = [
        f"seed {g['seed']}, {g['arm']} round {g['round']} ({pct(g['validation'])} against "
        f"{pct(g['held_validation'])})"
        for g in gates
        if not g["kept"]
    ]
    said = "; ".join(out) if out else "none"
    return (
        f" Keep-best gate: of {len(gates)} rounds, these were rejected (validation accuracy "
        f"below the model kept, whose figures stand for the round): {said}."
    )


# --- tables ----------------------------------------------------------------------------------


def _acc(arm: dict[str, Any] | None) -> str:
    if not arm:
        return "–"
    ci = arm.get("ci95")
    seeds = arm.get("per_seed") or []
    tail = f" ({pct(ci[0])}–{pct(ci[1])})" if ci else ""
    if len(seeds) > 1:
        tail += " [" + " · ".join(pct(s) for s in seeds) + "]"
    return f"{pct(arm.get('accuracy'))}{tail}"


def summary_rows(verdict: dict[str, Any]) -> list[list[str]]:
    """The comparison table: per round both arms' accuracy (95% interval, per-seed values in
    brackets), their difference with its paired interval, the best-of-N control and the stronger
    of it and the baseline (`verdict.strongest`), the share of erased steps that were wrong
    beside chance, and mean detector AUC."""
    rows = [
        [
            "round",
            "backtrack acc. (setting)",
            "baseline acc. (best setting)",
            "difference (95% CI)",
            "best-of-N acc.",
            "backtrack − best-of-N",
            "backtrack − the stronger of baseline and best-of-N (per seed, on test)",
            "majority-vote acc.",
            "steps erased: wrong (chance)",
            "first error erased: precision (chance) / recall (chance)",
            "detector AUC: backtrack / baseline",
            "detector lift over trivial scores, within problem",
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
                pts(r.get("difference")),
                _acc(bon),
                pts((bon or {}).get("difference")),
                pts((r.get("strongest") or {}).get("difference")),
                _acc(r.get("majority")),
                f"{pct(prec.get('step_erase_precision'))} ({pct(prec.get('chance_precision'))})",
                f"{pct(prec.get('first_error_precision'))} "
                f"({pct(prec.get('chance_first_error_precision'))}) / "
                f"{pct(prec.get('first_error_recall'))} "
                f"({pct(prec.get('chance_first_error_recall'))})",
                f"{num(auc.get('backtrack'), 3)} / {num(auc.get('baseline'), 3)}",
                num(r.get("detector_lift"), 3),
            ]
        )
    return rows


def other_arm_rows(verdict: dict[str, Any]) -> list[list[str]]:
    """The arms beyond backtrack and baseline (dpo), per round: accuracy at the setting chosen on
    validation problems, the paired difference with the baseline at its best, the share of erased
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
                    pts(a.get("difference")),
                    f"{pct(prec.get('step_erase_precision'))} "
                    f"({pct(prec.get('chance_precision'))})",
                    num(a.get("detector_auc"), 3),
                ]
            )
    return rows


# fmt: off
FIGURES = [
    "temperature", "samples_per_problem", "samples", "accuracy", "ci95", "pass_at_k",
    "backtrack_rate", "erase_events", "erase_precision", "erased_steps", "step_erase_precision",
    "chance_precision", "first_error_precision", "chance_first_error_precision",
    "first_error_recall", "chance_first_error_recall", "repair_rate", "over_erasure",
    "made_error", "recovery", "tokens_per_solved", "generated_tokens",
    "truncation_rate", "per_problem", "tokens_per_problem", "n", "mean_n",
]
# fmt: on


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


CURVE_NAMES = {"best_of_n": "best-of-N", "majority": "majority vote",
               "value_best_of_n": "value best-of-N", "oracle": "oracle pass@N"}  # fmt: skip


def curve_rows(runs: dict[str, Evals]) -> list[list[str]]:
    """Accuracy against generated tokens in the last round (round 0: the start model): per arm
    and selector, the mean over seeds at each N with the tokens per problem it spent."""
    seeds = list(runs.values())
    last = len(next(iter(seeds[0].values()))) - 1
    arms = {"start": [next(iter(s.values()))[0] for s in seeds]}
    arms |= {a: [s[a][last] for s in seeds] for a in seeds[0]} if last else {}
    curves = {a: [e["curve"]["curve"] for e in es] for a, es in arms.items()
              if all(e.get("curve") for e in es)}  # fmt: skip
    if not curves:
        return []
    ns = min(len(c) for cs in curves.values() for c in cs)
    head = next(iter(curves.values()))[0]
    rows = [["arm", "setting", "selector", *(f"N={head[i]['n']}" for i in range(ns))]]
    for arm, cs in curves.items():
        setting = arms[arm][0]["curve"].get("setting", "")
        for key, name in CURVE_NAMES.items():
            if not all(key in c[i] for c in cs for i in range(ns)):
                continue
            cells = []
            for i in range(ns):
                acc = sum(c[i][key]["accuracy"] for c in cs) / len(cs)
                tok = sum(c[i]["tokens_per_problem"] for c in cs) / len(cs)
                cells.append(f"{pct(acc)} ({tok:.0f} tok)")
            rows.append([arm, setting, name, *cells])
    return rows


def target_rows(verdict: dict[str, Any]) -> list[list[str]]:
    """Accuracy by target in the last round (Countdown), each arm at each seed's chosen setting,
    mean over seeds; empty when the evaluations hold no per-target figures."""
    runs: dict[str, Evals] = verdict["per_seed_evals"]
    last = verdict["rounds"][-1]
    by: dict[str, dict[str, list[float]]] = {}
    for i, evals in enumerate(runs.values()):
        for arm, es in evals.items():
            setting = _chosen(last, arm, i) or "greedy"
            figures = es[-1]["settings"].get(setting, {}).get("by_target")
            for t, m in (figures or {}).items():
                by.setdefault(arm, {}).setdefault(t, []).append(m["accuracy"])
    if not by:
        return []
    targets = sorted({t for d in by.values() for t in d}, key=int)
    rows = [["target", *by]]
    for t in targets:
        rows.append([t, *(pct(sum(v) / len(v)) if (v := by[a].get(t)) else "–" for a in by)])
    return rows


def _chosen(rnd: dict[str, Any], arm: str, i: int) -> str | None:
    chosen = (rnd.get("chosen") or {}).get(arm) or ((rnd.get("arms") or {}).get(arm) or {}).get(
        "chosen"
    )
    if chosen:
        return str(chosen[i])
    setting = (rnd.get(arm) or {}).get("setting")
    return setting if setting and " / " not in setting else None


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
    + traces.FILTERS
)
