"""The detector measure (docs/design.md §13): does the model know when it is wrong, whatever it
samples?

The model writes its own solutions (temperature 1, backspace banned); the task's exact step
checker labels every finished step; each solution is then teacher-forced through the model and
the probability it gives the backspace token is read where a backspace would decide something.

Definitions (a *finished* step is one whose delimiter was written, or the last step of a stream
that ended with end-of-sequence, as in `search.metrics`; a step cut by the token budget is
neither right nor wrong):

- *Decision points* (`backspace_at="step_end"`, the headline): the position right after each
  finished step, i.e. the prediction made on reading the step's last token (its delimiter, or for
  the final step the token where end-of-sequence was predicted), for the steps up to and
  including the first wrong one. After the first error every later step is off the path too, so
  they say nothing new and are left out. Label 1 at the end of the first wrong step, 0 at the
  ends of the right steps before it.
- `backspace_at="any"` adds a second figure (`tokens`): the position after every token of those
  same steps, labelled 1 inside the first wrong step and 0 inside the right ones. Without a
  token-level checker the first tokens of a wrong step may still be right, so this figure is a
  lower bound on what a token-level detector could show; the step-end figure is the headline.
- *Score*: p(backspace) = softmax over the model's full output vocabulary at temperature 1, no
  bans, at the decision point. Samples hold no backspace, so plain causal attention is exact in
  either attention mode.
- `roc_auc`: the Mann-Whitney probability that a positive outscores a negative, ties counting
  half. `pr_auc`: average precision, sum over distinct thresholds of (R_k - R_{k-1}) * P_k.
  Both None when only one class is present. `reliability`: equal-width bins of p over [0, 1]
  (the last bin closed), empty bins left out. `base_rate`: positives / n_positions.

A model whose output embedding has no backspace row (a model never given the token) gets the
counts and the base rate with every score figure None and a `note`; so does a task without an
exact step checker, or a policy kind without a torch model (the figures need full logits).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from search.backspace import is_step_end
from search.tree import Judge, derive_seed, split_steps
from search.types import Ask, Problem, Task
from workers.policy import Decoding, Loaded, make_policy

log = logging.getLogger(__name__)

BackspaceAt = Literal["step_end", "any"]
Array = Any  # a numpy array; kept loose for the type checker


def _arrays(scores: Sequence[float], labels: Sequence[int]) -> tuple[Array, Array]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must be two 1-d lists alike")
    return s, y


def _both_classes(y: Array) -> bool:
    return 0 < int(y.sum()) < len(y)


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """P(a positive outscores a negative), ties counting half; None with one class only."""
    s, y = _arrays(scores, labels)
    if not _both_classes(y):
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # rank (from 1) of each distinct value = first + (c+1)/2
    ranks = (first + (counts + 1) / 2.0)[inverse]
    pos = int(y.sum())
    neg = len(y) - pos
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def _cumulative(s: Array, y: Array) -> tuple[Array, Array, Array]:
    """Distinct thresholds (descending) with the true and false positives at score >= each."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each tie group
    tp = np.cumsum(y)[last]
    return s[last], tp, last + 1 - tp


def roc_curve(scores: Sequence[float], labels: Sequence[int]) -> list[list[float]]:
    """[[fpr, tpr], ...] from [0, 0] to [1, 1], one point per distinct threshold; [] with one
    class only."""
    s, y = _arrays(scores, labels)
    if not _both_classes(y):
        return []
    _, tp, fp = _cumulative(s, y)
    fpr = np.r_[0.0, fp / (len(y) - y.sum())]
    tpr = np.r_[0.0, tp / y.sum()]
    return [[float(a), float(b)] for a, b in zip(fpr, tpr, strict=True)]


def pr_curve(scores: Sequence[float], labels: Sequence[int]) -> list[list[float]]:
    """[[recall, precision], ...], one point per distinct threshold, highest first; [] with one
    class only."""
    s, y = _arrays(scores, labels)
    if not _both_classes(y):
        return []
    _, tp, fp = _cumulative(s, y)
    recall, precision = tp / y.sum(), tp / (tp + fp)
    return [[float(a), float(b)] for a, b in zip(recall, precision, strict=True)]


