"""The train stage: fine-tune a checkpoint on backspace traces (docs/design.md §7).

    halluc train --preset arith-tiny --set train.mode=erase        # CPU, in-process
    halluc train --preset arith-tiny --set train.workers=2          # Ray Train, 2 workers (gloo)

Reads the round's `selected.parquet` (else the `traces` shards of its search; kinds from
`train.kinds`; with `train.curriculum` in order of how much each trace erases, least first) and
starts from the model the round searched with, adds the backspace
token to the model (`train.init`), sets dropout to `train.dropout` (0 by default: on arith-tiny,
fine-tuning on reference solutions with the bootstrap's dropout 0.1 left T=1.0 accuracy at 57%,
with dropout 0 it rose to 71%), and trains with transformers' `Trainer` and `BacktrackCollator`:
loss on kept tokens and backspaces only, `stream` or `erase` attention. Trainer checkpoints go to
`train/checkpoints/` every `train.save_steps` steps and a killed run resumes from the newest. The
model is saved to a temporary directory and renamed to `train/model/`, with `halluc.json` (the
attention mode, backspace token and unit that decoding must use). With `train.workers=N` the
same function runs on N Ray Train workers (gloo on CPU, NCCL on GPU).

`train.objective=dpo` is the same trainer with a second loss (`workers.preference`): it reads
the round's `select/pairs.parquet` (else the `pairs` shards of its search), turns each row into
chosen and rejected sequences (`search.pairs`), fits the backspace rows on the chosen ones
(`train.token_warmup`), then computes the reference log-probabilities once with that model
(`train/reference.json`, read back on resume) and trains on `train.batch_size // 2` pairs a
step.

    halluc train --preset arith-tiny --set train.objective=dpo --set train.dpo.beta=0.1

`train.objective=rl` prepares the model the same way (backspace token, dropout, attention check,
`train.token_warmup` batches on the round's traces) and hands it to `trainers.rl`, its own loop
with its own checkpoints (on-policy sampling does not fit the Trainer's data loader).

    halluc train --preset arith-tiny --set train.objective=rl --set train.rl.group=8
"""

from __future__ import annotations

import itertools
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from datasets import logging as ds_logging
from transformers import Trainer, TrainingArguments

from pipeline.config import Config
from pipeline.files import remove_stale, save_model, write_json
from pipeline.layout import RoundLayout, RunLayout
from pipeline.loading import task_from_config
from pipeline.runtime import record_environment, set_threads, stage_config
from pipeline.shards import ShardError, check_shard, checked_shard_files, read_shard, read_table
from pipeline.trainers import rl
from pipeline.trainers.dpo import (
    REFERENCE,
    chosen_rows,
    load_pairs,
    load_preferences,
    pair_compute,
    with_reference,
)
from workers.collate import LOSS_WEIGHTS, BacktrackCollator, loss
from workers.hf import META, CheckpointError, check_erase_support, load_checkpoint, pick_device
from workers.preference import REF_CHOSEN, PairCollator, preference_loss
from workers.tokens import add_backspace_token, fit_token_rows, untie_output

log = logging.getLogger(__name__)


def main(cfg: Config) -> Path:
    """`halluc train`: round `run.round` outside the arms, from that round's model."""
    layout = RunLayout.of(cfg)
    record_environment(cfg, layout.environment)
    r = cfg.run.round
    return train(cfg, layout.model(r), layout.round(r))


def train(
    cfg: Config, base: Path, rnd: RoundLayout, backspace: bool = True, max_steps: int = -1
) -> Path:
    """Fine-tune the checkpoint `base` on the round's selection (its search traces when nothing
    was selected) unless the round's model exists; returns the trained model's directory.
    `backspace` False trains without adding the backspace token (a clean-only arm); `max_steps`
    > 0 fixes the optimizer steps (equal compute between arms), else `train.epochs` decides.
    What it cost goes to `train/compute.json`: rows, loss-bearing tokens, optimizer steps."""
    if (rnd.model / META).exists():
        log.info("train: %s exists, nothing to do", rnd.model)
        return rnd.model
    stage_config(cfg, rnd.train)
    remove_stale(rnd.train)
    job = {
        "cfg": cfg,
        "base": str(base),
        "round": str(rnd.root),
        "backspace": backspace,
        "max_steps": max_steps if max_steps > 0 else cfg.train.max_steps,
    }
    if cfg.train.workers > 0:  # fail on bad shards before any worker starts
        if cfg.train.objective == "dpo":
            load_pairs(rnd)
        elif reads_traces(cfg, backspace):
            load_traces(cfg, rnd)
        _run_ray_train(job)
    else:
        set_threads(cfg)
        train_worker(job)
    log.info("train: model saved to %s", rnd.model)
    return rnd.model


