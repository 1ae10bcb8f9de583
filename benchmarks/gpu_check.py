"""One GPU check for issue 26 (Scale): sampling, erase-mode training, and a Countdown bootstrap.

    PYTHONPATH=. python3 benchmarks/gpu_check.py --out gpu-check.json           # H200, <= 7 min
    PYTHONPATH=. python3 benchmarks/gpu_check.py --only train --out train.json   # one section again
    PYTHONPATH=. python3 benchmarks/gpu_check.py --tiny                          # CPU, seconds

Sections (`--only`, repeatable; all three by default), each catching its own failure:

1. sampler: `workers.sampler.TransformersPolicy` (one call, 256 rows) against `model.generate`
   on the same 256 prompts in one call, and one prompt per call (on 8 of them: tokens/s is a
   rate). GPT-2 124M from a config (random weights, bf16 weights on CUDA, GPT-2's vocabulary of
   50,257), 32-token prompts, exactly 128 new tokens per row (end-of-sequence banned), sampling
   at T=1.0 from the whole distribution (top_k=0, top_p=1.0).
2. train: tokens/s of a training step (collate, forward and backward under bf16 autocast,
   AdamW) on the same 124M config (n_positions 4,096) at L=1,024 (16 rows) and L=4,096 (4 rows)
   of random streams with backspace runs: stream mode (SDPA, causal), erase mode with the
   boolean mask built on the device from `erased_at` (`workers.erase.erase_mask`), and erase
   mode on FlexAttention (`workers.erase.erase_block_mask` through the registered attention
   function, compiled; CUDA only), and erase mode on blocked SDPA (the boolean mask, SDPA over
   blocks of 256 queries each against the keys up to its last: `workers.erase.
   use_blocked_attention`, what the project's training stages switch SDPA models to). First, the
   erase paths' logits on the same weights are compared with SDPA's (FlexAttention also on the CPU
   with --tiny, unfused). No dropout in any model here (FlexAttention has no attention dropout).
3. bootstrap: GPT-2 of about 20M parameters (8 layers, 448 wide) on Countdown with 4 numbers
   (`CountdownTask()` defaults: numbers 1..99, targets 10..100, 10 of them held out for test),
   `search.tokenizer.CharTokenizer`, trained for `--minutes` of wall clock (less if the whole
   check would pass `--budget-minutes`) in bf16 autocast on fresh train problems every batch
   (DataLoader workers draw them as the task does, with the task's reference solutions), then
   strict greedy accuracy on the task's held-out problems (`search.tree.Judge.correct`).

Progress and results are JSON lines on stdout, each with the seconds since start; the whole
report goes to `--out` after every section (a killed run keeps what finished). Exit status 1 if
a section failed. Imports nothing from ray, vllm or datasets
(tests/benchmarks/test_gpu_check.py checks); runs on transformers 5.17 as well as 5.24.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import platform
import random
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, GPT2Config

from pipeline.measure.evaluation import wilson
from search.tasks.countdown import CountdownTask, _moves  # the task's own move rule
from search.tokenizer import CharTokenizer
from search.tree import Judge
from search.types import Ask, Problem
from workers.collate import BacktrackCollator
from workers.erase import (
    erase_block_mask,
    erase_mask,
    erase_vectors,
    register_flex_attention,
    use_blocked_attention,
)
from workers.sampler import TransformersPolicy

SECTIONS = ("sampler", "train", "bootstrap")
FORBIDDEN = ("ray", "vllm", "datasets")  # not installed on the GPU machine
ALPHABET = "0123456789+-*/=: \n"  # Countdown's prompts and steps


@dataclass(frozen=True)
class Shapes:
    """Sizes of one profile: `full` for the GPU, `small` and `tiny` for CPU runs."""

    gpt: tuple[int, int, int] = (12, 768, 12)  # layers, width, heads: GPT-2 124M
    vocab: int = 50257
    rows: int = 256
    prompt: int = 32
    new: int = 128
    single_prompts: int = 8
    train: tuple[tuple[int, int], ...] = ((1024, 16), (4096, 4))  # (length, rows)
    warmup_steps: int = 2
    timed_steps: int = 5
    boot_gpt: tuple[int, int, int] = (8, 448, 7)
    boot_batch: int = 256
    boot_lr: float = 1e-3
    minutes: float = 5.0
    eval_problems: int = 1000
    workers: int = 12  # of 16 cores: one trains, one draws the held-out set at first
    section_budget_s: float = 120.0  # train starts no new arm past it
    cpu_flex: bool = False  # compare FlexAttention's logits on a CPU too (unfused: slow)
    eval_tokens: int = 96
    eval_reserve_s: float = 45.0  # kept from the training budget for the evaluation


PROFILES = {
    "full": Shapes(),
    "small": Shapes(
        gpt=(4, 256, 4),
        rows=32,
        new=32,
        single_prompts=4,
        train=((256, 4), (512, 2)),
        warmup_steps=1,
        timed_steps=3,
        boot_gpt=(4, 128, 4),
        boot_batch=64,
        minutes=1.0,
        eval_problems=100,
        workers=1,
    ),
    "tiny": Shapes(
        gpt=(2, 64, 2),
        vocab=1000,
        rows=8,
        prompt=8,
        new=8,
        single_prompts=2,
        # the first length is the parity check's: over two query blocks of blocked SDPA, and a part
        train=((600, 1), (64, 2)),
        warmup_steps=1,
        timed_steps=2,
        boot_gpt=(2, 64, 2),
        boot_batch=16,
        minutes=0.05,
        eval_problems=8,
        workers=0,
        section_budget_s=900.0,  # every arm, however slow the test machine
        cpu_flex=True,
        eval_tokens=24,
        eval_reserve_s=0.0,
    ),
}


class Log:
    """JSON lines with the seconds since start, flushed at once; the report, rewritten whole."""

    def __init__(self, out: Path | None) -> None:
        self.start, self.out = time.time(), out
        self.report: dict[str, Any] = {}

    def __call__(self, section: str, event: str, **fields: Any) -> None:
        line = {
            "t": round(time.time() - self.start, 1),
            "clock": time.strftime("%H:%M:%S"),
            "section": section,
            "event": event,
        }
        print(json.dumps(line | fields, default=str), flush=True)

    def save(self) -> None:
        if self.out is not None:
            self.out.write_text(json.dumps(self.report, indent=2, default=str))


def gpt2(
    layout: tuple[int, int, int],
    vocab: int,
    positions: int,
    device: torch.device,
    attn: str = "sdpa",
    eos: int | None = None,
) -> Any:
    """A GPT-2 from a config on `device`, seeded: the same weights for the same arguments.
    End-of-sequence `eos` (default: the last id) only names it in the config; `attn` "blocked":
    SDPA switched to `use_blocked_attention`."""
    eos = vocab - 1 if eos is None else eos
    n_layer, n_embd, n_head = layout
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=vocab,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=positions,
        attn_pdrop=0.0,  # FlexAttention has no attention dropout; no dropout anywhere
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    with torch.device(device):  # initialised where it runs: no copy of 124M weights
        model = AutoModelForCausalLM.from_config(
            config, attn_implementation="sdpa" if attn == "blocked" else attn
        )
    if attn == "blocked" and not use_blocked_attention(model):
        raise RuntimeError("blocked SDPA could not be set on GPT-2")
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


# --- 1. sampler ------------------------------------------------------------------------------


def sampler_section(s: Shapes, device: torch.device, log: Log) -> dict[str, Any]:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = gpt2(s.gpt, s.vocab, 1024, device).to(dtype=dtype).eval()
    eos = s.vocab - 1
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, eos, (s.rows, s.prompt), generator=g)
    asks = [Ask(tuple(p), 1, "end", i) for i, p in enumerate(prompts.tolist())]

    def ours(new: int) -> int:
        policy = TransformersPolicy(
            model, eos, eos - 1, 1.0, new, max_batch=s.rows, ban_ids=[eos], pad_id=0
        )
        return sum(len(r[0].tokens) for r in policy.sample(asks))

    def generate(batch: torch.Tensor, new: int) -> int:
        out = model.generate(
            input_ids=batch.to(device),
            attention_mask=torch.ones_like(batch, device=device),
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=new,
            min_new_tokens=new,
            pad_token_id=eos,
        )
        return int(out[:, batch.shape[1] :].numel())

    ours(4), generate(prompts, 4), generate(prompts[:1], 4)  # warm-up: kernels, allocator
    log("sampler", "warm")
    ours_s, ours_tok = timed(device, lambda: ours(s.new))
    log("sampler", "ours", s=round(ours_s, 3), tokens=ours_tok)
    batched_s, batched_tok = timed(device, lambda: generate(prompts, s.new))
    log("sampler", "generate_batched", s=round(batched_s, 3), tokens=batched_tok)
    single_s, single_tok = timed(
        device, lambda: sum(generate(prompts[i : i + 1], s.new) for i in range(s.single_prompts))
    )
    rates = {
        "sampler_tokens_per_s": ours_tok / ours_s,
        "generate_batched_tokens_per_s": batched_tok / batched_s,
        "generate_single_tokens_per_s": single_tok / single_s,
    }
    return {
        "model": f"gpt2 {s.gpt[0]}x{s.gpt[1]}, vocab {s.vocab}, random weights",
        "params": sum(p.numel() for p in model.parameters()),
        "dtype": str(dtype),
        "rows": s.rows,
        "prompt_tokens": s.prompt,
        "new_tokens": s.new,
        "single_prompts": s.single_prompts,
        "tokens": {"sampler": ours_tok, "batched": batched_tok, "single": single_tok},
        **rates,
        "sampler_over_generate_single": rates["sampler_tokens_per_s"]
        / rates["generate_single_tokens_per_s"],
        "sampler_over_generate_batched": rates["sampler_tokens_per_s"]
        / rates["generate_batched_tokens_per_s"],
    }


# --- 2. erase-mode vs stream-mode training ----------------------------------------------------


def random_streams(rows: int, width: int, vocab: int) -> list[list[int]]:
    """Rows of exactly `width` tokens: a 32-token prompt, then tokens with a backspace run of
    1-4 about every 40 tokens (token unit; backspace = vocab - 2, delimiter = vocab - 3)."""
    rng = random.Random(width)
    bksp, delim = vocab - 2, vocab - 3
    out = []
    for _ in range(rows):
        ids = [rng.randrange(vocab - 3) for _ in range(31)] + [delim]
        visible = len(ids)
        while len(ids) < width:
            if visible > 32 and rng.random() < 1 / 40:
                n = min(rng.randint(1, 4), visible - 32, width - len(ids))
                ids += [bksp] * n
                visible -= n
                continue
            ids.append(delim if rng.random() < 0.1 else rng.randrange(vocab - 3))
            visible += 1
        out.append(ids)
    return out


def make_batch(streams: list[list[int]], mode: str, vocab: int, device: torch.device) -> dict:
    """Model inputs on `device`: ids, labels, and the mode's attention (mask or block mask)."""
    ids = torch.tensor(streams)
    batch: dict[str, Any] = {"input_ids": ids, "labels": ids}
    if mode == "stream":
        batch["attention_mask"] = torch.ones_like(ids)
    else:
        erased_at, positions = erase_vectors(
            streams, [32] * len(streams), ids.shape[1], "token", vocab - 2, vocab - 3
        )
        batch["position_ids"] = positions
        batch["erased_at"] = erased_at
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    erased_at = batch.pop("erased_at", None)
    if mode in ("erase_sdpa", "erase_blocked"):
        batch["attention_mask"] = erase_mask(erased_at, torch.bool)
    elif mode == "erase_flex":
        batch["erase_block_mask"] = erase_block_mask(erased_at)
    return batch


