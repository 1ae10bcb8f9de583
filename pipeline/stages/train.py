"""The train stage: fine-tune a checkpoint on backspace traces (docs/design.md §7).

    halluc train --preset arith-tiny --set train.mode=erase        # CPU, in-process
    halluc train --preset arith-tiny --set train.workers=2          # Ray Train, 2 workers (gloo)

Reads the round's `selected.parquet` (else the `traces` shards of its search; kinds from
`train.kinds`) and starts from the model the round searched with, adds the backspace
token to the model (`train.init`), sets dropout to `train.dropout` (0 by default: on arith-tiny,
fine-tuning on reference solutions with the bootstrap's dropout 0.1 left T=1.0 accuracy at 57%,
with dropout 0 it rose to 71%), and hands it to the trainer of `train.objective` (`TRAINERS`,
pipeline/trainers/; the shape every trainer has is in trainers/job.py). `sft` trains with
transformers' `Trainer` and `BacktrackCollator`: loss on kept tokens and backspaces only, `stream`
or `erase` attention. Trainer checkpoints go to `train/checkpoints/` every `train.save_steps`
steps and a killed run resumes from the newest. What training cost goes to `train/compute.json`,
then the model to a temporary directory renamed to `train/model/`, with `halluc.json` (the
attention mode, backspace token and unit that decoding must use); training curves to `train/tb/`
(TensorBoard: `tensorboard --logdir runs/NAME` shows every arm and round). With `train.workers=N`
the same function runs on N Ray Train workers (gloo on CPU, NCCL on GPU).

`train.objective=dpo` is the same trainer with a second loss (`workers.preference`): it reads
the round's `select/pairs.parquet` (else the `pairs` shards of its search), turns each row into
chosen and rejected sequences (`search.pairs`), fits the backspace rows on the chosen ones
(`train.token_warmup`), then computes the reference log-probabilities once with that model
(`train/reference.json`, read back on resume) and trains on `train.batch_size // 2` pairs a
step.

    halluc train --preset arith-tiny --set train.objective=dpo --set train.dpo.beta=0.1

`train.objective=rl` prepares the model the same way (backspace token, dropout, attention check,
`train.token_warmup` batches on the round's traces) and trains it in `trainers.rl`'s own loop
with its own checkpoints (on-policy sampling does not fit the Trainer's data loader).

    halluc train --preset arith-tiny --set train.objective=rl --set train.rl.group=8
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from pipeline.arms import arm as arm_named
from pipeline.config import SHAPES, Config
from pipeline.files import remove_stale, save_model, write_json
from pipeline.layout import RoundLayout, RunLayout
from pipeline.loading import task_from_config
from pipeline.runtime import (
    finished,
    kill_point,
    mark_done,
    record_environment,
    set_threads,
    stage_config,
)
from pipeline.shards import ShardError
from pipeline.trainers import dpo, rl, sft
from pipeline.trainers.job import Compute, Job, Trainer, world
from search.backspace import ERASING
from workers.collate import BacktrackCollator
from workers.erase import BLOCKED_SDPA, use_blocked_attention
from workers.hf import (
    META,
    CheckpointError,
    backtrack_meta,
    check_erase_support,
    load_checkpoint,
    set_precision,
    step_end_ids,
)
from workers.policy import context_limit, pad_of
from workers.tokens import add_backspace_token, untie_output

log = logging.getLogger(__name__)

TRAINERS: dict[str, Trainer] = {"sft": sft, "dpo": dpo, "rl": rl}  # by train.objective


def main(cfg: Config) -> Path:
    """`halluc train`: round `run.round` outside the arms, from that round's model."""
    layout = RunLayout.of(cfg)
    record_environment(cfg, layout.environment)
    r = cfg.run.round
    return train(cfg, base_of(cfg, layout, r), layout.round(r), earlier=earlier_of(cfg, layout, r))


def base_of(cfg: Config, layout: RunLayout, r: int, arm: str = "") -> Path:
    """The model round `r` trains from: the start model with `train.anchor=start` (an arm that
    starts from another arm's model keeps it), else the model the round searched with."""
    if cfg.train.anchor == "start" and not (arm and arm_named(arm).starts_from):
        return layout.start_model
    return layout.model(r, arm)


