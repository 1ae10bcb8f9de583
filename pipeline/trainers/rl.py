"""`train.objective=rl`: on-policy RL, GRPO-style, on the training problems (the train stage's
second loop; stages/train.py prepares the model and calls `train_rl`). The loss pieces are in
`workers.grpo`; what each option means is in `RlConfig`'s docstring (`train.rl`).

    halluc train --preset arith-tiny --set train.objective=rl --set train.rl.group=8
    halluc run --preset arith-tiny --set 'run.arms=[baseline,backtrack,rl]'

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
        every save_steps steps: model, optimizer, scheduler, step, RNG and totals to
        train/rl-checkpoints/step-NNNNNN.pt (atomic); a rerun resumes from the newest
    under Ray Train (train.workers N): each worker samples its share of a step's problems (whole
    groups) on its own copy of the weights; DDP averages the gradients, each worker's weighted by
    its share of the loss-bearing tokens (the step is the one-process mean); rank 0 counts every
    worker's streams, checkpoints and saves
    write train/compute.json (steps, streams, generated tokens, loss-bearing tokens, the
    reference pass's tokens, figures by step), then train/model/ (halluc.json); checkpoints and
    reference removed

A killed run, rerun, ends at the weights of an unkilled one: sampling seeds depend on the step and
the problem only, and the checkpoint holds everything else that changes (tests/test_rl.py).
"""

from __future__ import annotations

import copy
import logging
import math
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from pipeline.config import Config
from pipeline.files import save_model, save_torch, write_json
from pipeline.layout import RoundLayout
from pipeline.loading import task_from_config
from pipeline.shards import ShardError, checked_shard_files, read_table
from search.metrics import analyze
from search.tree import Judge, derive_seed
from search.types import Ask, Policy, Problem, Task
from workers.collate import LOSS_WEIGHTS, BacktrackCollator
from workers.grpo import erase_credits, group_advantages, policy_loss
from workers.hf import META, SearchTokenizer, pick_device
from workers.policy import Decoding, Loaded, make_policy, non_output_specials
from workers.preference import sequence_logps

log = logging.getLogger(__name__)

CHECKPOINTS = "rl-checkpoints"  # in the round's train/ directory
REFERENCE = "rl-reference.pt"
TOTALS = ("rows", "generated_tokens", "loss_tokens", "reference_tokens", "correct")


@dataclass(frozen=True)
class Stream:
    """One sampled stream of a problem: its training row (prompt + tokens, + end-of-sequence
    when it ended; loss on everything after the prompt), what it earned, and the sampler's
    log-probabilities of its tokens."""

    row: dict[str, Any]
    reward: float
    correct: bool
    n_tokens: int
    n_backspaces: int
    logprobs: tuple[float, ...]
    credits: tuple[tuple[tuple[int, ...], float], ...] = ()  # (stream positions, credit)


def has_checkpoint(train_dir: Path) -> bool:
    """Whether an earlier (killed) rl run of this round left a checkpoint to resume from."""
    return _latest(train_dir) is not None


