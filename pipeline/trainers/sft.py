"""`train.objective=sft`: cross-entropy on the round's traces, with transformers' `Trainer` and
`BacktrackCollator` (loss on kept tokens and backspaces only, `stream` or `erase` attention). The
same Trainer trains dpo (trainers/dpo.py, a second loss), and every objective starts with the
token warm-up here (`train.token_warmup`).

    load(job, tok, collate)   the round's selection, else its search's traces (`train.kinds`),
                              checked against the model's tokenizer
    fit(...)                  `train.token_warmup` batches on the backspace rows alone (not on
                              a resumed run: its weights had them), then the Trainer: a
                              checkpoint in train/checkpoints/ every `train.save_steps` steps, and
                              a killed run resumes from the newest

Curves go to train/tb/ through the Trainer's TensorBoard callback when `train.report_to` lists
tensorboard; the other reporters listed (wandb, mlflow...) are the Trainer's own.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets
from datasets import logging as ds_logging
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model
from transformers import Trainer, TrainingArguments
from transformers.integrations import TensorBoardCallback

from pipeline.bootstrap_data import replay
from pipeline.config import Config
from pipeline.curves import summary_writer
from pipeline.layout import RoundLayout
from pipeline.loading import task_from_config
from pipeline.shards import ShardError, check_shard, checked_shard_files, read_shard, read_table
from pipeline.trainers.job import Compute, Job, world
from workers.collate import LOSS_WEIGHTS, BacktrackCollator, loss
from workers.hf import pick_device
from workers.preference import REF_CHOSEN, preference_loss
from workers.tokens import fit_token_rows

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"  # the Trainer's, in the round's train/ directory
SCRATCH = (CHECKPOINTS,)


def check(job: Job) -> None:
    """Fail unless the round has traces of the configured kinds."""
    load_traces(job.cfg, job.rnd)


def load(job: Job, tok: Any, collate: BacktrackCollator) -> Dataset:
    """The training rows (`input_ids`, `loss_mask`, `prompt_len`), tokenized by `tok`'s
    tokenizer (checked on the first row)."""
    ds = load_traces(job.cfg, job.rnd)
    if job.earlier:  # train.accumulate: the earlier rounds' rows first, repeats dropped
        ds = concatenate_datasets([*(load_traces(job.cfg, r) for r in job.earlier), ds])
        first: dict[tuple[int, ...], int] = {}
        for i, ids in enumerate(ds["input_ids"]):
            first.setdefault(tuple(ids), i)
        ds = ds.select(sorted(first.values()))
    _check_same_tokenizer(ds, tok)
    ds = ds.select_columns(["input_ids", "loss_mask", "prompt_len"])
    return _with_replay(job, tok, ds) if job.cfg.train.replay else ds


def _with_replay(job: Job, tok: Any, ds: Dataset) -> Dataset:
    """`train.replay` = s: the round's rows and rows of the bootstrap's own data
    (`bootstrap_data.replay`), as many as make them the share s of the whole; with
    `train.replay_only`, as many bootstrap rows as that whole and none of the round's."""
    cfg, s = job.cfg, job.cfg.train.replay
    only = cfg.train.replay_only
    n = round(len(ds) / (1 - s)) if only else round(len(ds) * s / (1 - s))
    erase = job.backspace and cfg.trace.bksp_token in tok.get_vocab()
    seed = cfg.train.seed * 1000 + cfg.run.round  # new problems each round
    task = task_from_config(cfg.task)
    rows = replay(task, cfg.bootstrap, tok, n, seed, cfg.trace.bksp_token, erase)
    extra = Dataset.from_list(rows).cast(ds.features) if rows else ds.select([])
    if only:
        log.info("train: %d rows of the bootstrap's data and none of the round's", len(rows))
        return extra
    log.info(
        "train: %d rows of the bootstrap's data replayed beside %d of the round", len(rows), len(ds)
    )
    return concatenate_datasets([ds, extra])


