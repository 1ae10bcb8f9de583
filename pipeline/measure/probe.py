"""A linear probe on the residual stream: does the network know it just erred, whatever its
backspace says? (`halluc probe`; docs/measurement.md.)

The model writes its own solutions (temperature 1, backspace banned) to training, validation and
test problems; the exact checker labels the decision points as the detector measure does (the end
of each finished step up to and including the first wrong one: label 1 at the first wrong step,
`pipeline.measure.detector.decision_points`). Each solution is teacher-forced once and the hidden
state of every layer (the embeddings' output as layer 0) is read at each decision point. Per
layer a logistic regression (features standardized on the training points, L2 penalty `l2`,
L-BFGS) is fitted on the training problems' points; the layer with the highest validation
ROC-AUC is chosen; its test figures are reported beside P(backspace) and the trivial scores on the
same test points (pooled, within step index, within problem: `pipeline.measure.strata`).

    hidden_states(model, sequences, positions)   [points, layers + 1, width] at the positions
    fit(x, y, l2)                                 a `Probe` (weights on standardized features)
    train_probe(loaded, task, splits, ...)        the figures and the chosen layer's probe
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.measure.detector import Points, backspace_probs, roc_auc, sample_points
from search.types import Problem, Task
from workers.policy import Loaded


@dataclass(frozen=True)
class Probe:
    """A logistic probe: score = sigmoid(((x - mean) / std) . weight + bias)."""

    layer: int
    weight: np.ndarray
    bias: float
    mean: np.ndarray
    std: np.ndarray

    def scores(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.std) @ self.weight + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, path: Path) -> None:
        """As safetensors (no pickle), the layer in the file's metadata."""
        import torch
        from safetensors.torch import save_file

        tensors = {
            k: torch.tensor(np.asarray(v), dtype=torch.float32)
            for k, v in (("weight", self.weight), ("bias", [self.bias]), ("mean", self.mean),
                         ("std", self.std))
        }  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata={"layer": str(self.layer)})

    @classmethod
    def load(cls, path: Path) -> Probe:
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as f:
            layer = int((f.metadata() or {})["layer"])
            t = {k: f.get_tensor(k).astype(np.float64) for k in f.keys()}  # noqa: SIM118
        return cls(layer, t["weight"], float(t["bias"][0]), t["mean"], t["std"])


def hidden_states(
    model: Any,
    sequences: Sequence[Sequence[int]],
    positions: Sequence[Sequence[int]],
    pad_id: int = 0,
    max_batch: int = 32,
) -> np.ndarray:
    """The hidden state of every layer at `positions[i]` of `sequences[i]`, in order over i then
    positions: [points, layers + 1, width] (float32), teacher-forced with plain causal attention
    in right-padded batches (a sequence without positions is not run)."""
    import torch

    from pipeline.measure.detector import _right_padded

    device = next(model.parameters()).device
    parts: dict[int, np.ndarray] = {}
    wanted = [i for i in range(len(sequences)) if positions[i]]
    for lo in range(0, len(wanted), max_batch):
        chunk = wanted[lo : lo + max_batch]
        ids, mask = _right_padded([sequences[i] for i in chunk], pad_id)
        with torch.inference_mode():
            out = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                output_hidden_states=True,
                use_cache=False,
            )
        stacked = torch.stack(out.hidden_states, dim=1).float()  # [B, layers + 1, T, width]
        for r, i in enumerate(chunk):
            parts[i] = stacked[r, :, list(positions[i])].permute(1, 0, 2).cpu().numpy()
    if not parts:
        return np.zeros((0, 0, 0), dtype=np.float32)
    return np.concatenate([parts[i] for i in wanted])


def fit(x: np.ndarray, y: Sequence[int], l2: float = 1e-3, layer: int = 0) -> Probe:
    """A logistic regression of `y` on `x` [points, width]: features standardized (a constant one
    keeps std 1), mean binary cross-entropy plus `l2` times the squared weights, L-BFGS."""
    import torch

    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    xs = torch.tensor((x - mean) / std, dtype=torch.float64)
    ys = torch.tensor(list(y), dtype=torch.float64)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xs @ w + b, ys)
        loss = loss + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Probe(layer, w.detach().numpy(), float(b.item()), mean, std)


