"""experiments/stream_redo.py's reading of a backspace stream, on streams built by hand (the
sampling is the policy's, tested with it)."""

from experiments.stream_redo import arithmetic, redo_events, stream_repeats, tried_again

B = "<|bksp|>"
BKSP, DELIM = -1, ord("\n")  # a character's id is its code point


def events(text: str) -> list[tuple[str, str]]:
    """`redo_events` on `text` (B for a backspace), the steps read back as text."""
    ids = [c for part in text.split(B) for c in [*map(ord, part), BKSP]][:-1]
    got = redo_events(ids, 0, BKSP, DELIM)
    return [("".join(map(chr, a)), "".join(map(chr, b))) for a, b in got]


def test_each_backspace_run_is_paired_with_its_branch_step_and_the_step_after_it():
    # one erase of a whole step, rewritten the same; two steps erased back to the first, then
    # another move; a part-written step erased; a run with no whole step after it is left out
    text = f"7+2=9\n18-9=9\n{B}18-9=9\n9*2=18\n{B}{B}9+7=16\n16+2=1{B}16+2=18\n18-1=17\n{B}"
    assert events(text) == [
        ("18-9=9", "18-9=9"),
        ("18-9=9", "9+7=16"),  # the first backspace took "9*2=18", the last "18-9=9"
        ("16+2=1", "16+2=18"),
    ]


def ids_of(text: str) -> list[int]:
    return [c for part in text.split(B) for c in [*map(ord, part), BKSP]][:-1]


def test_a_step_tried_again_counts_any_earlier_try_at_its_branch_point():
    # at the prompt: 7+2=9 tried, erased, 7*2=14 tried, erased, 7+2=9 again (a repeat of the
    # first try, not of the step just erased); under it 9*2=18 twice (a repeat); after backing
    # up to the prompt and going down 7+2=9 again (a third try there), 9*2=18 is a repeat too:
    # the same step after the same prefix. A half-written step is not a step.
    text = f"7+2=9\n{B}7*2=14\n{B}7+2=9\n9*2=18\n{B}9*2=18\n{B}{B}7+2=9\n9*2=18\n9*2{B}"
    assert tried_again(ids_of(text), 0, BKSP, DELIM) == (4, 7)
    assert tried_again(ids_of("7+2=9\n9*2=18\n"), 0, BKSP, DELIM) == (0, 2)


def test_a_stream_without_backspaces_has_no_events_and_its_arithmetic_is_counted():
    assert events("7+2=9\n9*2=18\n") == []
    assert arithmetic("7+2=9\n9*2=17\n16/0=1\n") == (1, 3)


def test_a_visible_stream_counts_a_move_tried_again_from_the_same_state_only():
    # 7+3=10 tried from (3 7 8), back there and tried again: a repeat; 10-8=2 from (8 10) is new;
    # after "back 8 10" the state is (8 10) again, so 10+8=18 there repeats; 8+3=11 from (3 7 8)
    # is a first try; a wrong sum moves the believed state all the same (11+7=19, then 19-7=12
    # takes the 19 it believes in)
    text = (
        "7+3=10\n10+8=18\nback 8 10\n10-8=2\nback 8 10\n10+8=18\nback 3 7 8\n7+3=10\n"
        "back 3 7 8\n8+3=11\n11+7=18\n"
    )
    assert stream_repeats([3, 7, 8], text) == (2, 7)
    assert stream_repeats([3, 7, 8], "8+3=11\n11+7=19\n19-7=12\n") == (0, 3)
