"""Deliberate decoding on a finished run: the backspace emitted only where the model's own
probability of it reaches a threshold, chosen on training problems, against the model's own
sampling, the backspace banned, and a random eraser at the same rate.

    .venv/bin/python benchmarks/threshold_sweep.py --run runs/arith-tiny-verdict \\
        [--round 1] [--thresholds 0.05,0.1,0.2,0.3,0.5] [--set K=V ...]

For each seed directory `run/seed-S` (with the config saved there) it takes the backtrack
arm's model of `--round` (the last by default) and evaluates every threshold on `eval.n_tune`
training problems (greedy and each `eval.temperatures`). Per seed and setting it picks the
threshold with the best accuracy there (ties: the lower one). On the held-out problems it then
evaluates that threshold, the model's own sampling (`eval.bksp_threshold=0`), the backspace
banned, and the random eraser (`eval.bksp_random` = the chosen threshold's backspaces per
generated token there). Differences are paired per problem over seeds (`stats.paired_bootstrap`).

Writes `run/threshold.md` (table and command) and `run/threshold.json`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from pipeline.config import Config, load_config
from pipeline.layout import RunLayout
from pipeline.loading import task_from_config
from pipeline.measure.evaluation import evaluate_to
from pipeline.measure.stats import paired_bootstrap


def model_of(seed_dir: Path, cfg: Config, round_: int | None) -> Path:
    """The backtrack arm's model of `round_` (the last trained one when None)."""
    layout = RunLayout.of(cfg)
    r = round_ if round_ is not None else cfg.run.rounds - 1
    path = layout.round(r, "backtrack").model
    if not path.exists():
        raise SystemExit(f"{seed_dir}: no backtrack model of round {r} at {path}")
    return path


def sweep_seed(
    seed_dir: Path, sets: list[str], thresholds: list[float], round_: int | None
) -> dict[str, Any]:
    preset = str(RunLayout(seed_dir).config)  # the seed's own config: its seeds, its settings
    base = ["eval.banned=false", *sets]
    cfg = load_config(preset, base)
    task = task_from_config(cfg.task)
    model = model_of(seed_dir, cfg, round_)
    tune = task.problems("train", cfg.eval.n_tune)
    test = task.problems("test", cfg.eval.n_problems)
    out_dir = seed_dir / "threshold"
    tuned = {
        h: evaluate_to(
            out_dir / f"tune-{h}.json",
            model,
            task,
            tune,
            load_config(preset, [*base, f"eval.bksp_threshold={h}"]),
            banned=False,
        )
        for h in thresholds
    }
    names = list(next(iter(tuned.values()))["settings"])
    chosen = {
        name: max(thresholds, key=lambda h: (tuned[h]["settings"][name]["accuracy"], -h))
        for name in names
    }
    own = evaluate_to(out_dir / "own.json", model, task, test, cfg)
    banned = evaluate_to(
        out_dir / "banned.json", model, task, test, load_config(preset, base), banned=True
    )
    held: dict[str, Any] = {"own": own, "banned": banned, "threshold": {}, "random": {}}
    for name in names:
        h = chosen[name]
        at = evaluate_to(
            out_dir / f"test-{h}.json",
            model,
            task,
            test,
            load_config(preset, [*base, f"eval.bksp_threshold={h}"]),
        )
        held["threshold"][name] = at
        s = at["settings"][name]
        rate = s["erase_events"] / s["generated_tokens"] if s["generated_tokens"] else 0.0
        rate = min(max(rate, 1e-9), 1.0)
        rcfg = load_config(preset, [*base, f"eval.bksp_random={rate:.6g}"])
        slug = name.replace("=", "").replace(" ", "")
        random_eval = evaluate_to(out_dir / f"random-{slug}.json", model, task, test, rcfg)
        held["random"][name] = random_eval | {"rate": rate}
    return {"model": str(model), "tuned": tuned, "chosen": chosen, "held": held, "names": names}


