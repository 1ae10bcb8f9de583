"""`train.objective=rl`: on-policy RL, GRPO-style, on the training problems (the train stage's
second loop: on-policy sampling does not fit the Trainer's data loader). The loss pieces are in
`workers.grpo`, the sampling in trainers/rl_streams.py; what each option means is in
`TrainConfig`'s docstring.

    halluc train --preset arith-tiny --set train.objective=rl --set train.rl.group=8
    halluc run --preset arith-tiny --set 'run.arms=[baseline,backtrack,rl]'

    warm-up   `train.token_warmup` batches on the round's traces fit the backspace rows (sft's)
    reference = the model as rl starts (backspace rows fitted), frozen (train/rl-reference.pt)
    for each step (`max_steps`, else `epochs` passes over the problems):
        problems  batch_size // rl.group of them, in a seeded order
        sample    rl.group streams each from the current model (the project's sampler, erase
                  attention, backspaces allowed, temperature 1), seeds from (run seed, round,
                  step, problem id)
        reward    1 if the task's exact check accepts the stream, minus rl.token_cost per token
        loss      workers.grpo.policy_loss on the collator's batch of prompt + stream (+ eos):
                  group-normalised advantage (the tree's credit on credited backspaces with
                  rl.credit=tree), KL (k3) to the reference; one AdamW step
        curves    the step's figures, learning rate and gradient norm to train/tb/
        every save_steps steps: model, optimizer, scheduler, step, RNG and totals to
        train/rl-checkpoints/step-NNNNNN.pt (atomic); a rerun resumes from the newest
    under Ray Train (train.workers N): each worker samples its share of a step's problems (whole
    groups) on its own copy of the weights; DDP averages the gradients, each worker's weighted by
    its share of the loss-bearing tokens (the step is the one-process mean); every worker counts
    every worker's streams, rank 0 checkpoints and writes the curves
    returns the Compute (steps, streams, generated tokens, loss-bearing tokens, the reference
    pass's tokens, figures by step); the stage writes it and the model, then removes the
    checkpoints and the reference (`SCRATCH`)

A killed run, rerun, ends at the weights of an unkilled one: sampling seeds depend on the step and
the problem only, and the checkpoint holds everything else that changes
(tests/pipeline/trainers/test_rl.py).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from pipeline.config import Config, ConfigError
from pipeline.curves import GRAD_NORM, LR, Curves
from pipeline.files import save_torch
from pipeline.loading import round_problems, task_from_config
from pipeline.measure.evaluation import load_value_model
from pipeline.shards import checked_shard_files
from pipeline.trainers import sft
from pipeline.trainers.job import Compute, Job, world
from pipeline.trainers.rl_streams import Stream, sample, sampler, step_problems, step_values
from search.types import Valuer
from workers.collate import LOSS_WEIGHTS, BacktrackCollator
from workers.grpo import group_advantages, policy_loss
from workers.hf import SearchTokenizer, pick_device
from workers.preference import sequence_logps

log = logging.getLogger(__name__)

CHECKPOINTS = "rl-checkpoints"  # in the round's train/ directory
REFERENCE = "rl-reference.pt"
SCRATCH = (CHECKPOINTS, REFERENCE)
TOTALS = ("rows", "generated_tokens", "loss_tokens", "reference_tokens", "correct")
CREDITED = ("fresh_erases", "right_steps_erased", "repairs")  # what the erase credit acted on


def check(job: Job) -> None:
    """Fail unless the round has the traces the token warm-up reads (when it runs)."""
    if sft.warms_up(job):
        sft.load_traces(job.cfg, job.rnd)


def load(job: Job, tok: Any, collate: BacktrackCollator) -> Dataset:
    """The token warm-up's rows: sft's (none when `train.token_warmup` is 0)."""
    if not sft.warms_up(job):
        return Dataset.from_dict({"input_ids": [], "loss_mask": []})
    return sft.load(job, tok, collate)


def has_checkpoint(train_dir: Path) -> bool:
    """Whether an earlier (killed) rl run of this round left a checkpoint to resume from."""
    return _latest(train_dir) is not None


def fit(model: Any, tok: Any, collate: BacktrackCollator, rows: Dataset, job: Job) -> Compute:
    """Train `model` (the backspace token added, on the CPU) with the rl objective on the
    training problems for `job.max_steps` steps (<= 0: `train.epochs` passes over them),
    resuming from the newest checkpoint in train/; the backspace rows first fitted on `rows`
    (when there are any, and not on a resumed run: its weights had them)."""
    start = time.perf_counter()
    if len(rows) and not has_checkpoint(job.out):
        sft.warm_token_rows(model, collate, rows, job.cfg)
    state, steps, per_step = _loop(model, tok, collate, job)
    t = job.cfg.train
    return Compute(
        "rl",
        steps,
        loss_tokens=state["loss_tokens"],
        wall_s=time.perf_counter() - start,
        generated_tokens=state["generated_tokens"],
        details={
            "batch_size": per_step * t.rl.group,  # streams per step
            "problems_per_step": per_step,
            "group": t.rl.group,
            "credit": t.rl.credit,
            "token_warmup_batches": t.token_warmup,
            "backspace_token": True,
            **{k: state[k] for k in ("rows", "reference_tokens", "correct", "history")},
            **{k: state.get(k, 0) for k in CREDITED},
        },
    )


def _loop(
    model: Any, hf: Any, collate: BacktrackCollator, job: Job
) -> tuple[dict[str, Any], int, int]:
    """The steps; returns the loop's state (totals, history), the steps and problems a step."""
    cfg, t, out = job.cfg, job.cfg.train, job.out
    rank, n = world()
    values, valuer = credit_values(job)
    task = task_from_config(cfg.task)
    problems = round_problems(cfg, task)
    per_step = max(1, t.batch_size // t.rl.group)
    steps = job.max_steps if job.max_steps > 0 else math.ceil(t.epochs * len(problems) / per_step)
    model.to(pick_device(cfg.model.device))
    # under Ray Train: DDP averages the workers' gradients (and starts them from rank 0's weights)
    trained = torch.nn.parallel.DistributedDataParallel(model) if n > 1 else model
    reference = _reference(model, out / REFERENCE, write=rank == 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.rl.lr or t.lr, weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, t.warmup, steps)
    state = _resume(out, model, optimizer, scheduler)
    chat = (cfg.task.chat_template, cfg.task.system_prompt)
    tok = SearchTokenizer.wrap(hf, task.step_delimiter, cfg.trace.bksp_token, *chat)
    policy = sampler(model, hf, tok, cfg)
    writes = rank == 0 and "tensorboard" in t.report_to
    with Curves(out if writes else None, state["step"] + 1) as curves:
        for step in _progress(range(state["step"], steps), rank):
            todo = step_problems(problems, step, per_step, t.seed)[rank::n]  # whole groups each
            streams = sample(policy, model, task, tok, todo, step, cfg, values, valuer)
            figures, norm = train_step(trained, reference, optimizer, collate, streams, cfg)
            scheduler.step()
            _count(state, _gathered(streams, n), figures, step)
            curves.add(step + 1, _curve(state["history"][-1], scheduler.get_last_lr()[0], norm))
            if rank == 0 and (step + 1) % t.save_steps == 0 and step + 1 < steps:
                _checkpoint(out, model, optimizer, scheduler, state | {"step": step + 1})
    return state, steps, per_step


def credit_values(job: Job) -> tuple[dict[tuple[int, ...], float], Valuer | None]:
    """What backspace runs are credited with: the round's step values (`rl.credit=tree`, or
    `value` where the round searched), and for `value` the value model at `eval.value_model`."""
    cfg, credit = job.cfg, job.cfg.train.rl.credit
    if credit == "outcome":
        return {}, None
    if credit == "tree":
        return step_values(job.rnd), None
    if not cfg.eval.value_model:
        raise ConfigError(
            "train.rl.credit=value values the prefixes the tree lacks with a value model; set "
            "eval.value_model=DIR (a `halluc value` model), or use train.rl.credit=tree"
        )
    searched = job.rnd.search.exists() and checked_shard_files(job.rnd.search, "steps")
    return (step_values(job.rnd) if searched else {}), load_value_model(cfg)


def _progress(steps: range, rank: int) -> Iterable[int]:
    """`steps`, with a progress bar on the first process."""
    if rank:
        return steps
    return tqdm(steps, desc="rl", initial=steps.start, total=steps.stop)


def _curve(figures: dict[str, Any], lr: float, norm: float) -> dict[str, float]:
    """A step's history entry as curves (`train/reward`, `train/kl`, `train/backtrack_rate`...),
    with the learning rate and the gradient norm (before clipping)."""
    scalars = {f"train/{k}": float(v) for k, v in figures.items() if k != "step"}
    return scalars | {LR: lr, GRAD_NORM: norm}


def _gathered(streams: list[list[Stream]], workers: int) -> list[list[Stream]]:
    """Every worker's groups of this step (each worker samples its share of the problems)."""
    if workers == 1:
        return streams
    parts: list[Any] = [None] * workers
    torch.distributed.all_gather_object(parts, streams)
    return [group for part in parts for group in part]


def advantage_targets(streams: list[list[Stream]], width: int) -> torch.Tensor:
    """Per target `[N, width - 1]` (rows in group order): each stream's group-normalised
    advantage, and on the backspaces of a run the tree credited, that credit instead."""
    rewards = torch.tensor([[s.reward for s in group] for group in streams])
    adv = group_advantages(rewards).flatten()
    flat = [s for group in streams for s in group]
    out = adv[:, None].repeat(1, width - 1)
    for i, s in enumerate(flat):
        for positions, value in s.credits:
            for k in positions:  # stream position k is token prompt_len + k, target one before
                out[i, s.row["prompt_len"] + k - 1] = value
    return out


def train_step(
    model: Any,
    reference: Any,
    optimizer: torch.optim.Optimizer,
    collate: BacktrackCollator,
    streams: list[list[Stream]],
    cfg: Config,
) -> tuple[dict[str, float], float]:
    """One gradient step on the batch of `streams` (every stream of every group); returns its
    loss, KL and the largest gap between the sampler's log-probabilities of the tokens and their
    recomputation through the collator (0 up to float error: the same attention), and the
    gradient norm before clipping."""
    flat = [s for group in streams for s in group]
    batch = collate([s.row for s in flat])
    batch.pop(LOSS_WEIGHTS, None)  # train.error_weight is an sft option
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    _, logp = sequence_logps(model, batch)
    with torch.no_grad():
        _, ref = sequence_logps(reference, batch)
    mask = batch["labels"][:, 1:] != -100
    adv = advantage_targets(streams, batch["input_ids"].shape[1]).to(device)
    loss, figures = policy_loss(logp, ref, adv, mask, cfg.train.rl.kl)
    optimizer.zero_grad()
    _, workers = world()
    if workers > 1:  # DDP averages over workers: weigh each by its share of the loss-bearing tokens
        n = mask.sum().to(torch.float64)
        total = n.clone()
        torch.distributed.all_reduce(total)
        (loss * (n * workers / total).to(loss.dtype)).backward()
    else:
        loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the Trainer's default, as sft
    optimizer.step()
    return figures | {"loss": loss.item(), "logp_gap": _gap(logp.detach(), flat)}, norm.item()


def _gap(logp: torch.Tensor, flat: list[Stream]) -> float:
    gaps = [0.0]
    for i, s in enumerate(flat):
        start = s.row["prompt_len"] - 1  # target of the first generated token
        got = logp[i, start : start + len(s.logprobs)].cpu()
        gaps.append((got - torch.tensor(s.logprobs)).abs().max().item() if s.logprobs else 0.0)
    return max(gaps)


def _reference(model: Any, path: Path, write: bool = True) -> Any:
    """A frozen copy of `model` as rl starts: saved to `path` on the first run (by one process
    when `write`), read back from it on a resumed one (whose `model` is about to load a later
    checkpoint)."""
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    if _latest(path.parent) is not None:
        reference.load_state_dict(torch.load(path, weights_only=True))
    elif write:
        save_torch(path, reference.state_dict())
    return reference


def _latest(train_dir: Path) -> Path | None:
    found = sorted((train_dir / CHECKPOINTS).glob("step-*.pt"))
    return found[-1] if found else None


def _resume(out: Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """The loop's state (step, totals, history), loaded with the weights, optimizer, scheduler
    and RNG from the newest checkpoint in `out`; a fresh one when there is none."""
    path = _latest(out)
    if path is None:
        return {"step": 0, "history": [], **dict.fromkeys(TOTALS + CREDITED, 0)}
    saved = torch.load(path, weights_only=True)
    model.load_state_dict(saved.pop("model"))
    optimizer.load_state_dict(saved.pop("optimizer"))
    scheduler.load_state_dict(saved.pop("scheduler"))
    torch.set_rng_state(saved.pop("rng"))
    log.info("rl: resuming from %s", path)
    return dict(saved)


def _checkpoint(
    out: Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]
) -> None:
    """Write step `state["step"]`'s checkpoint, then remove the older ones."""
    path = out / CHECKPOINTS / f"step-{state['step']:06d}.pt"
    save_torch(
        path,
        state
        | {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
        },
    )
    for old in (out / CHECKPOINTS).glob("step-*.pt"):
        if old != path:
            old.unlink()


def _count(
    state: dict[str, Any], streams: list[list[Stream]], figures: dict[str, float], step: int
) -> None:
    """Add one step's streams to the totals and its figures to the history."""
    flat = [s for group in streams for s in group]
    loss_tokens = sum(sum(s.row["loss_mask"]) for s in flat)
    state["rows"] += len(flat)
    state["generated_tokens"] += sum(s.n_tokens for s in flat)
    state["loss_tokens"] += loss_tokens
    state["reference_tokens"] += sum(len(s.row["input_ids"]) for s in flat)
    state["correct"] += sum(s.correct for s in flat)
    acted = {
        "fresh_erases": sum(s.fresh_erases for s in flat),
        "right_steps_erased": sum(s.right_steps_erased for s in flat),
        "repairs": sum(s.repaired for s in flat),
    }
    for k, v in acted.items():  # a checkpoint from before these totals resumes at 0
        state[k] = state.get(k, 0) + v
    n = len(flat)
    state["history"].append(
        {
            "step": step,
            "reward": sum(s.reward for s in flat) / n,
            "accuracy": sum(s.correct for s in flat) / n,
            "tokens": sum(s.n_tokens for s in flat) / n,
            "backtrack_rate": sum(s.n_backspaces > 0 for s in flat) / n,
            "credited_runs": sum(len(s.credits) for s in flat),
        }
        | acted
        | figures
    )
    log.info("rl step %d: %s", step, state["history"][-1])
