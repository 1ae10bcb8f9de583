"""The search stage: tree search over the task's training problems, written as Parquet shards.

    halluc search --preset arith-tiny                       # CPU, in-process
    halluc search --preset arith-tiny --set search.omegaprm.n_mc=4   # any key=value override
    halluc search --preset arith-tiny --set search.algorithm=mcts --set search.value=model \
        --set search.value_model=runs/arith-tiny/value/model      # values from a value model
    ray job submit --working-dir . -- halluc search --preset countdown-gpu \
        --set search.policy=vllm --set search.workers=4 --set run.out_dir=/mnt/shared/runs/cd

Problems are cut into batches of `search.batch_size` in a fixed order; each batch's searches run in
lockstep (one policy call per round of asks) and its three tables are written as one file each.
A rerun of the same command skips finished batches. Outputs, under `run.out_dir/round-R/search/`:
`traces/`, `steps/`, `pairs/` shards, `stats/` per batch, `config.yaml`, `summary.json`. The
summary's `step_error_rate` is the searched model's own per-step error rate: of the steps its
screening rollouts finished on a right prefix, the share the exact checker calls wrong
(`wrong_step_share`: of all their finished steps, as evaluation's chance counts them).

Seeds derive from (run seed, round, problem id), never from the batch or the worker.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.config import SHAPES, Config
from pipeline.files import read_json, remove_stale, write_json
from pipeline.layout import RunLayout, search_summary
from pipeline.loading import (
    check_prompts,
    check_trained_with,
    load_model,
    round_problems,
    task_from_config,
)
from pipeline.runtime import record_environment, set_threads, stage_config
from pipeline.shards import SCHEMA_VERSION, batch_done, read_table, write_batch
from search.driver import Search, run_batched
from search.errors import HallucError
from search.mcts import mcts
from search.metrics import analyze
from search.omegaprm import omegaprm
from search.traces import table_rows
from search.tree import Judge, SearchResult, Tree, derive_seed
from search.types import Policy, Problem, Task, Tokenizer, Valuer
from search.values import ValueParams
from workers.policy import Decoding, load_fake, make_policy

log = logging.getLogger(__name__)


def main(cfg: Config) -> dict[str, Any]:
    """`halluc search`: round `run.round` outside the arms, with that round's model."""
    layout = RunLayout.of(cfg)
    record_environment(cfg, layout.environment)
    r = cfg.run.round
    return search(cfg, layout.model(r), layout.round(r).search)


