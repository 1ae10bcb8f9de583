"""What the config used to look like: keys that moved or went away, and how an old preset, an
old `--set` or the config.yaml a run saved before a change is read today.

- `RENAMED` (old key -> its place now): read at the new place, with a warning once per key, so
  old presets, old `--set`s and the config.yaml of a run made before the move still load, and
  such a run resumes (`check_resumable` compares configs read this way).
- `RETIRED` (a key nothing read): dropped as it is read, with a warning once per key.
- `MOVED` and `REMOVED` (older changes): refused, naming the new place or what to do instead.

`legacy` lays a config out as it was before the renames and retirements, so the config hash and
the evaluation keys (`pipeline.config.keys`) stay what they were for the same config.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from search.errors import ConfigError

log = logging.getLogger(__name__)

RENAMED = {
    **{f"train.dpo_{k}": f"train.dpo.{k}" for k in ("beta", "sft_weight", "right_pairs", "lr")},
    **{f"train.rl_{k}": f"train.rl.{k}" for k in ("group", "kl", "token_cost", "credit", "lr")},
    "search.max_batch": "sampling.max_batch",
    "search.max_new_tokens": "sampling.max_new_tokens",
    "eval.max_new_tokens": "sampling.stream_tokens",
    "eval.max_backspaces": "sampling.stream_backspaces",
    "search.address": "run.address",
    "select.curriculum": "train.curriculum",  # it orders what training reads
}


@dataclass(frozen=True)
class Retired:
    """A key nothing read. `why`: the warning's reason; `hashed`: the value the config hash and
    the evaluation keys count it at (its default, so they stay what they were); `seen`: other
    values shipped presets gave it, under which cached evaluations still match; `only`: the
    values it could take, when it had few (another fails: it never worked)."""

    why: str
    hashed: Any
    seen: tuple[Any, ...] = ()
    only: tuple[Any, ...] = ()


RETIRED = {
    "task.n_test": Retired(
        "nothing read it (the test split's size is eval.n_problems)", 500, seen=(1000, 1319)
    ),
    "bootstrap.retry_source": Retired(
        "synthetic was its only value (errors sampled from a model need a model, and a "
        "bootstrap has none)",
        "synthetic",
        only=("synthetic",),
    ),
}

MOVED = {
    **{f"search.{k}": f"search.omegaprm.{k}" for k in ("n_mc", "budget", "alpha", "beta")},
    **{f"search.{k}": f"search.omegaprm.{k}" for k in ("length_scale", "c_puct", "locate")},
    "search.n_screen": "search.omegaprm.n_screen (or search.mcts.n_screen)",
    "search.simulations": "search.mcts.simulations",
    "search.width": "search.mcts.width",
    "search.mcts_c_puct": "search.mcts.c_puct",
    **{f"search.fake_{k}": f"search.fake.{k}" for k in ("error_rate", "trap_rate", "fix_rate")},
    "search.fake_n_traps": "search.fake.n_traps",
    "eval.temperature": "eval.temperatures (a list: greedy and each of them are evaluated)",
    "task.op": "task.arithmetic.op",
    "task.digits": "task.arithmetic.digits",
    **{f"task.{k}": f"task.jsonl.{k}" for k in ("path", "question_field", "answer_field")},
}
REMOVED = {
    "train.base": "training starts from the model the round searched with (model.path or the "
    "bootstrap model in round 0, the previous round's model after that)",
    "train.data": "training reads the round's selected.parquet, else its search traces",
    "bootstrap.eval_problems": "the start model is evaluated like every round's, on "
    "eval.n_problems held-out problems",
}

_warned: set[str] = set()


def current(key: str, value: Any, where: str, warn: bool = True) -> str | None:
    """The dotted `key` of a `--set` as it is named now (None: a retired key, to drop), with a
    warning the first time an old name is met; a retired key with a value it never took
    fails."""
    if key in RENAMED:
        _warn(warn, key, f"{where}: {key} is now {RENAMED[key]}; read as that")
        return RENAMED[key]
    if key in RETIRED:
        retired = RETIRED[key]
        if retired.only and value not in retired.only:
            raise ConfigError(
                f"{where}: {key} was removed ({retired.why}); {value!r} never was a choice: "
                "delete the key"
            )
        _warn(warn, key, f"{where}: {key} was removed and is ignored: {retired.why}")
        return None
    return key


def rename(raw: dict[str, Any], where: str, warn: bool = True) -> None:
    """Move each old key of the preset mapping `raw` to its place now (`current`), in place; a
    key given under both names fails."""
    for old in [*RENAMED, *RETIRED]:
        section, key = old.split(".")
        node = raw.get(section)
        if not isinstance(node, dict) or key not in node:
            continue
        value = node.pop(key)
        new = current(old, value, where, warn)
        if new is None:
            continue
        *parents, leaf = new.split(".")
        target = raw
        for part in parents:
            if target.get(part) is None:
                target[part] = {}
            target = target[part]
            if not isinstance(target, dict):
                raise ConfigError(f"{where}: {part} must be a mapping (it holds {new})")
        if leaf in target:
            raise ConfigError(
                f"{where}: {old} and {new} are both given; {old} is the old name of {new}: "
                f"keep {new} only"
            )
        target[leaf] = value


def legacy(d: dict[str, Any], retired: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of the config dict `d` laid out as before the renames: each renamed key present
    back at its old place (emptied sections dropped), each retired key at its `hashed` value
    (or the value `retired` gives it)."""
    d = copy.deepcopy(d)
    for old, new in RENAMED.items():
        *parents, leaf = new.split(".")
        nodes = [d]
        for part in parents:
            nodes.append(nodes[-1].get(part, {}))
        if leaf not in nodes[-1]:
            continue  # not hashed, say
        value = nodes[-1].pop(leaf)
        for part, parent, node in reversed(list(zip(parents, nodes[:-1], nodes[1:], strict=True))):
            if not node:
                del parent[part]
        section, key = old.split(".")
        d[section][key] = value
    for old, r in RETIRED.items():
        section, key = old.split(".")
        d[section][key] = (retired or {}).get(old, r.hashed)
    return d


def _warn(warn: bool, key: str, message: str) -> None:
    if warn and key not in _warned:
        _warned.add(key)
        log.warning(message)
