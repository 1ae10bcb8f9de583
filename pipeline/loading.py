"""What a config names, built: its task, and a checkpoint loaded for sampling (for the search
and the evaluation alike, through `workers.policy`), once its backspace settings agree with the
config's."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import Config, TaskConfig
from search.errors import HallucError
from search.tasks import make_task
from search.types import Problem, Task
from workers.policy import Kind, Loaded, context_limit, load


def round_problems(cfg: Config, task: Task) -> list[Problem]:
    """The training problems round `run.round` searches (and the rl arm samples): the first
    `task.n_train`, or with `search.fresh_problems` the n_train that follow the earlier rounds'
    (a task's problems are drawn in a seeded order, so the first k of a longer draw are the k)."""
    n = cfg.task.n_train
    skip = n * cfg.run.round if cfg.search.fresh_problems else 0
    problems = task.problems("train", skip + n)[skip:]
    if skip and len(problems) < n:  # a finite dataset (jsonl) runs out
        raise HallucError(
            f"search.fresh_problems: round {cfg.run.round} searches training problems "
            f"{skip + 1}..{skip + n}, but task {task.name} has {skip + len(problems)}; lower "
            "task.n_train or run.rounds, or turn fresh_problems off"
        )
    return problems


def task_from_config(t: TaskConfig) -> Task:
    """The task `t.name`, built with its own section (`task.arithmetic`, `task.countdown`, ...)."""
    options = dataclasses.asdict(getattr(t, t.name))
    if t.name != "jsonl":
        options["seed"] = t.seed
    return make_task(t.name, **options)


class CheckpointMismatch(HallucError, ValueError):
    """A config whose backspace settings disagree with those the checkpoint was trained with."""


def check_trained_with(cfg: Config, path: Path) -> None:
    """Raise `CheckpointMismatch` where the checkpoint at `path` was trained on backspaces with
    another `trace.unit` or `trace.bksp_token` than `cfg`'s (as its `halluc.json` records):
    decoding would follow the checkpoint and judging the config, or the config's backspace
    would be a token the model never learned. A model without `halluc.json` (a user's base
    model, a bootstrap without backspaces) or trained without them (a clean-only arm, whose
    backspace is banned) has nothing to disagree with."""
    from workers.hf import META, backtrack_meta

    meta = backtrack_meta(path)
    if not meta or not meta.get("backspace", True):
        return
    for key, ours in (("unit", cfg.trace.unit), ("bksp_token", cfg.trace.bksp_token)):
        theirs = meta.get(key, ours)  # a record without the key has nothing to disagree with
        if theirs != ours:
            raise CheckpointMismatch(
                f"trace.{key}={ours} disagrees with the checkpoint, trained with {key}={theirs} "
                f"({path / META}); set trace.{key}={theirs}, or use a model trained with {ours}"
            )


class PromptTooLong(HallucError, ValueError):
    """A problem whose prompt does not fit in the model's context."""


def context_length(path: Path) -> int | None:
    """The positions the checkpoint at `path` takes (its config.json), None where it says none."""
    return context_limit(json.loads((path / "config.json").read_text()))


def check_prompts(
    cfg: Config, path: Path, problems: Sequence[Problem], room: int = 1, what: str = ""
) -> None:
    """Refuse, before any work, a problem whose prompt leaves the model at `path` fewer than
    `room` positions to write in (`what` names the setting that asks for them), naming the
    problem and the lengths: the model would fail deep inside a batch, or be cut off silently."""
    limit = context_length(path)
    if limit is None or not problems:
        return
    from workers.hf import chat_prompt, load_tokenizer

    hf = load_tokenizer(path, cfg.model.trust_remote_code)
    t = cfg.task
    delimiter = task_from_config(t).step_delimiter
    texts = [
        chat_prompt(hf, p.prompt, delimiter, t.system_prompt) if t.chat_template else p.prompt
        for p in problems
    ]
    encoded = hf(texts, add_special_tokens=False)["input_ids"]  # as SearchTokenizer.encode_prompt
    for problem, ids in zip(problems, encoded, strict=True):
        if len(ids) + room > limit:
            need = f"{room} more ({what})" if what else "one more"
            raise PromptTooLong(
                f"problem {problem.id}: its prompt is {len(ids)} tokens and the model at {path} "
                f"takes {limit} positions, too few for {need}; shorten the prompts (or drop that "
                "problem), lower the setting, or use a model with a longer context"
            )


def load_model(cfg: Config, kind: Kind, path: Path, task: Task) -> Loaded:
    """The checkpoint at `path` for sampling with a `kind` policy, as the config says; refused
    before anything loads where its backspace settings disagree (`check_trained_with`)."""
    check_trained_with(cfg, path)
    m = cfg.model
    return load(
        kind,
        path,
        task.step_delimiter,
        cfg.trace.bksp_token,
        cfg.trace.unit,
        device=m.device,
        dtype=m.dtype,
        trust_remote_code=m.trust_remote_code,
        gpu_memory=cfg.search.gpu_memory,
        seed=cfg.run.seed,
        chat=(cfg.task.chat_template, cfg.task.system_prompt),
    )