@dataclass
class Split:
    """One split's decision points, their labels and every layer's hidden state there."""

    points: list[Points]
    labels: list[int]
    x: np.ndarray  # [decision points, layers + 1, width]


def _split(loaded: Loaded, task: Task, problems: list[Problem], seed: int, **kw: Any) -> Split:
    points = sample_points(loaded, task, problems, seed, **kw)
    labels = [y for p in points for y in p.labels]
    x = hidden_states(loaded.backend, [p.ids for p in points], [p.at for p in points],
                      loaded.pad_id)  # fmt: skip
    return Split(points, labels, x)


def train_probe(
    loaded: Loaded,
    task: Task,
    splits: dict[str, list[Problem]],
    seed: int,
    samples: int = 4,
    max_new_tokens: int = 64,
    l2: float = 1e-3,
    max_batch: int = 256,
    valuer: Any = None,
) -> tuple[dict[str, Any], Probe | None]:
    """Fit a probe per layer on `splits["train"]`, choose the layer on `splits["validation"]`,
    and report on `splits["test"]` beside P(backspace), the trivial scores and, with `valuer`
    (`workers.valuer.ModelValuer`), the value model (1 − its value of the prefix through the
    step). Returns the figures (plain JSON types) and the chosen probe (None when a split lacks
    a class)."""
    from pipeline.measure.strata import of_points

    kw = {"samples": samples, "max_new_tokens": max_new_tokens, "max_batch": max_batch}
    data = {name: _split(loaded, task, ps, seed, **kw) for name, ps in splits.items()}
    tr, va, te = data["train"], data["validation"], data["test"]
    counts = {k: {"points": len(d.labels), "wrong": int(sum(d.labels))} for k, d in data.items()}
    out: dict[str, Any] = {"counts": counts, "samples_per_problem": samples, "l2": l2}
    if any(len(set(d.labels)) < 2 for d in data.values()):
        return out | {"note": "a split's decision points hold one class only: no probe"}, None
    layers: list[dict[str, Any]] = []
    for layer in range(tr.x.shape[1]):
        probe = fit(tr.x[:, layer], tr.labels, l2, layer)
        layers.append(
            {
                "layer": layer,
                "train_auc": roc_auc(list(probe.scores(tr.x[:, layer])), tr.labels),
                "validation_auc": roc_auc(list(probe.scores(va.x[:, layer])), va.labels),
                "test_auc": roc_auc(list(probe.scores(te.x[:, layer])), te.labels),
            }
        )
    best = max(layers, key=lambda r: (r["validation_auc"] or 0.0, -r["layer"]))["layer"]
    probe = fit(tr.x[:, best], tr.labels, l2, best)
    scores = [float(s) for s in probe.scores(te.x[:, best])]
    out |= {
        "layers": layers,
        "chosen_layer": best,
        "probe": of_points(te.points, scores, te.labels),
    }
    bksp = loaded.tokenizer.bksp_id
    vocab = int(loaded.backend.get_output_embeddings().weight.shape[0])
    if bksp < vocab:
        probs = backspace_probs(loaded.backend, [p.ids for p in te.points],
                                [p.at for p in te.points], bksp, loaded.pad_id)  # fmt: skip
        flat = [x for q in probs for x in q]
        out["p_backspace"] = of_points(te.points, flat, te.labels)
    if valuer is not None:  # a step after which the value model expects failure is suspect
        values = valuer.values([p.ids[: at + 1] for p in te.points for at in p.at])
        out["value_model"] = of_points(te.points, [1 - v for v in values], te.labels)
    out["probe_minus_p_backspace"] = _gap(out)
    return out, probe


def _gap(out: dict[str, Any]) -> float | None:
    """The probe's test ROC-AUC within problem minus P(backspace)'s (None where one is missing)."""
    a = out["probe"]["detector"]["within_problem"]
    b = ((out.get("p_backspace") or {}).get("detector") or {}).get("within_problem")
    return None if a is None or b is None or math.isnan(a - b) else a - b
