"""Random backspace streams for the erase-mode mask tests (token ids: backspace 2, delimiter 9)."""

from search.backspace import is_step_end, pop_count

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


def tried_views(ids, prompt_len, unit, bksp=BK, delim=NL):
    """Mode `tried` from its definition, for each position q the positions it attends to.

    A backspace run erases what it pops, its own backspaces included; each erased position has a
    branch point: the number of visible tokens before the step it was popped from. q sees k <= q
    unless k's run has ended by q (a non-backspace came after it, at or before q) and some run
    from k's on, ended by q, left fewer visible tokens than k's branch point. O(L^3): a reference.
    """
    visible, branch, run_of = [], {}, {}
    runs = []  # [end: the first non-backspace after the run or None, visible count after it]
    for j, t in enumerate(ids):
        if t != bksp:
            if runs and runs[-1][0] is None:
                runs[-1] = [j, len(visible)]
            visible.append(j)
            continue
        if not runs or runs[-1][0] is not None:
            runs.append([None, None])
        n = pop_count([ids[p] for p in visible], prompt_len, unit, delim)
        gone = visible[len(visible) - n :]
        del visible[len(visible) - n :]
        b = len(visible)
        while b > prompt_len and not is_step_end(ids[visible[b - 1]], delim):
            b -= 1
        for p in [*gone, j]:
            branch[p], run_of[p] = b, len(runs) - 1
    ended = [(e if e is not None else len(ids), n) for e, n in runs]

    def sees(q, k):
        if k not in branch or ended[run_of[k]][0] > q:
            return True
        return all(n >= branch[k] for e, n in ended[run_of[k] :] if e <= q)

    return [[k for k in range(q + 1) if sees(q, k)] for q in range(len(ids))]
