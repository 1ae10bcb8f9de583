"""`halluc table threshold-sweep`: deliberate decoding on a finished run: the backspace emitted
only where the model's own probability of it reaches a threshold, chosen on validation problems,
against the model's own sampling, the backspace banned, and a random eraser at the same rate.

    halluc table threshold-sweep --run runs/arith-tiny-verdict \\
        [--round 1] [--thresholds 0.05,0.1,0.2,0.3,0.5] [--set K=V ...]

For each seed directory `run/seed-S` (with the config saved there) it takes the backtrack
arm's model of `--round` (the last by default) and evaluates every threshold on `eval.n_tune`
validation problems (greedy and each `eval.temperatures`). Per seed and setting it picks the
threshold with the best accuracy there (ties: the lower one). On the held-out problems it then
evaluates that threshold, the model's own sampling (`eval.bksp_threshold=0`), the backspace
banned, and the random eraser (`eval.bksp_random` = the chosen threshold's backspaces per
generated token there). Differences are paired per problem within each seed; intervals resample
seeds, then problems (`stats.seeds_then_problems`).

Writes `run/threshold.md` (table and command) and `run/threshold.json` (the summary and the
command); each evaluation is cached in `run/seed-S/threshold/`, so a killed sweep resumes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import Config, load_config
from pipeline.layout import RunLayout
from pipeline.loading import task_from_config
from pipeline.measure.evaluation import evaluate_to
from pipeline.measure.stats import seeds_then_problems as paired
from pipeline.tables.common import (
    TableError,
    add_round,
    add_sets,
    config_of,
    diff,
    floats,
    mean_known,
    pct,
    run_dir,
    seed_dirs,
)
from search.types import Problem

THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5)


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, type=run_dir, help="a finished run's out_dir")
    add_round(parser, "backtrack model is swept")
    parser.add_argument(
        "--thresholds",
        type=floats,
        default=list(THRESHOLDS),
        metavar="H,H,...",
        help="backspace probability thresholds (default: 0.05,0.1,0.2,0.3,0.5)",
    )
    add_sets(parser)


def compute(
    run: Path,
    round_: int | None = None,
    thresholds: Sequence[float] = THRESHOLDS,
    sets: Sequence[str] = (),
) -> dict[str, Any]:
    """Every seed's sweep (evaluations cached under it), summarized per setting (`settings`)."""
    seeds = [sweep_seed(d, list(sets), list(thresholds), round_) for d in seed_dirs(run)]
    return {"settings": summarize(seeds)}


def model_of(seed_dir: Path, cfg: Config, round_: int | None) -> Path:
    """The backtrack arm's model of `round_` (the last trained one when None)."""
    layout = RunLayout.of(cfg)
    r = round_ if round_ is not None else cfg.run.rounds - 1
    path = layout.round(r, "backtrack").model
    if not path.exists():
        raise TableError(
            f"{seed_dir}: no backtrack model of round {r} at {path}; give --round of a trained "
            "round, or finish the run"
        )
    return path


def sweep_seed(
    seed_dir: Path, sets: list[str], thresholds: list[float], round_: int | None
) -> dict[str, Any]:
    """One seed: every threshold on the validation problems; on the held-out problems, per setting
    the threshold chosen there, the random eraser at its rate, and (once) the model's own
    sampling and the backspace banned. Each evaluation is cached in SEED/threshold/."""
    preset = config_of(seed_dir)  # the seed's own config: its seeds, its settings
    base = ["eval.banned=false", *sets]
    cfg = load_config(preset, base)
    task = task_from_config(cfg.task)
    model = model_of(seed_dir, cfg, round_)
    tune = task.problems("validation", cfg.eval.n_tune)
    test = task.problems("test", cfg.eval.n_problems)

    def evaluate(
        file: str, problems: list[Problem], extra: Sequence[str] = (), banned: bool | None = None
    ) -> dict[str, Any]:
        config = load_config(preset, [*base, *extra])
        return evaluate_to(seed_dir / "threshold" / file, model, task, problems, config, banned)

    tuned = {
        h: evaluate(f"tune-{h}.json", tune, [f"eval.bksp_threshold={h}"], banned=False)
        for h in thresholds
    }
    names = list(next(iter(tuned.values()))["settings"])
    chosen = {
        name: max(thresholds, key=lambda h: (tuned[h]["settings"][name]["accuracy"], -h))
        for name in names
    }
    own, banned = evaluate("own.json", test), evaluate("banned.json", test, banned=True)
    held: dict[str, Any] = {"own": own, "banned": banned, "threshold": {}, "random": {}}
    for name in names:
        h = chosen[name]
        at = evaluate(f"test-{h}.json", test, [f"eval.bksp_threshold={h}"])
        held["threshold"][name] = at
        s = at["settings"][name]
        rate = s["erase_events"] / s["generated_tokens"] if s["generated_tokens"] else 0.0
        rate = min(max(rate, 1e-9), 1.0)
        slug = name.replace("=", "").replace(" ", "")
        random_eval = evaluate(f"random-{slug}.json", test, [f"eval.bksp_random={rate:.6g}"])
        held["random"][name] = random_eval | {"rate": rate}
    return {"model": str(model), "tuned": tuned, "chosen": chosen, "held": held, "names": names}