def flex_attn() -> str | None:
    try:
        return register_flex_attention()
    except ImportError:  # a torch without FlexAttention
        return None


def train_arms(device: torch.device) -> dict[str, str]:
    """Timed modes -> attention implementation: FlexAttention on CUDA only (on the CPU it is
    unfused and has no backward)."""
    arms = {"stream": "sdpa", "erase_sdpa": "sdpa", "erase_blocked": "blocked"}
    flex = flex_attn()
    if flex is not None and device.type == "cuda":
        arms["erase_flex"] = flex
    return arms


def train_step(model: Any, opt: Any, batch: dict, device: torch.device) -> torch.Tensor:
    """One step; the loss stays on the device (no sync, so the next batch's collate overlaps)."""
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def erase_logit_gap(
    s: Shapes, mode: str, attn: str, streams: list[list[int]], device: torch.device
) -> float:
    """Max |logit| difference of erase mode on SDPA and `mode` on attention implementation
    `attn` (FlexAttention, blocked SDPA) on `streams`, same weights, bf16 autocast. On CUDA with
    gradients on, as in training, so the compiled FlexAttention is the one the timed arm then
    reuses (the CPU's unfused FlexAttention has no backward)."""
    logits = []
    for arm, implementation in (("erase_sdpa", "sdpa"), (mode, attn)):
        model = gpt2(s.gpt, s.vocab, max(w for w, _ in s.train), device, implementation)
        grad = device.type == "cuda"
        with torch.set_grad_enabled(grad), torch.autocast(device.type, dtype=torch.bfloat16):
            logits.append(model(**make_batch(streams, arm, s.vocab, device)).logits.detach())
        del model
    return float((logits[0].float() - logits[1].float()).abs().max())


