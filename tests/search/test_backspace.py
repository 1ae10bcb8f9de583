"""Backspace semantics: one definition of what is visible, for both units."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.backspace import (
    BackspaceError,
    Segment,
    Trace,
    apply_backspaces,
    pop_count,
    serialize,
    serialize_stream,
)

BK, NL = 2, 9  # backspace and delimiter ids
PROMPT = (5, 6, NL)


def test_token_unit_deletes_one_token_each():
    ids = [*PROMPT, 3, 4, 7, BK, BK, 8]
    assert apply_backspaces(ids, 3, "token", BK, NL) == [*PROMPT, 3, 8]


def test_step_unit_deletes_back_to_the_start_of_the_last_step():
    # step "3 4 NL", step "7 8 NL"; one backspace removes "7 8 NL", the next "3 4 NL"
    ids = [*PROMPT, 3, 4, NL, 7, 8, NL, BK]
    assert apply_backspaces(ids, 3, "step", BK, NL) == [*PROMPT, 3, 4, NL]
    assert apply_backspaces([*ids, BK], 3, "step", BK, NL) == list(PROMPT)
    # a partial step goes back to the last delimiter only
    assert apply_backspaces([*PROMPT, 3, NL, 7, 8, BK], 3, "step", BK, NL) == [*PROMPT, 3, NL]


@pytest.mark.parametrize("unit", ["token", "step"])
def test_backspace_into_the_prompt_is_rejected(unit):
    with pytest.raises(BackspaceError, match="position 5 would delete into the prompt"):
        apply_backspaces([*PROMPT, 3, BK, BK], 3, unit, BK, NL)


def test_pop_count_matches_apply():
    visible = [*PROMPT, 3, 4, NL, 7, 8]
    assert pop_count(visible, 3, "step", NL) == 2
    assert pop_count(visible, 3, "token", NL) == 1
    assert pop_count(list(PROMPT), 3, "token", NL) == 0


def test_step_unit_rejects_an_erase_that_starts_mid_step():
    trace = Trace(PROMPT, (Segment("keep", (3,)), Segment("erase", (4, NL))))
    with pytest.raises(BackspaceError, match="step boundary"):
        serialize(trace, "step", BK, NL)
    ser = serialize(trace, "token", BK, NL)  # the token unit can
    assert ser.input_ids == [*PROMPT, 3, 4, NL, BK, BK]


def test_serialize_masks_prompt_and_erased_tokens():
    trace = Trace(
        PROMPT, (Segment("keep", (3, NL)), Segment("erase", (4, NL)), Segment("keep", (7, NL)))
    )
    ser = serialize(trace, "step", BK, NL)
    assert ser.input_ids == [*PROMPT, 3, NL, 4, NL, BK, 7, NL]
    assert ser.loss_mask == [0, 0, 0, 1, 1, 0, 0, 1, 1, 1]
    assert ser.erase_spans == [(5, 7)]
    assert ser.n_backspaces == 1


tokens = st.integers(min_value=10, max_value=14) | st.just(NL)
chunk = st.lists(tokens, min_size=1, max_size=6).map(tuple)


@st.composite
def traces(draw, unit):
    segs = []
    for kind in draw(st.lists(st.sampled_from(["keep", "erase"]), min_size=1, max_size=8)):
        ids = draw(chunk)
        if unit == "step":
            ids = (*ids, NL)  # whole steps, so every erase starts at a step boundary
        segs.append(Segment(kind, ids))
    return Trace(PROMPT, tuple(segs))


@pytest.mark.parametrize("unit", ["token", "step"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_serialize_then_apply_gives_the_visible_text(unit, data):
    trace = data.draw(traces(unit))
    ser = serialize(trace, unit, BK, NL)
    assert apply_backspaces(ser.input_ids, len(PROMPT), unit, BK, NL) == trace.visible()
    # erased tokens and the prompt carry no loss; everything else does
    erased = {p for a, b in ser.erase_spans for p in range(a, b)}
    for pos, m in enumerate(ser.loss_mask):
        assert m == (0 if pos < len(PROMPT) or pos in erased else 1)
    # the same stream read back as a raw generation gives the same spans and mask
    again = serialize_stream(PROMPT, ser.input_ids[len(PROMPT) :], unit, BK, NL)
    assert again == ser


@settings(max_examples=200, deadline=None)
@given(st.lists(tokens | st.just(BK), max_size=30), st.sampled_from(["token", "step"]))
def test_random_streams_never_touch_the_prompt(stream, unit):
    try:
        visible = apply_backspaces([*PROMPT, *stream], len(PROMPT), unit, BK, NL)
    except BackspaceError:
        return
    assert visible[: len(PROMPT)] == list(PROMPT)
    assert BK not in visible
