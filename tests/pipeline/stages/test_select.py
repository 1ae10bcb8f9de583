"""Selection: confident corrections first, caps per problem, clean share, equal tokens, and the
cleaner selection (agreeing first errors, precise self-corrections, the share of backspaces)."""

import dataclasses

import pytest

from pipeline.config import SelectConfig
from pipeline.stages.select import (
    SelectError,
    n_tokens,
    select_backtrack,
    select_baseline,
    select_pairs,
)
from search.pairs import pair_loss_tokens


def row(pid, kind, parent_mc=None, error_n=None, length=10, nb=0):
    return {
        "problem_id": pid,
        "kind": kind,
        "parent_mc": parent_mc,
        "error_mc": 0.0,
        "error_n": error_n,
        "input_ids": [1] * length,
        "loss_mask": [0] * 3 + [1] * (length - 3),  # a 3-token prompt carries no loss
        "n_backspaces": nb,
    }


ROWS = [
    row("a", "correction", 0.2, 8, nb=1),
    row("a", "correction", 0.9, 8, nb=1),
    row("a", "correction", 0.9, 1, nb=1),
    row("a", "correction", 0.5, 8, nb=1),
    row("a", "clean", length=20),
    row("a", "clean", length=21),
    row("b", "correction", 0.6, 8, nb=1),
    row("b", "self_correction", nb=2),
    row("b", "clean", length=30),
    row("c", "clean", length=40),
]


def test_confident_corrections_first_and_capped():
    s = SelectConfig(corrections_per_problem=2, clean_share=0.0)
    chosen = select_backtrack(ROWS, s, seed=0)
    a = sorted(
        (r["parent_mc"], r["error_n"])
        for r in chosen
        if r["problem_id"] == "a" and r["kind"] == "correction"
    )
    assert a == [(0.9, 1), (0.9, 8)]  # the two with the highest parent mc
    assert sum(r["kind"] == "self_correction" for r in chosen) == 1
    assert not any(r["kind"] == "clean" for r in chosen)


def test_min_parent_mc_and_clean_share():
    s = SelectConfig(
        corrections_per_problem=9, min_parent_mc=0.55, clean_share=0.5, clean_per_problem=1
    )
    chosen = select_backtrack(ROWS, s, seed=0)
    fixes = [r for r in chosen if r["kind"] != "clean"]
    assert all(r["kind"] == "self_correction" or r["parent_mc"] >= 0.55 for r in fixes)
    clean = [r for r in chosen if r["kind"] == "clean"]
    assert len(clean) == min(len(fixes), 3)  # half the rows, at most one per problem
    assert len({r["problem_id"] for r in clean}) == len(clean)


def test_clean_solutions_per_problem_are_distinct():
    """Two copies of one solution and a second solution: a cap of 2 takes the two distinct ones,
    in both arms' selections."""
    rows = [row("a", "clean", length=n) for n in (20, 20, 25)]
    rows += [row("a", "correction", 0.9, 8, nb=1)]
    s = SelectConfig(clean_per_problem=2, clean_share=0.9)
    got = [r for r in select_backtrack(rows, s, seed=0) if r["kind"] == "clean"]
    assert sorted(len(r["input_ids"]) for r in got) == [20, 25]
    base = select_baseline(rows, s, n_tokens=1000, seed=0)
    assert {len(r["input_ids"]) for r in base} == {20, 25}
    assert (
        sum(len(r["input_ids"]) == 20 for r in base)
        <= sum(len(r["input_ids"]) == 25 for r in base) + 1
    )


def test_baseline_matches_the_token_count_with_clean_only():
    chosen = select_baseline(ROWS, SelectConfig(), n_tokens=200, seed=0)
    assert all(r["kind"] == "clean" for r in chosen)
    assert 200 <= n_tokens(chosen) < 200 + 40  # loss-bearing tokens, not input tokens
    assert n_tokens(chosen) == sum(len(r["input_ids"]) - 3 for r in chosen)
    assert select_baseline(ROWS, SelectConfig(), 200, 0) == chosen  # seeded


def located(pid, mc_step, exact_step, parent_mc=0.9):
    """A correction whose first error the search put at `mc_step` and the checker at
    `exact_step` (None: the checker finds no error on the good steps and the wrong step)."""
    return row(pid, "correction", parent_mc, 8, nb=1) | {
        "mc_error_step": mc_step,
        "exact_error_step": exact_step,
    }


def test_agree_keeps_only_corrections_whose_first_errors_agree():
    rows = [
        located("a", 2, 2, parent_mc=0.5),
        located("a", 2, None, parent_mc=0.9),  # the MC label was wrong: the step is right
        located("a", 3, 1, parent_mc=0.8),  # the good steps were not good
        located("b", 0, 0),
        located("c", 1, None),
    ]
    s = SelectConfig(agree=True, corrections_per_problem=1, clean_share=0.0)
    chosen = select_backtrack(rows, s, seed=0)
    # problem a's most confident agreeing correction is its least confident one overall
    assert sorted((r["problem_id"], r["parent_mc"]) for r in chosen) == [("a", 0.5), ("b", 0.9)]
    assert all(r["mc_error_step"] == r["exact_error_step"] for r in chosen)
    off = select_backtrack(rows, dataclasses.replace(s, agree=False), seed=0)
    assert len(off) == 3 and any(r["exact_error_step"] is None for r in off)
    # a task without an exact checker: nothing to agree with, nothing changes
    assert select_backtrack(rows, s, seed=0, has_checker=False) == off


