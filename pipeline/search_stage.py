"""The search stage: tree search over the task's training problems, written as Parquet shards.

    halluc search --preset arith-tiny                       # CPU, in-process
    halluc search --preset arith-tiny --set search.n_mc=4   # any key=value override
    ray job submit --working-dir . -- halluc search --preset countdown-gpu \
        --set search.policy=vllm --set search.workers=4 --set run.out_dir=/mnt/shared/runs/cd

Problems are cut into batches of `search.batch_size` in a fixed order; each batch's searches run in
lockstep (one policy call per round of asks) and its three tables are written as one file each.
A rerun of the same command skips finished batches. Outputs, under `run.out_dir/round-R/search/`:
`traces/`, `steps/`, `pairs/` shards, `stats/` per batch, `config.yaml`, `summary.json`.

Seeds derive from (run seed, round, problem id), never from the batch or the worker.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.config import Config, save_config
from pipeline.shards import SCHEMA_VERSION, batch_done, write_batch
from search.driver import Search, run_batched
from search.fake import ScriptedPolicy
from search.mcts import MctsParams, mcts
from search.omegaprm import OmegaParams, omegaprm
from search.tasks import make_task
from search.tokenizer import CharTokenizer
from search.traces import table_rows
from search.tree import Judge, Tree, derive_seed
from search.types import Policy, Problem, Task, Tokenizer
from workers.actors import init_ray, run_pool
from workers.hf import check_checkpoint_dir

log = logging.getLogger(__name__)


def stage_dir(cfg: Config) -> Path:
    return Path(cfg.run.out_dir) / f"round-{cfg.run.round}" / "search"


def main(cfg: Config) -> dict[str, Any]:
    """Search every training problem not searched yet; returns (and saves) the summary."""
    out = stage_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    task = make_task_from(cfg)
    problems = task.problems("train", cfg.task.n_train)
    if not problems:
        raise ValueError(f"task {task.name} gave no training problems; check the task config")
    if cfg.search.policy != "fake":
        check_checkpoint_dir(model_path(cfg))  # fail before any worker starts
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
            state = build_state(cfg, problems)
            for job in jobs:
                progress.update(search_batch(state, *job))
        else:
            init_ray(cfg.search.address)
            run_pool(
                build_state,
                (cfg, problems),
                search_batch,
                jobs,
                cfg.search.workers,
                on_result=progress.update,
                num_gpus=1 if cfg.search.policy == "vllm" else 0,  # one per vLLM engine
            )
    summary = summarize(out, len(batches), task.has_step_checker)
    _write_json(out / "summary.json", summary)
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


def model_path(cfg: Config) -> Path:
    """The checkpoint the policy loads: `model.path`, or the run's bootstrap model."""
    return Path(cfg.model.path) if cfg.model.path else Path(cfg.run.out_dir) / "bootstrap" / "model"


def build_state(cfg: Config, problems: list[Problem]) -> State:
    """The task, tokenizer and policy one search worker owns (built inside the worker)."""
    task = make_task_from(cfg)
    s = cfg.search
    if s.policy == "fake":
        tokenizer: Tokenizer = CharTokenizer(bksp_token=cfg.trace.bksp_token)
        policy: Policy = ScriptedPolicy(
            task,
            problems,
            tokenizer,
            s.fake_error_rate,
            s.fake_trap_rate,
            s.fake_n_traps,
            s.fake_fix_rate,
            cfg.trace.unit,
            max_new_tokens=s.max_new_tokens,
            seed=derive_seed(cfg.run.seed, "fake-policy"),
        )
        return State(task, tokenizer, policy, f"fake:{s.fake_error_rate}/{s.fake_trap_rate}")
    from workers.hf import SearchTokenizer, backtrack_meta, load_checkpoint, load_tokenizer

    path = model_path(cfg)
    model: Any = None  # vLLM loads the weights itself
    if s.policy == "vllm":
        hf = load_tokenizer(path, cfg.model.trust_remote_code)
    else:
        model, hf = load_checkpoint(
            path, cfg.model.device, cfg.model.dtype, cfg.model.trust_remote_code
        )
    tok = SearchTokenizer.wrap(hf, task.step_delimiter, cfg.trace.bksp_token)
    # a model trained on backspaces uses them, in its attention mode; any other model must not
    # emit one by chance
    meta = backtrack_meta(path)
    options = {
        "temperature": s.temperature,
        "max_new_tokens": s.max_new_tokens,
        "ban_ids": [] if meta else [tok.bksp_id],
        "bksp_id": tok.bksp_id,
        "mode": meta.get("mode", "stream"),
        "unit": meta.get("unit", cfg.trace.unit),
        "step_end_only": cfg.trace.step_end_only(meta.get("unit", cfg.trace.unit)),
    }
    if s.policy == "vllm":
        from workers.segments import SegmentPolicy
        from workers.vllm_engine import VllmEngine

        engine = VllmEngine(
            path, cfg.model.dtype, s.gpu_memory, cfg.model.trust_remote_code, cfg.run.seed
        )
        policy = SegmentPolicy(engine, tok.eos_id, tok.delim_id, **options)
    else:
        from workers.sampler import TransformersPolicy

        pad = hf.pad_token_id or 0
        policy = TransformersPolicy(
            model, tok.eos_id, tok.delim_id, max_batch=s.max_batch, pad_id=pad, **options
        )
    return State(task, tok, policy, cfg.run.model_id or str(path))