def time_arm(
    s: Shapes, mode: str, attn: str, streams: list[list[int]], device: torch.device
) -> dict[str, Any]:
    """Seconds per step and tokens/s of `mode` on a fresh model, after warm-up steps (which
    compile FlexAttention on its first call)."""
    model = gpt2(s.gpt, s.vocab, max(w for w, _ in s.train), device, attn).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for _ in range(s.warmup_steps):
        train_step(model, opt, make_batch(streams, mode, s.vocab, device), device)
    sync(device)
    t = time.perf_counter()
    for _ in range(s.timed_steps):
        loss = train_step(model, opt, make_batch(streams, mode, s.vocab, device), device)
    sync(device)
    secs = time.perf_counter() - t
    tokens = len(streams) * len(streams[0]) * s.timed_steps
    return {
        "rows": len(streams),
        "step_s": secs / s.timed_steps,
        "tokens_per_s": tokens / secs,
        "loss": loss.item(),
    }


def train_section(s: Shapes, device: torch.device, log: Log) -> dict[str, Any]:
    arms = train_arms(device)
    start = time.time()
    out: dict[str, Any] = {"model": f"gpt2 {s.gpt[0]}x{s.gpt[1]}, vocab {s.vocab}", "arms": {}}
    flex = flex_attn()
    for width, rows in s.train:
        streams = random_streams(rows, width, s.vocab)
        if width == s.train[0][0]:
            other = {"erase_blocked": "blocked"}
            if flex is not None and (device.type == "cuda" or s.cpu_flex):
                other["erase_flex"] = flex
            for mode, attn in other.items():
                gap = erase_logit_gap(s, mode, attn, streams, device)
                out[f"{mode}_vs_sdpa_max_logit_diff"] = gap
                log("train", "parity", arm=mode, max_logit_diff=gap)
        for mode, attn in arms.items():
            if time.time() - start > s.section_budget_s:
                result = {"skipped": f"section budget {s.section_budget_s} s spent"}
            else:
                result = time_arm(s, mode, attn, streams, device)
                free(device)
            out["arms"][f"{mode}@{width}"] = result
            log("train", f"{mode}@{width}", **result)
        stream = out["arms"][f"stream@{width}"].get("step_s")
        for mode in arms:
            step = out["arms"][f"{mode}@{width}"].get("step_s")
            if mode != "stream" and step and stream:
                out[f"{mode}_over_stream@{width}"] = step / stream
    return out


