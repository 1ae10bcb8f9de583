"""The bootstrap stage: a small decoder trained from scratch on the task's reference solutions.

    halluc bootstrap --preset arith-tiny                     # CPU, a few minutes
    halluc bootstrap --preset arith-tiny --set bootstrap.steps=3000 --set bootstrap.arch=llama

Nothing is downloaded: the tokenizer is built here (one token per character, with end-of-sequence,
padding and the backspace token as special tokens) and the model from a config. The result is an
ordinary checkpoint directory, `run.out_dir/bootstrap/model`, that `AutoModelForCausalLM` and
`AutoTokenizer` load like any Hub model; the later stages load it through that same path. It is
written to a temporary directory and renamed, so a killed run never leaves half a model; a rerun
finds it and only evaluates again if `eval.json` is missing.

The loss covers the solution and end-of-sequence, not the prompt. The model is meant to stay
imperfect (its mistakes are what the search looks for): the stage reports greedy and T=1.0
accuracy on held-out problems in `bootstrap/eval.json`. Its training curves (loss, learning rate,
gradient norm) go to `bootstrap/tb/` (TensorBoard).
"""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from tqdm import tqdm
from transformers import GPT2Config, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

from pipeline.bpe import PATTERNS, bpe_tokenizer
from pipeline.config import BootstrapConfig, Config
from pipeline.curves import GRAD_NORM, LOSS, LR, Curves
from pipeline.files import remove_stale, save_model, write_json
from pipeline.layout import RunLayout, compute_of
from pipeline.loading import task_from_config
from pipeline.measure.evaluation import evaluate_to, format_table
from pipeline.runtime import (
    finished,
    kill_point,
    mark_done,
    record_environment,
    set_threads,
    stage_config,
)
from search.backspace import serialize_stream
from search.errors import HallucError
from search.tasks.countdown_stream import Mode, Piece, search_trace
from search.types import Problem, Task
from workers.collate import BacktrackCollator
from workers.hf import META, set_precision

log = logging.getLogger(__name__)

PAD, EOS, UNK = "<|pad|>", "<|endoftext|>", "<|unk|>"


def main(cfg: Config) -> dict[str, Any]:
    """Train (unless the model exists), evaluate (unless done), and return the eval figures."""
    layout, b = RunLayout.of(cfg), cfg.bootstrap
    set_threads(cfg)
    record_environment(cfg, layout.environment)
    task = task_from_config(cfg.task)
    # a model bootstrapped on data with backspaces carries trace.bksp_token: the trace section too
    shaping = ("task", "bootstrap", "model.precision", *(("trace",) if has_backspaces(b) else ()))
    stage_config(cfg, layout.bootstrap, only=shaping)
    remove_stale(layout.bootstrap)
    # compute.json is written before the model, so a model there (trained here, or a copy a
    # grid shares) is the finished training; a kill before it leaves no model and retrains
    trained = [layout.bootstrap_model]
    if not finished(layout.bootstrap, trained):
        train(cfg, task, layout.bootstrap_model)
        mark_done(layout.bootstrap, trained)
    problems = task.problems("test", cfg.eval.n_problems)
    figures = evaluate_to(layout.bootstrap_eval, layout.bootstrap_model, task, problems, cfg)
    log.info("bootstrap model:\n%s", format_table(figures))
    return figures


def describe(result: dict[str, Any]) -> str:
    return format_table(result)


def build_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """One token per character seen in `texts`, plus padding and end-of-sequence. The backspace
    token is not in it: training adds it like to any other model (`workers.tokens`)."""
    chars = sorted(set("".join(texts)) | set("0123456789"))
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK, *chars])}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=EOS,
        unk_token=UNK,
    )


def make_tokenizer(b: BootstrapConfig, texts: list[str]) -> PreTrainedTokenizerFast:
    """`bootstrap.tokenizer` trained on `texts`: characters, or a byte-level BPE like a user's
    checkpoint's (no pad token: batches pad with end-of-sequence)."""
    if b.tokenizer == "char":
        return build_tokenizer(texts)
    return bpe_tokenizer(texts, PATTERNS[b.tokenizer], b.vocab_size)