def train_rl(
    model: Any, hf: Any, collate: BacktrackCollator, cfg: Config, rnd: RoundLayout, max_steps: int
) -> None:
    """Train `model` (the backspace token added, on the CPU) with the rl objective on the
    training problems for `max_steps` steps (<= 0: `train.epochs` passes over them), resuming
    from the newest checkpoint in `rnd.train`; save it to `rnd.model` with `compute.json`."""
    t, out = cfg.train, rnd.train
    rank, world = _world()
    values = step_values(rnd) if t.rl.credit == "tree" else {}
    task = task_from_config(cfg.task)
    problems = task.problems("train", cfg.task.n_train)
    per_step = max(1, t.batch_size // t.rl.group)
    steps = max_steps if max_steps > 0 else math.ceil(t.epochs * len(problems) / per_step)
    model.to(pick_device(cfg.model.device))
    # under Ray Train: DDP averages the workers' gradients (and starts them from rank 0's weights)
    trained = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    reference = _reference(model, out / REFERENCE, write=rank == 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.rl.lr or t.lr, weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, t.warmup, steps)
    state = _resume(out, model, optimizer, scheduler)
    tok = SearchTokenizer.wrap(hf, task.step_delimiter, cfg.trace.bksp_token)
    policy = _policy(model, hf, tok, cfg)
    bar = tqdm(range(state["step"], steps), desc="rl", initial=state["step"], total=steps)
    for step in bar if rank == 0 else range(state["step"], steps):
        todo = step_problems(problems, step, per_step, t.seed)[rank::world]  # whole groups each
        streams = sample(policy, model, task, tok, todo, step, cfg, values)
        figures = train_step(trained, reference, optimizer, collate, streams, cfg)
        scheduler.step()
        _count(state, _gathered(streams, world), figures, step)
        if rank == 0 and (step + 1) % t.save_steps == 0 and step + 1 < steps:
            _checkpoint(out, model, optimizer, scheduler, state | {"step": step + 1})
    if rank == 0:
        _finish(model, hf, cfg, rnd, state, steps, per_step)


def _world() -> tuple[int, int]:
    """This process's rank and the number of training processes (Ray Train's process group)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gathered(streams: list[list[Stream]], world: int) -> list[list[Stream]]:
    """Every worker's groups of this step (each worker samples its share of the problems)."""
    if world == 1:
        return streams
    parts: list[Any] = [None] * world
    torch.distributed.all_gather_object(parts, streams)
    return [group for part in parts for group in part]


def step_problems(problems: list[Problem], step: int, per_step: int, seed: int) -> list[Problem]:
    """The problems of optimizer step `step`: the next `per_step` of a sequence of passes over
    `problems`, each pass in its own seeded order."""
    out = []
    for k in range(step * per_step, (step + 1) * per_step):
        epoch, i = divmod(k, len(problems))
        order = list(range(len(problems)))
        random.Random(derive_seed(seed, "rl-order", epoch)).shuffle(order)
        out.append(problems[order[i]])
    return out


def _policy(model: Any, hf: Any, tok: SearchTokenizer, cfg: Config) -> Policy:
    """The project's sampler over the live `model` (its weights as they are at each call), in the
    training attention mode, backspaces allowed, temperature 1, log-probabilities returned."""
    loaded = Loaded(
        "transformers",
        "rl",
        tok,
        model,
        cfg.train.mode,
        cfg.trace.unit,
        True,
        hf.pad_token_id or 0,
        non_output_specials(hf, (tok.eos_id, tok.delim_id, tok.bksp_id)),
    )
    decoding = Decoding(
        temperature=1.0,
        max_new_tokens=cfg.sampling.stream_length,
        max_batch=cfg.sampling.max_batch,
        max_backspaces=cfg.sampling.stream_backspaces,
        backspace_at=cfg.trace.backspace_at,
        logprobs=True,
    )
    return make_policy(loaded, decoding)


def sample(
    policy: Policy,
    model: Any,
    task: Task,
    tok: SearchTokenizer,
    problems: list[Problem],
    step: int,
    cfg: Config,
    values: dict[tuple[int, ...], float],
) -> list[list[Stream]]:
    """`train.rl.group` streams per problem (one list per problem), judged and rewarded; with
    `values` (rl.credit=tree), each with the tree's credit of its backspace runs."""
    t = cfg.train
    prompts = [tuple(tok.encode(p.prompt)) for p in problems]
    asks = [
        Ask(pr, t.rl.group, "end", derive_seed(cfg.run.seed, "rl", cfg.run.round, step, p.id))
        for p, pr in zip(problems, prompts, strict=True)
    ]
    model.eval()
    drawn = policy.sample(asks)
    model.train()
    out = []
    for p, pr, rollouts in zip(problems, prompts, drawn, strict=True):
        judge = Judge(task, p, tok, pr, cfg.trace.unit)
        group = []
        for r in rollouts:
            report = analyze(judge, r.tokens, r.finished)
            ids = [*pr, *r.tokens, *([tok.eos_id] if r.finished else [])]
            unit, bksp, delim = cfg.trace.unit, tok.bksp_id, tok.delim_id
            credits = erase_credits(pr, r.tokens, unit, bksp, delim, values) if values else []
            row = {"input_ids": ids, "loss_mask": [0] * len(pr) + [1] * (len(ids) - len(pr))}
            group.append(
                Stream(
                    row | {"prompt_len": len(pr)},
                    float(report.correct) - t.rl.token_cost * len(r.tokens),
                    report.correct,
                    len(r.tokens),
                    report.n_backspaces,
                    tuple(r.logprobs or ()),
                    tuple((c.positions, c.value) for c in credits),
                )
            )
        out.append(group)
    return out


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
) -> dict[str, float]:
    """One gradient step on the batch of `streams` (every stream of every group); returns its
    loss, KL and the largest gap between the sampler's log-probabilities of the tokens and their
    recomputation through the collator (0 up to float error: the same attention)."""
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
    _, world = _world()
    if world > 1:  # DDP averages over workers: weigh each by its share of the loss-bearing tokens
        n = mask.sum().to(torch.float64)
        total = n.clone()
        torch.distributed.all_reduce(total)
        (loss * (n * world / total).to(loss.dtype)).backward()
    else:
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the Trainer's default, as sft
    optimizer.step()
    return figures | {"loss": loss.item(), "logp_gap": _gap(logp.detach(), flat)}