def _figures(seed: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    """One seed's held-out figures of `kind` at setting `name`."""
    if kind == "banned":
        return dict(seed["held"]["banned"]["settings"][_banned(name)])
    held = seed["held"][kind]
    return dict((held[name] if kind in ("threshold", "random") else held)["settings"][name])


def summarize(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per setting: the thresholds chosen, held-out figures of each decoding over the seeds, the
    threshold's paired differences, and the curve on the validation problems."""
    out: dict[str, Any] = {}
    for name in seeds[0]["names"]:

        def fig(kind: str, key: str, name: str = name) -> list[Any]:
            return [_figures(s, kind, name)[key] for s in seeds]

        def tuned(h: float, key: str, name: str = name) -> float | None:
            return mean_known([s["tuned"][h]["settings"][name][key] for s in seeds])

        three = ("threshold", "own", "random")
        out[name] = {
            "chosen": [s["chosen"][name] for s in seeds],
            "accuracy": {k: fig(k, "accuracy") for k in (*three, "banned")},
            "backtrack_rate": {k: fig(k, "backtrack_rate") for k in three},
            "step_erase_precision": {k: fig(k, "step_erase_precision") for k in three},
            "chance_precision": fig("threshold", "chance_precision"),
            "random_rate": [s["held"]["random"][name]["rate"] for s in seeds],
            "threshold_minus": {
                k: paired(fig("threshold", "per_problem"), fig(k, "per_problem"))
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


def render(result: dict[str, Any], command: str) -> str:
    summary = result["settings"]
    lines = [
        f"Command: `{command}`",
        "",
        "| setting | threshold chosen (per seed) | threshold | own sampling | banned | random "
        "eraser | threshold − own | threshold − banned | threshold − random | backtrack rate: "
        "threshold, own, random | erased steps wrong: threshold, own, random (chance) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        acc = {k: pct(mean_known(v)) for k, v in s["accuracy"].items()}
        rates = ", ".join(
            pct(mean_known(s["backtrack_rate"][k])) for k in ("threshold", "own", "random")
        )
        prec = ", ".join(
            pct(mean_known(s["step_erase_precision"][k])) for k in ("threshold", "own", "random")
        )
        lines.append(
            f"| {name} | {', '.join(map(str, s['chosen']))} | {acc['threshold']} | {acc['own']} "
            f"| {acc['banned']} | {acc['random']} | {diff(s['threshold_minus']['own'])} | "
            f"{diff(s['threshold_minus']['banned'])} | {diff(s['threshold_minus']['random'])} "
            f"| {rates} | {prec} ({pct(mean_known(s['chance_precision']))}) |"
        )
    lines += [
        "",
        "On the validation problems (mean over seeds), per threshold:",
        "",
        "| setting | threshold | accuracy | backtrack rate | erased steps wrong (chance) |",
        "|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        for h, c in s["tune_curve"].items():
            lines.append(
                f"| {name} | {h} | {pct(c['accuracy'])} | {pct(c['backtrack_rate'])} | "
                f"{pct(c['step_erase_precision'])} ({pct(c['chance_precision'])}) |"
            )
    return "\n".join(lines) + "\n"
