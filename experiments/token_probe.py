"""Where the fine-tuning loss sits when the backspace is new, and what fitting its rows alone does.

    .venv/bin/python experiments/token_probe.py [--run runs/arith-tiny] [--batches 50 100]

Needs a finished `make demo` run (its bootstrap model and its backtrack arm's round-0 selection).
Adds `<|bksp|>` to the bootstrap model as `halluc train` does (`mean` init), then reports, on 512
selected traces: the mean loss (nats) on the backspace targets, on the first token after a
backspace run, and on every other target, their share of the total, and the mean probability
the model gives the backspace where the trace has one and elsewhere. Then fits only the
backspace's embedding rows (`workers.tokens.fit_token_rows`, lr 3e-3, batches of 32, the rest
of the model frozen) for the given numbers of batches, reporting the same after each.
"""

from __future__ import annotations

import argparse
import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from pipeline.layout import RunLayout
from workers.collate import BacktrackCollator
from workers.hf import load_checkpoint
from workers.tokens import add_backspace_token, fit_token_rows


def report(model: Any, collate: BacktrackCollator, rows: list[dict[str, Any]]) -> str:
    batch = collate(rows)
    labels = batch.pop("labels")
    with torch.no_grad():
        logp = model(**batch).logits[:, :-1].float().log_softmax(-1)
    target, prev = labels[:, 1:], batch["input_ids"][:, :-1]
    kept = target != -100
    nll = -logp.gather(-1, target.clamp(min=0)[..., None])[..., 0]
    bksp = collate.bksp_id
    is_bksp = (target == bksp) & kept
    after = (prev == bksp) & (target != bksp) & kept
    other = kept & ~is_bksp & ~after
    p = logp[..., bksp].exp()
    total = nll[kept].sum()
    return (
        f"loss: backspace {nll[is_bksp].mean():.2f}, first corrected {nll[after].mean():.2f}, "
        f"other {nll[other].mean():.3f} (share {nll[is_bksp].sum() / total:.2f} / "
        f"{nll[after].sum() / total:.2f} / {nll[other].sum() / total:.2f}); "
        f"P(backspace) where the trace has one {p[is_bksp].mean():.3f}, elsewhere "
        f"{p[other].mean():.4f}"
    )


def batches(
    collate: BacktrackCollator, rows: list[dict[str, Any]], seed: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    rng = random.Random(seed)
    while True:
        rng.shuffle(rows)
        for i in range(0, len(rows) - 31, 32):
            yield collate(rows[i : i + 32])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="runs/arith-tiny")
    parser.add_argument("--batches", type=int, nargs="+", default=[50, 100])
    args = parser.parse_args()
    run = Path(args.run)
    model, hf = load_checkpoint(RunLayout(run).bootstrap_model, "cpu")
    bksp = add_backspace_token(model, hf)
    collate = BacktrackCollator("erase", "step", bksp, hf.encode("\n")[0], hf.pad_token_id or 0)
    table = pq.read_table(RunLayout(run).round(0, "backtrack").selected)
    rows = [{k: r[k] for k in ("input_ids", "loss_mask", "prompt_len")} for r in table.to_pylist()]
    probe = rows[:512]
    print("before:", report(model, collate, probe))
    stream = batches(collate, list(rows))
    done = 0
    for n in args.batches:
        fit_token_rows(model, bksp, itertools.islice(stream, n - done), lr=3e-3)
        done = n
        print(f"after {n} batches:", report(model, collate, probe))


if __name__ == "__main__":
    main()
