"""Every arm of a finished `halluc run` (issue 15): per round, each arm at the decoding setting
chosen on training problems, paired per held-out problem against the baseline at its best
decoding and against the backtrack arm, with what each arm cost.

    PYTHONPATH=. .venv/bin/python benchmarks/arms_table.py --run runs/arith-arms

RUN is the run directory (`run.out_dir`, with `verdict.json`, and `seed-S/` sub-runs when it
has `run.seeds`). Per round and arm: accuracy at its chosen setting (mean over seeds, and per
seed); its difference with the baseline, with the backtrack arm and with the start model
(bootstrap/, each seed at its chosen setting), as 95% paired intervals
(`stats.paired_bootstrap`: the same seeds and problems on both sides); backtrack rate, erased
steps that were wrong against chance, detector ROC-AUC, tokens per solved problem (at the chosen
setting); and the compute of its training stage summed over seeds: optimizer steps,
loss-bearing tokens, tokens generated in search and in training (the rl arms sample their own
streams). Then the baseline's best-of-N at the backtrack arm's generated tokens, against the
baseline. Prints Markdown and writes RUN/arms.md.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.arms import ARMS
from pipeline.files import write_text
from pipeline.layout import RunLayout
from pipeline.measure.stats import paired_bootstrap
from pipeline.measure.verdict import choose


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def pts(d: dict[str, Any]) -> str:
    lo, hi = (100 * x for x in d["ci95"])
    return f"{100 * d['mean']:+.1f} ({lo:+.1f} to {hi:+.1f})"


def num(x: float | None, digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def mean(xs: list[float | None]) -> float | None:
    return None if not xs or any(x is None for x in xs) else sum(xs) / len(xs)  # type: ignore[arg-type]


Where = Callable[[RunLayout], tuple[Path, Path]]  # a seed's (held-out, tuning) figures


def chosen(run: Path, seeds: list[int], where: Where) -> list[dict[str, Any]] | None:
    """Per seed, the held-out figures at `where` (a round of an arm, or the start model's) at
    the setting chosen on training problems (None when any seed lacks them), with the
    detector's AUC."""
    out = []
    for s in seeds:
        sub = RunLayout(run).seed(s)  # a run of one seed without run.seeds has no seed directory
        held_path, tune_path = where(RunLayout(sub if sub.exists() else run))
        if not held_path.exists() or not tune_path.exists():
            return None
        held = json.loads(held_path.read_text())
        name = choose(json.loads(tune_path.read_text()))
        auc = (held.get("detector") or {}).get("roc_auc")
        out.append(held["settings"][name] | {"setting": name, "auc": auc})
    return out


def table(run: Path) -> str:
    verdict = json.loads(RunLayout(run).verdict.read_text())
    seeds, compute = verdict["seeds"], verdict["compute"]
    rounds = len(verdict["rounds"]) - 1
    lines = [
        f"Run `{run}`, seeds {seeds}; each arm at its setting chosen on training problems.",
        "",
        "| round | arm | accuracy (setting) | per seed | − baseline | − backtrack | − start | "
        "backtrack rate | erased wrong (chance) | detector AUC | tokens/solved | opt. steps | "
        "loss tokens | generated (search + train) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    # round 0: every arm is the start model (the bootstrap's: this reads no model.path)
    start = chosen(run, seeds, lambda lay: (lay.start_eval, lay.start_tune))
    if start:
        lines.append(
            f"| 0 | start model | {pct(mean([f['accuracy'] for f in start]))} "
            f"({' / '.join(sorted({f['setting'] for f in start}))}) | "
            f"{' · '.join(pct(f['accuracy']) for f in start)} |" + " |" * 10
        )
    for r in range(rounds):
        figures = {a.name: chosen(run, seeds, _round(r, a.name)) for a in ARMS}
        per = {a: [f["per_problem"] for f in fs] for a, fs in figures.items() if fs}
        for arm, fs in figures.items():
            if not fs:
                continue
            cost = [c[arm][r] for c in compute if arm in c]
            generated = sum(
                (c.get("search_generated_tokens") or 0) + (c.get("generated_tokens") or 0)
                for c in cost
            )
            settings = sorted({f["setting"] for f in fs})
            cells = [
                str(r + 1),
                arm,
                f"{pct(mean([f['accuracy'] for f in fs]))} ({' / '.join(settings)})",
                " · ".join(pct(f["accuracy"]) for f in fs),
                "–" if arm == "baseline" else pts(paired_bootstrap(per[arm], per["baseline"])),
                "–" if arm == "backtrack" else pts(paired_bootstrap(per[arm], per["backtrack"])),
                pts(paired_bootstrap(per[arm], [f["per_problem"] for f in start]))
                if start
                else "–",
                pct(mean([f.get("backtrack_rate") for f in fs])),
                f"{pct(mean([f.get('step_erase_precision') for f in fs]))} "
                f"({pct(mean([f.get('chance_precision') for f in fs]))})",
                num(mean([f["auc"] for f in fs]), 3),
                num(mean([f.get("tokens_per_solved") for f in fs]), 1),
                str(sum(c.get("optimizer_steps", 0) for c in cost)),
                f"{sum(c.get('loss_tokens', 0) for c in cost):,}",
                f"{generated:,}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        best = verdict["rounds"][r + 1].get("best_of_n")
        if best:
            n, acc = best["mean_n"], pct(best["accuracy"])
            lines.append(
                f"| {r + 1} | baseline best-of-N (N≈{n:.1f}) | {acc} "
                f"| {' · '.join(pct(x) for x in best['per_seed'])} | – | backtrack − it: "
                f"{pts(best['difference'])} | | | | | | | | |"
            )
    return "\n".join(lines) + "\n"


def _round(r: int, arm: str) -> Where:
    return lambda lay: (lay.round(r, arm).eval, lay.round(r, arm).tune)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, type=Path)
    args = ap.parse_args()
    text = table(args.run)
    write_text(args.run / "arms.md", text)
    print(text)


if __name__ == "__main__":
    main()