def _gap(logp: torch.Tensor, flat: list[Stream]) -> float:
    gaps = [0.0]
    for i, s in enumerate(flat):
        start = s.row["prompt_len"] - 1  # target of the first generated token
        got = logp[i, start : start + len(s.logprobs)].cpu()
        gaps.append((got - torch.tensor(s.logprobs)).abs().max().item() if s.logprobs else 0.0)
    return max(gaps)


def step_values(rnd: RoundLayout) -> dict[tuple[int, ...], float]:
    """The Monte Carlo value of every prefix the round's search probed, keyed by its token ids
    (prompt included): the `steps` table's prefix_ids + step_ids -> mc."""
    if not checked_shard_files(rnd.search, "steps"):
        raise ShardError(
            f"train.rl.credit=tree reads the round's steps table, and there is none under "
            f"{rnd.search}: run `halluc search` first, or set train.rl.credit=outcome"
        )
    rows = read_table(rnd.search, "steps").select(["prefix_ids", "step_ids", "mc"]).to_pylist()
    return {(*r["prefix_ids"], *r["step_ids"]): float(r["mc"]) for r in rows}


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
        return {"step": 0, "history": [], **dict.fromkeys(TOTALS, 0)}
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
        | figures
    )
    log.info("rl step %d: %s", step, state["history"][-1])


def _finish(
    model: Any,
    hf: Any,
    cfg: Config,
    rnd: RoundLayout,
    state: dict[str, Any],
    steps: int,
    per_step: int,
) -> None:
    """Save what training cost, then the model (whose existence marks the round trained), then
    remove the checkpoints and the reference."""
    t = cfg.train
    compute = {
        "objective": "rl",
        "optimizer_steps": steps,
        "batch_size": per_step * t.rl.group,  # streams per step
        "problems_per_step": per_step,
        "group": t.rl.group,
        "credit": t.rl.credit,
        "token_warmup_batches": t.token_warmup,
        "backspace_token": True,
    }
    write_json(rnd.compute, compute | {k: state[k] for k in (*TOTALS, "history")})
    meta = {"mode": t.mode, "unit": cfg.trace.unit, "bksp_token": cfg.trace.bksp_token}
    save_model(model, hf, rnd.model, extra={META: meta | {"backspace": True}})
    shutil.rmtree(rnd.train / CHECKPOINTS, ignore_errors=True)
    (rnd.train / REFERENCE).unlink(missing_ok=True)
