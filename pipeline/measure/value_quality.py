"""How good are the process labels, and the value model learned from them (issue 16, item 2)?

The search's `steps` rows carry two labels of a (prefix, step): its Monte Carlo value `mc` (the
share of the policy's rollouts from there that ended correct) and, where the task has an exact
step checker, `exact_label` (1 when neither the prefix nor the step holds a wrong step). The exact
label is the truth a process label should recover; the MC value is what OmegaPRM can afford.
These figures say how well each recovers it, on the rows of the problems `halluc value` held out.

Definitions (every figure None where its rows are missing or hold one class only):

- `roc_auc`: `detector.roc_auc` (the Mann-Whitney probability that a right step outscores
  a wrong one, ties counting half).
- `accuracy`, `threshold`: the best accuracy of the rule "right when score >= t" over every
  distinct score t (and a t above all scores: every step called wrong), with the lowest t that
  reaches it. Chosen on the rows it is reported on, so an upper bound for that rule.
- `hard_accuracy` (MC values only): the accuracy of OmegaPRM's hard label, right when mc > 0.
- `ece`: expected calibration error in `bins` equal-width bins of the prediction over [0, 1] (the
  last bin closed): the sum over bins of (rows in it / rows) * |mean prediction - mean target|.
  Targets may be soft (MC values) or 0/1 (exact labels). `reliability`: the bins themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.measure.detector import roc_auc

Scores = Sequence[float] | np.ndarray  # a 1-d list or array of floats


def best_accuracy(scores: Scores, labels: Sequence[int] | np.ndarray) -> tuple[float, float] | None:
    """(accuracy, threshold) of the best rule "positive when score >= threshold"; the threshold
    is inf when calling every row negative is best. None without rows."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if not len(s):
        return None
    order = np.argsort(s, kind="mergesort")
    s, y = s[order], y[order]
    values = np.unique(s)  # ascending; "score >= values[i]" for each, then nothing positive
    below = np.searchsorted(s, values, side="left")  # rows under each threshold
    pos_below = np.r_[0, np.cumsum(y)][below]
    positives = int(y.sum())
    correct = np.r_[positives - pos_below + (below - pos_below), len(y) - positives]
    best = int(np.argmax(correct))  # the first maximum: the lowest threshold
    threshold = float(values[best]) if best < len(values) else float("inf")
    return float(correct[best] / len(s)), threshold


