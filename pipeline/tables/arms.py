"""`halluc table arms`: every arm of a finished `halluc run` (issue 15), per round, each at the
decoding setting chosen on validation problems, paired per held-out problem against the baseline
at its best decoding and against the backtrack arm, with what each arm cost.

    halluc table arms --run runs/arith-arms

RUN is the run directory (`run.out_dir`, with `verdict.json`, and `seed-S/` sub-runs when it has
`run.seeds`). Per round and arm: accuracy at its chosen setting (mean over seeds, and per seed); its
difference with the baseline, with the backtrack arm and with the start model (bootstrap/, each seed
at its chosen setting), as 95% intervals that resample seeds, then problems within each
(`seeds_then_problems`: the same seeds and problems on both sides); backtrack rate, erased steps
that were wrong against chance, detector ROC-AUC, tokens per solved problem (at the chosen setting);
and the compute of its training stage summed over seeds: optimizer steps, loss-bearing tokens,
tokens generated in search and in training (the rl arms sample their own streams). Then the
baseline's best-of-N at the backtrack arm's generated tokens, against the baseline. Prints Markdown
and writes RUN/arms.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.arms import ARMS
from pipeline.files import read_json
from pipeline.measure.stats import seeds_then_problems as paired
from pipeline.measure.verdict import choose
from pipeline.tables.common import diff, held_dir, mean_all, num, pct, read_verdict, run_dir


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, type=run_dir, help="a finished run's out_dir")


def chosen(run: Path, seeds: list[int], where: str) -> list[dict[str, Any]] | None:
    """Per seed, the held-out figures in `where` (ARM/round-R, or bootstrap for the start
    model) at the setting chosen on validation problems (None when any seed lacks them), with the
    detector's AUC."""
    out = []
    for s in seeds:
        sub = run / f"seed-{s}"  # a run of one seed without run.seeds has no seed directory
        d = held_dir(sub if sub.exists() else run, where)
        if not (d / "eval.json").exists() or not (d / "tune.json").exists():
            return None
        held = read_json(d / "eval.json")
        name = choose(read_json(d / "tune.json"))
        auc = (held.get("detector") or {}).get("roc_auc")
        out.append(held["settings"][name] | {"setting": name, "auc": auc})
    return out


def compute(run: Path) -> dict[str, Any]:
    """Per round (1 = the models trained in round 0), each arm's figures over the seeds; the
    start model's as round 0."""
    verdict = read_verdict(run)
    seeds, costs = verdict["seeds"], verdict["compute"]
    start = chosen(run, seeds, "bootstrap")  # round 0: every arm is the start model
    rounds = []
    for r in range(len(verdict["rounds"]) - 1):
        figures: dict[str, Any] = {a.name: chosen(run, seeds, f"{a.name}/round-{r}") for a in ARMS}
        per = {a: [f["per_problem"] for f in fs] for a, fs in figures.items() if fs}
        arms = [
            _arm(arm, fs, per, start, [c[arm][r] for c in costs if arm in c])
            for arm, fs in figures.items()
            if fs
        ]
        best = verdict["rounds"][r + 1].get("best_of_n")
        rounds.append({"round": r + 1, "arms": arms, "best_of_n": best})
    side = _side(start) if start else None
    return {"run": str(run), "seeds": seeds, "start": side, "rounds": rounds}


def _side(fs: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy over the seeds, each at its chosen setting."""
    return {
        "accuracy": mean_all([f["accuracy"] for f in fs]),
        "settings": sorted({f["setting"] for f in fs}),
        "per_seed": [f["accuracy"] for f in fs],
    }


def _arm(
    arm: str,
    fs: list[dict[str, Any]],
    per: dict[str, list[Any]],
    start: list[dict[str, Any]] | None,
    cost: list[dict[str, Any]],
) -> dict[str, Any]:
    """One arm of one round: its figures, paired differences and compute (`cost`: per seed)."""
    return _side(fs) | {
        "arm": arm,
        "minus_baseline": None if arm == "baseline" else paired(per[arm], per["baseline"]),
        "minus_backtrack": None if arm == "backtrack" else paired(per[arm], per["backtrack"]),
        "minus_start": paired(per[arm], [f["per_problem"] for f in start]) if start else None,
        "backtrack_rate": mean_all([f.get("backtrack_rate") for f in fs]),
        "erased_wrong": mean_all([f.get("step_erase_precision") for f in fs]),
        "chance": mean_all([f.get("chance_precision") for f in fs]),
        "auc": mean_all([f["auc"] for f in fs]),
        "tokens_per_solved": mean_all([f.get("tokens_per_solved") for f in fs]),
        "optimizer_steps": sum(c.get("optimizer_steps", 0) for c in cost),
        "loss_tokens": sum(c.get("loss_tokens", 0) for c in cost),
        "generated": sum(
            (c.get("search_generated_tokens") or 0) + (c.get("generated_tokens") or 0) for c in cost
        ),
    }


def render(result: dict[str, Any], command: str = "") -> str:
    """The Markdown table (`command` is not part of it: RUN/arms.md is the table alone)."""
    lines = [
        f"Run `{result['run']}`, seeds {result['seeds']}; each arm at its setting chosen on "
        "validation problems.",
        "",
        "| round | arm | accuracy (setting) | per seed | − baseline | − backtrack | − start | "
        "backtrack rate | erased wrong (chance) | detector AUC | tokens/solved | opt. steps | "
        "loss tokens | generated (search + train) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    start = result["start"]
    if start:
        lines.append(
            f"| 0 | start model | {pct(start['accuracy'])} ({' / '.join(start['settings'])}) | "
            f"{' · '.join(pct(x) for x in start['per_seed'])} |" + " |" * 10
        )
    for rnd in result["rounds"]:
        lines += [_row(rnd["round"], a) for a in rnd["arms"]]
        best = rnd["best_of_n"]
        if best:
            n, acc = best["mean_n"], pct(best["accuracy"])
            lines.append(
                f"| {rnd['round']} | baseline best-of-N (N≈{n:.1f}) | {acc} "
                f"| {' · '.join(pct(x) for x in best['per_seed'])} | – | backtrack − it: "
                f"{diff(best['difference'])} | | | | | | | | |"
            )
    return "\n".join(lines) + "\n"


def _row(r: int, a: dict[str, Any]) -> str:
    cells = [
        str(r),
        a["arm"],
        f"{pct(a['accuracy'])} ({' / '.join(a['settings'])})",
        " · ".join(pct(x) for x in a["per_seed"]),
        diff(a["minus_baseline"]),
        diff(a["minus_backtrack"]),
        diff(a["minus_start"]),
        pct(a["backtrack_rate"]),
        f"{pct(a['erased_wrong'])} ({pct(a['chance'])})",
        num(a["auc"], 3),
        num(a["tokens_per_solved"], 1),
        str(a["optimizer_steps"]),
        f"{a['loss_tokens']:,}",
        f"{a['generated']:,}",
    ]
    return "| " + " | ".join(cells) + " |"