@dataclass(frozen=True)
class State:
    task: Task
    tokenizer: Tokenizer
    policy: Policy
    model_id: str


def make_task_from(cfg: Config) -> Task:
    t = cfg.task
    if t.name == "arithmetic":
        return make_task("arithmetic", op=t.op, digits=t.digits, seed=t.seed)
    if t.name == "countdown":
        return make_task("countdown", seed=t.seed)
    return make_task(
        "jsonl", path=t.path, question_field=t.question_field, answer_field=t.answer_field
    )


def new_search(cfg: Config, task: Task, tokenizer: Tokenizer, problem: Problem) -> Search:
    """The configured search algorithm over one problem, seeded by (run seed, round, id)."""
    prompt = tuple(tokenizer.encode(problem.prompt))
    tree = Tree(Judge(task, problem, tokenizer, prompt, cfg.trace.unit))
    s = cfg.search
    seed = derive_seed(cfg.run.seed, cfg.run.round, problem.id)
    if s.algorithm == "mcts":
        return Search(
            mcts(tree, MctsParams(s.n_screen, s.n_mc, s.simulations, s.width, s.mcts_c_puct), seed)
        )
    params = OmegaParams(
        s.n_screen, s.n_mc, s.budget, s.alpha, s.beta, s.length_scale, s.c_puct, s.locate
    )
    return Search(omegaprm(tree, params, seed))


def search_batch(
    state: State, cfg: Config, problems: list[Problem], out: Path, batch: int
) -> dict[str, Any]:
    """Search one batch in lockstep and write its shards and stats (idempotent)."""
    task, tokenizer = state.task, state.tokenizer
    searches = [new_search(cfg, task, tokenizer, p) for p in problems]
    results = run_batched(searches, state.policy)
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
        for table, rows in table_rows(result, cfg.search.max_corrections).items():
            tables[table] += [prov | row for row in rows]
    stats = {
        "batch": batch,
        "problems": len(problems),
        "rollouts": sum(r.rollouts_used for r in results),
        "failing_branches": sum(len(r.branches) for r in results),
        "screened_out": sum(1 for r in results if len(r.tree.nodes) == 1),
    }
    _write_json(out / "stats" / f"batch-{batch:05d}.json", stats)
    write_batch(out, batch, tables)
    return stats


def summarize(out: Path, n_batches: int, has_checker: bool) -> dict[str, Any]:
    """Totals over every finished batch, read back from the stats and the shards."""
    import pyarrow.parquet as pq

    stats = [json.loads(p.read_text()) for p in sorted((out / "stats").glob("batch-*.json"))]
    traces = pq.read_table(out / "traces", columns=["kind", "mc_error_step", "exact_error_step"])
    kinds = traces.column("kind").to_pylist()
    mc_step = traces.column("mc_error_step").to_pylist()
    exact = traces.column("exact_error_step").to_pylist()
    located = [(m, e) for k, m, e in zip(kinds, mc_step, exact, strict=True) if k == "correction"]
    return {
        "batches": n_batches,
        "problems": sum(s["problems"] for s in stats),
        "rollouts": sum(s["rollouts"] for s in stats),
        "failing_branches": sum(s["failing_branches"] for s in stats),
        "screened_out": sum(s["screened_out"] for s in stats),
        "traces_by_kind": {k: kinds.count(k) for k in sorted(set(kinds))},
        "mc_vs_exact_first_error_agreement": (
            sum(m == e for m, e in located) / len(located) if located and has_checker else None
        ),
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)
