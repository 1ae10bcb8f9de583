"""Backspace-guided search on a finished run: the backtrack arm's model decoding with
`eval.bksp_search=m` (erase at a step end, m candidates, keep the likeliest), against the same
model's own sampling, the baseline arm at its best decoding, and the baseline's best-of-N at the
guided search's generated tokens per problem (candidates thrown away included).

    .venv/bin/python benchmarks/guided_search.py --run runs/arith-tiny-verdict [--m 2,4] \\
        [--round 1] [--set K=V ...]

For each seed directory `run/seed-S` (with its saved config) it takes both arms' models of
`--round` (the last by default). Guided search and own sampling are evaluated at greedy and T=1.0
on the held-out problems (nothing is tuned: every m is reported). The baseline at its best
decoding is read from the round's own figures (its setting chosen on training problems by the
run); best-of-N samples the baseline at T=1.0 up to the guided search's tokens at T=1.0, per
problem (`pipeline.measure.evaluation.controls`). Differences are paired per problem over seeds.

Writes `run/guided.md` (table and command) and `run/guided.json`; figures are cached per seed in
`run/seed-S/guided/`, so a killed sweep resumes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from pipeline.config import load_config
from pipeline.files import read_json, write_json
from pipeline.layout import RunLayout
from pipeline.loading import task_from_config
from pipeline.measure.evaluation import controls, evaluate_to
from pipeline.measure.settings import Setting
from pipeline.measure.stats import paired_bootstrap
from pipeline.measure.verdict import choose

SAMPLED = "T=1.0"


def sweep_seed(seed_dir: Path, sets: list[str], ms: list[int], round_: int | None) -> dict:
    preset = str(RunLayout(seed_dir).config)
    base = ["eval.banned=false", "eval.temperatures=[1.0]", *sets]
    cfg = load_config(preset, base)
    task = task_from_config(cfg.task)
    layout = RunLayout.of(cfg)
    r = round_ if round_ is not None else cfg.run.rounds - 1
    bt, bl = layout.round(r, "backtrack"), layout.round(r, "baseline")
    for path in (bt.model, bl.model, bl.eval, bl.tune):
        if not path.exists():
            raise SystemExit(f"{seed_dir}: round {r} has no {path}")
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
                "minus_own": paired_bootstrap([pp(x) for x in g], [pp(x) for x in own]),
                "minus_baseline": paired_bootstrap(
                    [pp(x) for x in g], [pp(s["baseline"]) for s in seeds]
                ),
            }
            if name == SAMPLED:
                row |= {
                    "best_of_n": _mean([b["accuracy"] for b in bon]),
                    "best_of_n_mean_n": _mean([b["mean_n"] for b in bon]),
                    "minus_best_of_n": paired_bootstrap([pp(x) for x in g], [pp(b) for b in bon]),
                }
            rows[f"m={m}"] = row
        out[name] = rows
    return out


def _figures(settings: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("accuracy", "backtrack_rate", "step_erase_precision", "chance_precision")
    out = {k: _mean([s[k] for s in settings]) for k in keys}
    tokens = [sum(s["tokens_per_problem"]) / len(s["tokens_per_problem"]) for s in settings]
    return out | {"tokens_per_problem": _mean(tokens)}


def _mean(values: list[Any]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _diff(d: dict[str, Any] | None) -> str:
    if not d:
        return "–"
    lo, hi = d["ci95"]
    return f"{100 * d['mean']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f})"


def table(summary: dict[str, Any], command: str, n_seeds: int) -> str:
    b = summary["baseline"]
    lines = [
        f"Command: `{command}` ({n_seeds} seed{'s' if n_seeds > 1 else ''})",
        "",
        f"Baseline at its best decoding (chosen on training problems: "
        f"{', '.join(b['setting'])}): {_pct(_mean(b['accuracy']))}.",
        "",
        "| setting | decoding | accuracy | − own sampling | − baseline (best) | best-of-N at "
        "equal tokens (mean N) | − best-of-N | backtrack rate | erased steps wrong (chance) | "
        "tokens per problem |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("greedy", SAMPLED):
        for row_name, r in summary[name].items():
            bon = (
                f"{_pct(r['best_of_n'])} ({r['best_of_n_mean_n']:.1f})" if "best_of_n" in r else "–"
            )
            lines.append(
                f"| {name} | {'own sampling' if row_name == 'own' else 'guided, ' + row_name} | "
                f"{_pct(r['accuracy'])} | {_diff(r.get('minus_own'))} | "
                f"{_diff(r.get('minus_baseline'))} | {bon} | {_diff(r.get('minus_best_of_n'))} | "
                f"{_pct(r['backtrack_rate'])} | {_pct(r['step_erase_precision'])} "
                f"({_pct(r['chance_precision'])}) | {r['tokens_per_problem']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--round", type=int, default=None)
    ap.add_argument("--m", default="4")
    ap.add_argument("--seeds", default="", help="comma-separated seeds (default: every seed-S)")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    run = Path(args.run)
    ms = [int(m) for m in args.m.split(",")]
    if args.seeds:
        seed_dirs = [RunLayout(run).seed(int(s)) for s in args.seeds.split(",")]
    else:
        seed_dirs = RunLayout(run).seed_dirs() or [run]
    seeds = [sweep_seed(d, args.sets, ms, args.round) for d in seed_dirs]
    summary = summarize(seeds, ms)
    command = " ".join(shlex.quote(a) for a in ["benchmarks/guided_search.py", *sys.argv[1:]])
    text = table(summary, command, len(seeds))
    (run / "guided.md").write_text(text)
    (run / "guided.json").write_text(json.dumps(summary, indent=2))
    print(text)


if __name__ == "__main__":
    main()
