"""The select stage: the next training set of each arm, from a round's `traces` (docs/design.md §6).

    backtrack arm: per problem, the most confident corrections (parent mc high, then the error's
                   mc estimated from more rollouts), at most `select.corrections_per_problem`,
                   only those with parent mc >= `select.min_parent_mc`; every self-correction
                   (at most `select.self_corrections_per_problem`); and clean solutions (at most
                   `select.clean_per_problem`) making up `select.clean_share` of the rows
    baseline arm:  clean solutions only (ReST-EM / STaR), drawn until they hold as many
                   loss-bearing tokens as the backtrack arm's set (the prompt and erased tokens
                   carry no loss, so input tokens would favour the baseline by about 13%)
    dpo arm:       rows of the `pairs` table (at most `select.corrections_per_problem` per
                   problem), drawn the same way until their loss-bearing tokens (backspaces and
                   fix on the chosen side, the model's own continuation on the rejected side;
                   search/pairs.py) match the backtrack arm's set; written to
                   `select/pairs.parquet` with the pairs schema

Cleaner selection (SelectConfig; all off by default): `select.agree` keeps only the corrections
whose Monte Carlo first error is the exact checker's, `select.precise_only` only the
self-corrections whose every backspace run erased a wrong step, and `select.bksp_share` takes the
clean rows (instead of `select.clean_share`) so that the backspace runs per finished step match a
target, the searched model's own per-step error rate with -1.

The chosen rows are written, shuffled, to the round's `select/selected.parquet` with the traces
schema (the order training reads them in is training's: `train.curriculum`).

    halluc select --preset arith-tiny                          # round run.round's search
    halluc select --preset arith-tiny --set select.arm=baseline
    halluc select --preset arith-tiny --set select.arm=dpo

On its own, the baseline selection matches the tokens of the backtrack selection of the same
search; in `halluc run` it matches the backtrack arm's selection of the round.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import AUTO_SHARE, SHAPES, Config, SelectConfig
from pipeline.files import read_json, remove_stale, write_with
from pipeline.layout import RoundLayout, RunLayout, search_summary
from pipeline.loading import task_from_config
from pipeline.runtime import stage_config
from pipeline.shards import FEATURES, check_shard, read_shard, read_table
from search.errors import HallucError
from search.pairs import pair_loss_tokens

Row = dict[str, Any]
log = logging.getLogger(__name__)


class SelectError(HallucError):
    """A round whose search gave nothing to train on."""


def main(cfg: Config) -> dict[str, Any]:
    """`halluc select`: the `select.arm` selection of round `run.round` outside the arms."""
    rnd = RunLayout.of(cfg).round(cfg.run.round)
    path, tokens = select(cfg, cfg.select.arm, rnd)
    return {
        "arm": cfg.select.arm,
        "path": str(path),
        "rows": pq.read_metadata(path).num_rows,
        "tokens": tokens,
    }


def describe(result: dict[str, Any]) -> str:
    return f"{result['arm']}: {result['rows']} rows, {result['tokens']} tokens -> {result['path']}"


def select(cfg: Config, arm: str, rnd: RoundLayout, match: int | None = None) -> tuple[Path, int]:
    """Write (once) and return the `arm` selection of the round's search and its token count.
    The baseline and dpo arms draw `match` tokens (default: as many as the backtrack selection
    holds)."""
    # first: never reuse a selection made with another config
    stage_config(cfg, rnd.select, only=SHAPES["select"])
    remove_stale(rnd.select)
    if arm == "dpo":
        return _select_pairs(cfg, rnd, match)
    if rnd.selected.exists():
        return rnd.selected, n_tokens(read_selected(rnd.selected))
    rows = read_traces(rnd.search)
    seed = cfg.run.seed + 1000 * cfg.run.round
    checker = task_from_config(cfg.task).has_step_checker
    rate = step_error_rate(rnd.search) if cfg.select.bksp_share == AUTO_SHARE else None
    if arm == "backtrack":
        chosen = select_backtrack(rows, cfg.select, seed, checker, rate)
    else:
        if match is None:
            match = n_tokens(select_backtrack(rows, cfg.select, seed, checker, rate))
        chosen = select_baseline(rows, cfg.select, match, seed)
    _check_chosen(chosen, arm, cfg, rnd)
    write_selected(chosen, rnd.selected)
    return rnd.selected, n_tokens(chosen)


def _select_pairs(cfg: Config, rnd: RoundLayout, match: int | None) -> tuple[Path, int]:
    """The dpo arm's pairs, drawn to `match` loss-bearing tokens (`select_pairs`)."""
    path = rnd.selected_pairs
    if path.exists():
        check_shard(path, "pairs")
        return path, sum(map(pair_loss_tokens, pq.read_table(path).to_pylist()))
    seed = cfg.run.seed + 1000 * cfg.run.round
    if match is None:
        match = n_tokens(select_backtrack(read_traces(rnd.search), cfg.select, seed))
    rows = read_table(rnd.search, "pairs").to_pylist()
    chosen = select_pairs(rows, cfg.select, match, seed)
    _check_chosen(chosen, "dpo", cfg, rnd)
    write_selected(chosen, path, "pairs")
    return path, sum(map(pair_loss_tokens, chosen))


