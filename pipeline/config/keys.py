"""The hashes a config is known by: `config_hash` (on every row a stage writes) and `eval_key`
(on every cached evaluation), each of what shapes those outputs only, and each computed on the
config laid out as before the renames (`history.legacy`), so a config that did not change keeps
its hash and a run made before them still finds its cached evaluations.
"""

from __future__ import annotations

import hashlib
import json
import typing
from dataclasses import fields
from itertools import product
from typing import Any

from pipeline.config.history import RETIRED, legacy
from pipeline.config.shared import TaskConfig

if typing.TYPE_CHECKING:
    from pipeline.config.sections import Config

# where things are and how many workers make them; the model itself is named by each row's model_id
NOT_HASHED = [
    ("run", "out_dir"),
    ("run", "threads"),
    ("search", "workers"),
    ("run", "address"),
    ("model", "device"),
    ("model", "path"),
    ("eval", "model"),
    ("value", "out_dir"),
    ("value", "runs"),  # what they hold, and the init, are recorded beside the value model
    ("value", "init"),
    ("run", "arms"),  # which arms run shapes no arm's outputs (adding one resumes a run)
    ("train", "report_to"),  # where the curves go
]

# what shapes each stage's outputs (sections, or dotted keys): a stage refuses to resume or reuse
# a directory whose config.yaml differs here, naming the keys (`runtime.stage_config`)
_SEARCH = ("task", "model", "sampling.max_new_tokens", "search", "trace", "run")
# the task shapes the bootstrap, except for how many problems the loop searches (task.n_train): the
# bootstrap trains on its own bootstrap.n_problems, so one model serves runs that search more
BOOTSTRAP_TASK_KEYS = tuple(f"task.{f.name}" for f in fields(TaskConfig) if f.name != "n_train")

SHAPES = {
    "search": _SEARCH,
    "select": (*_SEARCH, "bootstrap", "select"),
    "train": (*_SEARCH, "bootstrap", "select", "sampling", "train"),  # sampling: rl's streams
}

# value-guided search (SearchConfig): hashed only when search.value is not mc
SEARCH_VALUE_KEYS = ("value", "value_model", "value_mix", "value_threshold")
EVAL_VALUE_KEYS = (
    "value_model",
    "value_drop",
    "erase_logprob",
    "erase_at_end",
    "erase_temperature",
)  # EvalConfig: hashed when set
BOOTSTRAP_BPE_KEYS = ("tokenizer", "vocab_size")  # BootstrapConfig: hashed only for a BPE
CHAT_KEYS = ("chat_template", "system_prompt")  # TaskConfig: hashed only when a template is used
RL_SET_KEYS = ("erase_bonus", "erase_penalty", "repair_bonus", "steps")  # RlConfig: hashed when set
BOOTSTRAP_OWN_ERROR_KEYS = ("retry_model", "retry_samples")  # with a retry_model only
# keys added later, dropped at these values: a config that leaves them there keeps its hash
LATE_DEFAULTS: dict[tuple[str, str], Any] = {
    ("model", "precision"): "fp32",
    ("bootstrap", "size"): "",
    ("bootstrap", "fresh"): False,
    ("bootstrap", "retry_placement"): "at_error",
    ("bootstrap", "retry_detector"): "checker",
    ("bootstrap", "retry_tau"): -1.0,
    ("bootstrap", "attention"): "erase",
    ("train", "anchor"): "previous",
    ("train", "accumulate"): False,
    ("train", "keep_best"): False,
    ("train", "replay"): 0.0,
    ("train", "replay_only"): False,
    ("search", "fresh_problems"): False,
}

# sections that shape only their own stage's output (nothing the search, training or
# evaluation writes): not hashed, and compared on resume only by a stage that names them
OWN_SECTIONS = ("value", "probe")

# task keys added after evaluations were cached under protocol 2, with the default that leaves
# every task as it was: a file cached before one existed holds the same evaluation
LATE_TASK_KEYS = {("countdown", "heldout_sos_seed"): None}