# --- 3. Countdown bootstrap -------------------------------------------------------------------


def reachable(numbers: Sequence[int]) -> set[int]:
    """Every value that combining all of `numbers` with Countdown's moves can end on (so
    `solvable(numbers, t)` iff t is in it), by dynamic programming over subsets: each subset's
    values from every split into two (smaller subsets come first in increasing bit order)."""
    values: dict[int, set[int]] = {1 << i: {x} for i, x in enumerate(numbers)}
    full = (1 << len(numbers)) - 1
    for mask in range(1, full + 1):
        if mask in values:
            continue
        got: set[int] = set()
        sub = (mask - 1) & mask
        while sub:
            rest = mask ^ sub
            if sub < rest:
                for a in values[sub]:
                    for b in values[rest]:
                        got.update(c for _, c in _moves(max(a, b), min(a, b)))
            sub = (sub - 1) & mask
        values[mask] = got
    return values[full]


def fresh_problems(task: CountdownTask, rng: random.Random, n: int) -> list[Problem]:
    """`n` new train problems, each distributed as the task draws one (a uniform train target,
    then numbers drawn uniformly until they can reach it): the targets wait in a list and each
    numbers draw serves every waiting target it can reach (one problem per distinct target), so
    one reachability computation answers many rejection tests."""
    wanted = [rng.choice(task.targets["train"]) for _ in range(n)]
    out: list[Problem] = []
    while wanted:
        numbers = [rng.randint(task.min_number, task.max_number) for _ in range(task.n_numbers)]
        reach, served, keep = reachable(numbers), set(), []
        for t in wanted:
            if t in reach and t not in served:
                served.add(t)
                out.append(task.make_problem(t, numbers))
            else:
                keep.append(t)
        wanted = keep
    return out