def average_precision(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Sum over distinct thresholds of (R_k - R_{k-1}) * P_k; None with one class only."""
    curve = pr_curve(scores, labels)
    if not curve:
        return None
    recall = np.array([0.0] + [r for r, _ in curve])
    precision = np.array([p for _, p in curve])
    return float(np.sum(np.diff(recall) * precision))


def reliability(
    scores: Sequence[float], labels: Sequence[int], bins: int = 10
) -> list[dict[str, float]]:
    """Per equal-width bin of the score over [0, 1] (the last closed): lo, hi, mean_p, observed
    (share of positives), n. Empty bins are left out."""
    s, y = _arrays(scores, labels)
    index = np.clip(np.floor(s * bins).astype(np.int64), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        if n:
            rows.append(
                {
                    "lo": b / bins,
                    "hi": (b + 1) / bins,
                    "mean_p": float(s[inside].mean()),
                    "observed": float(y[inside].mean()),
                    "n": n,
                }
            )
    return rows


def thin(points: list[list[float]], max_points: int) -> list[list[float]]:
    """At most `max_points` points, evenly spaced along the curve, both ends kept."""
    if len(points) <= max_points:
        return points
    keep = np.unique(np.round(np.linspace(0, len(points) - 1, max_points)).astype(int))
    return [points[i] for i in keep]


def figures(
    scores: Sequence[float] | None, labels: Sequence[int], max_points: int = 101
) -> dict[str, Any]:
    """Every figure of one set of decision points; `scores` None: counts only."""
    n, positives = len(labels), int(sum(labels))
    out: dict[str, Any] = {
        "n_positions": n,
        "positives": positives,
        "base_rate": positives / n if n else None,
        "roc_auc": None,
        "pr_auc": None,
        "mean_p_wrong": None,
        "mean_p_right": None,
        "roc": [],
        "pr": [],
        "reliability": [],
    }
    if scores is None or not n:
        return out
    s, y = _arrays(scores, labels)
    out |= {
        "roc_auc": roc_auc(s, y),
        "pr_auc": average_precision(s, y),
        "mean_p_wrong": float(s[y == 1].mean()) if positives else None,
        "mean_p_right": float(s[y == 0].mean()) if positives < n else None,
        "roc": thin(roc_curve(s, y), max_points),
        "pr": thin(pr_curve(s, y), max_points),
        "reliability": reliability(s, y),
    }
    return out


@dataclass(frozen=True)
class Points:
    """Decision points of one sample: `ids` = prompt + generated tokens; `at` absolute indices
    into `ids` whose next-token prediction is read; `labels` 1 for the first wrong step."""

    ids: tuple[int, ...]
    at: tuple[int, ...] = ()
    labels: tuple[int, ...] = ()
    token_at: tuple[int, ...] = field(default=(), compare=False)
    token_labels: tuple[int, ...] = field(default=(), compare=False)
    lengths: tuple[int, ...] = field(default=(), compare=False)  # tokens of each point's step
    problem: str = field(default="", compare=False)
    # each point's step: the mean and the least log-probability of its sampled tokens
    logprobs: tuple[tuple[float, float], ...] = field(default=(), compare=False)


def decision_points(
    judge: Judge,
    generated: Sequence[int],
    finished: bool,
    backspace_at: BackspaceAt = "step_end",
    logprobs: Sequence[float] | None = None,
) -> Points:
    """The decision points of one sampled stream (no backspaces in it) and their labels; see the
    module docstring. `finished`: the stream ended with end-of-sequence; `logprobs`: each
    generated token's sampled log-probability (then each step's mean and least are kept)."""
    delim = judge.tokenizer.step_ends
    steps = split_steps(generated, delim)
    if steps and not is_step_end(steps[-1][-1], delim) and not finished:
        steps = steps[:-1]  # cut by the token budget: no verdict
    first = judge.first_error(steps)
    kept = steps if first is None else steps[: first + 1]
    start = len(judge.prompt)
    at: list[int] = []
    token_at: list[int] = []
    token_labels: list[int] = []
    for i, step in enumerate(kept):
        wrong = int(i == first)
        token_at += range(start, start + len(step))
        token_labels += [wrong] * len(step)
        start += len(step)
        at.append(start - 1)
    any_token = backspace_at == "any"
    return Points(
        ids=(*judge.prompt, *generated),
        at=tuple(at),
        labels=tuple(int(i == first) for i in range(len(kept))),
        token_at=tuple(token_at) if any_token else (),
        token_labels=tuple(token_labels) if any_token else (),
        lengths=tuple(len(s) for s in kept),
        problem=judge.problem.id,
        logprobs=step_logprobs(kept, logprobs) if logprobs else (),
    )


def step_logprobs(
    steps: Sequence[Sequence[int]], logprobs: Sequence[float]
) -> tuple[tuple[float, float], ...]:
    out, start = [], 0
    for step in steps:
        lp = logprobs[start : start + len(step)]
        out.append((sum(lp) / len(lp), min(lp)))
        start += len(step)
    return tuple(out)


def sample_points(
    loaded: Loaded,
    task: Task,
    problems: Sequence[Problem],
    seed: int,
    samples: int,
    max_new_tokens: int,
    backspace_at: BackspaceAt = "step_end",
    max_batch: int = 256,
) -> list[Points]:
    """`samples` solutions per problem at temperature 1 with the backspace banned (seeds from
    `derive_seed(seed, "detector", problem.id)`), each with its decision points."""
    tok = loaded.tokenizer
    decoding = Decoding(
        temperature=1.0,
        max_new_tokens=max_new_tokens,
        max_batch=max_batch,
        ban_backspace=True,
        logprobs=True,
    )
    prompts = [tuple(tok.encode_prompt(p.prompt)) for p in problems]
    asks = [
        Ask(pr, samples, "end", derive_seed(seed, "detector", p.id))
        for p, pr in zip(problems, prompts, strict=True)
    ]
    out = []
    rollouts = make_policy(loaded, decoding).sample(asks)
    for p, pr, got in zip(problems, prompts, rollouts, strict=True):
        judge = Judge(task, p, tok, pr, loaded.unit)
        out += [decision_points(judge, r.tokens, r.finished, backspace_at, r.logprobs) for r in got]
    return out


def backspace_probs(
    model: Any,
    sequences: Sequence[Sequence[int]],
    positions: Sequence[Sequence[int]],
    bksp_id: int,
    pad_id: int = 0,
    max_batch: int = 32,
) -> list[list[float]]:
    """p(bksp_id) at `positions[i]` of `sequences[i]` (softmax over the full output vocabulary),
    teacher-forced with plain causal attention: right-padded batches of at most `max_batch`
    rows, shortest first; a sequence without positions is not run. Memory: the logits of one
    batch, rows x longest x vocabulary floats."""
    import torch

    device = next(model.parameters()).device
    out: list[list[float]] = [[] for _ in sequences]
    wanted = [i for i in range(len(sequences)) if positions[i]]
    order = sorted(wanted, key=lambda i: len(sequences[i]))
    for lo in range(0, len(order), max_batch):
        chunk = order[lo : lo + max_batch]
        ids, mask = _right_padded([sequences[i] for i in chunk], pad_id)
        width = ids.shape[1]
        rows = torch.tensor([r for r, i in enumerate(chunk) for _ in positions[i]])
        cols = torch.tensor([c for i in chunk for c in positions[i]])
        with torch.inference_mode():
            logits = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=torch.arange(width, device=device).expand(len(chunk), width),
                use_cache=False,
            ).logits
            picked = logits[rows.to(device), cols.to(device)].float().log_softmax(-1)
            probs = picked[:, bksp_id].exp().tolist()
        for i in chunk:
            out[i], probs = probs[: len(positions[i])], probs[len(positions[i]) :]
    return out


def _right_padded(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """Token ids [B, longest], right-padded with `pad_id`, and the attention mask."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for r, seq in enumerate(sequences):
        ids[r, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[r, : len(seq)] = 1
    return ids, mask


def _skip_reason(loaded: Loaded, task: Task) -> str | None:
    if not task.has_step_checker:
        return f"task {task.name} has no exact step checker: no labels"
    if loaded.kind != "transformers":
        return f"needs a transformers model (full logits), not a {loaded.kind} policy"
    return None


def detector_figures(
    loaded: Loaded,
    task: Task,
    problems: Sequence[Problem],
    seed: int,
    samples: int = 4,
    max_new_tokens: int = 64,
    backspace_at: BackspaceAt = "step_end",
    max_batch: int = 256,
    forward_batch: int = 32,
) -> dict[str, Any]:
    """The detector figures of `loaded` (see the module docstring) over `samples` own solutions
    per problem: counts, base rate, ROC-AUC, PR-AUC, curves and reliability at the step-end
    decision points, and with `backspace_at="any"` the same at every token under `tokens`.
    Plain JSON types; `note` says why score figures are None, when they are."""
    head: dict[str, Any] = {"decision_points": backspace_at, "samples_per_problem": samples}
    reason = _skip_reason(loaded, task)
    if reason is not None:
        return head | figures(None, []) | {"note": reason}
    t0 = time.perf_counter()
    points = sample_points(
        loaded, task, problems, seed, samples, max_new_tokens, backspace_at, max_batch
    )
    labels = [y for p in points for y in p.labels]
    token_labels = [y for p in points for y in p.token_labels]
    model, bksp = loaded.backend, loaded.tokenizer.bksp_id
    vocab = int(model.get_output_embeddings().weight.shape[0])
    note, scores, token_scores = None, None, None
    if bksp >= vocab:
        note = f"the model has no output row for the backspace (id {bksp} >= vocabulary {vocab})"
    else:
        both = [(*p.at, *p.token_at) for p in points]
        probs = backspace_probs(
            model, [p.ids for p in points], both, bksp, loaded.pad_id, forward_batch
        )
        scores = [x for p, q in zip(points, probs, strict=True) for x in q[: len(p.at)]]
        token_scores = [x for p, q in zip(points, probs, strict=True) for x in q[len(p.at) :]]
    out = head | {"samples": len(points)} | figures(scores, labels) | {"note": note}
    if scores is not None:  # what difficulty and position alone give (pipeline.measure.strata)
        from pipeline.measure.strata import of_points

        out["stratified"] = of_points(points, scores, labels)
    if backspace_at == "any":
        out["tokens"] = figures(token_scores, token_labels)
    log.info(
        "detector: %d samples, %d decision points (%d wrong), ROC-AUC %s, %.1fs",
        len(points),
        len(labels),
        sum(labels),
        out["roc_auc"],
        time.perf_counter() - t0,
    )
    return out
