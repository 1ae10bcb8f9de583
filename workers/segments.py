"""A Policy over an engine that decodes until a stop token: how the vLLM backend samples
(docs/design.md §8, §10).

An `Engine` takes token-id prompts and returns, per prompt, `n` continuations that end at the first
stop token (included) or after `max_tokens`. `SegmentPolicy` turns that into the same Policy the
transformers backend implements, backspaces included:

- plain rollouts are one engine call: every ask is one prompt with `n` samples and its `seed`;
- the backspace is a stop token. When a row emits one, the policy checks it (a row never erases
  into its prefix, emits at most `max_backspaces`, and with `step_end_only` only right after a
  delimiter or a backspace; a backspace that breaks either is dropped and
  that token is drawn again with the backspace banned, which samples exactly the banned
  distribution) and goes on from a new prompt;
- in `erase` mode the new prompt is what the next token attends to, by `attention_views`, the rule
  training uses: during a backspace run the erased tokens and the run (one token per call, since
  the next token may end the run), after it the surviving prefix and the token that ended it. The
  engine's prefix cache makes these re-prompts cheap: this is the cropped KV cache
  (docs/design.md §8);
- in `stream` mode the new prompt is the raw stream.

Seeds: the first call of an ask uses `ask.seed` for its `n` samples (the engine derives one seed per
sample); every later call of a row uses `derive_seed(ask.seed, sample, call)`. Log-probs are the
model's own (temperature 1, before bans), as the engine reports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from search.backspace import (
    Delim,
    Mode,
    Unit,
    apply_backspaces,
    erase_schedule,
    is_step_end,
    pop_count,
)
from search.tree import derive_seed
from search.types import Ask, Rollout


@dataclass(frozen=True)
class Request:
    """`n` continuations of `prompt`; each stops after a token of `stop_ids` or `max_tokens`."""

    prompt: tuple[int, ...]
    n: int
    seed: int
    max_tokens: int
    stop_ids: tuple[int, ...]
    ban_ids: tuple[int, ...] = ()
    temperature: float = 1.0


@dataclass(frozen=True)
class Piece:
    """One continuation: its tokens (the stop token last, when it stopped), their log-probs."""

    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]


class Engine(Protocol):
    """Decodes a batch of requests: `generate(reqs)[i]` has `reqs[i].n` pieces."""

    def generate(self, requests: Sequence[Request]) -> list[list[Piece]]: ...


@dataclass
class _Row:
    index: int  # of its ask
    ask: Ask
    sample: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    calls: int = 1
    n_backspaces: int = 0
    ban_next: bool = False  # redraw the next token without the backspace
    finished: bool = False
    done: bool = False


class SegmentPolicy:
    """Policy over an `Engine`; same contract as `workers.sampler.TransformersPolicy`, counters
    included (`generated`: each rollout's length; `tokens_generated`: their running total)."""

    discards = False

    def __init__(
        self,
        engine: Engine,
        eos_id: int,
        delim_id: Delim,
        temperature: float = 1.0,
        max_new_tokens: int = 64,
        logprobs: bool = False,
        ban_ids: Sequence[int] = (),
        bksp_id: int | None = None,
        mode: Mode = "stream",
        unit: Unit = "token",
        max_backspaces: int = 16,
        step_end_only: bool = False,
    ) -> None:
        if mode == "tried":
            raise ValueError(
                "mode 'tried' keeps erased moves in view with the representations they were "
                "written with, which only a cache that hides columns (the transformers backend) "
                "reproduces; a re-prompted engine (vLLM) cannot: use the transformers policy "
                "(search.policy, eval.policy)"
            )
        self.engine = engine
        self.step_end_only = step_end_only
        self.eos_id, self.delim_id, self.bksp_id = eos_id, delim_id, bksp_id
        self.temperature, self.max_new_tokens, self.logprobs = temperature, max_new_tokens, logprobs
        self.ban_ids = tuple(ban_ids)
        self.mode, self.unit, self.max_backspaces = mode, unit, max_backspaces
        self.tokens_generated = 0
        self.generated: list[list[int]] = []

    def sample(self, asks: Sequence[Ask]) -> list[list[Rollout]]:
        never = self.max_backspaces <= 0
        first = [self._request(a, a.prefix, a.n, a.seed, self.max_new_tokens, never) for a in asks]
        rows = [_Row(i, a, j) for i, a in enumerate(asks) for j in range(a.n)]
        pieces = [p for got in self.engine.generate(first) for p in got]
        for row, piece in zip(rows, pieces, strict=True):
            self._extend(row, piece)
        while todo := [r for r in rows if not r.done]:
            reqs = [self._next(r) for r in todo]
            for row, [piece] in zip(todo, self.engine.generate(reqs), strict=True):
                self._extend(row, piece)
        out: list[list[Rollout]] = [[] for _ in asks]
        for row in rows:
            self.tokens_generated += len(row.tokens)
            lp = tuple(row.logprobs) if self.logprobs else None
            out[row.index].append(Rollout(tuple(row.tokens), row.finished, lp))
        self.generated = [[len(r.tokens) for r in rs] for rs in out]
        return out

    def _request(
        self,
        ask: Ask,
        prompt: Sequence[int],
        n: int,
        seed: int,
        budget: int,
        ban_bksp: bool = False,
    ) -> Request:
        ends = sorted(self.delim_id) if isinstance(self.delim_id, frozenset) else [self.delim_id]
        stops = [self.eos_id] + (ends if ask.until == "step" else [])
        bans = self.ban_ids
        if self.bksp_id is not None:
            stops.append(self.bksp_id)
            bans += (self.bksp_id,) if ban_bksp else ()
        return Request(tuple(prompt), n, seed, budget, tuple(stops), bans, self.temperature)

    def _next(self, row: _Row) -> Request:
        """The request that continues `row` from what its next token attends to."""
        full = list(row.ask.prefix) + row.tokens
        prompt = full
        if self.mode == "erase" and self.bksp_id in row.tokens:
            n_prompt = len(row.ask.prefix)
            erased_at, _ = erase_schedule(full, n_prompt, self.unit, self.bksp_id, self.delim_id)
            prompt = [t for t, e in zip(full, erased_at, strict=True) if e == len(full)]
        spent = row.n_backspaces >= self.max_backspaces  # banned from here on
        budget = self.max_new_tokens - len(row.tokens)
        in_run = row.tokens[-1:] == [self.bksp_id]
        if (row.ban_next and not spent) or (self.mode == "erase" and in_run):
            budget = 1  # one banned token; or the token that decides what later ones attend to
        seed = derive_seed(row.ask.seed, row.sample, row.calls)
        row.calls += 1
        req = self._request(row.ask, prompt, 1, seed, budget, ban_bksp=row.ban_next or spent)
        row.ban_next = False
        return req

    def _extend(self, row: _Row, piece: Piece) -> None:
        tokens, logprobs = list(piece.tokens), list(piece.logprobs)
        last = tokens[-1] if tokens else None
        if last is not None and last == self.bksp_id and not self._may_erase(row):
            tokens.pop()  # drawn again, banned: `_next` asks for this one token
            logprobs.pop()
            row.ban_next = True
        elif last == self.eos_id:
            tokens.pop()  # end-of-sequence is not part of the rollout
            logprobs.pop()
            row.finished = row.done = True
        elif last is not None and is_step_end(last, self.delim_id) and row.ask.until == "step":
            row.finished = row.done = True
        row.tokens += tokens
        row.logprobs += logprobs
        row.n_backspaces += tokens.count(self.bksp_id) if self.bksp_id is not None else 0
        if len(row.tokens) >= self.max_new_tokens:
            row.done = True

    def _may_erase(self, row: _Row) -> bool:
        """Whether one more backspace after `row.tokens` stays in budget and out of the prefix."""
        assert self.bksp_id is not None  # only called on a backspace
        if row.n_backspaces >= self.max_backspaces:
            return False
        last_ok = row.tokens[-1:] == [self.bksp_id] or (
            bool(row.tokens) and is_step_end(row.tokens[-1], self.delim_id)
        )
        if self.step_end_only and not last_ok:
            return False
        n_prompt = len(row.ask.prefix)
        full = list(row.ask.prefix) + row.tokens
        visible = apply_backspaces(full, n_prompt, self.unit, self.bksp_id, self.delim_id)
        return pop_count(visible, n_prompt, self.unit, self.delim_id) > 0
