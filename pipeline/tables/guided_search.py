"""`halluc table guided-search`: backspace-guided search on a finished run: the backtrack arm's
model decoding with `eval.bksp_search=m` (erase at a step end, m candidates, keep the likeliest),
against the same model's own sampling, the baseline arm at its best decoding, and the baseline's
best-of-N at the guided search's generated tokens per problem (candidates thrown away included).

    halluc table guided-search --run runs/arith-tiny-verdict [--m 2,4] [--round 1] \\
        [--seeds 0,1] [--set K=V ...]

For each seed directory `run/seed-S` (with its saved config) it takes both arms' models of
`--round` (the last by default). Guided search and own sampling are evaluated at greedy and T=1.0
on the held-out problems (nothing is tuned: every m is reported). The baseline at its best
decoding is read from the round's own figures (its setting chosen on validation problems by the
run); best-of-N samples the baseline at T=1.0 up to the guided search's tokens at T=1.0, per
problem (`pipeline.measure.evaluation.controls`). Differences are paired per problem over seeds.

Writes `run/guided.md` (table and command) and `run/guided.json` (the summary and the
command); figures are cached per seed in
`run/seed-S/guided/`, so a killed sweep resumes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import load_config
from pipeline.files import read_json, write_json
from pipeline.layout import RunLayout
from pipeline.loading import task_from_config
from pipeline.measure.budget import controls
from pipeline.measure.evaluation import evaluate_to
from pipeline.measure.settings import Setting
from pipeline.measure.stats import seeds_then_problems as paired
from pipeline.measure.verdict import choose
from pipeline.tables.common import (
    TableError,
    add_round,
    add_sets,
    config_of,
    diff,
    ints,
    mean_known,
    pct,
    run_dir,
    seed_dirs,
)

SAMPLED = "T=1.0"


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, type=run_dir, help="a finished run's out_dir")
    add_round(parser, "models are compared")
    parser.add_argument(
        "--m", type=ints, default=[4], metavar="M,M,...", help="candidates per erase (default: 4)"
    )
    parser.add_argument(
        "--seeds", type=ints, default=None, metavar="S,S,...", help="default: every seed-S"
    )
    add_sets(parser)


def compute(
    run: Path,
    round_: int | None = None,
    m: Sequence[int] = (4,),
    seeds: Sequence[int] | None = None,
    sets: Sequence[str] = (),
) -> dict[str, Any]:
    """Every seed's evaluations (cached under it), summarized per decoding; `n_seeds`: how many."""
    dirs = seed_dirs(run, list(seeds) if seeds else None)
    per_seed = [sweep_seed(d, list(sets), list(m), round_) for d in dirs]
    return summarize(per_seed, list(m)) | {"n_seeds": len(per_seed)}


def sweep_seed(
    seed_dir: Path, sets: list[str], ms: list[int], round_: int | None
) -> dict[str, Any]:
    """One seed's figures: own sampling and guided search per m (backtrack arm), the baseline at
    its chosen setting, and best-of-N at each guided search's tokens (cached under the seed)."""
    preset = config_of(seed_dir)
    base = ["eval.banned=false", "eval.temperatures=[1.0]", *sets]
    cfg = load_config(preset, base)
    task = task_from_config(cfg.task)
    layout = RunLayout.of(cfg)
    r = round_ if round_ is not None else cfg.run.rounds - 1
    bt, bl = layout.round(r, "backtrack"), layout.round(r, "baseline")
    for path in (bt.model, bl.model, bl.eval, bl.tune):
        if not path.exists():
            raise TableError(
                f"{seed_dir}: round {r} has no {path}; give --round of a finished round, or "
                "finish the run"
            )
    test = task.problems("test", cfg.eval.n_problems)
    out = seed_dir / "guided"
    own = evaluate_to(out / "own.json", bt.model, task, test, cfg)
    best = choose(read_json(bl.tune))
    baseline = dict(read_json(bl.eval))["settings"][best]
    per_m: dict[str, Any] = {}
    for m in ms:
        g = evaluate_to(
            out / f"m{m}.json",
            bt.model,
            task,
            test,
            load_config(preset, [*base, f"eval.bksp_search={m}"]),
        )
        path = out / f"best-of-n-m{m}.json"
        if not path.exists():
            budget = g["settings"][SAMPLED]["tokens_per_problem"]
            write_json(path, controls(bl.model, task, test, cfg, Setting(1.0), budget))
        per_m[str(m)] = {"guided": g, "best_of_n": dict(read_json(path))["best_of_n"]}
    return {"own": own, "baseline": baseline | {"setting": best}, "m": per_m}


