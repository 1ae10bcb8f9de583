"""The report's trace viewer: traces of the last round's backtrack selection, token by token (the
prompt grey, erased tokens struck through, backspaces ⌫), behind filters by class that are pure
CSS (`FILTERS`: no script).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow.parquet as pq

from pipeline.config import Config
from pipeline.layout import RunLayout

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


def traces(layout: RunLayout, cfg: Config, rounds: int, per_class: int = 4) -> str:
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


FILTERS = "".join(  # `#tf-C:checked ~ .traces` hides the classes but C
    f"#tf-{c}:checked~.traces .trace:not([data-class='{c}']){{display:none}}"
    for c in TRACE_CLASSES
    if c != "all"
)
