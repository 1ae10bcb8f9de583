"""`train.objective=dpo`: the round's pairs as preference rows, trained with sft's Trainer and a
second loss (`workers.preference`), against the reference model's log-probabilities of them,
computed once.

    load_pairs(rnd)                      the round's dpo selection, else its search's `pairs` rows
    load(job, tok, collate)              those rows as chosen/rejected sequences (search/pairs.py)
    fit(model, tok, collate, rows, job)  `train.token_warmup` batches on the chosen sequences,
                                         then the reference (`with_reference`: the model as dpo
                                         training starts, kept in `train/reference.json` and
                                         read back on resume), then `train.batch_size // 2` pairs
                                         a step (as many sequences as an sft step)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
from datasets import Dataset

from pipeline.config import Config, TrainConfig
from pipeline.files import read_json, write_json
from pipeline.layout import RoundLayout
from pipeline.shards import ShardError, check_shard, checked_shard_files, read_table
from pipeline.trainers import sft
from pipeline.trainers.job import Compute, Job
from search.pairs import preferences
from workers.collate import BacktrackCollator
from workers.hf import pick_device
from workers.preference import PairCollator, reference_logps

log = logging.getLogger(__name__)

REFERENCE = "reference.json"  # in the round's train/ directory; kept once trained
SCRATCH = sft.SCRATCH


def check(job: Job) -> None:
    """Fail unless the round has pairs."""
    load_pairs(job.rnd)


def load(job: Job, tok: Any, collate: BacktrackCollator) -> Dataset:
    """The round's pairs as preference rows (`load_preferences`)."""
    return load_preferences(job.cfg, job.rnd, tok, collate)


def fit(model: Any, tok: Any, collate: BacktrackCollator, rows: Dataset, job: Job) -> Compute:
    """Train `model` on the preference `rows` for `job.max_steps` steps (else `train.epochs`
    passes); the backspace rows are fitted on the chosen sequences first."""
    start = time.perf_counter()
    pairs = PairCollator(collate)
    trainer, done = sft.hf_trainer(model, pairs, rows, job, *batch_and_lr(job.cfg.train))
    if sft.warms_up(job) and not done:  # a resumed run loads weights that had it
        sft.warm_token_rows(model, collate, chosen_rows(rows), job.cfg)
    trainer.train_dataset = with_reference(model, pairs, rows, job.cfg, job.out / REFERENCE)
    steps = sft.run(trainer, done)
    kinds, sides = rows["kind"], ("chosen", "rejected")
    return Compute(
        "dpo",
        steps,
        loss_tokens=sum(sum(m) for side in sides for m in rows[f"{side}_mask"]),
        wall_s=time.perf_counter() - start,
        details=sft.settings(job)
        | {
            "rows": len(rows),
            "pairs_by_kind": {k: kinds.count(k) for k in sorted(set(kinds))},
            # the tokens the reference pass read, once
            "reference_tokens": sum(len(ids) for side in sides for ids in rows[f"{side}_ids"]),
        },
    )


def batch_and_lr(t: TrainConfig) -> tuple[int, float]:
    """A dpo step's pairs, `batch_size // 2` (at least one: as many sequences as an sft step),
    and its learning rate, `dpo.lr` (else the sft one, `lr`)."""
    return max(1, t.batch_size // 2), t.dpo.lr or t.lr


def load_pairs(rnd: RoundLayout) -> list[dict[str, Any]]:
    """The rows of the round's dpo selection, else every `pairs` row of its search; checked."""
    path = rnd.selected_pairs
    if path.exists():
        check_shard(path, "pairs")
        rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    elif checked_shard_files(rnd.search, "pairs"):
        rows = read_table(rnd.search, "pairs").to_pylist()
    else:
        raise ShardError(f"no pairs shards under {rnd.search}; run `halluc search` first")
    if not rows:
        raise ShardError(
            f"no pairs under {path if path.exists() else rnd.search}: the search located no "
            "failing branch; raise search.omegaprm.budget or search more problems"
        )
    return rows


def load_preferences(
    cfg: Config, rnd: RoundLayout, tok: Any, collate: BacktrackCollator
) -> Dataset:
    """The round's pairs as preference rows (`search.pairs.preferences`; right-step pairs with
    `train.dpo.right_pairs`, each distinct one once): `chosen_ids`, `chosen_mask`,
    `rejected_ids`, `rejected_mask`, `prompt_len`, `kind`."""
    rows = load_pairs(rnd)
    prompt = tok.decode(rows[0]["prompt_ids"], skip_special_tokens=False)
    if prompt.replace(tok.eos_token, "") != rows[0]["prompt_text"]:
        raise ShardError(
            "the pairs were tokenized with another tokenizer than the model's (decoding "
            f"{rows[0]['prompt_ids'][:12]}... gives {prompt[:40]!r}); search with this model first"
        )
    out, seen = [], set()
    for row in rows:
        for p in preferences(
            row, cfg.trace.unit, collate.bksp_id, collate.delim_id, cfg.train.dpo.right_pairs
        ):
            key = (tuple(p.chosen), tuple(p.rejected))
            if p.kind == "right_step" and key in seen:
                continue  # several wrong steps from one prefix share its fix
            seen.add(key)
            out.append(
                {
                    "chosen_ids": p.chosen,
                    "chosen_mask": p.chosen_mask,
                    "rejected_ids": p.rejected,
                    "rejected_mask": p.rejected_mask,
                    "prompt_len": p.prompt_len,
                    "kind": p.kind,
                }
            )
    return Dataset.from_list(out)


def chosen_rows(ds: Dataset) -> Dataset:
    """The chosen sequences of preference rows as SFT rows (`input_ids`, `loss_mask`,
    `prompt_len`): what the backspace rows are fitted on before dpo training."""
    return ds.select_columns(["chosen_ids", "chosen_mask", "prompt_len"]).rename_columns(
        {"chosen_ids": "input_ids", "chosen_mask": "loss_mask"}
    )


def with_reference(
    model: Any, collate: PairCollator, ds: Dataset, cfg: Config, path: Path
) -> Dataset:
    """`ds` with the reference log-probabilities `ref_chosen`, `ref_rejected` of each pair: read
    from `path` when an earlier (killed) run of this stage wrote them, else computed by `model`
    (in eval mode, then back to training mode) and written there by the first worker."""
    if path.exists():
        ref = read_json(path)
        if ref["pairs"] != len(ds):
            raise ShardError(
                f"{path} holds reference log-probabilities of {ref['pairs']} pairs, the round "
                f"has {len(ds)}; delete {path.parent} to train the round again"
            )
        chosen, rejected = ref["chosen"], ref["rejected"]
    else:
        model.to(pick_device(cfg.model.device))
        chosen, rejected = reference_logps(model, ds, collate, max(1, cfg.train.batch_size // 2))
        model.train()
        if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
            write_json(path, {"pairs": len(ds), "chosen": chosen, "rejected": rejected})
        log.info("train: reference log-probabilities of %d pairs -> %s", len(ds), path)
    return ds.add_column("ref_chosen", chosen).add_column("ref_rejected", rejected)
