"""The model-size ladder: one task, the bootstrap at each `bootstrap.size`, its held-out accuracy
and how well its own wrong steps can be told from right ones, over seeds.

    .venv/bin/python experiments/ladder.py --preset arith-headroom --sizes 0.6m,2.7m,10m \\
        --seeds 0,1,2 [--seeds-for 10m=0] --root runs/ladder/arith-headroom [--set KEY=VALUE ...]

Each size and seed is one `halluc bootstrap` run (`bootstrap.size=SIZE`, `bootstrap.seed=S`,
`run.seed=S`, `model.precision=bf16`: mixed precision, 1.5-1.7x faster training steps here and
float32 weights) in `root/SIZE/seed-S`, then one `halluc probe` on that model (a logistic probe of
the residual stream per layer, its layer chosen on validation problems, scored on test problems
beside the step's own mean log-probability and step index). Everything else is the preset's, so
every size trains the same steps on the same problems: equal training tokens, not equal tokens per
parameter, which this machine cannot afford past the smallest size (stated per row). Rerunning
reuses what is done.

`--fp32-run DIR` (a run made in fp32 with the same preset, e.g. the verdict's `runs/v2/...`): the
first size's bf16 bootstraps against DIR/seed-S/bootstrap/eval.json, seed by seed (the same seeds,
so the same problems and sampling seeds), as a paired difference over seeds then problems.

Writes `root/ladder.md` (the table and the command), `root/ladder.json` and `root/ladder.svg`
(accuracy and detector AUC against parameters); `--name` another stem than `ladder`.

`--lrs 1e-3,3e-3`: each size's `bootstrap.lr` chosen first on `--val-problems` validation problems
(seed 0 at each, `root/SIZE/lr-LR/seed-0`; the mean of its greedy and T=1.0 accuracy: the loop
and best-of-N sample, and greedy alone picked a sampler 21 points worse on arith-headroom), then
every seed trained at the chosen one in `root/SIZE/lr-LR/seed-S`. One learning rate listed is a
fixed one, in the same directories.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Config, load_config
from pipeline.layout import RunLayout, compute_of
from pipeline.loading import task_from_config
from pipeline.measure.evaluation import evaluate_to
from pipeline.measure.plot import figure, percent
from pipeline.measure.stats import seeds_then_problems
from pipeline.stages import bootstrap, probe
from pipeline.tables.common import diff, mean_known, num, pct

SETTINGS = ("greedy", "T=1.0")
# detector scores, read within problem (a wrong and a right step of the same problem)
DETECTORS = {
    "probe": ("probe", "detector"),
    "step mean log-prob": ("probe", "trivial", "step_mean_logprob"),
    "step index": ("probe", "trivial", "step_index"),
}


def config(
    preset: str, root: Path, size: str, seed: int, sets: list[str], lr: float | None
) -> Config:
    """Seed `seed`'s bootstrap at `size` in `root/SIZE/seed-S` (`root/SIZE/lr-LR/seed-S` at a
    learning rate of its own)."""
    where = root / size if lr is None else root / size / f"lr-{lr:g}"
    common = [f"bootstrap.size={size}", "model.precision=bf16", f"bootstrap.seed={seed}"]
    common += [f"run.seed={seed}", *([f"bootstrap.lr={lr}"] if lr is not None else []), *sets]
    return load_config(preset, [f"run.out_dir={RunLayout(where).seed(seed)}", *common])


def choose_lr(
    preset: str, root: Path, size: str, lrs: list[float], sets: list[str], n_val: int
) -> tuple[float, dict[str, float]]:
    """Seed 0's bootstrap at each of `lrs`, read on `n_val` validation problems (never the test
    ones): the learning rate with the highest mean of greedy and T=1.0 accuracy (a tie: the
    earlier one) and each one's mean."""
    scores = {}
    for lr in lrs:
        cfg = config(preset, root, size, 0, sets, lr)
        task = task_from_config(cfg.task)
        model = bootstrap.trained_model(cfg, task)
        problems = task.problems("validation", n_val)
        where = RunLayout.of(cfg).bootstrap / f"validation-{n_val}.json"
        figures = evaluate_to(where, model, task, problems, cfg, banned=False)
        scores[f"{lr:g}"] = float(np.mean([figures["settings"][k]["accuracy"] for k in SETTINGS]))
    best = max(lrs, key=lambda lr: scores[f"{lr:g}"])  # max keeps the first of equals
    return best, scores


