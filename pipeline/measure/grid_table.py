"""The table of a finished grid (`halluc grid`): one line per row and round, the verdict's columns
(`report.summary_rows`) with the backtrack arm's erasing at T=1.0, each arm's accuracy on
validation problems (where choices are made) and each arm's compute; `grid.json` holds the same
figures. Where the keep-best gate (`train.keep_best`) rejected a round, the figures are those of
the model the arm kept."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from pipeline.arms import REQUIRED
from pipeline.files import read_json
from pipeline.layout import RunLayout
from pipeline.measure import report
from pipeline.measure.settings import settings_of
from pipeline.measure.stats import fmt, pct
from pipeline.measure.verdict import choose, precision

SAMPLED = 1.0  # the temperature the backtrack rate and erase precision are read at (greedy
# rarely erases)


def record(row: Any, seeds: list[int]) -> dict[str, Any]:
    """A finished row (`grid.Row`): its name, overrides and verdict sentence, and every round of its
    verdict.json (`rounds`; the last also as `last`), each round with `at_t1`, the backtrack
    arm's backtrack rate, share of erased finished steps that were wrong and chance's share at
    T=1.0 (mean over seeds; None where a seed lacks them), and `compute`, each arm's loss-bearing
    tokens and optimizer steps in that round's training (mean per seed; None in round 0)."""
    verdict = read_json(RunLayout.of(row.cfg).verdict)
    layouts = [RunLayout(RunLayout.of(row.cfg).seed(s)) for s in seeds]
    rounds = [
        r
        | {
            "at_t1": _sampled(layouts, r["round"]),
            "compute": _compute(verdict, r["round"]),
            "validation": _validation(layouts, r["round"]),
        }
        for r in verdict["rounds"]
    ]
    return {
        "name": row.name,
        "overrides": row.overrides,
        "out_dir": str(row.root),
        "config_hash": row.cfg.hash,
        "sentence": verdict["sentence"],
        "last": rounds[-1],
        "rounds": rounds,
    }


def _sampled(layouts: list[RunLayout], i: int) -> dict[str, float | None]:
    """The backtrack arm's erase figures at T=1.0 in verdict round `i` (round 0: the start model's
    eval, round i: the eval after training round i-1), mean over the seeds' `layouts`."""
    held = [lay.kept(i - 1, "backtrack") if i else None for lay in layouts]  # keep_best
    paths = [k.eval if k else lay.start_eval for k, lay in zip(held, layouts, strict=True)]
    evals = [read_json(p) for p in paths]
    names = [_sampled_setting(e) for e in evals]
    if None in names:  # T=1.0 not in eval.temperatures
        return dict.fromkeys(("step_erase_precision", "chance_precision", "backtrack_rate"))
    return precision(evals, [n for n in names if n is not None])


def _validation(layouts: list[RunLayout], i: int) -> dict[str, float]:
    """Each arm's accuracy on validation problems at its chosen setting in verdict round `i`
    (what choices are made on), mean over the seeds' `layouts`."""
    out = {}
    for arm in REQUIRED:
        held = [lay.kept(i - 1, arm) if i else None for lay in layouts]
        tunes = [
            read_json(k.tune if k else lay.start_tune) for k, lay in zip(held, layouts, strict=True)
        ]
        out[arm] = sum(t["settings"][choose(t)]["accuracy"] for t in tunes) / len(tunes)
    return out


def _sampled_setting(result: dict[str, Any]) -> str | None:
    """The name of the evaluation's setting at temperature `SAMPLED` with the backspace allowed
    (None when the sweep has none)."""
    found = settings_of(result).items()
    return next((k for k, s in found if s.temperature == SAMPLED and not s.backspace_banned), None)