def search(cfg: Config, model: Path, out: Path) -> dict[str, Any]:
    """Search every training problem not searched yet with the checkpoint `model`, writing shards
    under `out`; returns (and saves) the summary."""
    task = task_from_config(cfg.task)
    problems = round_problems(cfg, task)
    if not problems:
        raise HallucError(f"task {task.name} gave no training problems; check the task config")
    if cfg.search.policy != "fake":
        from workers.hf import check_checkpoint_dir

        check_checkpoint_dir(model)  # fail before any worker starts
        check_trained_with(cfg, model)
        check_prompts(cfg, model, problems, cfg.sampling.max_new_tokens, "sampling.max_new_tokens")
        if cfg.search.value != "mc":
            from workers.valuer import check_tokenizer

            trust = cfg.model.trust_remote_code
            check_tokenizer(cfg.search.value_model, model, problems[0].prompt, trust)
    stage_config(cfg, out, only=SHAPES["search"])
    remove_stale(out)
    remove_stale(out / "stats")
    size = cfg.search.batch_size
    batches = [problems[i : i + size] for i in range(0, len(problems), size)]
    todo = [b for b in range(len(batches)) if not batch_done(out, b)]
    log.info(
        "search: %d problems in %d batches, %d to do, %s policy, %d workers, writing to %s",
        len(problems),
        len(batches),
        len(todo),
        cfg.search.policy,
        cfg.search.workers,
        out,
    )
    jobs = [(cfg, batches[b], out, b) for b in todo]
    with Progress(sum(len(batches[b]) for b in todo)) as progress:
        if cfg.search.workers == 0:
            if cfg.search.policy != "fake":  # the fake path never loads torch
                set_threads(cfg)
            state = build_state(cfg, model, problems)
            for job in jobs:
                progress.update(search_batch(state, *job))
        else:
            from workers.actors import init_ray, run_pool

            init_ray(cfg.run.address)
            run_pool(
                build_state,
                (cfg, model, problems),
                search_batch,
                jobs,
                cfg.search.workers,
                on_result=progress.update,
                num_gpus=1 if cfg.search.policy == "vllm" else 0,  # one per vLLM engine
                threads=max(1, cfg.run.threads // cfg.search.workers),
            )
    summary = summarize(out, len(batches), task.has_step_checker)
    write_json(search_summary(out), summary)
    log.info("search summary: %s", json.dumps(summary))
    return summary


class Progress:
    """A progress bar over problems with rollouts/s, fed one batch's stats at a time."""

    def __init__(self, total: int) -> None:
        self.bar = tqdm(total=total, desc="search", unit="problem")
        self.rollouts = 0
        self.start = time.perf_counter()

    def update(self, stats: dict[str, Any]) -> None:
        self.rollouts += stats["rollouts"]
        rate = self.rollouts / max(time.perf_counter() - self.start, 1e-9)
        self.bar.update(stats["problems"])
        self.bar.set_postfix(rollouts=self.rollouts, rollouts_s=f"{rate:.0f}")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def build_state(cfg: Config, model: Path, problems: list[Problem]) -> State:
    """The task, tokenizer and policy one search worker owns (built inside the worker)."""
    task = task_from_config(cfg.task)
    s = cfg.search
    if s.policy == "fake":
        seed = derive_seed(cfg.run.seed, "fake-policy")
        loaded = load_fake(task, problems, s.fake, cfg.trace.bksp_token, cfg.trace.unit, seed)
    else:
        loaded = load_model(cfg, s.policy, model, task)
    decoding = Decoding(
        temperature=s.temperature,
        max_new_tokens=cfg.sampling.max_new_tokens,
        max_batch=cfg.sampling.max_batch,
        backspace_at=cfg.trace.backspace_at,
    )
    policy = make_policy(loaded, decoding)
    valuer = None
    if s.value != "mc":
        from workers.valuer import load_valuer

        m = cfg.model
        batch = cfg.sampling.max_batch
        valuer = load_valuer(s.value_model, m.device, m.dtype, m.trust_remote_code, batch)
    return State(task, loaded.tokenizer, policy, cfg.run.model_id or loaded.name, valuer)


@dataclass(frozen=True)
class State:
    task: Task
    tokenizer: Tokenizer
    policy: Policy
    model_id: str
    valuer: Valuer | None = None


def new_search(cfg: Config, task: Task, tokenizer: Tokenizer, problem: Problem) -> Search:
    """The configured search algorithm over one problem, seeded by (run seed, round, id)."""
    prompt = tuple(tokenizer.encode_prompt(problem.prompt))
    tree = Tree(Judge(task, problem, tokenizer, prompt, cfg.trace.unit))
    seed = derive_seed(cfg.run.seed, cfg.run.round, problem.id)
    s = cfg.search
    value = ValueParams(s.value, s.value_mix, s.value_threshold)
    if s.algorithm == "mcts":
        return Search(mcts(tree, s.mcts, seed, value))
    return Search(omegaprm(tree, s.omegaprm, seed, value))


def search_batch(
    state: State, cfg: Config, problems: list[Problem], out: Path, batch: int
) -> dict[str, Any]:
    """Search one batch in lockstep and write its shards and stats (idempotent)."""
    task, tokenizer = state.task, state.tokenizer
    searches = [new_search(cfg, task, tokenizer, p) for p in problems]
    before = state.policy.tokens_generated
    results = run_batched(searches, state.policy, valuer=state.valuer)
    tables: dict[str, list[dict[str, Any]]] = {"traces": [], "steps": [], "pairs": []}
    for problem, result in zip(problems, results, strict=True):
        prov = {
            "problem_id": problem.id,
            "task": task.name,
            "round": cfg.run.round,
            "model_id": state.model_id,
            "config_hash": cfg.hash,
            "seed": derive_seed(cfg.run.seed, cfg.run.round, problem.id),
            "schema_version": SCHEMA_VERSION,
        }
        rows_of = table_rows(result, cfg.search.max_corrections, cfg.trace.placement)
        for table, rows in rows_of.items():
            tables[table] += [prov | row for row in rows]
    stats = {
        "batch": batch,
        "problems": len(problems),
        "rollouts": sum(r.rollouts_used for r in results),
        "generated_tokens": state.policy.tokens_generated - before,
        "failing_branches": sum(len(r.branches) for r in results),
        "screened_out": sum(1 for r in results if len(r.tree.nodes) == 1),
    } | screen_counts(results)
    if cfg.search.value != "mc":
        stats["values"] = sum(r.tree.values_used for r in results)  # prefixes the model valued
    write_json(out / "stats" / f"batch-{batch:05d}.json", stats)
    write_batch(out, batch, tables)
    return stats


def summarize(out: Path, n_batches: int, has_checker: bool) -> dict[str, Any]:
    """Totals over every finished batch, read back from the stats and the shards."""
    stats = [read_json(p) for p in sorted((out / "stats").glob("batch-*.json"))]
    traces = read_table(out, "traces", columns=["kind", "mc_error_step", "exact_error_step"])
    kinds = traces.column("kind").to_pylist()
    mc_step = traces.column("mc_error_step").to_pylist()
    exact = traces.column("exact_error_step").to_pylist()
    located = [(m, e) for k, m, e in zip(kinds, mc_step, exact, strict=True) if k == "correction"]
    return {
        "batches": n_batches,
        "problems": sum(s["problems"] for s in stats),
        "rollouts": sum(s["rollouts"] for s in stats),
        **_values(stats),
        "generated_tokens": sum(s.get("generated_tokens", 0) for s in stats),
        "failing_branches": sum(s["failing_branches"] for s in stats),
        "screened_out": sum(s["screened_out"] for s in stats),
        "traces_by_kind": {k: kinds.count(k) for k in sorted(set(kinds))},
        "mc_vs_exact_first_error_agreement": (
            sum(m == e for m, e in located) / len(located) if located and has_checker else None
        ),
        "wrong_step_share": _share(stats, "screen_wrong_steps", "screen_steps"),
        "step_error_rate": _share(stats, "screen_errors_made", "screen_fresh_steps"),
    }


def _values(stats: list[dict[str, Any]]) -> dict[str, int]:
    """The prefixes the value model valued, where the search used one."""
    valued = [s["values"] for s in stats if "values" in s]
    return {"values": sum(valued)} if valued else {}


def screen_counts(results: list[SearchResult]) -> dict[str, int | None]:
    """What the root's screening rollouts (the model's own solutions from scratch, at the search's
    temperature) wrote, as search/metrics.py counts it: finished steps and the wrong ones among
    them (chance's figure), and steps finished on a right prefix and the errors made there (the
    per-step error rate). The counts of wrong steps are None without an exact checker."""
    reports = [
        analyze(res.tree.judge, r.tokens, r.finished)
        for res in results
        for r in res.tree.root.rollouts
    ]
    checker = all(r.errors_made is not None for r in reports)
    return {
        "screen_steps": sum(r.steps_written for r in reports),
        "screen_wrong_steps": sum(r.wrong_steps_written or 0 for r in reports) if checker else None,
        "screen_fresh_steps": sum(r.fresh_steps for r in reports),
        "screen_errors_made": sum(r.errors_made or 0 for r in reports) if checker else None,
    }


def _share(stats: list[dict[str, Any]], part: str, whole: str) -> float | None:
    """sum(part) / sum(whole) over every batch's stats; None without a count (no exact checker,
    or a batch searched before the count was recorded) or with nothing to count."""
    parts = [s.get(part) for s in stats]
    total = sum(s.get(whole) or 0 for s in stats)
    if not stats or None in parts or not total:
        return None
    return sum(p or 0 for p in parts) / total
