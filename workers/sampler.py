"""The transformers policy backend: batched sampling with a KV cache (docs/design.md §3, §10).

`TransformersPolicy.sample(asks)` expands every ask into `n` rows, sorts rows by prefix length (less
padding), and decodes them in chunks of up to `max_batch` rows: one left-padded prefill, then one
token per step for every row still going. A row that stops (end-of-sequence, or the step delimiter
for until="step") leaves the batch and the KV cache at once, so a long tail decodes only the rows
still in it; the chunk ends when every row has stopped or reached `max_new_tokens`.

Sampling noise is counter-based: row r of ask a draws its uniform at step t from
splitmix64(seed(a, r), t), and picks the token by inverse CDF. So a row's sample does not depend on
which other rows share its batch (up to float differences between batch shapes), and the same
seeds give the same rollouts on a rerun.

Deliberate backspaces: with `bksp_threshold` > 0 a row emits the backspace wherever it is allowed
and the model's own probability of it (before temperature) is at least the threshold, and never
elsewhere; with `bksp_random` > 0 (the control: an eraser that ignores the model) it emits one
wherever it is allowed with that probability, from a second counter-based stream
(`uniforms(erase_seeds(seeds), t)`). Where no backspace is emitted the token is drawn as usual with
the backspace banned, from the same uniform as without either option.

With `erase_temperature` T_e > 0, a row that has just emitted a backspace draws at T_e (from the
same uniforms) until the step it writes next ends, and at the policy's temperature elsewhere: a
greedy decoder that samples only where it has erased.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from search.backspace import ERASING, Delim, Mode, Unit, is_step_end
from search.types import Ask, Rollout
from workers.erase import RowState
from workers.hf import (
    cache_kwarg,
    check_erase_support,
    forward_cached,
    last_logits_only,
    select_rows,
)
from workers.options import check_decoding

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_ERASE_STREAM = np.uint64(0xB5AD4ECEDA1CE2A9)  # mixed into the row seeds for bksp_random


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def uniforms(row_seeds: np.ndarray, step: int) -> np.ndarray:
    """One uniform in [0, 1) per row for decoding step `step`."""
    with np.errstate(over="ignore"):
        z = splitmix64(row_seeds ^ splitmix64(np.full_like(row_seeds, step)))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def erase_seeds(row_seeds: np.ndarray) -> np.ndarray:
    """Seeds of a second stream per row, independent of the token stream of `row_seeds`."""
    return splitmix64(row_seeds ^ _ERASE_STREAM)


@dataclass(frozen=True)
class _Row:
    ask: int
    prefix: tuple[int, ...]
    until: str
    seed: int


@dataclass
class _Live:
    """The rows of a chunk still decoding, batch row k being chunk row `rows[k]`: their attention
    mask and position ids (cache columns), stop rule, sampling seeds and backspace states."""

    rows: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    stop_at_delim: torch.Tensor
    seeds: np.ndarray
    states: list[RowState] | None
    after_erase: torch.Tensor  # [rows] bool: between a backspace and the end of the next step

    def select(self, keep: torch.Tensor) -> _Live:
        """Only the batch rows `keep` (a LongTensor), in order."""
        kept = keep.tolist()
        return _Live(
            self.rows[keep],
            self.mask[keep],
            self.positions[keep],
            self.stop_at_delim[keep],
            self.seeds[kept],
            [self.states[i] for i in kept] if self.states is not None else None,
            self.after_erase[keep],
        )


class TransformersPolicy:
    """Policy over a causal LM: `sample(asks)[i]` holds `asks[i].n` rollouts.

    temperature 0 is greedy. `logprobs=True` returns the model's log-probability of each sampled
    token (before temperature and bans). `ban_ids` are never sampled.

    Backspaces (`bksp_id` given): a row may emit at most `max_backspaces` of them and never one
    that would erase into its prefix (both enforced by banning the token for that row); with
    `step_end_only`, only right after a step delimiter or another backspace. Rollouts
    keep the raw stream, backspaces included. In `erase` mode the erased tokens and finished
    backspace runs are hidden from later tokens (per row, with the same rule as training) and
    position ids continue from the surviving prefix; in `stream` mode they stay visible.

    Counters (`search.types.Policy`): `generated` the length of each rollout of the last call,
    `tokens_generated` every token decoded since the policy was built; nothing is discarded.
    """

    discards = False

    def __init__(
        self,
        model: torch.nn.Module,
        eos_id: int,
        delim_id: Delim,
        temperature: float = 1.0,
        max_new_tokens: int = 64,
        max_batch: int = 256,
        logprobs: bool = False,
        ban_ids: Sequence[int] = (),
        pad_id: int = 0,
        bksp_id: int | None = None,
        mode: Mode = "stream",
        unit: Unit = "token",
        max_backspaces: int = 16,
        step_end_only: bool = False,
        bksp_threshold: float = 0.0,
        bksp_random: float = 0.0,
        erase_temperature: float = 0.0,
    ) -> None:
        check_decoding(bksp_threshold, bksp_random, erase_temperature=erase_temperature)
        self.model = model
        self.step_end_only = step_end_only
        self.eos_id, self.delim_id, self.pad_id = eos_id, delim_id, pad_id
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.max_batch = max_batch
        self.logprobs = logprobs
        self.device = next(model.parameters()).device
        ends = sorted(delim_id) if isinstance(delim_id, frozenset) else [delim_id]
        self.step_end_ids = torch.tensor(ends, dtype=torch.long, device=self.device)
        self.vocab = int(model.get_output_embeddings().weight.shape[0])  # type: ignore[operator]
        # ids the model cannot produce (e.g. a backspace added to the tokenizer only) need no ban
        self.ban_ids = [i for i in ban_ids if i < self.vocab]
        self.bksp_id = bksp_id if bksp_id is not None and bksp_id < self.vocab else None
        self.mode, self.unit, self.max_backspaces = mode, unit, max_backspaces
        self.bksp_threshold, self.bksp_random = bksp_threshold, bksp_random
        self.erase_temperature = erase_temperature if self.bksp_id is not None else 0.0
        self.tokens_generated = 0
        self.generated: list[list[int]] = []
        self._cache_kwarg = cache_kwarg(model)
        self._last_only = last_logits_only(model)
        if mode in ERASING:
            check_erase_support(model)

    def sample(self, asks: Sequence[Ask]) -> list[list[Rollout]]:
        rows = [
            _Row(i, a.prefix, a.until, _row_seed(a.seed, j))
            for i, a in enumerate(asks)
            for j in range(a.n)
        ]
        order = sorted(range(len(rows)), key=lambda r: len(rows[r].prefix))
        out: list[Rollout | None] = [None] * len(rows)
        for start in range(0, len(order), self.max_batch):
            chunk = order[start : start + self.max_batch]
            for r, rollout in zip(chunk, self._decode([rows[r] for r in chunk]), strict=True):
                out[r] = rollout
        result: list[list[Rollout]] = [[] for _ in asks]
        for row, got in zip(rows, out, strict=True):
            assert got is not None  # every row index is in exactly one chunk
            result[row.ask].append(got)
        self.generated = [[len(r.tokens) for r in rs] for rs in result]
        return result

    @torch.inference_mode()
    def _decode(self, rows: list[_Row]) -> list[Rollout]:
        b = len(rows)
        ids, live = self._start(rows)
        out_tok = torch.full(
            (b, self.max_new_tokens), self.pad_id, dtype=torch.long, device=self.device
        )
        out_logp = torch.zeros((b, self.max_new_tokens), device=self.device)
        finished = torch.zeros(b, dtype=torch.bool, device=self.device)
        past, step_ids, n_steps = None, ids, 0
        for t in range(self.max_new_tokens):
            logits, past = forward_cached(
                self.model,
                self._cache_kwarg,
                past,
                input_ids=step_ids,
                attention_mask=live.mask,
                position_ids=live.positions,
                **self._last_only,
            )
            logits = logits[:, -1, : self.vocab].float()
            logp = torch.log_softmax(logits, dim=-1)  # the model's own, before any ban
            forced = None
            if live.states is not None:
                allowed = self._backspace_allowed(live.states)
                forced = self._forced(logp, allowed, live.seeds, t)
                # with a threshold or the control set, the backspace is theirs alone to emit
                banned = ~allowed if forced is None else torch.ones_like(allowed)
                logits[banned, self.bksp_id] = float("-inf")
            tok = self._pick(logits, live.seeds, t, live.after_erase)
            if forced is not None:
                assert self.bksp_id is not None  # rows are tracked only with a backspace id
                tok = tok.masked_fill(forced, self.bksp_id)
            if self.erase_temperature > 0:
                ends = torch.isin(tok, self.step_end_ids)
                live.after_erase = (tok == self.bksp_id) | (live.after_erase & ~ends)
            out_tok[live.rows, t] = tok
            out_logp[live.rows, t] = logp.gather(1, tok[:, None]).squeeze(1)
            n_steps = t + 1
            stops = (tok == self.eos_id) | (live.stop_at_delim & torch.isin(tok, self.step_end_ids))
            finished[live.rows[stops]] = True
            n_stopped = int(stops.sum())
            if n_stopped == len(tok):
                break
            if n_stopped:  # stopped rows leave the batch and the KV cache
                keep = (~stops).nonzero().squeeze(1)
                live, tok, past = live.select(keep), tok[keep], select_rows(past, keep)
            step_ids = tok[:, None]
            live.mask = torch.cat([live.mask, torch.ones_like(live.mask[:, :1])], dim=1)
            live.positions = live.positions[:, -1:] + 1
            if live.states is not None:
                live.positions = self._track(live.states, tok, live.mask, live.positions)
        return self._rollouts(rows, out_tok[:, :n_steps], out_logp[:, :n_steps], finished)

    def _start(self, rows: list[_Row]) -> tuple[torch.Tensor, _Live]:
        """Left-padded prefill ids (every row's last prefix token aligned) and the live rows."""
        b = len(rows)
        width = max(len(r.prefix) for r in rows)
        ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((b, width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r.prefix) :] = torch.tensor(r.prefix)
            mask[i, width - len(r.prefix) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        states = (
            [
                RowState(start, len(r.prefix), self.unit, self.delim_id, self.mode == "tried")
                for r in rows
                for start in [width - len(r.prefix)]
            ]
            if self.bksp_id is not None
            else None
        )
        live = _Live(
            rows=torch.arange(b, device=self.device),
            mask=mask,
            positions=(mask.cumsum(-1) - 1).clamp(min=0),
            stop_at_delim=torch.tensor([r.until == "step" for r in rows], device=self.device),
            seeds=np.array([r.seed for r in rows], dtype=np.uint64),
            states=states,
            after_erase=torch.zeros(b, dtype=torch.bool, device=self.device),
        )
        return ids, live

    def _backspace_allowed(self, states: list[RowState]) -> torch.Tensor:
        """`[rows]` bool: whether each live row may emit a backspace now."""
        allowed = [
            self.bksp_id not in self.ban_ids
            and st.n_backspaces < self.max_backspaces
            and st.can_backspace()
            and (
                not self.step_end_only
                or st.last == self.bksp_id
                or is_step_end(st.last, self.delim_id)
            )
            for st in states
        ]
        return torch.tensor(allowed, dtype=torch.bool, device=self.device)

    def _forced(
        self, logp: torch.Tensor, allowed: torch.Tensor, seeds: np.ndarray, t: int
    ) -> torch.Tensor | None:
        """`[rows]` bool: the rows that emit a backspace at step `t` by `bksp_threshold` (from the
        model's log-probabilities `logp`, `[rows, vocab]`) or `bksp_random`; None when neither is
        set (the backspace is drawn like any other token)."""
        if self.bksp_threshold > 0:
            return allowed & (logp[:, self.bksp_id] >= math.log(self.bksp_threshold))
        if self.bksp_random > 0:
            u = torch.from_numpy(uniforms(erase_seeds(seeds), t)).to(self.device)
            return allowed & (u < self.bksp_random)
        return None

    def _track(
        self,
        states: list[RowState],
        tok: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
    ) -> torch.Tensor:
        """Push the new tokens into each live row's backspace state; in erase mode hide what a
        finished backspace run erased and set the next position ids."""
        col = mask.shape[1] - 1
        toks = tok.tolist()
        for i, st in enumerate(states):
            hidden = st.push(col, toks[i], toks[i] == self.bksp_id)
            if self.mode in ERASING:
                if hidden:
                    mask[i, hidden] = 0
                positions[i, 0] = st.position()
        return positions

    def _pick(
        self, logits: torch.Tensor, seeds: np.ndarray, t: int, after_erase: torch.Tensor
    ) -> torch.Tensor:
        """Each row's token: greedy at temperature 0, else by inverse CDF from its uniform; rows
        `after_erase` at `erase_temperature` when that is set."""
        if self.ban_ids:
            logits[:, self.ban_ids] = float("-inf")
        if self.erase_temperature > 0 and bool(after_erase.any()):
            temps = torch.full((len(logits), 1), self.temperature, device=logits.device)
            temps[after_erase] = self.erase_temperature
            drawn = self._draw(logits / temps.clamp(min=1e-6), seeds, t)
            return torch.where(temps.squeeze(1) > 0, drawn, logits.argmax(-1))
        if self.temperature <= 0:
            return logits.argmax(-1)
        return self._draw(logits / self.temperature, seeds, t)

    @staticmethod
    def _draw(scaled: torch.Tensor, seeds: np.ndarray, t: int) -> torch.Tensor:
        """One token per row from softmax(`scaled`) by inverse CDF at the row's uniform."""
        cdf = torch.softmax(scaled, dim=-1).cumsum(-1, dtype=torch.float64)  # as .double().cumsum()
        u = torch.from_numpy(uniforms(seeds, t)).to(cdf.device)[:, None] * cdf[:, -1:]
        return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=scaled.shape[1] - 1)

    def _rollouts(
        self,
        rows: list[_Row],
        toks: torch.Tensor,
        logps: torch.Tensor,
        finished: torch.Tensor,
    ) -> list[Rollout]:
        """Rollouts from the `[rows, steps]` sampled tokens (padding after a row stopped)."""
        tok_m = toks.tolist()
        logp_m = logps.tolist() if self.logprobs else None
        fin = finished.tolist()
        out = []
        for i, row in enumerate(rows):
            seq = tok_m[i]
            end = len(seq)
            for j, t in enumerate(seq):
                if t == self.eos_id:
                    end = j  # the end-of-sequence token is not part of the rollout
                    break
                if row.until == "step" and is_step_end(t, self.delim_id):
                    end = j + 1  # the token that ends the step is
                    break
            self.tokens_generated += end
            lp = tuple(logp_m[i][:end]) if logp_m is not None else None
            out.append(Rollout(tuple(seq[:end]), bool(fin[i]), lp))
        return out


def _row_seed(seed: int, j: int) -> int:
    return int(
        splitmix64(
            np.array([seed ^ (j * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF)], dtype=np.uint64)
        )[0]
    )