def own(pid, events, precise):
    """A self-correction with `events` backspace runs, `precise` of them erasing a wrong step."""
    return row(pid, "self_correction", nb=events) | {
        "steps_written": 6,
        "erase_events": events,
        "precise_erases": precise,
    }


def test_precise_only_keeps_self_corrections_whose_every_erase_was_precise():
    rows = [own("a", 1, 1), own("a", 2, 1), own("b", 1, 0), own("c", 2, 2), own("c", 1, 1)]
    s = SelectConfig(precise_only=True, self_corrections_per_problem=9, clean_share=0.0)
    chosen = select_backtrack(rows, s, seed=0)
    assert sorted((r["problem_id"], r["erase_events"]) for r in chosen) == [
        ("a", 1),
        ("c", 1),
        ("c", 2),
    ]
    assert len(select_backtrack(rows, dataclasses.replace(s, precise_only=False), 0)) == 5
    assert len(select_backtrack(rows, s, seed=0, has_checker=False)) == 5
    old = [{k: v for k, v in r.items() if k != "precise_erases"} for r in rows]
    with pytest.raises(SelectError, match="predate"):  # traces from before the columns
        select_backtrack(old, s, seed=0)


def share_rows(n_problems=200):
    """Per problem: a correction of 7 steps and one backspace run, a self-correction of 9 steps
    and two runs, and two clean solutions of 5 or 6 steps."""
    rows = []
    for i in range(n_problems):
        pid = f"p{i:03d}"
        rows.append(row(pid, "correction", 0.9, 8, nb=1) | {"steps_written": 7, "erase_events": 1})
        rows.append(own(pid, 2, 2) | {"steps_written": 9})
        rows += [
            row(pid, "clean", length=10 + j) | {"steps_written": 5 + j, "erase_events": 0}
            for j in (0, 1)
        ]
    return rows


def bksp_share(rows):
    return sum(r["erase_events"] for r in rows) / sum(r["steps_written"] for r in rows)


@pytest.mark.parametrize("target", [0.05, 0.08, 0.12])
def test_bksp_share_matches_the_share_of_steps_followed_by_a_backspace(target):
    rows = share_rows()
    s = SelectConfig(bksp_share=target, clean_per_problem=2)
    chosen = select_backtrack(rows, s, seed=3)
    assert abs(bksp_share(chosen) - target) < 0.002  # one row moves it by less than 0.001 here
    assert chosen == select_backtrack(rows, s, seed=3)  # seeded
    assert bksp_share(select_backtrack(rows, SelectConfig(clean_per_problem=2), 3)) > 0.14
    # every row together holds 600 runs over 5400 steps: below that share the clean rows run
    # out, and correction and self-correction rows are dropped instead
    n_fixes = sum(r["kind"] != "clean" for r in chosen)
    assert (n_fixes < 400) == (target < 600 / 5400)


def test_bksp_share_above_what_the_corrections_hold_takes_no_clean_rows():
    rows = share_rows(20)
    chosen = select_backtrack(rows, SelectConfig(bksp_share=0.5), seed=0)
    assert {r["kind"] for r in chosen} == {"correction", "self_correction"}
    assert bksp_share(chosen) == pytest.approx(3 / 16)  # the most the rows allow


def test_bksp_share_auto_reads_the_model_error_rate():
    rows = share_rows()
    s = SelectConfig(bksp_share=-1, clean_per_problem=2)
    for rate in (0.07, 0.11):
        chosen = select_backtrack(rows, s, seed=0, error_rate=rate)
        assert abs(bksp_share(chosen) - rate) < 0.002
        assert chosen == select_backtrack(rows, dataclasses.replace(s, bksp_share=rate), 0)
    with pytest.raises(SelectError, match="per-step error rate"):
        select_backtrack(rows, s, seed=0, error_rate=None)


def pair(pid, wrong=3, fix=5, on=4):
    """A pairs row: a wrong step of `wrong` tokens, one backspace and a fix; or `on` tokens."""
    return {
        "problem_id": pid,
        "prompt_ids": [9] * 6,
        "chosen_ids": [7] * wrong + [2] + [5] * fix,
        "rejected_ids": [7] * wrong + [8] * on,
    }


def test_dpo_pairs_are_capped_per_problem_and_drawn_to_the_token_count():
    rows = [pair("a"), pair("a", fix=9), pair("a", fix=1), pair("b", on=20), pair("c")]
    assert pair_loss_tokens(rows[0]) == 1 + 5 + 4  # backspace, fix; the continuation
    s = SelectConfig(corrections_per_problem=2)
    chosen = select_pairs(rows, s, n_tokens=100, seed=0)
    assert rows[2] not in chosen  # problem a's third pair is past the cap
    total = sum(map(pair_loss_tokens, chosen))
    assert 100 <= total < 100 + max(map(pair_loss_tokens, rows))
    assert {r["problem_id"] for r in chosen} == {"a", "b", "c"}
    assert select_pairs(rows, s, 100, 0) == chosen  # seeded
    few = select_pairs(rows, s, n_tokens=20, seed=0)
    assert sum(map(pair_loss_tokens, few)) < 20 + 25 and len(few) < len(rows)
