"""The erase-mode mask built from one vector per row (`erased_at`) against the construction it
replaced (one `attention_views` list per position, O(L^2) per row): the same mask and position
ids for random streams of both units, and bool and float masks giving the same logits. Mode
`tried` (`keep_tried`) against its definition (`tests.streams.tried_views`), the same way.
FlexAttention: tests/workers/test_erase_flex.py."""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from search.backspace import attention_views
from tests.models import tiny_checkpoint
from tests.streams import BK, NL, random_batch, tried_views, valid_stream
from workers.erase import erase_attention, erase_vectors
from workers.hf import load_checkpoint
from workers.tokens import add_backspace_token


def reference_attention(rows, prompt_lens, width, unit, bksp_id, delim_id, dtype, views_of=None):
    """The construction `erase_attention` had before `erased_at`, kept as the reference
    (`views_of`: another mode's views, `tried_views`)."""
    views_of = views_of or attention_views
    b = len(rows)
    allow = torch.zeros((b, width, width), dtype=torch.bool)
    positions = torch.zeros((b, width), dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(zip(rows, prompt_lens, strict=True)):
        views = views_of(ids, n_prompt, unit, bksp_id, delim_id)
        for j, view in enumerate(views):
            allow[i, j, view] = True
            positions[i, j] = len(view) - 1
        for j in range(len(ids), width):  # padding attends to itself only (no all-masked rows)
            allow[i, j, j] = True
    if dtype == torch.bool:
        return allow[:, None], positions
    mask = torch.zeros((b, 1, width, width), dtype=dtype)
    mask.masked_fill_(~allow[:, None], torch.finfo(dtype).min)
    return mask, positions


symbols = st.sampled_from([3, 4, NL, BK, BK])  # backspaces often, runs of them too
rows_st = st.lists(
    st.tuples(st.lists(st.sampled_from([3, 4, NL]), min_size=1, max_size=4), st.lists(symbols)),
    min_size=1,
    max_size=4,
)


@pytest.mark.parametrize("unit", ["token", "step"])
@pytest.mark.parametrize("keep_tried", [False, True])
@settings(max_examples=300, deadline=None)
@given(rows=rows_st, pad=st.integers(0, 3))
def test_the_vector_mask_equals_the_views_mask(unit, keep_tried, rows, pad):
    streams = [valid_stream(p, t, unit) for p, t in rows]
    lens = [len(p) for p, _ in rows]
    width = max(len(s) for s in streams) + pad
    views_of = tried_views if keep_tried else None
    for dtype in (torch.float32, torch.bool, torch.bfloat16):
        got = erase_attention(streams, lens, width, unit, BK, NL, dtype, keep_tried)
        want = reference_attention(streams, lens, width, unit, BK, NL, dtype, views_of)
        assert got[0].dtype == want[0].dtype and got[0].shape == want[0].shape
        assert torch.equal(got[0], want[0])
        assert torch.equal(got[1], want[1])


def test_erased_at_of_a_small_stream():
    # prompt 5 6 NL; 7 8 erased by two backspaces (token unit); then 3
    ids = [5, 6, NL, 7, 8, BK, BK, 3]
    erased_at, positions = erase_vectors([ids], [3], 10, "token", BK, NL)
    never = len(ids)
    assert erased_at[0].tolist() == [never, never, never, 7, 7, 7, 7, never, 9, 10]
    assert positions[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 3, 0, 0]


def test_tried_keeps_the_moves_tried_at_the_branch_point_in_view():
    # prompt 5 NL; step a = 3 NL; x = 4 NL tried under a and erased; y = 6 NL tried and erased,
    # and a with it (one run backs above a's branch point); then b = 7 NL
    ids = [5, NL, 3, NL, 4, NL, BK, 6, NL, BK, BK, 7, NL]
    (erased_at,), (positions,) = erase_vectors([ids], [2], len(ids), "step", BK, NL, True)

    def view(e, q):
        return [k for k in range(q + 1) if e[k] > q]

    assert view(erased_at, 8) == list(
        range(9)
    )  # y (7, 8) is written with x and its backspace in view
    assert view(erased_at, 12) == [
        0,
        1,
        2,
        3,
        10,
        11,
        12,
    ]  # b sees a and the backspace that undid it, no x, y
    assert positions.tolist()[7:9] + positions.tolist()[11:] == [7, 8, 5, 6]
    plain, _ = erase_vectors([ids], [2], len(ids), "step", BK, NL)
    assert view(plain[0], 8) == [0, 1, 2, 3, 7, 8]  # erase mode: x and its backspace gone


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_bool_and_float_masks_give_identical_logits(tmp_path, arch):
    model, tok = load_checkpoint(tiny_checkpoint(tmp_path, arch), "cpu")
    assert model.config._attn_implementation == "sdpa"
    add_backspace_token(model, tok, "<|bksp|>")
    vocab = model.get_output_embeddings().weight.shape[0]
    for unit in ("token", "step"):
        rows, lens = random_batch(random.Random(unit), vocab, unit)
        width = max(map(len, rows))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        logits = {}
        for dtype in (torch.float32, torch.bool):
            mask, positions = erase_attention(rows, lens, width, unit, BK, NL, dtype)
            with torch.no_grad():
                logits[dtype] = model(ids, attention_mask=mask, position_ids=positions).logits
        assert torch.equal(logits[torch.float32], logits[torch.bool])
