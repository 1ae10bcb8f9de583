"""experiments/stream_redo.py's reading of a backspace stream, on streams built by hand (the
sampling is the policy's, tested with it)."""

from experiments.stream_redo import arithmetic, redo_events

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


def test_a_stream_without_backspaces_has_no_events_and_its_arithmetic_is_counted():
    assert events("7+2=9\n9*2=18\n") == []
    assert arithmetic("7+2=9\n9*2=17\n16/0=1\n") == (1, 3)
