"""The numeric keys whose values have an obvious domain, checked in one place when a config
loads (`load.load_config`): a value outside it is refused at once, naming the key, instead of
failing minutes into a run (a negative seed) or silently doing nothing (zero epochs). Keys whose
domain depends on another key are checked by their section's `__post_init__`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from search.errors import ConfigError

Rule = tuple[Callable[[Any], bool], str]
SEED: Rule = (lambda v: v >= 0, "a seed, >= 0")
COUNT: Rule = (lambda v: v >= 0, ">= 0")
POSITIVE: Rule = (lambda v: v > 0, "> 0")
LR: Rule = (lambda v: v > 0, "a learning rate, > 0")
SHARE: Rule = (lambda v: 0 <= v <= 1, "in [0, 1]")

DOMAINS: dict[str, Rule] = {
    "task.seed": SEED,
    "task.countdown.n_numbers": (lambda v: v >= 2, ">= 2 (a game needs two numbers)"),
    "task.countdown.min_number": POSITIVE,
    "task.countdown.min_target": POSITIVE,
    "task.countdown.n_heldout_targets": COUNT,
    "bootstrap.seed": SEED,
    "bootstrap.lr": LR,
    "bootstrap.warmup": COUNT,
    "search.mcts.c_puct": POSITIVE,
    "search.max_corrections": COUNT,
    "select.corrections_per_problem": COUNT,
    "select.self_corrections_per_problem": COUNT,
    "select.clean_per_problem": COUNT,
    "select.min_parent_mc": SHARE,
    "train.seed": SEED,
    "train.epochs": (lambda v: v > 0, "> 0 (0 epochs would save the start model as trained)"),
    "train.max_steps": (lambda v: v == -1 or v >= 1, ">= 1, or -1 (train.epochs decides)"),
    "train.lr": LR,
    "train.dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "train.error_weight": COUNT,
    "train.warmup": COUNT,
    "run.seed": SEED,
    "value.seed": SEED,
}
RANGES = {  # (low key, high key): low <= high
    ("task.countdown.min_number", "task.countdown.max_number"),
    ("task.countdown.min_target", "task.countdown.max_target"),
}


def check_domains(d: dict[str, Any], where: str) -> None:
    """Refuse a config (as a nested dict, `Config.to_dict`) with a value outside its key's
    domain; `where` names the preset file."""

    def get(key: str) -> Any:
        node: Any = d
        for part in key.split("."):
            node = node[part]
        return node

    for key, (ok, rule) in DOMAINS.items():
        if not ok(get(key)):
            raise ConfigError(f"{where}: {key}={get(key)!r}: must be {rule}")
    for low, high in sorted(RANGES):
        if get(low) > get(high):
            raise ConfigError(f"{where}: {low}={get(low)} is above {high}={get(high)}")
    for i, seed in enumerate(d["run"]["seeds"] or []):
        if seed < 0:
            raise ConfigError(f"{where}: run.seeds[{i}]={seed}: must be a seed, >= 0")
