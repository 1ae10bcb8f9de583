"""The value stage: a process reward model (PRM) trained on the search's `steps` table (issue 16).

    halluc value --preset arith-tiny                       # the run's steps, from its bootstrap
    halluc value --preset arith-tiny --set value.targets=exact --set value.out_dir=runs/v-exact
    halluc value --set 'value.runs=[runs/a,runs/b]' \
        --set value.init=runs/a/backtrack/round-1/train/model      # two runs, a round's policy
    ray job submit --working-dir . -- halluc value --preset countdown-gpu \
        --set run.out_dir=/mnt/shared/runs/countdown --set model.device=cuda

Data: every `steps` row (one per probed prefix + step: `mc`, rollouts, the exact label where the
task has a checker) of every finished search stage (`ROUND/search` with its summary.json) under
each of `value.runs` (default `run.out_dir`: both arms, every round, every seed); identical rows
(round 0 of both arms) are kept once, and rows without a value (a node never rolled out) are left
out. Stages still running are skipped with a warning. The search covers training problems only,
so `value.val_share` of the *problems* (by problem id) are held out: none of their rows is
trained on, and every figure is computed on them.

Model: `AutoModelForTokenClassification` with `num_labels=1`, from `value.init` (default the run's
start model; the causal LM head is dropped, a scalar head added). Its value of a sequence is
`sigmoid(logits[0, last token, 0])` for the token ids prefix + step: the estimated probability
that a rollout from there ends correct. Loss: binary cross-entropy on that logit against the
targets (`value.targets`: soft MC values, hard MC labels, or exact labels). `value.head=shared`
freezes the backbone (it stays the policy's) and trains the head alone, so one forward of the
policy serves both: the head applied to the policy's last hidden state
(`output_hidden_states=True`, the final entry) gives the same value. Dropout is 0.

Outputs, under `value.out_dir` (default `run.out_dir/value`): `config.yaml`, `tb/` (the training
curves: loss, learning rate, gradient norm, for TensorBoard), and `model/`, an
ordinary checkpoint directory (safetensors, tokenizer) plus `value.json` (that it is a value
model, how to read it, where its labels came from: runs, rounds, policies, rows, a fingerprint of
the rows; the split; the training curve) and `label_quality.json` / `label_quality.md`
(`measure.value_quality`: ROC-AUC, best-threshold accuracy and calibration of the MC labels and
of the model against the exact labels). A rerun with the same config and the same rows does
nothing; other rows (more rounds searched) or another init retrain; another config is refused.

Loading and scoring anywhere (transformers, CPU or GPU; nothing of Halluc needed):

    import torch
    from transformers import AutoModelForTokenClassification
    model = AutoModelForTokenClassification.from_pretrained("runs/arith-tiny/value/model").eval()
    ids = torch.tensor([prefix_ids + step_ids])            # token ids, as the search wrote them
    value = torch.sigmoid(model(input_ids=ids).logits[0, -1, 0]).item()

or `score(model, [ids, ...])` (workers/valuer.py), which batches (right padding, the value at
each row's own last token); `workers.valuer.load_valuer(path)` gives the search's `Valuer`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipeline.config import Config, ValueConfig
from pipeline.curves import GRAD_NORM, LOSS, LR, Curves, grad_norm
from pipeline.files import read_json, remove_stale, save_model, write_text
from pipeline.layout import RunLayout
from pipeline.measure import value_quality
from pipeline.runtime import record_environment, set_threads, stage_config
from pipeline.value_data import TARGETS, Rows, ValueModelError, load_rows, split, targets
from search.errors import HallucError
from workers.hf import check_checkpoint_dir, load_tokenizer, pick_device, set_precision
from workers.policy import context_limit
from workers.valuer import logits, score

log = logging.getLogger(__name__)
META = "value.json"
QUALITY = "label_quality.json"


def main(cfg: Config) -> dict[str, Any]:
    """`halluc value`: train (or find up to date) the value model; returns its summary."""
    v, layout = cfg.value, RunLayout.of(cfg)
    out = Path(v.out_dir) if v.out_dir else layout.value
    init = Path(v.init) if v.init else layout.start_model
    rows = load_rows([Path(r) for r in v.runs] or [layout.root])
    stage_config(cfg, out, only=("value", "model"))
    remove_stale(out)
    held_out = split(rows.problems, v.val_share)
    done = _finished(out / "model", rows.fingerprint, init)
    if done is not None:
        log.info("value: %s is up to date with these rows, nothing to do", out / "model")
        return done
    record_environment(cfg, out / "environment.json")
    set_threads(cfg)
    with Curves(out) as curves:
        model, tok, meta, quality = train(cfg, init, rows, held_out, curves)
    save_model(model, tok, out / "model", extra={META: meta, QUALITY: quality})
    write_text(out / "model" / "label_quality.md", value_quality.markdown(quality))
    log.info("value: model saved to %s", out / "model")
    return _summary(out / "model", meta, quality)


def train(
    cfg: Config, init: Path, rows: Rows, held_out: list[bool], curves: Curves | None = None
) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """The value model from `init` trained on the rows not `held_out` (on the CPU when it
    returns), its tokenizer, its value.json and its label quality on the held-out rows; the
    training curves to `curves`."""
    v = cfg.value
    torch.manual_seed(v.seed)  # the new head's initial weights
    model, tok = build(init, v.head, cfg.model.train_dtype, cfg.model.trust_remote_code)
    check_ids(rows, tok, model, init)
    model.to(pick_device(cfg.model.device))
    y = targets(rows, v.targets)
    train_rows = [i for i, h in enumerate(held_out) if not h]
    val_rows = [i for i, h in enumerate(held_out) if h]
    val_seqs = [rows.sequences[i] for i in val_rows]
    before = bce(score(model, val_seqs, v.batch_size), y[val_rows])
    set_precision(model, cfg.model.precision)  # the updates only: scores stay in float32
    curve = fit(model, [rows.sequences[i] for i in train_rows], y[train_rows], v, curves)
    set_precision(model, "fp32")
    preds = score(model, val_seqs, v.batch_size)
    quality = value_quality.label_quality(rows.mc, rows.exact, held_out, preds.tolist())
    fit_figures = {
        "val_loss_before": before,
        "val_loss_after": bce(preds, y[val_rows]),
        "val_pearson": _pearson(preds, y[val_rows]),
        "curve": curve,
    }
    return model.to("cpu"), tok, metadata(v, init, rows, held_out, fit_figures), quality


def describe(result: dict[str, Any]) -> str:
    return f"value model: {result['model']}\n\n{result['table']}"


def _finished(model_dir: Path, fingerprint: str, init: Path) -> dict[str, Any] | None:
    """The summary of a finished value model of these rows from this init, else None."""
    if not (model_dir / META).exists() or not (model_dir / QUALITY).exists():
        return None
    meta = read_json(model_dir / META)
    if meta["labels"]["fingerprint"] != fingerprint or meta["init"] != str(init):
        log.info("value: the rows or the init changed since %s was trained; retraining", model_dir)
        return None
    quality = read_json(model_dir / QUALITY)
    if not (model_dir / "label_quality.md").exists():  # a kill between the two writes
        write_text(model_dir / "label_quality.md", value_quality.markdown(quality))
    return _summary(model_dir, meta, quality)


def _summary(model_dir: Path, meta: dict[str, Any], quality: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": str(model_dir),
        "rows": meta["labels"]["rows"],
        "split": meta["split"],
        "fit": {k: v for k, v in meta["fit"].items() if k != "curve"},
        "quality": quality,
        "table": value_quality.markdown(quality),
    }


def build(init: Path, head: str, dtype: str, trust_remote_code: bool) -> tuple[Any, Any]:
    """The value model from the causal LM checkpoint `init` (a fresh scalar head) and its
    tokenizer; with `head=shared` only the head trains."""
    from transformers import AutoModelForTokenClassification

    try:
        check_checkpoint_dir(init)
    except HallucError as err:
        raise ValueModelError(f"value.init: {err}") from None
    tok = load_tokenizer(init, trust_remote_code)
    model = AutoModelForTokenClassification.from_pretrained(
        init,
        num_labels=1,
        id2label={0: "value"},
        label2id={"value": 0},
        dtype=getattr(torch, dtype),
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
    )
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if head == "shared":
        for p in getattr(model, model.base_model_prefix).parameters():
            p.requires_grad_(False)
    return model, tok


def check_ids(rows: Rows, tok: Any, model: Any, init: Path) -> None:
    """Fail unless `init`'s tokenizer could have written the rows (every id in its vocabulary,
    the first row's step text in the decoding of its step ids) and every row fits its
    positions."""
    vocab = model.get_input_embeddings().weight.shape[0]
    top = max(max(s) for s in rows.sequences if s)
    step_ids, step_text = rows.sample
    if top >= vocab or step_text not in tok.decode(step_ids, skip_special_tokens=False):
        raise ValueModelError(
            f"value.init: the steps were searched with another tokenizer than {init}'s (ids up "
            f"to {top} against {vocab} token rows; step {step_text!r} decodes as "
            f"{tok.decode(step_ids[:24], skip_special_tokens=False)!r}); give value.init a "
            "model of the runs"
        )
    limit = context_limit(model.config)
    longest = max(len(s) for s in rows.sequences)
    if limit is not None and longest > limit:
        raise ValueModelError(
            f"value.init: {init} takes {limit} positions but a steps row holds {longest} tokens; "
            "give value.init a model with more positions"
        )


def fit(
    model: Any,
    sequences: list[list[int]],
    y: np.ndarray,
    v: ValueConfig,
    curves: Curves | None = None,
) -> list[float]:
    """Train on (sequence, target) pairs with BCE on the last-token logit: `v.epochs` passes in
    a shuffled order seeded by `v.seed`, each step's loss, learning rate and gradient norm to
    `curves`; returns the mean loss of each tenth of the steps."""
    rng = np.random.default_rng(v.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=v.lr, weight_decay=0.0)
    steps = max(1, math.ceil(v.epochs * len(sequences) / v.batch_size))
    order: list[int] = []
    losses: list[float] = []
    target = torch.from_numpy(y)
    curves = curves or Curves(None)
    model.train()
    for step in tqdm(range(steps), desc="value", unit="step"):
        while len(order) < v.batch_size:
            order += rng.permutation(len(sequences)).tolist()
        idx, order = order[: v.batch_size], order[v.batch_size :]
        out = logits(model, [sequences[i] for i in idx])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out, target[idx].to(out.device))
        opt.zero_grad()
        loss.backward()
        norm = grad_norm(params)  # read, not clipped: the value model trains unclipped
        opt.step()
        losses.append(loss.item())
        curves.add(step + 1, {LOSS: losses[-1], LR: v.lr, GRAD_NORM: norm})
    model.eval()
    chunks = np.array_split(np.asarray(losses), min(10, len(losses)))
    return [float(c.mean()) for c in chunks]


def bce(preds: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities `preds` against targets `y` in [0, 1]."""
    p = np.clip(preds.astype(np.float64), 1e-7, 1 - 1e-7)
    t = y.astype(np.float64)
    return float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean())


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1])