def earlier_of(cfg: Config, layout: RunLayout, r: int, arm: str = "") -> tuple[RoundLayout, ...]:
    """The rounds before `r` whose selections round `r` adds (`train.accumulate`, sft only)."""
    if not cfg.train.accumulate or cfg.train.objective != "sft":
        return ()
    return tuple(layout.round(q, arm) for q in range(r))


def train(
    cfg: Config,
    base: Path,
    rnd: RoundLayout,
    backspace: bool = True,
    max_steps: int = -1,
    earlier: tuple[RoundLayout, ...] = (),
) -> Path:
    """Fine-tune the checkpoint `base` on the round's selection (its search traces when nothing
    was selected; its pairs for dpo) unless the round's model exists; returns the trained model's
    directory. `backspace` False trains without adding the backspace token (a clean-only arm);
    `max_steps` > 0 fixes the optimizer steps (equal compute between arms), else `train.epochs`
    decides (`train.rl.steps`, when set, overrides both for the rl objective); `earlier`: rounds
    whose selections are added first (`train.accumulate`). What it cost goes to
    `train/compute.json` (`Compute.record`)."""
    stage_config(cfg, rnd.train, only=SHAPES["train"])  # first: never reuse another's model
    remove_stale(rnd.train)
    if finished(rnd.train, outputs(rnd)):
        _remove(rnd.train, TRAINERS[cfg.train.objective].SCRATCH)  # a kill came before this
        log.info("train: %s is trained, nothing to do", rnd.model)
        return rnd.model
    steps = max_steps if max_steps > 0 else cfg.train.max_steps
    if cfg.train.objective == "rl" and cfg.train.rl.steps > 0:
        steps = cfg.train.rl.steps  # the rl objective's own count, the budget arm's aside
    job = Job(cfg, base, rnd, backspace, steps, earlier=earlier)
    if cfg.train.workers > 0:
        TRAINERS[cfg.train.objective].check(job)  # fail on bad shards before any worker starts
        _run_ray_train(job)
    else:
        set_threads(cfg)
        train_worker(job)
    log.info("train: model saved to %s", rnd.model)
    return rnd.model


def train_worker(job: Job) -> None:
    """One training process (the whole run in-process, or one Ray Train worker): prepare the
    model, train it with the objective's trainer; the first process then writes compute.json and
    the model (whose existence marks the round trained), and removes the trainer's scratch."""
    torch.manual_seed(job.cfg.train.seed)
    trainer = TRAINERS[job.cfg.train.objective]
    model, tok, collate, rows = prepare(job)
    compute = trainer.fit(model, tok, collate, rows, job)
    if world()[0] == 0:
        _save(job, model, tok, compute, trainer.SCRATCH)


def prepare(job: Job) -> tuple[Any, Any, BacktrackCollator, Dataset]:
    """What the trainer of `train.objective` trains: the model, its tokenizer and the collator
    (`prepare_model`), and the trainer's rows (its `load`)."""
    model, tok, collate = prepare_model(job.cfg, job.base, job.backspace)
    rows = TRAINERS[job.cfg.train.objective].load(job, tok, collate)
    check_lengths(rows, model, job.rnd)
    return model, tok, collate, rows


def check_lengths(rows: Dataset, model: Any, rnd: RoundLayout) -> None:
    """Refuse a training row longer than the model's context, naming it and both lengths: it
    would fail inside the forward pass, and truncating it would silently drop what it teaches."""
    limit = context_limit(model.config)
    for column in ("input_ids", "chosen_ids", "rejected_ids"):
        if limit is None or column not in rows.column_names:
            continue
        lengths = [len(r) for r in rows[column]]
        longest = max(range(len(lengths)), key=lengths.__getitem__, default=None)
        if longest is not None and lengths[longest] > limit:
            raise ShardError(
                f"training row {longest} of {rnd.root} ({column}) is {lengths[longest]} tokens and "
                f"the model takes {limit} positions; select shorter traces, lower "
                "sampling.max_new_tokens, or use a model with a longer context"
            )


