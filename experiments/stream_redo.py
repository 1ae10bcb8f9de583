"""What a model trained on backspace streams writes after it erases: the step it writes next
against the step its backspaces took back to (the branch point), steps written again from a
prefix any earlier try was written from, and how many of its Countdown moves have right
arithmetic. For the visible stream form (no backspaces; a line "back 8 10" returns
to an earlier state), how often a move is written again from a state it was already tried from.

    PYTHONPATH=. .venv/bin/python experiments/stream_redo.py \\
        --run runs/bootstrap-forms/FORM/seed-S [--temperature 0] [--problems 50]

Samples one stream per test problem (the run's bootstrap model, its own config, seed = problem
index) and prints one line per figure. Under erase attention the erased steps are invisible to
what follows, so after an erase the model sees what it saw before its first try: greedy
decoding writes the same step again.
"""

from __future__ import annotations

import argparse
import operator
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.config import load_config
from pipeline.loading import load_model, task_from_config
from pipeline.measure.evaluation import decoding
from search.backspace import Delim, is_step_end, walk
from search.tasks.countdown_stream import BACK, parse_state
from search.types import Ask
from workers.policy import make_policy

OPS: dict[str, Callable[[int, int], float | None]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": lambda a, b: a / b if b else None,
}


def redo_events(
    ids: Sequence[int], prompt_len: int, bksp_id: int, delim: Delim
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(the step a run of step backspaces took back to, the next whole step written), without
    their delimiters, for each run in the stream `ids` that a whole step follows; the backspaces
    applied by `search.backspace.walk`."""

    def bare(step: list[int]) -> tuple[int, ...]:
        return tuple(step[:-1] if step and is_step_end(step[-1], delim) else step)

    out, branch, step = [], None, []
    for pos, _, gone in walk(ids, prompt_len, "step", bksp_id, delim):
        if ids[pos] == bksp_id:  # the run's last backspace takes the branch step
            branch, step = [ids[p] for p in gone], []
        elif branch is not None:
            step.append(ids[pos])
            if is_step_end(ids[pos], delim):
                out.append((bare(branch), bare(step)))
                branch, step = None, []
    return out


def tried_again(ids: Sequence[int], prompt_len: int, bksp_id: int, delim: Delim) -> tuple[int, int]:
    """(whole steps written after a prefix from which the same step was already written, whole
    steps) in a backspace stream: any earlier try at that branch point counts, not only the step
    just erased (`redo_events`); the backspaces applied by `search.backspace.walk`."""
    seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
    again = steps = 0
    start = prompt_len  # where the step being written starts, in visible tokens
    for pos, visible, _ in walk(ids, prompt_len, "step", bksp_id, delim):
        if ids[pos] == bksp_id:
            start = len(visible)  # step backspaces leave a step boundary
        elif is_step_end(ids[pos], delim):
            tokens = [ids[p] for p in visible]
            key = (tuple(tokens[:start]), tuple(tokens[start:]))
            steps += 1
            again += key in seen
            seen.add(key)
            start = len(visible)
    return again, steps


MOVE = re.compile(r"(\d+)([+\-*/])(\d+)=(\d+)")  # a Countdown move `a op b=c`


def arithmetic(text: str) -> tuple[int, int]:
    """(moves `a op b=c` whose c is right, moves) in a Countdown stream."""
    moves = MOVE.findall(text)
    right = sum(OPS[o](int(a), int(b)) == int(c) for a, o, b, c in moves)
    return right, len(moves)


def stream_repeats(numbers: Sequence[int], text: str) -> tuple[int, int]:
    """(moves written from a state they were already tried from, moves) in a visible Countdown
    stream from the problem's `numbers`. The state is what the stream believes: a move takes
    its operands out (those present) and puts its result in, right or not; "back ..." sets it."""
    state = tuple(sorted(numbers))
    tried: set[tuple[tuple[int, ...], str]] = set()
    repeats = moves = 0
    for line in map(str.strip, text.split("\n")):
        back = parse_state(line.removeprefix(BACK)) if line.startswith(BACK) else None
        if back is not None:
            state = back
            continue
        move = MOVE.fullmatch(line)
        if move is None:
            continue
        moves += 1
        repeats += (state, line) in tried
        tried.add((state, line))
        left = list(state)
        for operand in (int(move[1]), int(move[3])):
            if operand in left:
                left.remove(operand)
        state = tuple(sorted((*left, int(move[4]))))
    return repeats, moves


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a run's seed directory (bootstrap/ inside)")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--problems", type=int, default=50)
    args = ap.parse_args()
    cfg = load_config(f"{args.run}/bootstrap/config.yaml")
    task = task_from_config(cfg.task)
    loaded = load_model(cfg, "transformers", Path(args.run) / "bootstrap" / "model", task)
    policy = make_policy(loaded, decoding(cfg, args.temperature, False), None)
    tok = loaded.tokenizer
    problems = task.problems("test", args.problems)
    asks = [Ask(tuple(tok.encode(p.prompt)), 1, "end", i) for i, p in enumerate(problems)]
    drawn = [r.tokens for (r,) in policy.sample(asks)]
    texts = [tok.decode(list(t)) for t in drawn]
    events = [
        e
        for a, t in zip(asks, drawn, strict=True)
        for e in redo_events([*a.prefix, *t], len(a.prefix), tok.bksp_id, tok.step_ends)
    ]
    same = sum(a == b for a, b in events)
    counts = [
        tried_again([*a.prefix, *t], len(a.prefix), tok.bksp_id, tok.step_ends)
        for a, t in zip(asks, drawn, strict=True)
        if tok.bksp_id in t
    ]
    again, steps = (sum(c[0] for c in counts), sum(c[1] for c in counts)) if counts else (0, 0)
    right, moves = map(sum, zip(*(arithmetic(t) for t in texts), strict=True))
    print(f"{args.run}, T={args.temperature:g}, {len(problems)} test problems")
    print(f"erase runs followed by a step: {len(events)}; the branch step written again: {same}")
    print(
        f"streams with a backspace: {len(counts)}; their steps written again after a prefix "
        f"they were already written from (any earlier try): {again} of {steps}"
    )
    print(f"moves with right arithmetic: {right} of {moves}")
    visible = [
        (p.meta["numbers"], t)
        for p, t, ids in zip(problems, texts, drawn, strict=True)
        if tok.bksp_id not in ids
    ]
    counts = [stream_repeats(p, t) for p, t in visible]
    again, tried = sum(c[0] for c in counts), sum(c[1] for c in counts)
    print(
        f"streams without a backspace: {len(visible)}; their moves written again from a state "
        f"they were tried from: {again} of {tried}"
    )


if __name__ == "__main__":
    main()