def config_hash(cfg: Config) -> str:
    """A short hash of everything that shapes the outputs, not of where or on how many workers
    they are made (`NOT_HASHED`: those must not change a row), nor of `OWN_SECTIONS`."""
    d = cfg.to_dict()
    for section, key in NOT_HASHED:
        del d[section][key]
    for section in OWN_SECTIONS:
        del d[section]
    if cfg.search.value == "mc":  # they shape nothing then: the hash they had before
        for key in SEARCH_VALUE_KEYS:
            del d["search"][key]
    _drop_unset(d["eval"], EVAL_VALUE_KEYS)  # likewise, unless set
    _drop_unset(d["train"]["rl"], RL_SET_KEYS)
    _drop_late(d)
    if d["bootstrap"]["tokenizer"] == "char":  # keys added later: the hash they had before
        for key in BOOTSTRAP_BPE_KEYS:
            del d["bootstrap"][key]
    _drop_chat(d)
    return _digest(legacy(d))


def _drop_late(d: dict[str, Any]) -> None:
    for (section, key), default in LATE_DEFAULTS.items():
        if d[section][key] == default:
            del d[section][key]
    if not d["bootstrap"]["retry_model"]:
        for key in BOOTSTRAP_OWN_ERROR_KEYS:
            del d["bootstrap"][key]


def _drop_unset(section: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if not section[key]:
            del section[key]


def _drop_chat(d: dict[str, Any]) -> None:
    """The chat keys (added later) out of the config dict `d` when off: the hash they had before."""
    if not d["task"]["chat_template"]:
        for key in CHAT_KEYS:
            del d["task"][key]


def eval_keys(cfg: Config, n_problems: int, banned: bool | None = None) -> set[str]:
    """The keys a cached evaluation of these settings may carry: `eval_key`'s, and where every
    late task key is at its default, the key made before those keys existed (so a run evaluated
    then still resumes); each also with every value a retired task key had in a shipped preset
    (`history.Retired.seen`: it shaped the key then, though nothing read it)."""
    task = cfg.to_dict()["task"]
    lates = [True]
    if all(task[s][k] == default for (s, k), default in LATE_TASK_KEYS.items()):
        lates.append(False)
    retired = [
        [(key, value) for value in (r.hashed, *r.seen)]
        for key, r in RETIRED.items()
        if key.startswith("task.")
    ]
    # an evaluation told `banned` explicitly was keyed with `eval.banned` too until 2026-12-06
    configs = [True, False] if banned is not None else [True]
    return {
        _eval_key(cfg, n_problems, banned, late, dict(values), config_banned)
        for late in lates
        for values in product(*retired)
        for config_banned in configs
    }


def eval_key(cfg: Config, n_problems: int, banned: bool | None = None, late: bool = True) -> str:
    """A hash of what shapes an evaluation's figures (not the model: that is its path); without
    the `LATE_TASK_KEYS` when not `late`. `banned` given (True or False) overrides
    `eval.banned`, which then does not enter the hash: a validation evaluation (always
    `banned=False`) is the same whatever the config says of the held-out one."""
    return _eval_key(cfg, n_problems, banned, late, config_banned=banned is None)


def _eval_key(
    cfg: Config,
    n_problems: int,
    banned: bool | None,
    late: bool,
    retired: dict[str, Any] | None = None,
    config_banned: bool = True,
) -> str:
    d = legacy(cfg.to_dict(), retired)
    _drop_chat(d)
    if not late:
        for section, key in LATE_TASK_KEYS:
            del d["task"][section][key]
    # the deliberate-backspace options enter only when set, so the keys of evaluations made
    # before they existed still match
    off = {k for k in ("bksp_threshold", "bksp_random", "bksp_search") if not d["eval"][k]}
    if not d["eval"]["value_drop"]:  # then the value model reranks the controls only
        off |= {"value_model", "value_drop"}
    decoding = ("erase_logprob", "erase_at_end", "erase_temperature")
    off |= {k for k in decoding if not d["eval"].get(k)}
    if not config_banned:  # `banned` given explicitly decides instead
        off.add("banned")
    shaping = {
        "task": d["task"],
        "eval": {
            k: v for k, v in d["eval"].items() if k not in ("model", "policy", "n_problems", *off)
        },
        # where the search's traces put backspaces shapes the model, not how it is evaluated
        "trace": {k: v for k, v in d["trace"].items() if k != "placement"},
        "max_new_tokens": d["search"]["max_new_tokens"],
        "seed": cfg.run.seed,
        "dtype": cfg.model.dtype,
        "n_problems": n_problems,
        "banned": banned,
        # what an evaluation holds; raise it when that changes (3: first-error and stratified
        # detector figures; settings tuned on validation problems, not training ones; 4, for
        # Countdown only: problems counted once per numbers multiset, results by target)
        "protocol": 4 if d["task"]["name"] == "countdown" else 3,
    }
    return _digest(shaping)


def _digest(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