def summarize(seeds: list[dict[str, Any]], ms: list[int]) -> dict[str, Any]:
    """The baseline's accuracy per seed, then per decoding (greedy, T=1.0) and row (own
    sampling, guided at each m): means over seeds and paired differences."""

    def pp(x: dict[str, Any]) -> list[float]:
        return list(x["per_problem"])

    out: dict[str, Any] = {
        "baseline": {
            "setting": [s["baseline"]["setting"] for s in seeds],
            "accuracy": [s["baseline"]["accuracy"] for s in seeds],
        }
    }
    for name in ("greedy", SAMPLED):
        own = [s["own"]["settings"][name] for s in seeds]
        rows = {"own": _figures(own)}
        for m in ms:
            g = [s["m"][str(m)]["guided"]["settings"][name] for s in seeds]
            bon = [s["m"][str(m)]["best_of_n"] for s in seeds]
            row = _figures(g) | {
                "minus_own": paired([pp(x) for x in g], [pp(x) for x in own]),
                "minus_baseline": paired([pp(x) for x in g], [pp(s["baseline"]) for s in seeds]),
            }
            if name == SAMPLED:
                row |= {
                    "best_of_n": mean_known([b["accuracy"] for b in bon]),
                    "best_of_n_mean_n": mean_known([b["mean_n"] for b in bon]),
                    "minus_best_of_n": paired([pp(x) for x in g], [pp(b) for b in bon]),
                }
            rows[f"m={m}"] = row
        out[name] = rows
    return out


def _figures(settings: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("accuracy", "backtrack_rate", "step_erase_precision", "chance_precision")
    out = {k: mean_known([s[k] for s in settings]) for k in keys}
    tokens = [sum(s["tokens_per_problem"]) / len(s["tokens_per_problem"]) for s in settings]
    return out | {"tokens_per_problem": mean_known(tokens)}


def render(summary: dict[str, Any], command: str) -> str:
    b, n_seeds = summary["baseline"], summary["n_seeds"]
    lines = [
        f"Command: `{command}` ({n_seeds} seed{'s' if n_seeds > 1 else ''})",
        "",
        f"Baseline at its best decoding (chosen on validation problems: "
        f"{', '.join(b['setting'])}): {pct(mean_known(b['accuracy']))}.",
        "",
        "| setting | decoding | accuracy | − own sampling | − baseline (best) | best-of-N at "
        "equal tokens (mean N) | − best-of-N | backtrack rate | erased steps wrong (chance) | "
        "tokens per problem |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("greedy", SAMPLED):
        for row_name, r in summary[name].items():
            bon = (
                f"{pct(r['best_of_n'])} ({r['best_of_n_mean_n']:.1f})" if "best_of_n" in r else "–"
            )
            lines.append(
                f"| {name} | {'own sampling' if row_name == 'own' else 'guided, ' + row_name} | "
                f"{pct(r['accuracy'])} | {diff(r.get('minus_own'))} | "
                f"{diff(r.get('minus_baseline'))} | {bon} | {diff(r.get('minus_best_of_n'))} | "
                f"{pct(r['backtrack_rate'])} | {pct(r['step_erase_precision'])} "
                f"({pct(r['chance_precision'])}) | {r['tokens_per_problem']:.1f} |"
            )
    return "\n".join(lines) + "\n"
