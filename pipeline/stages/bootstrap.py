"""The bootstrap stage: a small decoder trained from scratch on the task's reference solutions.

    halluc bootstrap --preset arith-tiny                     # CPU, a few minutes
    halluc bootstrap --preset arith-tiny --set bootstrap.steps=3000 --set bootstrap.arch=llama

Nothing is downloaded: the tokenizer is built here (one token per character, with end-of-sequence,
padding and the backspace token as special tokens) and the model from a config. The result is an
ordinary checkpoint directory, `run.out_dir/bootstrap/model`, that `AutoModelForCausalLM` and
`AutoTokenizer` load like any Hub model; the later stages load it through that same path. It is
written to a temporary directory and renamed, so a killed run never leaves half a model; a rerun
finds it and only evaluates again if `eval.json` is missing.

It trains on `model.device` (`auto`: a GPU where there is one) at `model.precision`. The loss
covers the solution and end-of-sequence, not the prompt. The model is meant to stay
imperfect (its mistakes are what the search looks for): the stage reports greedy and T=1.0
accuracy on held-out problems in `bootstrap/eval.json`. Its training curves (loss, learning rate,
gradient norm) go to `bootstrap/tb/` (TensorBoard).
"""

from __future__ import annotations

import logging
import math
import random
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from tqdm import tqdm
from transformers import GPT2Config, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

from pipeline.bootstrap_data import Batches, Example, encode_examples, solutions
from pipeline.bpe import PATTERNS, bpe_tokenizer
from pipeline.config import BootstrapConfig, Config
from pipeline.config.keys import BOOTSTRAP_TASK_KEYS
from pipeline.curves import GRAD_NORM, LOSS, LR, Curves
from pipeline.files import remove_stale, save_model, write_json
from pipeline.layout import RunLayout, compute_of
from pipeline.loading import task_from_config
from pipeline.measure.evaluation import evaluate_to, format_table
from pipeline.own_errors import own_retries
from pipeline.runtime import (
    finished,
    kill_point,
    mark_done,
    record_environment,
    set_threads,
    stage_config,
)
from search.errors import HallucError
from search.types import Task
from workers.collate import BacktrackCollator
from workers.erase import use_blocked_attention
from workers.hf import META, pick_device, resolve_precision, set_precision
from workers.policy import pad_of

log = logging.getLogger(__name__)

PAD, EOS, UNK = "<|pad|>", "<|endoftext|>", "<|unk|>"


def main(cfg: Config) -> dict[str, Any]:
    """Train (unless the model exists), evaluate (unless done), and return the eval figures."""
    layout, task = RunLayout.of(cfg), task_from_config(cfg.task)
    trained_model(cfg, task)
    problems = task.problems("test", cfg.eval.n_problems)
    figures = evaluate_to(layout.bootstrap_eval, layout.bootstrap_model, task, problems, cfg)
    log.info("bootstrap model:\n%s", format_table(figures))
    return figures


def trained_model(cfg: Config, task: Task) -> Path:
    """The bootstrap model's directory, trained here unless a finished one is there."""
    layout, b = RunLayout.of(cfg), cfg.bootstrap
    set_threads(cfg)
    record_environment(cfg, layout.environment)
    # a model bootstrapped on data with backspaces carries trace.bksp_token: the trace section too
    shaping = (*BOOTSTRAP_TASK_KEYS, "bootstrap", "model.precision")
    shaping += ("trace",) if b.has_backspaces() else ()
    stage_config(cfg, layout.bootstrap, only=shaping)
    remove_stale(layout.bootstrap)
    # compute.json is written before the model, so a model there (trained here, or a copy a
    # grid shares) is the finished training; a kill before it leaves no model and retrains
    trained = [layout.bootstrap_model]
    if not finished(layout.bootstrap, trained):
        train(cfg, task, layout.bootstrap_model)
        mark_done(layout.bootstrap, trained)
    return layout.bootstrap_model


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


def train(cfg: Config, task: Task, out: Path) -> None:
    b = cfg.bootstrap
    erase = b.has_backspaces()
    _check_unit(cfg)
    torch.manual_seed(b.seed)
    rng = random.Random(b.seed)
    problems = task.problems("train", b.n_problems)
    own = partial(own_retries, cfg, task, model=Path(b.retry_model)) if b.retry_model else None
    solved = solutions(task, problems, b, own)
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
    device = pick_device(cfg.model.device)  # a GPU where there is one, as the rounds train
    model = set_precision(build_model(b, tokenizer).to(device), cfg.model.precision)
    precision = resolve_precision(cfg.model.precision, device)
    n_params = sum(p.numel() for p in model.parameters())
    shape = "x".join(map(str, b.shape()[:2]))
    log.info(
        f"bootstrap: {b.arch} {shape} with {n_params} parameters on {len(examples)} problems "
        f"({b.data}), {b.steps} steps, {precision} on {device.type}"
    )
    mode = b.attention if erase else "stream"
    use_blocked_attention(model)  # the same attention, without the masked upper half
    collate = BacktrackCollator(
        mode,
        "step",
        tokenizer.get_vocab()[bksp] if erase else -1,
        tokenizer.encode(delim, add_special_tokens=False)[0],
        pad_of(tokenizer),
    )
    loss_tokens, epochs, seconds = _fit(model, examples, collate, b, rng, out.parent)
    extra: dict[str, Any] = {}
    if erase:  # decoding must erase as training did: the same record a trained round writes
        extra[META] = {"mode": mode, "unit": "step", "bksp_token": bksp, "backspace": True}
    # retries come only on optimal data, which has no other backspaces
    retries = sum(any(n for _, n in found) for _, found in solved) if b.retry_rate else 0
    compute: dict[str, Any] = {"data": b.data, "examples": len(examples), "retry_examples": retries}
    compute |= {"problems": len(problems), "optimizer_steps": b.steps, "loss_tokens": loss_tokens}
    compute |= {"parameters": n_params, "loss_tokens_per_parameter": loss_tokens / n_params}
    compute |= {"epochs": epochs, "precision": precision, "train_seconds": seconds}
    write_json(compute_of(out), compute)  # first: the model, renamed in last, is whole or absent
    kill_point("bootstrap:compute-written")
    save_model(model, tokenizer, out, extra=extra)


def _check_unit(cfg: Config) -> None:
    """Bootstrap data with backspaces erases whole steps, so it needs the step unit."""
    b = cfg.bootstrap
    if b.has_backspaces() and cfg.trace.unit != "step":
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
    device = next(model.parameters()).device
    start = time.perf_counter()
    bar = tqdm(range(b.steps), desc="bootstrap", unit="step")
    with Curves(stage_dir) as curves, bar:
        for step in bar:
            batch = batches.next()
            loss_tokens += sum(sum(e["loss_mask"]) for e in batch)
            loss = model(**{k: v.to(device) for k, v in collate(batch).items()}).loss
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