def reads_traces(cfg: Config, backspace: bool) -> bool:
    """Whether training reads the round's traces: sft trains on them, rl only warms the
    backspace rows up on them (`train.token_warmup`), dpo reads pairs instead."""
    if cfg.train.objective == "rl":
        return backspace and cfg.train.token_warmup > 0
    return cfg.train.objective == "sft"


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


def prepare(
    cfg: Config, base: Path, rnd: RoundLayout, backspace: bool = True
) -> tuple[Any, Any, BacktrackCollator | PairCollator, Dataset]:
    """Model (with the backspace token when `backspace`), tokenizer, collator, and checked
    training rows: traces for `train.objective=sft`, preference rows and a `PairCollator` for
    dpo, for rl the traces of the token warm-up (none when `train.token_warmup` is 0)."""
    model, tok = load_checkpoint(base, "cpu", cfg.model.dtype, cfg.model.trust_remote_code)
    if cfg.train.untie and untie_output(model):  # first: the token then gets two rows
        log.info("train: untied the output layer from the input embeddings")
    bksp = -1  # no row holds one without the token
    if backspace:
        bksp = add_backspace_token(model, tok, cfg.trace.bksp_token, cfg.train.init)
    for module in model.modules():  # fine-tuning dropout (the checkpoint's config is kept)
        if isinstance(module, torch.nn.Dropout):
            module.p = cfg.train.dropout
    delimiter = task_from_config(cfg.task).step_delimiter
    delim = tok.encode(delimiter, add_special_tokens=False)
    check_attention(model, cfg.train.mode)
    collate = BacktrackCollator(
        cfg.train.mode,
        cfg.trace.unit,
        bksp,
        delim[0],
        tok.pad_token_id or 0,
        error_weight=cfg.train.error_weight,
    )
    if cfg.train.objective == "dpo":
        return model, tok, PairCollator(collate), load_preferences(cfg, rnd, tok, collate)
    if not reads_traces(cfg, backspace):
        return model, tok, collate, Dataset.from_dict({"input_ids": [], "loss_mask": []})
    ds = load_traces(cfg, rnd)
    _check_same_tokenizer(ds, tok)
    return model, tok, collate, ds.select_columns(["input_ids", "loss_mask", "prompt_len"])


def check_attention(model: Any, mode: str) -> None:
    """Erase mode needs a 4D float mask: eager and SDPA attention take one, others do not."""
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if mode == "erase":
        check_erase_support(model)
    if mode == "erase" and impl not in ("eager", "sdpa"):
        raise CheckpointError(
            f"train.mode=erase needs an attention implementation that takes a 4D mask (eager "
            f"or sdpa); this model uses {impl!r}: load it with attn_implementation='sdpa' or "
            "train with train.mode=stream"
        )