def metadata(
    v: ValueConfig, init: Path, rows: Rows, held_out: list[bool], fit_figures: dict[str, Any]
) -> dict[str, Any]:
    """value.json: what this checkpoint is, how to read it, and where its labels came from."""
    val_problems = {p for p, h in zip(rows.problems, held_out, strict=True) if h}
    return {
        "kind": "halluc-value-model",
        "format": 1,
        "auto_class": "AutoModelForTokenClassification",
        "read": "sigmoid(logits[0, -1, 0]) for input_ids = prefix_ids + step_ids",
        "meaning": "estimated probability that a rollout from the end of the step ends correct",
        "head": v.head,
        "init": str(init),
        "targets": v.targets,
        "targets_meaning": TARGETS[v.targets],
        "labels": {
            "source": "the `steps` table of Halluc's OmegaPRM/MCTS search",
            "stages": rows.stages,
            "rows": len(rows.mc),
            "problems": len(set(rows.problems)),
            "rounds": sorted(set(rows.rounds)),
            "models": sorted(set(rows.models)),
            "with_exact_label": sum(e is not None for e in rows.exact),
            "fingerprint": rows.fingerprint,
        },
        "split": {
            "by": "problem id",
            "val_share": v.val_share,
            "val_problems": len(val_problems),
            "val_rows": sum(held_out),
            "train_rows": len(held_out) - sum(held_out),
        },
        "fit": fit_figures,
        "config": {k: getattr(v, k) for k in ("head", "targets", "epochs", "batch_size", "lr")},
    }