def run(
    preset: str, root: Path, size: str, seed: int, sets: list[str], lr: float | None = None
) -> dict[str, Any]:
    cfg = config(preset, root, size, seed, sets, lr)
    start = time.perf_counter()
    figures = bootstrap.main(cfg)
    boot_s = time.perf_counter() - start
    probed = probe.main(cfg)
    compute = json.loads(compute_of(RunLayout.of(cfg).bootstrap_model).read_text())
    return {
        "size": size,
        "seed": seed,
        "lr": cfg.bootstrap.lr,
        "settings": {k: figures["settings"][k] for k in SETTINGS},
        "compute": compute,
        "probe": probed.get("probe"),  # none when a split's steps are all right or all wrong
        "chosen_layer": probed.get("chosen_layer"),
        "wall_s": {"bootstrap_this_call": boot_s, "train": compute.get("train_seconds")},
    }


def _auc(r: dict[str, Any], path: tuple[str, ...]) -> float | None:
    d: Any = r
    for key in path:
        if d is None:
            return None
        d = d[key]
    return d.get("within_problem") if d else None


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in dict.fromkeys(r["size"] for r in rows):
        rs = [r for r in rows if r["size"] == size]
        c = rs[0]["compute"]
        row: dict[str, Any] = {
            "seeds": [r["seed"] for r in rs],
            "parameters": c["parameters"],
            "loss_tokens": c["loss_tokens"],
            "loss_tokens_per_parameter": c["loss_tokens_per_parameter"],
            "steps": c["optimizer_steps"],
            "epochs": c["epochs"],
            "train_seconds": [r["compute"]["train_seconds"] for r in rs],
        }
        for name in SETTINGS:
            per = [r["settings"][name] for r in rs]
            problems = [f["per_problem"] for f in per]
            zeros = [[0.0] * len(p) for p in problems]
            row[name] = {  # seeds, then problems (problems only with one seed)
                "accuracy": seeds_then_problems(problems, zeros),
                "per_seed": [f["accuracy"] for f in per],
            }
        for name, path in DETECTORS.items():
            vals = [_auc(r, path) for r in rs]
            row[name] = {"mean": mean_known(vals), "per_seed": vals}
        out[size] = row
    first = next(iter(out), None)
    base = {r["seed"]: r for r in rows if r["size"] == first}
    for size, row in out.items():
        if size == first:
            continue
        mine = [r for r in rows if r["size"] == size and r["seed"] in base]
        for name in SETTINGS:  # the same test problems at every size: paired per seed index
            row[name]["minus_first"] = seeds_then_problems(
                [r["settings"][name]["per_problem"] for r in mine],
                [base[r["seed"]]["settings"][name]["per_problem"] for r in mine],
            )
    return out


