"""Stream-of-Search traces for Countdown (Gandhi et al. 2024): a solver's search, written out.

A depth-first or breadth-first search over states (the numbers left, ascending) records every
*tried move* in order: the path of steps from the prompt to the new state, and what that state
is: `open` (worth searching further), `dead` (a visible dead end, `countdown.visibly_dead`: one
number left that is not the target, or, with `prune`, a sum heuristic above the target) or
`solved`. Moves are tried best first by Stream of Search's sum heuristic (mean distance to the
target), ties in the solver's order; a move to a state tried before is skipped. The search gives up
after expanding `max_states` states. Breadth-first expands each level's open states best first and
keeps only the `beam` best (all when None).

Three serialisations of one problem, as pieces `(text, n)`: the text, then `n` backspace tokens.
Steps end with the task's delimiter "\\n", except the last, which end-of-sequence follows.

- "optimal": the exhaustive solver's solution, no search. For 12 from 3 8 7:
      [("7-3=4\n8+4=12", 0)]
- "stream": one line per tried move; when a move does not start from the state the line before
  left, a line "back 8 10" (the numbers it starts from, ascending) comes first. Dead ends stay
  visible:
      [("7+3=10\n10+8=18\nback 8 10\n10-8=2\nback 8 10\n10*8=80\nback 3 7 8\n8+3=11\n"
        "11-7=4\nback 7 11\n11*7=77\nback 3 7 8\n7-3=4\n8+4=12", 0)]
- "backspace": each tried move is typed after the path to the state it starts from; reaching it
  erases back to the common prefix (step unit: one backspace per step) and types the rest. In
  depth-first order that is: a dead end is erased where it shows, back to the state the next move
  branches from. `apply_backspaces(..., unit="step")` leaves exactly the found solution:
      [("7+3=10\n10+8=18\n", 1), ("10-8=2\n", 1), ("10*8=80\n", 2), ("8+3=11\n11-7=4\n", 1),
       ("11*7=77\n", 2), ("7-3=4\n8+4=12", 0)]

The task's checkers judge solutions, not streams: `stream_path` replays a stream and returns its
last path (the steps from the prompt to the state it ended in), which `CountdownTask.is_correct`
then judges, as a decoder applies backspaces before checking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from search.tasks.countdown import apply_step, children, solve, sum_heuristic, visibly_dead
from search.types import Problem, Tokenizer

Mode = Literal["optimal", "stream", "backspace"]
Order = Literal["dfs", "bfs"]
Piece = tuple[str, int]
State = tuple[int, ...]
BACK = "back "


@dataclass(frozen=True)
class Tried:
    """One tried move: `path` runs from the prompt and ends with the move; `state` is after it."""

    path: tuple[str, ...]
    state: State
    outcome: Literal["open", "dead", "solved"]


@dataclass
class _Search:
    """The bookkeeping of one search: the budget, the states seen and the moves tried so far."""

    target: int
    max_states: int
    prune: bool
    tried: list[Tried] = field(default_factory=list)
    seen: set[State] = field(default_factory=set)
    expanded: int = 0

    def expand(self) -> bool:
        """Count one expanded state; False once the budget is spent."""
        if self.expanded >= self.max_states:
            return False
        self.expanded += 1
        return True

    def try_move(self, path: tuple[str, ...], step: str, state: State) -> Tried | None:
        """Record the move unless its state was tried before (then None)."""
        if state in self.seen:
            return None
        self.seen.add(state)
        outcome: Literal["open", "dead", "solved"] = "open"
        if state == (self.target,):
            outcome = "solved"
        elif visibly_dead(state, self.target, self.prune):
            outcome = "dead"
        self.tried.append(Tried((*path, step), state, outcome))
        return self.tried[-1]


def _dfs(s: _Search, path: tuple[str, ...], state: State) -> bool:
    if not s.expand():
        return False
    for step, child in children(state, s.target):
        t = s.try_move(path, step, child)
        if t is not None and t.outcome == "solved":
            return True
        if t is not None and t.outcome == "open" and _dfs(s, t.path, child):
            return True
    return False


def _bfs(s: _Search, root: State, beam: int | None) -> bool:
    level: list[tuple[tuple[str, ...], State]] = [((), root)]
    while level:
        following = []
        for path, state in level:
            if not s.expand():
                return False
            for step, child in children(state, s.target):
                t = s.try_move(path, step, child)
                if t is not None and t.outcome == "solved":
                    return True
                if t is not None and t.outcome == "open":
                    following.append((t.path, child))
        following.sort(key=lambda node: sum_heuristic(node[1], s.target))
        level = following[:beam]
    return False


def search_moves(
    numbers: Sequence[int],
    target: int,
    order: Order = "dfs",
    max_states: int = 100,
    prune: bool = False,
    beam: int | None = None,
) -> list[Tried] | None:
    """The tried moves of a heuristic search, in order, the last one reaching `target`; None when
    the search expands `max_states` states (or runs out of moves) without reaching it."""
    s = _Search(target, max_states, prune)
    root = tuple(sorted(numbers))
    found = _dfs(s, (), root) if order == "dfs" else _bfs(s, root, beam)
    return s.tried if found else None


def _state_text(state: State) -> str:
    return " ".join(map(str, state))


def stream_text(numbers: Sequence[int], tried: Sequence[Tried]) -> str:
    """The "stream" serialisation: move lines, with a back line before each move that does not
    start from the state the line before left."""
    states: dict[tuple[str, ...], State] = {(): tuple(sorted(numbers))}
    lines: list[str] = []
    at: tuple[str, ...] = ()
    for t in tried:
        if t.path[:-1] != at:
            lines.append(BACK + _state_text(states[t.path[:-1]]))
        lines.append(t.path[-1])
        states[t.path] = t.state
        at = t.path
    return "\n".join(lines)


def backspace_pieces(tried: Sequence[Tried]) -> list[Piece]:
    """The "backspace" serialisation: from each tried path to the next, backspaces (one per step)
    back to their common prefix, then the rest of the new path typed out."""
    pieces: list[Piece] = []
    at: tuple[str, ...] = ()
    for t in tried:
        keep = 0
        while keep < len(at) and at[keep] == t.path[keep]:
            keep += 1
        if len(at) > keep:
            pieces[-1] = (pieces[-1][0], len(at) - keep)
        text = "".join(step + "\n" for step in t.path[keep:])
        if pieces and pieces[-1][1] == 0:
            pieces[-1] = (pieces[-1][0] + text, 0)
        else:
            pieces.append((text, 0))
        at = t.path
    if pieces:  # end-of-sequence, not a delimiter, follows the last step
        pieces[-1] = (pieces[-1][0].removesuffix("\n"), 0)
    return pieces


def search_trace(
    problem: Problem,
    mode: Mode = "backspace",
    order: Order = "dfs",
    max_states: int = 100,
    prune: bool = False,
    beam: int | None = None,
) -> list[Piece] | None:
    """One problem's trace in `mode` (see the module docstring): pieces of (text, backspaces)
    without the prompt or end-of-sequence; None when the search does not solve it in budget.

    `order`, `max_states`, `prune` and `beam` (breadth-first only) shape the search of the
    "stream" and "backspace" modes; "optimal" ignores them. Backspace counts are for the "step"
    unit (one backspace erases one step). Backspace tokens sit between the pieces, so `pieces_ids`
    encodes each piece on its own.
    """
    _check_options(mode, order, max_states, beam)
    numbers, target = problem.meta["numbers"], problem.meta["target"]
    if mode == "optimal":
        steps = solve(numbers, target)
        return None if steps is None else [("\n".join(steps), 0)]
    tried = search_moves(numbers, target, order, max_states, prune, beam)
    if tried is None:
        return None
    if mode == "stream":
        return [(stream_text(numbers, tried), 0)]
    return backspace_pieces(tried)


def _check_options(mode: str, order: str, max_states: int, beam: int | None) -> None:
    if mode not in ("optimal", "stream", "backspace"):
        raise ValueError(f"countdown trace mode must be optimal, stream or backspace, got {mode!r}")
    if order not in ("dfs", "bfs"):
        raise ValueError(f"countdown search order must be dfs or bfs, got {order!r}")
    if max_states < 1:
        raise ValueError(f"countdown search max_states must be at least 1, got {max_states}")
    if beam is not None and beam < 1:
        raise ValueError(f"countdown search beam must be at least 1 or None, got {beam}")


def pieces_ids(pieces: Sequence[Piece], tokenizer: Tokenizer) -> list[int]:
    """Token ids of a trace: each piece's text encoded, then its backspace tokens. The caller
    adds the prompt in front and end-of-sequence behind (e.g. for `serialize_stream`)."""
    ids: list[int] = []
    for text, n in pieces:
        ids += tokenizer.encode(text) + [tokenizer.bksp_id] * n
    return ids


def render(pieces: Sequence[Piece], bksp_token: str = "<|bksp|>") -> str:
    """A trace as text, backspaces written as `bksp_token` (for reading, not for tokenizing)."""
    return "".join(text + bksp_token * n for text, n in pieces)


def stream_path(numbers: Sequence[int], lines: Sequence[str]) -> list[str] | None:
    """The last path of a stream (lines without delimiters): the steps from the prompt to the
    state the stream ended in. A back line returns to the path by which the stream first reached
    that state. None when a line is neither a valid move from the current state nor a back line
    to a state reached before."""
    state: State = tuple(sorted(numbers))
    path: list[str] = []
    paths = {state: path}
    for line in lines:
        if line.startswith(BACK):
            back = parse_state(line.removeprefix(BACK))
            if back is None or back not in paths:
                return None
            state, path = back, paths[back]
            continue
        after = apply_step(state, line)
        if after is None:
            return None
        state, path = after, [*path, line]
        paths.setdefault(state, path)
    return path


def parse_state(text: str) -> State | None:
    """The state a back line names ("8 10" of "back 8 10"), sorted; None if it is not numbers."""
    try:
        return tuple(sorted(int(word) for word in text.split(" ")))
    except ValueError:
        return None