class FreshBatches(torch.utils.data.IterableDataset):
    """Endless collated batches of `batch` fresh problems (prompt, reference solution,
    end-of-sequence; loss after the prompt), each DataLoader worker with its own seed."""

    def __init__(self, task: CountdownTask, tok: CharTokenizer, batch: int, seed: int) -> None:
        self.task, self.tok, self.batch, self.seed = task, tok, batch, seed

    def __iter__(self) -> Any:
        info = torch.utils.data.get_worker_info()
        rng = random.Random(f"{self.seed}-{info.id if info else 0}")
        tok, task = self.tok, self.task
        collate = BacktrackCollator("stream", "step", tok.bksp_id, tok.delim_id, tok.pad_id)
        while True:
            feats = []
            for p in fresh_problems(task, rng, self.batch):
                prompt = tok.encode(p.prompt)
                done = [*tok.encode(task.step_delimiter.join(task.reference(p))), tok.eos_id]
                feats.append(
                    {
                        "input_ids": prompt + done,
                        "loss_mask": [0] * len(prompt) + [1] * len(done),
                        "prompt_len": len(prompt),
                    }
                )
            yield collate(feats)


def lr_at(peak: float, step: int, frac: float, warmup: int = 200) -> float:
    """Linear warm-up over `warmup` steps, then cosine to a tenth by the end of the budget."""
    return peak * min(1.0, (step + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))


def fit(
    s: Shapes, model: Any, batches: Any, budget_s: float, device: torch.device, log: Log
) -> dict[str, Any]:
    """Train until `budget_s` seconds have passed; steps, problems, tokens, loss, data wait."""
    opt = torch.optim.AdamW(model.parameters(), lr=s.boot_lr, betas=(0.9, 0.95), weight_decay=0.1)
    model.train()
    step = problems = tokens = 0
    wait, losses, start, last_log = 0.0, [], time.time(), time.time()
    while (elapsed := time.time() - start) < budget_s:
        t = time.time()
        cpu = next(batches)
        wait += time.time() - t
        tokens += int(cpu["attention_mask"].sum())
        batch = {k: v.to(device, non_blocking=True) for k, v in cpu.items()}
        for group in opt.param_groups:
            group["lr"] = lr_at(s.boot_lr, step, elapsed / budget_s)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step, problems = step + 1, problems + batch["input_ids"].shape[0]
        if step % 50 == 0 or time.time() - last_log > 15:
            losses.append(loss.item())
        if time.time() - last_log > 15:
            log("bootstrap", "progress", step=step, loss=losses[-1], problems=problems)
            last_log = time.time()
    losses.append(loss.item())
    secs = time.time() - start
    return {
        "steps": step,
        "problems": problems,
        "train_s": secs,
        "tokens_per_s": tokens / secs,
        "problems_per_s": problems / secs,
        "data_wait_share": wait / secs,
        "final_loss": losses[-1],
    }


def held_out_accuracy(
    task: CountdownTask, tok: CharTokenizer, model: Any, problems: list[Problem], new: int
) -> dict[str, Any]:
    """Strict greedy accuracy: finished within `new` tokens, and `Judge.correct` (valid steps
    using every number once and ending on the target)."""
    policy = TransformersPolicy(
        model.eval(), tok.eos_id, tok.delim_id, 0.0, new, ban_ids=[tok.pad_id, tok.bksp_id]
    )
    prompts = [tuple(tok.encode(p.prompt)) for p in problems]
    got = policy.sample([Ask(pr, 1, "end", i) for i, pr in enumerate(prompts)])
    right = sum(
        Judge(task, p, tok, pr, "step").correct(r[0].tokens, r[0].finished)
        for p, pr, r in zip(problems, prompts, got, strict=True)
    )
    lo, hi = wilson(right, len(problems))
    return {
        "eval_problems": len(problems),
        "correct": right,
        "accuracy_greedy": right / len(problems),
        "accuracy_95ci": [lo, hi],
    }


