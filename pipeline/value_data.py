"""The rows a value model learns from: the `steps` table of finished searches (stages/value.py).

`load_rows(runs)` gathers every `steps` row of every finished search stage under the given run
directories (or search stage directories), identical rows once, rows never rolled out left out,
and fingerprints them; `split` holds out a share of the problems by problem id; `targets` turns
rows into training targets for `value.targets`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.layout import search_dirs, search_summary
from pipeline.shards import read_table
from search.errors import HallucError
from search.tree import derive_seed

log = logging.getLogger(__name__)

TARGETS = {
    "mc": "the soft Monte Carlo value: the share of rollouts from the step that ended correct",
    "hard": "OmegaPRM's hard label: 1 when any rollout from the step ended correct",
    "exact": "the task's exact step label where the row has one, else the MC value",
}


class ValueModelError(HallucError, ValueError):
    """No usable `steps` rows, or a checkpoint that cannot score them."""


@dataclass(frozen=True)
class Rows:
    """The `steps` rows a value model learns from, one entry per row."""

    sequences: list[list[int]]  # prefix_ids + step_ids
    mc: list[float]
    exact: list[bool | None]
    problems: list[str]
    models: list[str]
    rounds: list[int]
    stages: list[str]
    fingerprint: str
    sample: tuple[list[int], str]  # the first row's step_ids and step_text


def search_stages(runs: list[Path]) -> list[Path]:
    """The finished search stages under each of `runs` (a run directory, or a search stage)."""
    stages: list[Path] = []
    for run in runs:
        if (run / "steps").is_dir():
            found = [run]
        elif run.is_dir():
            found = search_dirs(run)
        else:
            raise ValueModelError(f"value.runs: {run} does not exist; give run directories")
        running = [p for p in found if not search_summary(p).exists()]
        for p in running:
            log.warning("value: skipping %s: its search has not finished (no summary.json)", p)
        stages += [p for p in found if p not in running]
    return stages


def load_rows(runs: list[Path]) -> Rows:
    """Every usable `steps` row under `runs`, identical rows once, in stage and row order."""
    stages = search_stages(runs)
    seen: set[bytes] = set()
    kept: list[dict[str, Any]] = []
    unvalued = 0
    for stage in stages:
        for row in read_table(stage, "steps").to_pylist():
            key = hashlib.sha256(json.dumps(row, sort_keys=True).encode()).digest()
            if key in seen:
                continue
            seen.add(key)
            if row["n_rollouts"] == 0 and not row["terminal"]:
                unvalued += 1  # probed but never rolled out: its mc 0 is no estimate
                continue
            kept.append(row)
    if not kept:
        where = ", ".join(str(r) for r in runs)
        raise ValueModelError(
            f"no `steps` rows with a value under {where} ({len(stages)} finished search stages, "
            f"{unvalued} rows never rolled out); run `halluc search` (or `halluc run`) first, or "
            "point value.runs at run directories that hold finished searches"
        )
    log.info(
        "value: %d steps rows from %d stages (%d never rolled out, left out)",
        *(len(kept), len(stages), unvalued),
    )
    digest = hashlib.sha256(b"".join(sorted(seen)))
    return Rows(
        sequences=[r["prefix_ids"] + r["step_ids"] for r in kept],
        mc=[float(r["mc"]) for r in kept],
        exact=[r["exact_label"] for r in kept],
        problems=[r["problem_id"] for r in kept],
        models=[r["model_id"] for r in kept],
        rounds=[int(r["round"]) for r in kept],
        stages=[str(s) for s in stages],
        fingerprint=digest.hexdigest()[:16],
        sample=(kept[0]["step_ids"], kept[0]["step_text"]),
    )


def split(problems: list[str], share: float) -> list[bool]:
    """Whether each row is held out: its problem's hash (not the seed) falls under `share`, so
    a problem is on one side only and the split is the same for every value model."""
    unique = sorted(set(problems))
    out = {p: derive_seed("value-split", p) / 2**63 < share for p in unique}
    n_val = sum(out.values())
    if n_val == 0 or n_val == len(unique):
        raise ValueModelError(
            f"value.val_share={share} puts {n_val} of the {len(unique)} problems in validation; "
            "both sides need one: change value.val_share, or search more problems"
        )
    return [out[p] for p in problems]


def targets(rows: Rows, kind: str) -> np.ndarray:
    """The training target of every row (float32 in [0, 1]) for `value.targets` = `kind`."""
    mc = np.asarray(rows.mc, dtype=np.float32)
    if kind == "mc":
        return mc
    if kind == "hard":
        return (mc > 0).astype(np.float32)
    if all(e is None for e in rows.exact):
        raise ValueModelError(
            "value.targets=exact: no row has an exact step label (the task has no step "
            "checker); use value.targets=mc or hard"
        )
    return np.array(
        [m if e is None else float(e) for m, e in zip(mc, rows.exact, strict=True)],
        dtype=np.float32,
    )