def reliability(preds: Scores, targets: Scores, bins: int = 10) -> list[dict[str, float]]:
    """Per equal-width bin of the prediction over [0, 1] (the last closed): lo, hi, mean_pred,
    mean_target, n. Empty bins are left out."""
    p = np.asarray(preds, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    index = np.clip(np.floor(p * bins).astype(np.int64), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            rows.append(
                {
                    "lo": b / bins,
                    "hi": (b + 1) / bins,
                    "mean_pred": float(p[inside].mean()),
                    "mean_target": float(t[inside].mean()),
                    "n": int(inside.sum()),
                }
            )
    return rows


def ece(preds: Scores, targets: Scores, bins: int = 10) -> float | None:
    """Expected calibration error of `preds` against `targets` (soft or 0/1); None without
    rows."""
    table = reliability(preds, targets, bins)
    n = sum(r["n"] for r in table)
    if not n:
        return None
    return float(sum(r["n"] / n * abs(r["mean_pred"] - r["mean_target"]) for r in table))


def ranking(scores: Scores, labels: Sequence[int] | np.ndarray) -> dict[str, Any]:
    """n, positives, ROC-AUC and the best-threshold accuracy of `scores` against 0/1 labels."""
    best = best_accuracy(scores, labels)
    return {
        "n": len(labels),
        "positives": int(sum(labels)),
        "roc_auc": roc_auc(list(scores), list(labels)) if len(labels) else None,
        "accuracy": best[0] if best else None,
        "threshold": best[1] if best else None,
    }


def label_quality(
    mc: Sequence[float],
    exact: Sequence[bool | None],
    held_out: Sequence[bool],
    preds: Sequence[float],
    bins: int = 10,
) -> dict[str, Any]:
    """Every figure of the module docstring. `mc`, `exact` (None: no exact label) and `held_out`
    are per row of the whole table; `preds` are the value model's, one per held-out row in
    order."""
    mc_a = np.asarray(mc, dtype=np.float64)
    val = np.asarray(held_out, dtype=bool)
    has = np.array([e is not None for e in exact], dtype=bool)
    y = np.array([bool(e) for e in exact], dtype=np.int64)
    p = np.asarray(preds, dtype=np.float64)
    if len(p) != int(val.sum()):
        raise ValueError(f"{len(p)} predictions for {int(val.sum())} held-out rows")
    v_has = has[val]  # which held-out rows have an exact label
    y_val, mc_val = y[val][v_has], mc_a[val][v_has]
    mc_all = {**ranking(mc_a[has], y[has]), "hard_accuracy": _hard(mc_a[has], y[has])}
    mc_held = {**ranking(mc_val, y_val), "hard_accuracy": _hard(mc_val, y_val)}
    return {
        "bins": bins,
        "rows": {
            "all": len(mc_a),
            "held_out": int(val.sum()),
            "exact_all": int(has.sum()),
            "exact_held_out": int(v_has.sum()),
        },
        "mc_vs_exact": {"all": mc_all, "held_out": mc_held},
        "model_vs_exact": ranking(p[v_has], y_val),
        "calibration": {
            "model_vs_mc": ece(p, mc_a[val], bins),
            "model_vs_exact": ece(p[v_has], y_val, bins),
            "mc_vs_exact": ece(mc_val, y_val, bins),
        },
        "reliability": {
            "model_vs_mc": reliability(p, mc_a[val], bins),
            "model_vs_exact": reliability(p[v_has], y_val, bins),
        },
    }


def _hard(mc: Any, y: Any) -> float | None:
    return float(((mc > 0).astype(np.int64) == y).mean()) if len(y) else None


def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def markdown(q: dict[str, Any]) -> str:
    """The figures as one Markdown table, with what each row is."""
    c, r = q["calibration"], q["rows"]
    lines = [
        "| labels, scored against the exact step checker | rows (right) | ROC-AUC | "
        "accuracy at best threshold (threshold) | ECE vs exact | ECE vs MC |",
        "|---|---|---|---|---|---|",
    ]
    rows = [
        ("MC values, all rows", q["mc_vs_exact"]["all"], None, None),
        ("MC values, held-out rows", q["mc_vs_exact"]["held_out"], c["mc_vs_exact"], None),
        ("value model, held-out rows", q["model_vs_exact"], c["model_vs_exact"], c["model_vs_mc"]),
    ]
    for name, fig, vs_exact, vs_mc in rows:
        acc = f"{_f(fig['accuracy'])} ({_f(fig['threshold'])})"
        lines.append(
            f"| {name} | {fig['n']} ({fig['positives']}) | {_f(fig['roc_auc'])} | {acc} | "
            f"{_f(vs_exact)} | {_f(vs_mc)} |"
        )
    held = q["mc_vs_exact"]["held_out"]["hard_accuracy"]
    notes = [
        f"Rows: {r['all']} in all, {r['held_out']} held out; with an exact label: "
        f"{r['exact_all']} in all, {r['exact_held_out']} held out.",
        f"OmegaPRM's hard label (right when mc > 0) is right on {_pct(held)} of the held-out "
        "rows with an exact label.",
        f"ECE: expected calibration error in {q['bins']} equal-width bins of the prediction.",
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def card_section(meta: dict[str, Any], q: dict[str, Any], folder: str) -> str:
    """The dataset card's section on a value model released in `folder`: where its labels come
    from (`meta`: its value.json) and how good they are (`q`: its label_quality.json)."""
    labels = meta["labels"]
    models = ", ".join(f"`{m}`" for m in labels["models"])
    mc_all = q["mc_vs_exact"]["all"]
    measured = (
        f"Against the task's exact step checker, the MC values rank right steps above wrong ones "
        f"with ROC-AUC {_f(mc_all['roc_auc'])} over all {mc_all['n']:,} rows with an exact "
        f"label; OmegaPRM's hard label (mc > 0) is right on {_pct(mc_all['hard_accuracy'])} of "
        "them."
        if mc_all["n"]
        else "The task has no exact step checker, so the labels' accuracy is not measured."
    )
    return f"""## Value model

`{folder}/` is a process reward model trained on `steps` rows: an ordinary
`AutoModelForTokenClassification` checkpoint with one label, read at the last token of
prompt + steps; `sigmoid` of that logit is its value.

```python
import torch
from transformers import AutoModelForTokenClassification
model = AutoModelForTokenClassification.from_pretrained("{folder}").eval()
ids = torch.tensor([prefix_ids + step_ids])                # a `steps` row's token ids
value = torch.sigmoid(model(input_ids=ids).logits[0, -1, 0])
```

Where its labels come from: {labels["rows"]:,} `steps` rows of {labels["problems"]:,} training
problems, from search rounds {labels["rounds"]} by the policies {models}. A row's MC value is the
share of that policy's rollouts from the end of the step that ended correct; its exact label
(where the task has a step checker) says whether the prefix and the step hold no wrong step. The
model was trained on targets `{meta["targets"]}` ({meta["targets_meaning"]}) from `{meta["init"]}`,
head `{meta["head"]}`. {meta["split"]["val_problems"]:,} problems ({meta["split"]["val_rows"]:,}
rows) were held out of its training: the held-out rows below are theirs.

{measured}

{markdown(q)}"""