def load_traces(cfg: Config, rnd: RoundLayout) -> Dataset:
    """The training rows of the configured kinds: the round's selection, else every trace of
    its search; checked for schema version. With `train.curriculum`, sorted by the tokens each
    erases, least first (a stable sort: rows that erase as much keep their order)."""
    root = rnd.selected if rnd.selected.exists() else rnd.search
    files = [str(root)] if root.is_file() else checked_shard_files(root, "traces")
    if not files:
        raise ShardError(f"no traces shards under {root}; run `halluc search` first")
    if root.is_file():
        check_shard(files[0], "traces")
    ds_logging.set_verbosity_error()
    # through our reader, not load_dataset: a shard without a column added since its schema
    # version (shards.ADDED) gets it as nulls, where load_dataset refuses to mix the two
    ds = Dataset(read_shard(root, "traces") if root.is_file() else read_table(root, "traces"))
    kinds = set(cfg.train.kinds.split(","))
    ds = ds.filter(lambda k: k in kinds, input_columns="kind")
    if len(ds) == 0:
        raise ShardError(f"no traces of kinds {sorted(kinds)} under {root}")
    if cfg.train.curriculum:  # short backtracks first; the trainer reads the rows in order
        erased = [sum(b - a for a, b in spans or []) for spans in ds["erase_spans"]]
        ds = ds.select(sorted(range(len(ds)), key=erased.__getitem__))
    return ds.select_columns(["input_ids", "loss_mask", "prompt_len", "raw_text", "prompt_text"])


def _check_same_tokenizer(ds: Dataset, tok: Any) -> None:
    row = ds[0]
    text = tok.decode(row["input_ids"], skip_special_tokens=False).replace(tok.eos_token, "")
    if text != row["prompt_text"] + row["raw_text"]:
        raise ShardError(
            "the traces were tokenized with another tokenizer than the model's (decoding "
            f"{row['input_ids'][:12]}... gives {text[:40]!r}); search with this model first"
        )


def fit(model: Any, tok: Any, collate: BacktrackCollator, rows: Dataset, job: Job) -> Compute:
    """Train `model` on `rows` for `job.max_steps` steps (else `train.epochs` passes)."""
    start = time.perf_counter()
    t = job.cfg.train
    trainer, done = hf_trainer(model, collate, rows, job, t.batch_size, t.lr)
    if warms_up(job) and not done:  # a resumed run loads weights that had it
        warm_token_rows(model, collate, rows, job.cfg)
    steps = run(trainer, done)
    masks = zip(rows["loss_mask"], rows["prompt_len"], strict=True)
    return Compute(
        "sft",
        steps,
        loss_tokens=sum(sum(m[p:]) for m, p in masks),
        wall_s=time.perf_counter() - start,
        details=settings(job) | {"rows": len(rows)},
    )


def settings(job: Job) -> dict[str, Any]:
    """What compute.json states of how sft and dpo trained."""
    t = job.cfg.train
    return {
        "batch_size": t.batch_size,
        "token_warmup_batches": t.token_warmup if job.backspace else 0,
        "backspace_token": job.backspace,
    }


def warms_up(job: Job) -> bool:
    """Whether training first fits the backspace rows alone (`train.token_warmup` batches)."""
    return job.backspace and job.cfg.train.token_warmup > 0


