"""Selection: confident corrections first, caps per problem, clean share, equal tokens."""

from pipeline.config import SelectConfig
from pipeline.select import n_tokens, select_backtrack, select_baseline, select_pairs
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


def test_baseline_matches_the_token_count_with_clean_only():
    chosen = select_baseline(ROWS, SelectConfig(), n_tokens=200, seed=0)
    assert all(r["kind"] == "clean" for r in chosen)
    assert 200 <= n_tokens(chosen) < 200 + 40  # loss-bearing tokens, not input tokens
    assert n_tokens(chosen) == sum(len(r["input_ids"]) - 3 for r in chosen)
    assert select_baseline(ROWS, SelectConfig(), 200, 0) == chosen  # seeded


def test_curriculum_orders_short_erases_first():
    rows = [dict(r, erase_spans=[[0, r["n_backspaces"] * 3]]) for r in ROWS]
    s = SelectConfig(curriculum=True, corrections_per_problem=9, clean_share=0.5)
    chosen = select_backtrack(rows, s, seed=0)
    erased = [sum(b - a for a, b in r["erase_spans"]) for r in chosen]
    assert erased == sorted(erased) and erased[-1] > erased[0]


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