def bootstrap_section(s: Shapes, device: torch.device, log: Log, deadline: float) -> dict[str, Any]:
    """Train for `s.minutes`, or less so that evaluation ends by `deadline` (at least 30 s)."""
    budget_s = min(s.minutes * 60, max(30.0, deadline - time.time() - s.eval_reserve_s))
    task, tok = CountdownTask(), CharTokenizer(ALPHABET)
    fork = multiprocessing.get_context("fork")
    with fork.Pool(1) as pool:  # the held-out set, drawn as the task does, while training runs
        test = pool.apply_async(task.problems, ("test", s.eval_problems))
        loader = torch.utils.data.DataLoader(
            FreshBatches(task, tok, s.boot_batch, seed=0),
            batch_size=None,
            num_workers=s.workers,
            multiprocessing_context=fork if s.workers else None,
            prefetch_factor=8 if s.workers else None,
            pin_memory=device.type == "cuda",
        )
        batches = iter(loader)
        model = gpt2(s.boot_gpt, tok.vocab_size, 128, device, eos=tok.eos_id)
        params = sum(p.numel() for p in model.parameters())
        log("bootstrap", "start", params=params, train_budget_s=budget_s, workers=s.workers)
        out = {
            "model": f"gpt2 {s.boot_gpt[0]}x{s.boot_gpt[1]}",
            "params": params,
            "numbers": task.n_numbers,
            "heldout_targets": task.heldout,
            "batch": s.boot_batch,
            "minutes": s.minutes,
            "train_budget_s": budget_s,
        }
        out |= fit(s, model, batches, budget_s, device, log)
        del batches, loader
        log("bootstrap", "trained", **{k: out[k] for k in ("steps", "problems", "final_loss")})
        problems = test.get()
    t = time.time()
    out |= held_out_accuracy(task, tok, model, problems, s.eval_tokens)
    out["eval_s"] = time.time() - t
    return out


# --- the run ----------------------------------------------------------------------------------


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def environment(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu_count": multiprocessing.cpu_count(),
        "commit": commit,
        "args": vars(args),
    }


def run_section(name: str, fn: Callable[[], dict[str, Any]], log: Log, device: torch.device):
    log(name, "start")
    t = time.time()
    try:
        result = fn()
    except Exception as err:  # one broken section must not lose the others
        result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        log(name, "error", error=result["error"])
    result["section_s"] = round(time.time() - t, 1)
    log.report[name] = result
    log(name, "done", **{k: v for k, v in result.items() if k != "traceback"})
    log.save()
    free(device)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="write the whole report (JSON) here")
    ap.add_argument("--only", action="append", choices=SECTIONS, help="repeatable")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="= --profile tiny (CPU, seconds)")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="full")
    ap.add_argument("--minutes", type=float, help="bootstrap training budget (default 5)")
    ap.add_argument(
        "--budget-minutes",
        type=float,
        default=7.0,
        help="the whole check's: the bootstrap trains less than --minutes if needed to end by then",
    )
    ap.add_argument("--workers", type=int, help="bootstrap data workers (default 12)")
    ap.add_argument("--eval-problems", type=int, help="held-out problems (default 1000)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    shapes = PROFILES["tiny" if args.tiny else args.profile]
    for key in ("minutes", "workers", "eval_problems"):
        if getattr(args, key) is not None:
            shapes = replace(shapes, **{key: getattr(args, key)})
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls (evaluation) on tensor cores
    log = Log(args.out)
    deadline = log.start + args.budget_minutes * 60
    log.report["environment"] = environment(args, device) | {"shapes": asdict(shapes)}
    log("check", "start", **log.report["environment"])
    runs = {
        "sampler": lambda: sampler_section(shapes, device, log),
        "train": lambda: train_section(shapes, device, log),
        "bootstrap": lambda: bootstrap_section(shapes, device, log, deadline),
    }
    for name in SECTIONS:
        if args.only is None or name in args.only:
            run_section(name, runs[name], log, device)
    log.report["forbidden_imported"] = [m for m in FORBIDDEN if sys.modules.get(m) is not None]
    log.report["total_s"] = round(time.time() - log.start, 1)
    log.save()
    failed = [k for k, v in log.report.items() if isinstance(v, dict) and "error" in v]
    log(
        "check",
        "done",
        total_s=log.report["total_s"],
        failed=failed,
        forbidden_imported=log.report["forbidden_imported"],
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