def build_model(b: BootstrapConfig, tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    common = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.eos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    n_layer, n_embd, n_head = b.shape()
    if b.arch == "gpt2":
        config: Any = GPT2Config(
            n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=b.n_positions, **common
        )
    elif b.arch == "qwen2":  # grouped-query attention, as the family has
        config = Qwen2Config(
            num_hidden_layers=n_layer,
            hidden_size=n_embd,
            num_attention_heads=n_head,
            num_key_value_heads=2 if n_head % 2 == 0 else n_head,
            intermediate_size=4 * n_embd,
            max_position_embeddings=b.n_positions,
            tie_word_embeddings=True,
            **common,
        )
    else:
        config = LlamaConfig(
            num_hidden_layers=n_layer,
            hidden_size=n_embd,
            num_attention_heads=n_head,
            intermediate_size=4 * n_embd,
            max_position_embeddings=b.n_positions,
            tie_word_embeddings=True,
            **common,
        )
    return AutoModelForCausalLM.from_config(config)


Example = dict[str, Any]  # input_ids, loss_mask, prompt_len: a row as training collates it


def forms(data: str) -> list[str]:
    """The trace forms `bootstrap.data` names: "optimal+backspace" -> ["optimal", "backspace"]."""
    return data.split("+")


def has_backspaces(b: BootstrapConfig) -> bool:
    """Whether `b` trains on data with backspaces (the backspace form, or retries): the model
    gets the backspace token and erase attention from step 0."""
    return "backspace" in forms(b.data) or b.retry_rate > 0


def solutions(
    task: Task, problems: list[Problem], b: BootstrapConfig
) -> list[tuple[Problem, list[Piece]]]:
    """Each problem with its solution in one of `b.data`'s forms (drawn at random, seeded), as
    (text, backspaces) pieces without prompt or end-of-sequence; an optimal one, with
    probability `b.retry_rate`, as a retry (`retry`; a generator of its own, so the rest is the
    same whatever the rate). A problem the search does not solve within `b.max_states` states
    is left out."""
    choices = forms(b.data)
    if choices != ["optimal"] and task.name != "countdown":
        raise HallucError(
            f"bootstrap.data={b.data}: search streams exist for countdown only; "
            f"use bootstrap.data=optimal for {task.name}"
        )
    if b.retry_rate and not task.has_wrong_steps:
        raise HallucError(
            f"bootstrap.retry_rate={b.retry_rate}: synthetic wrong steps exist for arithmetic "
            f"and countdown, not {task.name}; set bootstrap.retry_rate=0"
        )
    rng, retry_rng = random.Random(f"{b.seed}-forms"), random.Random(f"{b.seed}-retry")
    out = []
    for problem in problems:
        form = rng.choice(choices)
        if form == "optimal":
            if retry_rng.random() < b.retry_rate:
                out.append((problem, retry(task, problem, retry_rng)))
            else:
                out.append((problem, [(task.step_delimiter.join(task.reference(problem)), 0)]))
            continue
        mode: Mode = "stream" if form == "stream" else "backspace"
        found = search_trace(problem, mode, b.search_order, b.max_states)
        if found is not None:
            out.append((problem, found))
    return out


def retry(task: Task, problem: Problem, rng: random.Random) -> list[Piece]:
    """The reference solution with one step (drawn uniformly) first typed wrong
    (`task.wrong_step`), then erased by one step backspace and typed right:
    [(steps before + wrong step + delimiter, 1), (right step + the rest, 0)]. The backspace takes
    the delimiter and the wrong step, so `apply_backspaces` (step unit) leaves the reference."""
    steps, d = task.reference(problem), task.step_delimiter
    k = rng.randrange(len(steps))
    wrong = task.wrong_step(problem, steps[:k], rng)
    return [("".join(s + d for s in steps[:k]) + wrong + d, 1), (d.join(steps[k:]), 0)]


def encode_examples(
    tokenizer: Any,
    solved: list[tuple[Problem, list[Piece]]],
    delimiter: str,
    bksp_token: str,
    erased_loss: bool = False,
) -> list[Example]:
    """Prompt, solution, end-of-sequence. Loss on what follows the prompt, except on the moves a
    backspace erases unless `erased_loss`."""
    bksp = (
        tokenizer.convert_tokens_to_ids(bksp_token) if bksp_token in tokenizer.get_vocab() else -1
    )
    delim = tokenizer.encode(delimiter, add_special_tokens=False)[0]
    out = []
    for problem, found in solved:
        # the ids the search and training use: no BOS or other added token (SearchTokenizer)
        prompt = tokenizer.encode(problem.prompt, add_special_tokens=False)
        completion = [
            i
            for text, n in found
            for i in [*tokenizer.encode(text, add_special_tokens=False), *[bksp] * n]
        ]
        ser = serialize_stream(prompt, [*completion, tokenizer.eos_token_id], "step", bksp, delim)
        mask = ser.loss_mask
        if erased_loss:
            mask = [0] * len(prompt) + [1] * (len(ser.input_ids) - len(prompt))
        out.append({"input_ids": ser.input_ids, "loss_mask": mask, "prompt_len": len(prompt)})
    return out


class Batches:
    """The bootstrap's batches over `examples`: `b.batch_size` examples, or (`b.batch_tokens` > 0)
    examples until their loss-bearing tokens reach `b.batch_tokens`; drawn at random with
    replacement, or (`b.fresh`) in a shuffled order, every example once before any twice.
    `epochs`: passes over the examples so far."""

    def __init__(self, examples: list[Example], b: BootstrapConfig, rng: random.Random) -> None:
        self.examples, self.b, self.rng = examples, b, rng
        self.order: list[int] = []
        self.drawn = 0

    @property
    def epochs(self) -> float:
        return self.drawn / len(self.examples)

    def _one(self) -> Example:
        self.drawn += 1
        if not self.b.fresh:
            return self.rng.choice(self.examples)
        if not self.order:
            self.order = list(range(len(self.examples)))
            self.rng.shuffle(self.order)
        return self.examples[self.order.pop()]

    def next(self) -> list[Example]:
        b, n = self.b, min(self.b.batch_size, len(self.examples))
        if not b.batch_tokens and not b.fresh:
            self.drawn += n
            return self.rng.sample(self.examples, n)
        if not b.batch_tokens:
            return [self._one() for _ in range(b.batch_size)]
        batch, tokens = [], 0
        while tokens < b.batch_tokens:
            batch.append(self._one())
            tokens += sum(batch[-1]["loss_mask"])
        return batch


def train(cfg: Config, task: Task, out: Path) -> None:
    b = cfg.bootstrap
    erase = has_backspaces(b)
    _check_unit(cfg)
    torch.manual_seed(b.seed)
    rng = random.Random(b.seed)
    problems = task.problems("train", b.n_problems)
    solved = solutions(task, problems, b)
    if not solved:
        raise HallucError(
            f"bootstrap.data={b.data}: the search solved none of {len(problems)} problems "
            f"within bootstrap.max_states={b.max_states}; raise it"
        )
    tokenizer = make_tokenizer(b, [p.prompt + text for p, found in solved for text, _ in found])
    bksp = cfg.trace.bksp_token
    if erase:
        tokenizer.add_special_tokens({"additional_special_tokens": [bksp]})
    delim = task.step_delimiter
    examples = encode_examples(tokenizer, solved, delim, bksp, b.erased_loss)
    longest = max(len(e["input_ids"]) for e in examples)
    if longest > b.n_positions:
        raise HallucError(
            f"bootstrap.n_positions={b.n_positions} is shorter than the longest "
            f"training sequence ({longest} tokens); raise it"
        )
    model = set_precision(build_model(b, tokenizer), cfg.model.precision)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "bootstrap: %s %s with %d parameters on %d problems (%s), %d steps, %s",
        b.arch,
        "x".join(map(str, b.shape()[:2])),
        n_params,
        len(examples),
        b.data,
        b.steps,
        cfg.model.precision,
    )
    collate = BacktrackCollator(
        "erase" if erase else "stream",
        "step",
        tokenizer.get_vocab()[bksp] if erase else -1,
        tokenizer.encode(delim, add_special_tokens=False)[0],
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    loss_tokens, epochs, seconds = _fit(model, examples, collate, b, rng, out.parent)
    extra: dict[str, Any] = {}
    if erase:  # decoding must erase as training did: the same record a trained round writes
        extra[META] = {"mode": "erase", "unit": "step", "bksp_token": bksp, "backspace": True}
    # retries come only on optimal data, which has no other backspaces
    retries = sum(any(n for _, n in found) for _, found in solved) if b.retry_rate else 0
    compute = {
        "data": b.data,
        "examples": len(examples),
        "retry_examples": retries,
        "problems": len(problems),
        "optimizer_steps": b.steps,
        "loss_tokens": loss_tokens,
        "parameters": n_params,
        "loss_tokens_per_parameter": loss_tokens / n_params,
        "epochs": epochs,
        "precision": cfg.model.precision,
        "train_seconds": seconds,
    }
    write_json(compute_of(out), compute)  # first: the model, renamed in last, is whole or absent
    kill_point("bootstrap:compute-written")
    save_model(model, tokenizer, out, extra=extra)


def _check_unit(cfg: Config) -> None:
    """Bootstrap data with backspaces erases whole steps, so it needs the step unit."""
    b = cfg.bootstrap
    if has_backspaces(b) and cfg.trace.unit != "step":
        what = (
            f"bootstrap.retry_rate={b.retry_rate}" if b.retry_rate else f"bootstrap.data={b.data}"
        )
        raise HallucError(
            f"{what} erases whole steps: it needs trace.unit=step, not {cfg.trace.unit}"
        )


def _fit(
    model: torch.nn.Module,
    examples: list[Example],
    collate: BacktrackCollator,
    b: BootstrapConfig,
    rng: random.Random,
    stage_dir: Path,
) -> tuple[int, float, float]:
    """`b.steps` optimizer steps on `Batches` of `examples`, each step's loss, learning rate and
    gradient norm to `stage_dir`'s curves; the loss-bearing tokens seen, the epochs and the
    seconds it took."""
    opt = torch.optim.AdamW(model.parameters(), lr=b.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_scale(s, b))
    model.train()
    loss_tokens = 0
    batches = Batches(examples, b, rng)
    start = time.perf_counter()
    bar = tqdm(range(b.steps), desc="bootstrap", unit="step")
    with Curves(stage_dir) as curves, bar:
        for step in bar:
            batch = batches.next()
            loss_tokens += sum(sum(e["loss_mask"]) for e in batch)
            loss = model(**collate(batch)).loss
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            value = loss.item()
            bar.set_postfix(loss=f"{value:.3f}")
            scalars = {LOSS: value, LR: sched.get_last_lr()[0], GRAD_NORM: norm.item()}
            curves.add(step + 1, scalars)
    return loss_tokens, batches.epochs, time.perf_counter() - start


def _lr_scale(step: int, b: BootstrapConfig) -> float:
    if step < b.warmup:
        return (step + 1) / b.warmup
    progress = (step - b.warmup) / max(1, b.steps - b.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