class WeightedTrainer(Trainer):
    """Trainer whose loss is `workers.collate.loss` when the collator sends per-target weights
    (otherwise the Trainer's own), `workers.preference.preference_loss` with `dpo` (β, SFT
    weight) on a `PairCollator` batch (its mean reward margin logged as `dpo_margin`), and that
    reads the rows in order when `sequential` (a curriculum)."""

    def __init__(
        self,
        *args: Any,
        sequential: bool = False,
        dpo: tuple[float, float] = (0.1, 1.0),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.sequential, self.dpo = sequential, dpo
        self.margins: list[float] = []

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.margins:
            logs = logs | {"dpo_margin": sum(self.margins) / len(self.margins)}
            self.margins = []
        super().log(logs, start_time)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        if self.sequential:
            return torch.utils.data.SequentialSampler(train_dataset or self.train_dataset)  # type: ignore[arg-type]
        return super()._get_train_sampler(train_dataset)

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if REF_CHOSEN in inputs:
            value, margins = preference_loss(model, inputs, *self.dpo)
            self.margins.append(margins.mean().item())
            return (value, {"margins": margins}) if return_outputs else value
        if LOSS_WEIGHTS not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        value, outputs = loss(model, inputs)
        return (value, outputs) if return_outputs else value


def hf_trainer(
    model: Any, collate: Any, rows: Dataset, job: Job, batch_size: int, lr: float
) -> tuple[Trainer, int]:
    """The Trainer over `rows` (`batch_size` rows a step, peak learning rate `lr`), with the
    curves' callback on the first process, and the step of the newest checkpoint a killed run
    left (0: none, a fresh start)."""
    t = job.cfg.train
    done = checkpoint_step(job.out)
    callbacks = []
    if "tensorboard" in t.report_to and world()[0] == 0:
        callbacks.append(TensorBoardCallback(summary_writer(job.out, done + 1)))
    trainer: Trainer = WeightedTrainer(
        model=model,
        args=training_arguments(job, batch_size, lr),
        train_dataset=rows,
        data_collator=collate,
        callbacks=callbacks,
        sequential=job.cfg.train.curriculum,
        dpo=(t.dpo.beta, t.dpo.sft_weight),
    )
    if job.ray:
        from ray.train.huggingface.transformers import prepare_trainer

        trainer = prepare_trainer(trainer)
    return trainer, done


def run(trainer: Trainer, done: int) -> int:
    """Train (from the newest checkpoint when `done` > 0); the optimizer steps taken in all. A
    checkpoint of the last step (a kill came after training ended, before the model was saved)
    gives its weights as they are: the Trainer resumed there would take one step more."""
    if done:
        path = Path(str(trainer.args.output_dir)) / f"checkpoint-{done}"
        state = json.loads((path / "trainer_state.json").read_text())
        if state["global_step"] >= state.get("max_steps", 0) > 0:
            assert isinstance(trainer.model, torch.nn.Module)
            load_model(trainer.model, str(path / "model.safetensors"), strict=False)
            log.info("train: %s is the last step's; its weights are the trained model", path)
            return int(state["global_step"])
    trainer.train(resume_from_checkpoint=True if done else None)
    return trainer.state.global_step


def checkpoint_step(out: Path) -> int:
    """The step of the newest whole Trainer checkpoint under `out` (0: none). Checkpoints a kill
    or a full disk left half-written are removed first (`whole`), so the Trainer resumes from
    the newest one it can load."""
    found = [re.fullmatch(r"checkpoint-(\d+)", p.name) for p in (out / CHECKPOINTS).glob("*")]
    steps = sorted((int(m.group(1)) for m in found if m), reverse=True)
    for step in steps:
        path = out / CHECKPOINTS / f"checkpoint-{step}"
        damage = whole(path)
        if not damage:
            return step
        log.warning("train: removing %s, written only in part (%s)", path, damage)
        shutil.rmtree(path, ignore_errors=True)
    return 0


def whole(checkpoint: Path) -> str:
    """What is missing or damaged in a Trainer checkpoint ('' when it is whole): its weights,
    optimizer and scheduler state and trainer_state.json must be there and readable (the
    safetensors header, the torch files' zip directories, the JSON), without unpickling."""
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"):
        if not (checkpoint / name).is_file():
            return f"no {name}"
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
        with safe_open(str(checkpoint / "model.safetensors"), "pt") as weights:
            weights.keys()
        for name in ("optimizer.pt", "scheduler.pt"):
            with zipfile.ZipFile(checkpoint / name) as archive:
                archive.namelist()
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, SafetensorError) as err:
        return f"{type(err).__name__}: {err}"
    return ""


def training_arguments(job: Job, batch_size: int, lr: float) -> TrainingArguments:
    """The Trainer's arguments for the round's `train/` directory. Its own TensorBoard reporter
    is left out: transformers would put it under the checkpoints (removed once trained), and
    `hf_trainer` gives it `train/tb/` instead."""
    t = job.cfg.train
    return TrainingArguments(
        output_dir=str(job.out / CHECKPOINTS),
        per_device_train_batch_size=batch_size,
        num_train_epochs=t.epochs,
        max_steps=job.max_steps,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=t.warmup,
        weight_decay=0.0,
        save_steps=t.save_steps,
        save_total_limit=1,
        logging_steps=10,
        logging_first_step=True,  # a curve from step 1, however short the run
        report_to=[r for r in t.report_to if r != "tensorboard"],
        remove_unused_columns=False,
        seed=t.seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        ddp_backend="gloo" if job.ray and not torch.cuda.is_available() else None,
    )


def warm_token_rows(model: Any, collate: BacktrackCollator, ds: Dataset, cfg: Config) -> None:
    """`train.token_warmup` batches fitting only the backspace's rows (`fit_token_rows`)."""
    t = cfg.train
    model.to(pick_device(cfg.model.device))
    gen = torch.Generator().manual_seed(t.seed)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=t.batch_size,
        shuffle=True,
        generator=gen,
        collate_fn=collate,  # type: ignore[arg-type]
    )
    batches = itertools.islice(_cycle(loader), t.token_warmup)
    losses = fit_token_rows(model, collate.bksp_id, batches, lr=10 * t.lr)
    log.info("train: fitted the backspace rows, loss %.3f -> %.3f", losses[0], losses[-1])


def _cycle(loader: Any) -> Any:
    while True:
        yield from loader