def _compute(verdict: dict[str, Any], i: int) -> dict[str, dict[str, float | None]] | None:
    """Each arm's training in verdict round `i` (verdict.json's compute, per seed, arm and round
    trained), mean per seed."""
    per_seed = verdict.get("compute") or []
    if i == 0 or not per_seed:
        return None
    out: dict[str, dict[str, float | None]] = {}
    for arm in REQUIRED:
        figures = [seed[arm][i - 1] for seed in per_seed]
        out[arm] = {}
        for key in ("loss_tokens", "optimizer_steps"):
            values = [f.get(key) for f in figures]
            out[arm][key] = None if None in values else sum(values) / len(values)
    return out


# the verdict's columns (report.summary_rows) that the grid leaves out: it reads erasing at T=1.0
LEFT_OUT = (
    "majority-vote acc.",
    "steps erased: wrong (chance)",
    "first error erased: precision (chance) / recall (chance)",
)


def table_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    """One line per row and round: the verdict's columns as `report.summary_rows` formats them
    (but `LEFT_OUT`), then the backtrack arm at T=1.0 and each arm's compute."""
    head = report.summary_rows({"rounds": []})[0]
    picked = [j for j, column in enumerate(head) if column not in LEFT_OUT]
    out = [
        [
            "row",
            *(head[j] for j in picked),
            f"backtrack rate at T={SAMPLED}",
            f"{LEFT_OUT[1]} at T={SAMPLED}",
            "validation acc.: backtrack / baseline",
            "loss tokens: backtrack / baseline",
            "optimizer steps: backtrack / baseline",
        ]
    ]
    for rec in records:
        summary = report.summary_rows({"rounds": rec["rounds"]})
        for r, cells in zip(rec["rounds"], summary[1:], strict=True):
            t1, compute = r["at_t1"], r["compute"] or {}
            erased = fmt("step_erase_precision", t1["step_erase_precision"])
            chance = fmt("chance_precision", t1["chance_precision"])
            out.append(
                [
                    rec["name"],
                    *(cells[j] for j in picked),
                    fmt("backtrack_rate", t1["backtrack_rate"]),
                    f"{erased} ({chance})",
                    " / ".join(pct(r["validation"][arm]) for arm in REQUIRED),
                    _per_arm(compute, "loss_tokens"),
                    _per_arm(compute, "optimizer_steps"),
                ]
            )
    return out


def _per_arm(compute: dict[str, dict[str, float | None]], key: str) -> str:
    values = [compute.get(arm, {}).get(key) for arm in REQUIRED]
    whole = [int(v) if v is not None and float(v).is_integer() else v for v in values]
    return " / ".join(fmt(key, v) for v in whole)


def command_line(
    grid: str, preset: str, overrides: list[str], seeds: list[int], only: list[str] | None = None
) -> str:
    """The `halluc grid` command that makes this grid (from the directory it ran in)."""
    args = ["halluc", "grid", "--preset", preset, "--grid", grid]
    args += ["--seeds", ",".join(str(s) for s in seeds)]
    args += ["--rows", ",".join(only)] if only is not None else []
    for item in overrides:
        args += ["--set", item]
    return shlex.join(args)


def sets(overrides: dict[str, Any]) -> str:
    items = (f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items())
    return ", ".join(f"`{x}`" for x in items) or "no overrides"


def page(command: str, seeds: list[int], records: list[dict[str, Any]], table: str) -> str:
    rows = "\n".join(
        f"- `{r['name']}`: {sets(r['overrides'])} ({RunLayout(Path(r['out_dir'])).report_html})"
        for r in records
    )
    intro = (
        f"Seeds {', '.join(str(s) for s in seeds)}. Round 0 is the starting model. Each arm is "
        "read at the decoding setting chosen on validation problems (named beside it); the "
        "difference and backtrack − best-of-N are paired over problems, with their 95% interval. "
        f"The backtrack rate and erased steps at T={SAMPLED} are the backtrack arm's, mean over "
        "seeds; loss tokens and optimizer steps are each arm's training in that round, mean per "
        "seed."
    )
    return (
        f"# Halluc grid\n\nMade by (from the directory it ran in):\n\n```bash\n{command}\n```\n\n"
        f"{intro}\n\n{rows}\n\n{table}\n"
    )
