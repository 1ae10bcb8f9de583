"""Random backspace streams for the erase-mode mask tests (token ids: backspace 2, delimiter 9)."""

from search.backspace import pop_count

BK, NL = 2, 9  # backspace and delimiter ids


def valid_stream(prompt, tokens, unit, bksp=BK, delim=NL):
    """`prompt` + `tokens`, dropping each backspace that would erase into the prompt."""
    ids, visible = list(prompt), list(prompt)
    for t in tokens:
        if t == bksp:
            n = pop_count(visible, len(prompt), unit, delim)
            if not n:
                continue
            del visible[len(visible) - n :]
        else:
            visible.append(t)
        ids.append(t)
    return ids


def random_batch(rng, vocab, unit, n_rows=3):
    """Rows of different lengths (so the batch holds padding) with backspace runs."""
    rows = []
    for i in range(n_rows):
        prompt = [rng.randrange(5, vocab) for _ in range(4)] + [NL]
        pool = [BK, BK, NL, *range(5, vocab)[:6]]  # a quarter backspaces, some delimiters
        tokens = [rng.choice(pool) for _ in range(30 + 7 * i)]
        rows.append(valid_stream(prompt, tokens, unit))
    return rows, [5] * n_rows