def prepare_model(cfg: Config, base: Path, backspace: bool) -> tuple[Any, Any, BacktrackCollator]:
    """The model at `base` on the CPU (an output layer of its own with `train.untie`, the
    backspace token when `backspace`, dropout `train.dropout`, its attention checked against
    `train.mode`, its forwards under `model.precision`), its tokenizer, and the collator of
    `train.mode` and `trace.unit`."""
    model, tok = load_checkpoint(base, "cpu", cfg.model.train_dtype, cfg.model.trust_remote_code)
    set_precision(model, cfg.model.precision)  # rl's streams, sampled by this model, too
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
    ends, _ = step_end_ids(tok, delimiter, (bksp,))  # `.\n` ends a step as `\n` does
    check_attention(model, cfg.train.mode)
    use_blocked_attention(model)  # the same attention, without the masked upper half
    trained = backtrack_meta(base)
    if trained.get("backspace") and trained.get("mode", cfg.train.mode) != cfg.train.mode:
        log.warning(
            f"train: {base} was trained in attention mode {trained['mode']} and this round "
            f"trains (and records for decoding) train.mode={cfg.train.mode}; set "
            f"train.mode={trained['mode']} to keep the mode it learned"
        )
    collate = BacktrackCollator(
        cfg.train.mode,
        cfg.trace.unit,
        bksp,
        ends | {delim[0]},
        pad_of(tok),
        error_weight=cfg.train.error_weight,
    )
    return model, tok, collate


def check_attention(model: Any, mode: str) -> None:
    """Erase modes need a 4D float mask: eager and SDPA attention take one, others do not."""
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if mode in ERASING:
        check_erase_support(model)
    if mode in ERASING and impl not in ("eager", "sdpa", BLOCKED_SDPA):
        raise CheckpointError(
            f"train.mode={mode} needs an attention implementation that takes a 4D mask (eager "
            f"or sdpa); this model uses {impl!r}: load it with attn_implementation='sdpa' or "
            "train with train.mode=stream"
        )


def outputs(rnd: RoundLayout) -> list[Path]:
    """What a trained round holds: compute.json and the model (saved whole, then renamed in)."""
    return [rnd.compute, rnd.model]


def _save(job: Job, model: Any, tok: Any, compute: Compute, scratch: tuple[str, ...]) -> None:
    """compute.json, then the model, then the completion marker; then the trainer's checkpoints
    and other scratch are removed (a kill before the marker resumes from them)."""
    cfg = job.cfg
    write_json(job.rnd.compute, compute.record())
    kill_point("train:compute-written")
    meta = {"mode": cfg.train.mode, "unit": cfg.trace.unit, "bksp_token": cfg.trace.bksp_token}
    save_model(model, tok, job.rnd.model, extra={META: meta | {"backspace": job.backspace}})
    kill_point("train:model-saved")
    mark_done(job.out, outputs(job.rnd))
    _remove(job.out, scratch)
    log.info(
        "train: %s, %d optimizer steps, %d loss-bearing tokens in %.1f s",
        compute.objective,
        compute.optimizer_steps,
        compute.loss_tokens,
        compute.wall_s,
    )


def _remove(train_dir: Path, scratch: tuple[str, ...]) -> None:
    """The trainer's checkpoints and other scratch, once the model is saved."""
    for name in scratch:
        path = train_dir / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _run_ray_train(job: Job) -> None:
    """`train_worker` on `train.workers` Ray Train workers (gloo on CPU, NCCL on GPU)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from workers.actors import init_ray

    cfg = job.cfg
    init_ray(cfg.run.address)
    gpu = torch.cuda.is_available()
    trainer = TorchTrainer(
        _ray_worker,
        # Ray Train hands each worker a dict
        train_loop_config={"job": dataclasses.replace(job, ray=True)},
        scaling_config=ScalingConfig(num_workers=cfg.train.workers, use_gpu=gpu),
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        run_config=RunConfig(name="halluc-train", storage_path=str((job.out / "ray").resolve())),
    )
    trainer.fit()


def _ray_worker(config: dict[str, Job]) -> None:
    train_worker(config["job"])