def auc_differences(summary: dict[str, Any], resamples: int = 10_000) -> dict[str, Any]:
    """Each later size's detector AUC (within problem) minus the first size's, paired by seed:
    the mean, each seed's difference, and a 95% percentile interval resampling seeds (the probe
    keeps no per-point scores, so there is no problem level; with one seed, no interval)."""
    sizes = list(summary)
    out: dict[str, Any] = {}
    for size in sizes[1:]:
        out[size] = {}
        for name in DETECTORS:
            a, b = summary[sizes[0]], summary[size]
            first = dict(zip(a["seeds"], a[name]["per_seed"], strict=True))
            here = dict(zip(b["seeds"], b[name]["per_seed"], strict=True))
            diffs = [
                here[s] - first[s] for s in here if here[s] is not None and first.get(s) is not None
            ]
            ci = None
            if len(diffs) > 1:
                rng = np.random.default_rng(0)
                draws = np.asarray(diffs)[rng.integers(0, len(diffs), (resamples, len(diffs)))]
                ci = [float(x) for x in np.percentile(draws.mean(axis=1), [2.5, 97.5])]
            mean = float(np.mean(diffs)) if diffs else None
            out[size][name] = {"mean": mean, "ci95": ci, "per_seed": diffs}
    return out


def table(summary: dict[str, Any], command: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        "| size | parameters | steps, loss tokens (per parameter), epochs | train s per seed "
        "| greedy (95%, seeds then problems) | per seed | T=1.0 | per seed "
        "| AUC within problem: probe / step mean log-prob / step index (per seed) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size, r in summary.items():
        accs = []
        for name in SETTINGS:
            a = r[name]["accuracy"]
            accs.append(f"{pct(a['mean'])} ({pct(a['ci95'][0])}–{pct(a['ci95'][1])})")
            accs.append(" · ".join(pct(x) for x in r[name]["per_seed"]))
        aucs = " / ".join(
            f"{num(r[d]['mean'], 3)} ({' · '.join(num(x, 3) for x in r[d]['per_seed'])})"
            for d in DETECTORS
        )
        lines.append(
            f"| {size} | {r['parameters'] / 1e6:.2f}M | {r['steps']:,}, {r['loss_tokens']:,} "
            f"({r['loss_tokens_per_parameter']:.2f}), {r['epochs']:.1f} | "
            f"{' · '.join(f'{s:.0f}' for s in r['train_seconds'])} | {' | '.join(accs)} | {aucs} |"
        )
    first = next(iter(summary), "")
    for size, r in list(summary.items())[1:]:
        parts = [f"{name} {diff(r[name].get('minus_first'))}" for name in SETTINGS]
        lines.append(
            f"\nAccuracy {size} − {first} (seeds paired by index, then problems; "
            f"{len(r['greedy']['minus_first']['per_seed'])} seed(s)): " + "; ".join(parts) + "."
        )
    diffs = auc_differences(summary)
    for size, by_detector in diffs.items():
        parts = []
        for name, d in by_detector.items():
            ci = f", 95% over seeds {d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}" if d["ci95"] else ""
            per = " · ".join(f"{x:+.3f}" for x in d["per_seed"])
            parts.append(f"{name} {num(d['mean'], 3)}{ci} ({per})")
        lines.append(f"\nAUC {size} − {first}, paired by seed: " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"


def against_fp32(rows: list[dict[str, Any]], fp32_run: Path) -> str:
    """The first size's rows (bf16) against the same seeds' bootstraps in `fp32_run`."""
    first = [r for r in rows if r["size"] == rows[0]["size"]]
    lines = [
        "",
        f"bf16 − fp32 ({rows[0]['size']}; fp32: {fp32_run}/seed-S/bootstrap, seeds "
        f"{', '.join(str(r['seed']) for r in first)}):",
        "",
        "| setting | bf16 | fp32 | bf16 − fp32 (95%, seeds then problems) | per seed |",
        "|---|---|---|---|---|",
    ]
    evals = [
        json.loads((fp32_run / f"seed-{r['seed']}" / "bootstrap" / "eval.json").read_text())
        for r in first
    ]
    for name in SETTINGS:
        a = [r["settings"][name]["per_problem"] for r in first]
        b = [e["settings"][name]["per_problem"] for e in evals]
        d = seeds_then_problems(a, b)
        lines.append(
            f"| {name} | {' · '.join(pct(r['settings'][name]['accuracy']) for r in first)} | "
            f"{' · '.join(pct(e['settings'][name]['accuracy']) for e in evals)} | {diff(d)} | "
            f"{' · '.join(f'{100 * x:+.1f}' for x in d['per_seed'])} |"
        )
    return "\n".join(lines) + "\n"


def lr_lines(screens: dict[str, dict[str, float]], n_val: int) -> str:
    """Each size's learning rates and their seed-0 validation score (mean of greedy and T=1.0)."""
    if not screens:
        return ""
    lines = [
        f"\nLearning rate per size, chosen on {n_val} validation problems "
        "(seed 0, mean of greedy and T=1.0):"
    ]
    for size, scores in screens.items():
        best = max(scores, key=lambda lr: scores[lr])
        each = ", ".join(f"{lr} {pct(acc)}" for lr, acc in scores.items())
        lines.append(f"- {size}: **{best}** ({each})")
    return "\n".join(lines) + "\n"


def chart(summary: dict[str, Any], path: Path) -> None:
    fig, (acc, auc) = figure(2, 8.0)
    params = {size: r["parameters"] for size, r in summary.items()}
    for ax, names, key in ((acc, SETTINGS, "accuracy"), (auc, tuple(DETECTORS), "auc")):
        for name in names:
            xs = [params[s] for s in summary]
            means = [
                r[name]["accuracy"]["mean"] if key == "accuracy" else r[name]["mean"]
                for r in summary.values()
            ]
            (line,) = ax.plot(xs, means, marker="o", label=name)
            for s, r in summary.items():
                ys = [y for y in r[name]["per_seed"] if y is not None]
                ax.scatter([params[s]] * len(ys), ys, s=10, color=line.get_color(), alpha=0.5)
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.legend(fontsize=7)
    percent(acc, "held-out accuracy")
    auc.set_ylim(0.4, 1.0)
    auc.set_ylabel("ROC-AUC within problem")
    fig.savefig(path, format="svg")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="arith-headroom")
    ap.add_argument("--root", default="runs/ladder/arith-headroom")
    ap.add_argument("--sizes", default="0.6m,2.7m,10m")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--seeds-for", action="append", default=[], help="SIZE=0,1: fewer seeds")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--fp32-run", default="", help="a run's seed dirs to pair the first size with")
    ap.add_argument("--lrs", default="", help="1e-3,3e-3: each size's lr chosen on validation")
    ap.add_argument("--val-problems", type=int, default=300)
    ap.add_argument("--name", default="ladder", help="the output files' stem in --root")
    args = ap.parse_args()
    root = Path(args.root)
    seeds = {s: [int(x) for x in args.seeds.split(",")] for s in args.sizes.split(",")}
    for item in args.seeds_for:
        size, _, chosen = item.partition("=")
        seeds[size] = [int(x) for x in chosen.split(",")]
    lrs = [float(x) for x in args.lrs.split(",") if x]
    chosen_lr: dict[str, float | None] = dict.fromkeys(seeds)
    screens = {}
    for size in seeds if lrs else ():
        chosen_lr[size], screens[size] = choose_lr(
            args.preset, root, size, lrs, args.sets, args.val_problems
        )
    rows = [
        run(args.preset, root, size, s, args.sets, chosen_lr[size])
        for size in seeds
        for s in seeds[size]
    ]
    summary = summarize(rows)
    command = " ".join(shlex.quote(a) for a in ["experiments/ladder.py", *sys.argv[1:]])
    text = table(summary, command) + lr_lines(screens, args.val_problems)
    if args.fp32_run:
        text += against_fp32(rows, Path(args.fp32_run))
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{args.name}.md").write_text(text)
    record = {"summary": summary, "rows": rows, "lr_validation": screens}
    (root / f"{args.name}.json").write_text(json.dumps(record, indent=2))
    chart(summary, root / f"{args.name}.svg")
    print(text)


if __name__ == "__main__":
    main()
