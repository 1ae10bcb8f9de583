"""Does the network know it erred, before and after the rounds? (issue 27, item 1)

    .venv/bin/python experiments/probe_rounds.py --preset countdown-tiny \
        --run runs/v2/countdown-rl1e-4 --seeds 0,1,2 [--out FILE.md] [--set KEY=VALUE ...]

For each seed of a finished several-seed `halluc run`, a `halluc probe` (`pipeline.stages.probe`,
cached in the seed's `probes/`) of its start model (round 0) and of its backtrack arm's last model
(after the last round). Then one table: per model and detector, the test ROC-AUC within problem
(a wrong and a right step of the same problem; pooled in brackets), the mean over seeds and each
seed's value; and the probe minus the step's mean token log-probability, per seed, with a 95%
interval resampling seeds (the probe keeps no per-point scores, so there is no problem level).
The probe's layer is chosen on validation problems, its figures read on test problems.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import load_config
from pipeline.layout import RunLayout
from pipeline.stages import probe

# name -> path in probe.json to a {pooled, within_problem, ...} block
DETECTORS = {
    "probe": ("probe", "detector"),
    "P(backspace)": ("p_backspace", "detector"),
    "step mean log-prob": ("probe", "trivial", "step_mean_logprob"),
    "step index": ("probe", "trivial", "step_index"),
}


def models(run: Path, seed: int) -> dict[str, Path]:
    """The seed's start model and its backtrack arm's last model."""
    layout = RunLayout(RunLayout(run).seed(seed))
    last = layout.rounds("backtrack")[-1]
    return {
        "round 0": layout.bootstrap_model,
        f"round {last + 1}": layout.round(last, "backtrack").model,
    }


def probe_all(preset: str, run: Path, seeds: list[int], sets: list[str]) -> list[dict[str, Any]]:
    rows = []
    for seed in seeds:
        for name, model in models(run, seed).items():
            out = RunLayout(run).seed(seed)
            cfg = load_config(
                preset, [f"run.out_dir={out}", f"eval.model={model}", f"run.seed={seed}", *sets]
            )
            rows.append({"seed": seed, "model": name, "figures": probe.main(cfg)})
    return rows


def block(figures: dict[str, Any], path: tuple[str, ...]) -> dict[str, float] | None:
    d: Any = figures
    for key in path:
        d = d.get(key) if d else None
    return d or None


def summarize(rows: list[dict[str, Any]], resamples: int = 10_000) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == name]
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in rs]}
        for det, path in DETECTORS.items():
            got = [block(r["figures"], path) for r in rs]
            within = [g["within_problem"] if g else None for g in got]
            pooled = [g["pooled"] if g else None for g in got]
            known = [x for x in within if x is not None]
            entry[det] = {
                "within_problem": float(np.mean(known)) if known else None,
                "pooled": float(np.mean([x for x in pooled if x is not None])) if known else None,
                "per_seed": within,
            }
        diffs = [
            a - b
            for a, b in zip(
                entry["probe"]["per_seed"], entry["step mean log-prob"]["per_seed"], strict=True
            )
            if a is not None and b is not None
        ]
        ci = None
        if len(diffs) > 1:
            draws = np.asarray(diffs)[
                np.random.default_rng(0).integers(0, len(diffs), (resamples, len(diffs)))
            ]
            ci = [float(x) for x in np.percentile(draws.mean(axis=1), [2.5, 97.5])]
        entry["probe_minus_logprob"] = {
            "mean": float(np.mean(diffs)) if diffs else None,
            "ci95": ci,
            "per_seed": diffs,
        }
        out[name] = entry
    return out


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def table(summary: dict[str, Any], command: str) -> str:
    head = " | ".join(DETECTORS)
    lines = [
        f"Command: `{command}`",
        "",
        "Test ROC-AUC within problem, mean over seeds (pooled in brackets; per seed below):",
        "",
        f"| model | {head} | probe − step mean log-prob (95%, seeds) |",
        "|---|" + "---|" * (len(DETECTORS) + 1),
    ]
    for name, e in summary.items():
        cells = [f"{_num(e[d]['within_problem'])} ({_num(e[d]['pooled'])})" for d in DETECTORS]
        d = e["probe_minus_logprob"]
        ci = f" ({d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f})" if d["ci95"] else ""
        mean = "–" if d["mean"] is None else f"{d['mean']:+.3f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean}{ci} |")
        per = [" · ".join(_num(x) for x in e[det]["per_seed"]) for det in DETECTORS]
        diffs = " · ".join(f"{x:+.3f}" for x in d["per_seed"])
        lines.append(f"| seeds {e['seeds']} | " + " | ".join(per) + f" | {diffs} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", required=True)
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = probe_all(args.preset, args.run, seeds, args.sets)
    summary = summarize(rows)
    command = (
        f".venv/bin/python experiments/probe_rounds.py --preset {args.preset} --run {args.run} "
        f"--seeds {args.seeds}" + "".join(f" --set {s}" for s in args.sets)
    )
    text = table(summary, command)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
