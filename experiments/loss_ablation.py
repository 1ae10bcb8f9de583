"""Which training targets hurt: the ablations in RESULTS.md (issue 5), on the arith-tiny run.

    .venv/bin/python experiments/loss_ablation.py [--run runs/arith-tiny]

Needs a finished `make demo` run (its bootstrap model and its backtrack arm's round-0 selection).
Each variant fine-tunes the bootstrap model the way `halluc train` does (Trainer, erase
attention, step unit, 2 epochs, lr 3e-4, batch 32, dropout 0 unless named) and reports greedy
accuracy and T=1.0 accuracy with the backspace banned on 300 held-out problems.

- reference: 300 reference solutions of other training problems, dropout 0.1 and 0
- traces: the selection as stored; without the loss on the backspace; without the loss on the
  first corrected token; without both; its visible text only; stream attention
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from pipeline.config import load_config
from pipeline.layout import RunLayout
from pipeline.loading import task_from_config
from pipeline.stages.bootstrap import encode_examples
from search.types import Ask
from workers.collate import BacktrackCollator
from workers.hf import SearchTokenizer, load_checkpoint
from workers.sampler import TransformersPolicy
from workers.tokens import add_backspace_token

TASK = task_from_config(load_config("arith-tiny").task)
TEST = TASK.problems("test", 300)


def accuracy(model: Any, hf: Any, temperature: float) -> float:
    tok = SearchTokenizer.wrap(hf, "\n", "<|bksp|>")
    policy = TransformersPolicy(
        model.eval(), tok.eos_id, tok.delim_id, temperature, 64, ban_ids=[tok.bksp_id]
    )
    out = policy.sample([Ask(tuple(tok.encode(p.prompt)), 1, "end", i) for i, p in enumerate(TEST)])
    return sum(
        TASK.is_correct(p, tok.decode(r[0].tokens).split("\n"))
        for p, r in zip(TEST, out, strict=True)
    ) / len(TEST)


def finetune(
    boot: Path, rows: list[dict[str, Any]], mode: str = "erase", dropout: float = 0.0
) -> dict[str, float]:
    model, hf = load_checkpoint(boot, "cpu")
    bksp = add_backspace_token(model, hf)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = dropout
    args = TrainingArguments(
        output_dir="/tmp/halluc-ablation",
        per_device_train_batch_size=32,
        num_train_epochs=2,
        learning_rate=3e-4,
        lr_scheduler_type="cosine",
        warmup_steps=10,
        weight_decay=0.0,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=True,
        seed=0,
    )
    collate = BacktrackCollator(
        mode,
        "step",
        bksp,
        hf.encode("\n")[0],  # type: ignore[arg-type]
        hf.pad_token_id,
    )
    Trainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=collate
    ).train()
    return {"greedy": accuracy(model, hf, 0.0), "t1_banned": accuracy(model, hf, 1.0)}


def variant(r: dict[str, Any], bksp: int, drop_bksp: bool, drop_first: bool) -> dict[str, Any]:
    ids, mask = r["input_ids"], list(r["loss_mask"])
    for i, t in enumerate(ids):
        first = i > 0 and ids[i - 1] == bksp and t != bksp
        if (drop_bksp and t == bksp) or (drop_first and first):
            mask[i] = 0
    return {"input_ids": ids, "loss_mask": mask, "prompt_len": r["prompt_len"]}


def visible_only(r: dict[str, Any], bksp: int) -> dict[str, Any]:
    erased = {p for a, b in r["erase_spans"] for p in range(a, b)}
    keep = [i for i, t in enumerate(r["input_ids"]) if i not in erased and t != bksp]
    return {
        "input_ids": [r["input_ids"][i] for i in keep],
        "loss_mask": [r["loss_mask"][i] for i in keep],
        "prompt_len": r["prompt_len"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/arith-tiny")
    ap.add_argument("--out", default="bench-ablation.json")
    run = Path(ap.parse_args().run)
    boot = RunLayout(run).bootstrap_model
    base, hf = load_checkpoint(boot, "cpu")
    report: dict[str, Any] = {
        "bootstrap": {"greedy": accuracy(base, hf, 0.0), "t1_banned": accuracy(base, hf, 1.0)}
    }
    refs = [
        {"input_ids": ids, "loss_mask": [0] * n + [1] * (len(ids) - n), "prompt_len": n}
        for ids, n in encode_examples(TASK, hf, TASK.problems("train", 600)[300:])
    ]
    report["reference, dropout 0.1"] = finetune(boot, refs, dropout=0.1)
    report["reference, dropout 0"] = finetune(boot, refs)
    traces = pq.read_table(RunLayout(run).round(0, "backtrack").selected).to_pylist()
    # accuracy() added the backspace to `hf` just as training adds it: the same id
    bksp = hf.convert_tokens_to_ids("<|bksp|>")
    for name, drop_b, drop_f in [
        ("traces", False, False),
        ("no backspace loss", True, False),
        ("no first-corrected-token loss", False, True),
        ("neither", True, True),
    ]:
        report[name] = finetune(boot, [variant(r, bksp, drop_b, drop_f) for r in traces])
    report["visible text only"] = finetune(boot, [visible_only(r, bksp) for r in traces])
    report["traces, stream attention"] = finetune(boot, traces_rows(traces), mode="stream")
    print(json.dumps(report, indent=2))
    Path(ap.parse_args().out).write_text(json.dumps(report, indent=2))


def traces_rows(traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: r[k] for k in ("input_ids", "loss_mask", "prompt_len")} for r in traces]


if __name__ == "__main__":
    main()