def _check_chosen(chosen: list[Row], arm: str, cfg: Config, rnd: RoundLayout) -> None:
    if not chosen:
        raise SelectError(
            f"the {arm} arm selected nothing in round {cfg.run.round}: the search found no "
            f"usable {'pair' if arm == 'dpo' else 'trace'} (a model that is always right or "
            "always wrong? see "
            f"{rnd.summary}); train the model more or less, or raise "
            "search.omegaprm.budget"
        )


def read_traces(search_dir: Path) -> list[Row]:
    return read_table(search_dir, "traces").to_pylist()


def step_error_rate(search_dir: Path) -> float | None:
    """The searched model's per-step error rate the search recorded (None: none recorded)."""
    summary = search_summary(search_dir)
    return read_json(summary).get("step_error_rate") if summary.exists() else None


def select_backtrack(
    rows: list[Row],
    s: SelectConfig,
    seed: int,
    has_checker: bool = True,
    error_rate: float | None = None,
) -> list[Row]:
    """The backtrack arm's rows (module docstring), seeded. `has_checker`: the task has an exact
    step checker (`select.agree` and `select.precise_only` act only then); `error_rate`: the
    searched model's per-step error rate (the target of `select.bksp_share=-1`)."""
    by_problem: dict[str, dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_problem[r["problem_id"]][r["kind"]].append(r)
    fixes: list[Row] = []
    clean: list[Row] = []
    for pid in sorted(by_problem):
        kinds = by_problem[pid]
        corr = [r for r in kinds["correction"] if (r["parent_mc"] or 0) >= s.min_parent_mc]
        if s.agree and has_checker:
            corr = [r for r in corr if agrees(r)]
        corr.sort(key=lambda r: (-(r["parent_mc"] or 0), r["error_mc"] or 0, -(r["error_n"] or 0)))
        fixes += corr[: s.corrections_per_problem]
        own = kinds["self_correction"]
        if s.precise_only and has_checker:
            own = [r for r in own if all_precise(r)]
        fixes += own[: s.self_corrections_per_problem]
        clean += distinct(kinds["clean"])[: s.clean_per_problem]
    rng = random.Random(seed)
    rng.shuffle(clean)
    if s.bksp_share:
        fixes, clean = match_share(fixes, clean, target_share(s, error_rate), rng)
    else:
        clean = clean[: round(len(fixes) * s.clean_share / max(1e-9, 1 - s.clean_share))]
    chosen = fixes + clean
    rng.shuffle(chosen)
    return chosen


def agrees(row: Row) -> bool:
    """Whether the exact checker's first error of a correction is the step the search located
    (it finds none there: the Monte Carlo label was wrong; an earlier one: the good steps were
    not good)."""
    return row["exact_error_step"] is not None and row["exact_error_step"] == row["mc_error_step"]


def all_precise(row: Row) -> bool:
    """Whether every backspace run of a trace erased a step the exact checker calls wrong."""
    if row.get("erase_events") is None or row.get("precise_erases") is None:
        raise _predates("select.precise_only")
    return bool(row["erase_events"]) and row["precise_erases"] == row["erase_events"]


def target_share(s: SelectConfig, error_rate: float | None) -> float:
    """`select.bksp_share`, or with -1 the searched model's own per-step error rate."""
    if s.bksp_share != AUTO_SHARE:
        return s.bksp_share
    if error_rate is None:
        raise SelectError(
            "select.bksp_share=-1 matches the searched model's per-step error rate, but the "
            "search recorded none (step_error_rate in its summary.json: a task without an exact "
            "step checker has none, and a search made before it was recorded lacks it); give "
            "select.bksp_share a share in (0, 1), or rerun the search"
        )
    return error_rate


def match_share(
    fixes: list[Row], clean: list[Row], target: float, rng: random.Random
) -> tuple[list[Row], list[Row]]:
    """`fixes` and the clean rows that bring the backspace runs per finished step written closest
    to `target`: clean rows taken in `clean`'s order while each brings the share closer; when they
    run out with the share still above it, rows of `fixes` dropped (in an order drawn from `rng`)
    where each brings it closer. Nothing can raise a share below the target (no clean row is
    chosen then). Logs the share reached."""
    if any(r.get("steps_written") is None for r in fixes + clean):
        raise _predates("select.bksp_share")
    if not fixes:  # no share to match: no clean rows either, as with select.clean_share
        return [], []
    runs = sum(r["erase_events"] for r in fixes)
    steps = sum(r["steps_written"] for r in fixes)
    taken = 0
    while taken < len(clean):
        more = steps + clean[taken]["steps_written"]
        if not _nearer((runs, more), (runs, steps), target):
            break
        steps, taken = more, taken + 1
    dropped: set[int] = set()
    if taken == len(clean) and steps and runs / steps > target:
        order = list(range(len(fixes)))
        rng.shuffle(order)
        for i in order:
            less = (runs - fixes[i]["erase_events"], steps - fixes[i]["steps_written"])
            if _nearer(less, (runs, steps), target):
                runs, steps = less
                dropped.add(i)
    log.info(
        "select: %d backspace runs over %d finished steps written, %.4f per step (target %.4f); "
        "%d of %d correction and self-correction rows, %d clean rows",
        runs,
        steps,
        runs / steps if steps else 0.0,
        target,
        len(fixes) - len(dropped),
        len(fixes),
        taken,
    )
    return [r for i, r in enumerate(fixes) if i not in dropped], clean[:taken]


def _nearer(new: tuple[int, int], old: tuple[int, int], target: float) -> bool:
    """Whether the share runs / steps of `new` is nearer `target` than that of `old` (without
    steps there is no share: `new` is then never nearer, and anything is nearer than `old`)."""
    if new[1] <= 0:
        return False
    if old[1] <= 0:
        return True
    return abs(new[0] / new[1] - target) < abs(old[0] / old[1] - target)


def _predates(option: str) -> SelectError:
    return SelectError(
        f"{option} reads the traces' steps_written, erase_events and precise_erases columns, "
        "which these traces predate (written by an earlier search) or lack (precise_erases "
        "needs an exact step checker); rerun the search, or turn the option off"
    )


def select_baseline(rows: list[Row], s: SelectConfig, n_tokens: int, seed: int) -> list[Row]:
    """Clean solutions, drawn (repeating if needed) until they hold `n_tokens` loss-bearing
    tokens."""
    pool = _per_problem(distinct([r for r in rows if r["kind"] == "clean"]), s.clean_per_problem)
    return _draw(pool, n_tokens, seed, _loss_tokens)


def select_pairs(rows: list[Row], s: SelectConfig, n_tokens: int, seed: int) -> list[Row]:
    """Rows of the `pairs` table, at most `s.corrections_per_problem` per problem, drawn
    (repeating if needed) until their wrong-step pairs hold `n_tokens` loss-bearing tokens."""
    pool = _per_problem(rows, s.corrections_per_problem)
    return _draw(pool, n_tokens, seed, pair_loss_tokens)


def distinct(rows: list[Row]) -> list[Row]:
    """`rows` without those whose tokens repeat an earlier row's (the first kept, in order)."""
    seen: set[tuple[int, ...]] = set()
    out = []
    for r in rows:
        key = tuple(r["input_ids"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _per_problem(rows: list[Row], cap: int) -> list[Row]:
    by_problem: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_problem[r["problem_id"]].append(r)
    return [r for pid in sorted(by_problem) for r in by_problem[pid][:cap]]


def _draw(pool: list[Row], n_tokens: int, seed: int, count: Callable[[Row], int]) -> list[Row]:
    """Rows of `pool` in seeded random order, the pool again after each pass, until they hold
    `n_tokens` tokens by `count`."""
    if not pool:
        return []
    rng = random.Random(seed)
    chosen: list[Row] = []
    total = 0
    while total < n_tokens:
        order = list(pool)
        rng.shuffle(order)
        for r in order:
            if total >= n_tokens:
                break
            chosen.append(r)
            total += count(r)
    return chosen


def _loss_tokens(row: Row) -> int:
    return sum(row["loss_mask"]) if row.get("loss_mask") is not None else len(row["input_ids"])


def n_tokens(rows: list[Row]) -> int:
    """Loss-bearing tokens of `rows` (what training learns from)."""
    return sum(_loss_tokens(r) for r in rows)


def write_selected(rows: list[Row], path: Path, table: str = "traces") -> None:
    arrow = pa.Table.from_pylist(rows, schema=FEATURES[table].arrow_schema)
    write_with(path, lambda tmp: pq.write_table(arrow, tmp))


def read_selected(path: Path) -> list[Row]:
    check_shard(path, "traces")
    return read_shard(path, "traces").to_pylist()
