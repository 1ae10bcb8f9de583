"""A finished run's figures written by hand: what the tables read, without running a stage.

`synthetic_run` lays out `verdict.json` and, per seed, `bootstrap/` and `ARM/round-R/` with
`eval.json` and `tune.json`, as `halluc run` does with `run.seeds` (seed-S/ sub-runs). Figures are
drawn from a seeded generator; some are missing (None), as they are for an arm without a
backspace, so the tables' "–" cells are exercised.
"""

import json
import random
from pathlib import Path

SETTINGS = ("greedy", "T=0.7", "T=1.0")
BANNED = ", backspace banned"
N_PROBLEMS = 12


def _figures(rng: random.Random, skill: float, erases: bool) -> dict:
    per_problem = [float(rng.random() < skill) for _ in range(N_PROBLEMS)]
    return {
        "accuracy": sum(per_problem) / N_PROBLEMS,
        "per_problem": per_problem,
        "backtrack_rate": rng.random() / 4 if erases else 0.0,
        "step_erase_precision": rng.random() if erases else None,
        "chance_precision": rng.random() / 2 if erases else None,
        "tokens_per_solved": 20 + 10 * rng.random(),
        "erase_events": rng.randint(0, 9),
        "generated_tokens": rng.randint(100, 300),
        "tokens_per_problem": [rng.randint(5, 40) for _ in range(N_PROBLEMS)],
    }


def eval_figures(rng: random.Random, skill: float, erases: bool, auc: bool = True) -> dict:
    """An `eval.json`: every setting, and its backspace-banned twin when the model erases."""
    settings = {}
    for name in SETTINGS:
        settings[name] = _figures(rng, skill + 0.1 * rng.random(), erases)
        settings[name]["temperature"] = 0.0 if name == "greedy" else float(name[2:])
        if erases:
            settings[name + BANNED] = _figures(rng, skill, False)
    detector = {"roc_auc": 0.5 + rng.random() / 2} if auc else {}
    return {"settings": settings, "detector": detector}


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _stage(rng: random.Random, d: Path, skill: float, erases: bool, auc: bool = True) -> None:
    _write(d / "eval.json", eval_figures(rng, skill, erases, auc))
    _write(d / "tune.json", eval_figures(rng, skill, erases))


def synthetic_run(
    root: Path,
    seeds: tuple[int, ...] = (0, 1, 2),
    rounds: int = 2,
    arms: tuple[str, ...] = ("backtrack", "baseline", "dpo"),
    seed: int = 0,
    bootstrap_erases: bool = False,
) -> Path:
    """A finished multi-seed run under `root` (`rounds` trained rounds of `arms`; a start model
    with a backspace when `bootstrap_erases`, as a bootstrap on backspace streams has)."""
    rng = random.Random(seed)
    compute = []
    for s in seeds:
        sub = root / f"seed-{s}"
        _stage(rng, sub / "bootstrap", 0.4, bootstrap_erases)
        cost: dict[str, list[dict]] = {}
        for arm in arms:
            erases = arm != "baseline"
            for r in range(rounds):
                _stage(rng, sub / arm / f"round-{r}", 0.5 + 0.05 * r, erases, auc=arm != "dpo")
            cost[arm] = [
                {
                    "optimizer_steps": rng.randint(10, 40),
                    "loss_tokens": rng.randint(5_000, 90_000),
                    "search_generated_tokens": rng.randint(1_000, 9_000) if erases else None,
                    "generated_tokens": rng.randint(0, 500) if arm == "dpo" else None,
                }
                for _ in range(rounds)
            ]
        compute.append(cost)
    best = {
        "mean_n": 3.4,
        "accuracy": 0.55,
        "per_seed": [0.5 + 0.05 * i for i in range(len(seeds))],
        "difference": {"mean": 0.031, "ci95": [-0.012, 0.078]},
    }
    strongest = {
        "accuracy": 0.6,
        "per_seed": [0.6] * len(seeds),
        "picked": ["greedy"] * len(seeds),
        "difference": {"mean": -0.019, "ci95": [-0.06, 0.02]},
    }
    last = {"best_of_n": best, "strongest": strongest}
    verdict_rounds = [{}] + [last if r == rounds - 1 else {} for r in range(rounds)]
    _write(
        root / "verdict.json", {"seeds": list(seeds), "compute": compute, "rounds": verdict_rounds}
    )
    return root


def bootstrap_pair(root: Path) -> tuple[list[Path], list[Path]]:
    """Two three-seed runs' seed directories: side a's start model erases (it has banned twins of
    its settings), side b's does not, and b's seed 1 lacks the setting T=0.7 (so that row is
    left out of a comparison)."""
    a = synthetic_run(root / "a", seed=1, bootstrap_erases=True)
    b = synthetic_run(root / "b", seed=2)
    path = b / "seed-1" / "bootstrap" / "eval.json"
    figures = json.loads(path.read_text())
    del figures["settings"]["T=0.7"]
    path.write_text(json.dumps(figures))
    return [a / f"seed-{s}" for s in range(3)], [b / f"seed-{s}" for s in range(3)]