class WeightedTrainer(Trainer):
    """Trainer whose loss is `workers.collate.loss` when the collator sends per-target weights
    (otherwise the Trainer's own), `workers.preference.preference_loss` with `dpo` (β, SFT
    weight) on a `PairCollator` batch (its mean reward margin logged as `dpo_margin`), and that
    reads the rows in order when `sequential` is set (a curriculum)."""

    sequential = False
    dpo = (0.1, 1.0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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


def _check_same_tokenizer(ds: Dataset, tok: Any) -> None:
    row = ds[0]
    text = tok.decode(row["input_ids"], skip_special_tokens=False).replace(tok.eos_token, "")
    if text != row["prompt_text"] + row["raw_text"]:
        raise ShardError(
            "the traces were tokenized with another tokenizer than the model's (decoding "
            f"{row['input_ids'][:12]}... gives {text[:40]!r}); search with this model first"
        )


def train_worker(config: dict[str, Any]) -> None:
    """One training process (the whole run in-process, or one Ray Train worker)."""
    cfg: Config = config["cfg"]
    rnd = RoundLayout(Path(config["round"]))
    t = cfg.train
    torch.manual_seed(t.seed)
    backspace = config.get("backspace", True)
    model, tok, collate, ds = prepare(cfg, Path(config["base"]), rnd, backspace)
    out = rnd.train
    if t.objective == "rl":
        assert isinstance(collate, BacktrackCollator)  # prepare gives a pair collator to dpo only
        if len(ds) and not rl.has_checkpoint(out):  # a resumed run loads weights that had it
            warm_token_rows(model, collate, ds, cfg)
        rl.train_rl(model, tok, collate, cfg, rnd, config.get("max_steps", t.max_steps))
        return
    dpo = isinstance(collate, PairCollator)
    args = training_arguments(cfg, out, config, dpo)
    trainer: Trainer = WeightedTrainer(
        model=model, args=args, train_dataset=ds, data_collator=collate
    )
    trainer.sequential = t.curriculum  # type: ignore[attr-defined]
    trainer.dpo = (t.dpo.beta, t.dpo.sft_weight)  # type: ignore[attr-defined]
    if config.get("ray"):
        from ray.train.huggingface.transformers import prepare_trainer

        trainer = prepare_trainer(trainer)
    resume = any((out / "checkpoints").glob("checkpoint-*"))
    if t.token_warmup and backspace and not resume:  # a resumed run loads weights that had it
        if isinstance(collate, PairCollator):  # the backspace rows are fitted on the chosen side
            warm_token_rows(model, collate.inner, chosen_rows(ds), cfg)
        else:
            warm_token_rows(model, collate, ds, cfg)
    if isinstance(collate, PairCollator):  # the reference: the model as dpo training starts
        trainer.train_dataset = with_reference(model, collate, ds, cfg, out / REFERENCE)
    trainer.train(resume_from_checkpoint=True if resume else None)
    if trainer.is_world_process_zero():
        meta = {"mode": t.mode, "unit": cfg.trace.unit, "bksp_token": cfg.trace.bksp_token}
        save_model(trainer.model, tok, rnd.model, extra={META: meta | {"backspace": backspace}})
        compute = {
            "objective": t.objective,
            "optimizer_steps": trainer.state.global_step,
            "batch_size": t.batch_size,
            "token_warmup_batches": t.token_warmup if backspace else 0,
            "backspace_token": backspace,
        }
        write_json(rnd.compute, compute | (pair_compute(ds) if dpo else _sft(ds)))
        shutil.rmtree(out / "checkpoints", ignore_errors=True)


def training_arguments(cfg: Config, out: Path, config: dict[str, Any], dpo: bool) -> Any:
    """The Trainer's arguments for the round's `train/` directory `out`."""
    t = cfg.train
    return TrainingArguments(
        output_dir=str(out / "checkpoints"),
        # a dpo batch holds as many sequences as an sft one: half as many pairs
        per_device_train_batch_size=max(1, t.batch_size // 2) if dpo else t.batch_size,
        num_train_epochs=t.epochs,
        max_steps=config.get("max_steps", t.max_steps),
        learning_rate=(t.dpo.lr or t.lr) if dpo else t.lr,
        lr_scheduler_type="cosine",
        warmup_steps=t.warmup,
        weight_decay=0.0,
        save_steps=t.save_steps,
        save_total_limit=1,
        logging_steps=10,
        report_to=[],
        remove_unused_columns=False,
        seed=t.seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        ddp_backend="gloo" if config.get("ray") and not torch.cuda.is_available() else None,
    )


def _sft(ds: Dataset) -> dict[str, int]:
    """An sft training set's rows and loss-bearing tokens."""
    masks = zip(ds["loss_mask"], ds["prompt_len"], strict=True)
    return {"rows": len(ds), "loss_tokens": sum(sum(m[p:]) for m, p in masks)}


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


def _run_ray_train(job: dict[str, Any]) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from workers.actors import init_ray

    cfg: Config = job["cfg"]
    init_ray(cfg.run.address)
    gpu = torch.cuda.is_available()
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=job | {"ray": True},
        scaling_config=ScalingConfig(num_workers=cfg.train.workers, use_gpu=gpu),
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        run_config=RunConfig(
            name="halluc-train", storage_path=str((Path(job["round"]) / "train" / "ray").resolve())
        ),
    )
    trainer.fit()
