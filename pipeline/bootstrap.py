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
accuracy on held-out problems in `bootstrap/eval.json`.
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from tqdm import tqdm
from transformers import GPT2Config, LlamaConfig, PreTrainedTokenizerFast

from pipeline.config import BootstrapConfig, Config
from pipeline.evaluation import evaluate_to, format_table
from pipeline.files import remove_stale, save_model
from pipeline.layout import RunLayout
from pipeline.loading import task_from_config
from pipeline.runtime import record_environment, set_threads, stage_config
from search.errors import HallucError
from search.types import Task

log = logging.getLogger(__name__)

PAD, EOS, UNK = "<|pad|>", "<|endoftext|>", "<|unk|>"


def main(cfg: Config) -> dict[str, Any]:
    """Train (unless the model exists), evaluate (unless done), and return the eval figures."""
    layout = RunLayout.of(cfg)
    set_threads(cfg)
    record_environment(cfg, layout.environment)
    task = task_from_config(cfg.task)
    stage_config(cfg, layout.bootstrap, only=("task", "bootstrap"))
    remove_stale(layout.bootstrap)
    if not layout.bootstrap_model.exists():
        train(cfg, task, layout.bootstrap_model)
    problems = task.problems("test", cfg.eval.n_problems)
    figures = evaluate_to(
        layout.bootstrap / "eval.json", layout.bootstrap_model, task, problems, cfg
    )
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


def build_model(b: BootstrapConfig, tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    common = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.eos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if b.arch == "gpt2":
        config: Any = GPT2Config(
            n_layer=b.n_layer, n_embd=b.n_embd, n_head=b.n_head, n_positions=b.n_positions, **common
        )
    else:
        config = LlamaConfig(
            num_hidden_layers=b.n_layer,
            hidden_size=b.n_embd,
            num_attention_heads=b.n_head,
            intermediate_size=4 * b.n_embd,
            max_position_embeddings=b.n_positions,
            tie_word_embeddings=True,
            **common,
        )
    return AutoModelForCausalLM.from_config(config)


def encode_examples(
    task: Task, tokenizer: PreTrainedTokenizerFast, problems: list[Any]
) -> list[tuple[list[int], int]]:
    """(input ids, prompt length) per problem: prompt, reference solution, end-of-sequence."""
    out = []
    for p in problems:
        prompt = tokenizer.encode(p.prompt)
        solution = tokenizer.encode(task.step_delimiter.join(task.reference(p)))
        out.append(([*prompt, *solution, tokenizer.eos_token_id], len(prompt)))
    return out


def collate(batch: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask, and labels (-100 on prompt and padding)."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (seq, n_prompt) in enumerate(batch):
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
        mask[i, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train(cfg: Config, task: Task, out: Path) -> None:
    b = cfg.bootstrap
    torch.manual_seed(b.seed)
    rng = random.Random(b.seed)
    problems = task.problems("train", b.n_problems)
    texts = [p.prompt + task.step_delimiter.join(task.reference(p)) for p in problems]
    tokenizer = build_tokenizer(texts)
    examples = encode_examples(task, tokenizer, problems)
    longest = max(len(ids) for ids, _ in examples)
    if longest > b.n_positions:
        raise HallucError(
            f"bootstrap.n_positions={b.n_positions} is shorter than the longest "
            f"training sequence ({longest} tokens); raise it"
        )
    model = build_model(b, tokenizer)
    log.info(
        "bootstrap: %s with %d parameters on %d problems, %d steps",
        b.arch,
        sum(p.numel() for p in model.parameters()),
        len(problems),
        b.steps,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=b.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_scale(s, b))
    model.train()
    with tqdm(range(b.steps), desc="bootstrap", unit="step") as bar:
        for _ in bar:
            batch = collate(
                rng.sample(examples, min(b.batch_size, len(examples))), tokenizer.pad_token_id
            )
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    save_model(model, tokenizer, out)


def _lr_scale(step: int, b: BootstrapConfig) -> float:
    if step < b.warmup:
        return (step + 1) / b.warmup
    progress = (step - b.warmup) / max(1, b.steps - b.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