def _figures(seed: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    """One seed's held-out figures of `kind` at setting `name`."""
    if kind == "banned":
        return dict(seed["held"]["banned"]["settings"][_banned(name)])
    held = seed["held"][kind]
    return dict((held[name] if kind in ("threshold", "random") else held)["settings"][name])


def summarize(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in seeds[0]["names"]:

        def fig(kind: str, key: str, name: str = name) -> list[Any]:
            return [_figures(s, kind, name)[key] for s in seeds]

        def tuned(h: float, key: str, name: str = name) -> float | None:
            return _mean([s["tuned"][h]["settings"][name][key] for s in seeds])

        three = ("threshold", "own", "random")
        out[name] = {
            "chosen": [s["chosen"][name] for s in seeds],
            "accuracy": {k: fig(k, "accuracy") for k in (*three, "banned")},
            "backtrack_rate": {k: fig(k, "backtrack_rate") for k in three},
            "step_erase_precision": {k: fig(k, "step_erase_precision") for k in three},
            "chance_precision": fig("threshold", "chance_precision"),
            "random_rate": [s["held"]["random"][name]["rate"] for s in seeds],
            "threshold_minus": {
                k: paired_bootstrap(fig("threshold", "per_problem"), fig(k, "per_problem"))
                for k in ("own", "banned", "random")
            },
            "tune_curve": {
                str(h): {
                    key: tuned(h, key)
                    for key in (
                        "accuracy",
                        "backtrack_rate",
                        "step_erase_precision",
                        "chance_precision",
                    )
                }
                for h in seeds[0]["tuned"]
            },
        }
    return out


def _banned(name: str) -> str:
    return f"{name}, backspace banned"


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _diff(d: dict[str, Any]) -> str:
    lo, hi = d["ci95"]
    return f"{100 * d['mean']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f})"


def table(summary: dict[str, Any], command: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        "| setting | threshold chosen (per seed) | threshold | own sampling | banned | random "
        "eraser | threshold − own | threshold − banned | threshold − random | backtrack rate: "
        "threshold, own, random | erased steps wrong: threshold, own, random (chance) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        acc = {k: _pct(_mean(v)) for k, v in s["accuracy"].items()}
        rates = ", ".join(
            _pct(_mean(s["backtrack_rate"][k])) for k in ("threshold", "own", "random")
        )
        prec = ", ".join(
            _pct(_mean(s["step_erase_precision"][k])) for k in ("threshold", "own", "random")
        )
        lines.append(
            f"| {name} | {', '.join(map(str, s['chosen']))} | {acc['threshold']} | {acc['own']} "
            f"| {acc['banned']} | {acc['random']} | {_diff(s['threshold_minus']['own'])} | "
            f"{_diff(s['threshold_minus']['banned'])} | {_diff(s['threshold_minus']['random'])} "
            f"| {rates} | {prec} ({_pct(_mean(s['chance_precision']))}) |"
        )
    lines += [
        "",
        "On the training problems (mean over seeds), per threshold:",
        "",
        "| setting | threshold | accuracy | backtrack rate | erased steps wrong (chance) |",
        "|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        for h, c in s["tune_curve"].items():
            lines.append(
                f"| {name} | {h} | {_pct(c['accuracy'])} | {_pct(c['backtrack_rate'])} | "
                f"{_pct(c['step_erase_precision'])} ({_pct(c['chance_precision'])}) |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--round", type=int, default=None)
    ap.add_argument("--thresholds", default="0.05,0.1,0.2,0.3,0.5")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    run = Path(args.run)
    thresholds = [float(h) for h in args.thresholds.split(",")]
    seed_dirs = RunLayout(run).seed_dirs() or [run]
    seeds = [sweep_seed(d, args.sets, thresholds, args.round) for d in seed_dirs]
    summary = summarize(seeds)
    command = " ".join(shlex.quote(a) for a in ["benchmarks/threshold_sweep.py", *sys.argv[1:]])
    text = table(summary, command)
    (run / "threshold.md").write_text(text)
    (run / "threshold.json").write_text(json.dumps(summary, indent=2))
    print(text)


if __name__ == "__main__":
    main()
