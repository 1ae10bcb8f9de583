"""Benchmarks with a real model on the CPU: figures for BENCHMARKS.md (issue 3).

    .venv/bin/python benchmarks/model_search_bench.py [--out bench-model.json]

1. Batched sampling vs one prefix per `model.generate` call: the bootstrap-sized GPT-2 (3 layers,
   128 wide) from a config, 128 prompts, exactly 48 new tokens each in both (end-of-sequence
   banned), sampling at T=1.0. Ratio of tokens/s.
2. Search throughput with 2 Ray workers vs 1 on this machine: `halluc search` on the arith-tiny
   bootstrap model (trained first if missing), same problems, rollouts/s over the whole stage
   (actor start-up included) and over the search alone. With `--scale-model DIR [--preset P]`,
   this alone, on that checkpoint (the model-size ladder's 10M model: a stage of minutes);
   `--set run.threads=1` gives every worker one math thread (default: the run's 2, split).
3. Share of wall time outside the model: the in-process search, time inside `policy.sample`
   against the stage's wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from pipeline.config import BootstrapConfig, load_config
from pipeline.layout import RunLayout
from pipeline.loading import task_from_config
from pipeline.stages import bootstrap
from pipeline.stages import search as search_stage
from search.types import Ask
from workers.sampler import TransformersPolicy

RUN = Path("runs/bench")


def sampler_vs_generate(n_prompts: int = 128, new: int = 48) -> dict[str, Any]:
    torch.manual_seed(0)
    tokenizer = bootstrap.build_tokenizer(["0123456789+*=?\nans "])
    model = bootstrap.build_model(BootstrapConfig(), tokenizer).eval()
    prompts = [tokenizer.encode(f"{100 + 7 * i}+{200 + 3 * i}=?\n") for i in range(n_prompts)]
    eos = tokenizer.eos_token_id
    policy = TransformersPolicy(
        model,
        eos,
        tokenizer.encode("\n")[0],
        1.0,
        new,
        max_batch=256,
        ban_ids=[eos],
        pad_id=tokenizer.pad_token_id,
    )
    t = time.perf_counter()
    out = policy.sample([Ask(tuple(p), 1, "end", i) for i, p in enumerate(prompts)])
    batched_s = time.perf_counter() - t
    batched_tokens = sum(len(rs[0].tokens) for rs in out)
    t = time.perf_counter()
    plain_tokens = 0
    with torch.inference_mode():
        for p in prompts:
            ids = model.generate(
                torch.tensor([p]),
                do_sample=True,
                max_new_tokens=new,
                min_new_tokens=new,
                pad_token_id=tokenizer.pad_token_id,
            )
            plain_tokens += ids.shape[1] - len(p)
    plain_s = time.perf_counter() - t
    return {
        "prompts": n_prompts,
        "new_tokens_each": new,
        "batched_tokens": batched_tokens,
        "generate_tokens": plain_tokens,
        "batched_tokens_per_s": batched_tokens / batched_s,
        "generate_tokens_per_s": plain_tokens / plain_s,
        "speedup": (batched_tokens / batched_s) / (plain_tokens / plain_s),
    }


class TimedPolicy:
    """A policy with the seconds spent inside it counted; its counters are the inner policy's."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds = inner, 0.0

    def sample(self, asks: Any) -> Any:
        t = time.perf_counter()
        try:
            return self.inner.sample(asks)
        finally:
            self.seconds += time.perf_counter() - t

    @property
    def generated(self) -> list[list[int]]:
        return self.inner.generated

    @property
    def discards(self) -> bool:
        return self.inner.discards

    @property
    def tokens_generated(self) -> int:
        return self.inner.tokens_generated


def in_process(cfg: Any) -> dict[str, Any]:
    """The search stage's in-process loop, with the time inside the model counted apart."""
    problems = task_from_config(cfg.task).problems("train", cfg.task.n_train)
    t = time.perf_counter()
    layout = RunLayout.of(cfg)
    state = search_stage.build_state(cfg, layout.model(0), problems)
    timed = TimedPolicy(state.policy)
    state = search_stage.State(state.task, state.tokenizer, timed, state.model_id)
    out = layout.round(0).search
    size = cfg.search.batch_size
    rollouts = 0
    for b, start in enumerate(range(0, len(problems), size)):
        stats = search_stage.search_batch(state, cfg, problems[start : start + size], out, b)
        rollouts += stats["rollouts"]
    wall = time.perf_counter() - t
    return {
        "wall_s": wall,
        "rollouts": rollouts,
        "rollouts_per_s": rollouts / wall,
        "model_s": timed.seconds,
        "outside_model_share": 1 - timed.seconds / wall,
    }


def search_runs(n_train: int) -> dict[str, Any]:
    common = [f"run.out_dir={RUN}", f"task.n_train={n_train}", "search.batch_size=16"]
    bootstrap.main(load_config("arith-tiny", common))
    shutil.rmtree(RunLayout(RUN).round(0).root, ignore_errors=True)
    figures: dict[str, Any] = {"in_process": in_process(load_config("arith-tiny", common))}
    return figures | one_and_two_workers("arith-tiny", common, RunLayout(RUN).round(0).root)


def one_and_two_workers(preset: str, common: list[str], scratch: Path) -> dict[str, Any]:
    """The search stage with 1, then 2 Ray workers (`scratch`, its output, removed before each),
    timed whole; rollouts/s of each and their ratio."""
    figures: dict[str, Any] = {}
    for workers in (1, 2):
        shutil.rmtree(scratch, ignore_errors=True)
        cfg = load_config(preset, [*common, f"search.workers={workers}"])
        t = time.perf_counter()
        summary = search_stage.main(cfg)
        wall = time.perf_counter() - t
        figures[f"ray_workers_{workers}"] = {
            "wall_s": wall,
            "rollouts": summary["rollouts"],
            "rollouts_per_s": summary["rollouts"] / wall,
        }
        print(json.dumps({workers: figures[f"ray_workers_{workers}"]}), flush=True)
    w1, w2 = figures["ray_workers_1"], figures["ray_workers_2"]
    figures["two_vs_one_workers"] = w2["rollouts_per_s"] / w1["rollouts_per_s"]
    return figures


def search_scaling(preset: str, model: str, n_train: int, sets: list[str]) -> dict[str, Any]:
    """`halluc search` with 1 then 2 Ray workers on the checkpoint `model` (a larger model, whose
    stage is long enough to amortise the actors' start-up), `n_train` training problems."""
    root = RUN / "scale"
    common = [f"run.out_dir={root}", f"task.n_train={n_train}", f"model.path={model}", *sets]
    figures: dict[str, Any] = {"preset": preset, "model": model, "problems": n_train, "sets": sets}
    return figures | one_and_two_workers(preset, common, root)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-model.json")
    ap.add_argument("--problems", type=int, default=128)
    ap.add_argument("--scale-model", default="", help="only 2 workers vs 1 on this checkpoint")
    ap.add_argument("--preset", default="arith-headroom", help="with --scale-model")
    ap.add_argument("--set", action="append", default=[], help="key=value, with --scale-model")
    args = ap.parse_args()
    if args.scale_model:
        scaling = search_scaling(args.preset, args.scale_model, args.problems, args.set)
        Path(args.out).write_text(json.dumps(scaling, indent=2))
        return
    report = {
        "threads": torch.get_num_threads(),
        "sampler": sampler_vs_generate(),
        "search": search_runs(args.problems),
    }
    print(json.dumps(report, indent=2))
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
