"""Backspace-guided search at inference (Self-Backtracking style; issue 14, lever 4).

A row is decoded one step at a time. Before each step after the first, the model decides whether
to erase the step it just wrote: its next-token distribution on what is visible is read once, and
the backspace is emitted where it would be sampled there (temperature T: with its probability
under T, from a counter-based uniform; greedy: where it is the most likely token) or, with
`bksp_threshold` > 0, where its probability before temperature reaches the threshold. An erase
removes the last step (one backspace in the step unit, one per token in the token unit); then
`m` candidates for the step are drawn (at T, or at T=1 when greedy) and the one the model finds
most likely (mean log-probability per token) is kept, a candidate equal to the erased step only
when every candidate is. Where the model does not erase, the step is drawn as usual with the
backspace banned, which is exactly ordinary sampling with backspaces at step ends.

With a `valuer` and `value_drop` d > 0 the erase rule is the value model's instead of the model's
own backspace (issue 16, item 4b: the reference detector): the last step is erased where its
value fell by more than d, from the visible prefix before the step to the one after it (before
the first step: from the prompt); the redraw is the same. The model's own backspace probability
is then not read at all. With `erase_logprob` < 0 the erase rule is the step's own likelihood
(issue 27, item 2): the last step is erased where the mean log-probability of its tokens, as the
model gave them when they were drawn (before temperature), is below `erase_logprob`. The redraw
is a tabu: a candidate equal to the erased step is kept only when every candidate is one. With
`bksp_random` p > 0 the erase rule is a coin: the last step is erased with probability p
(counter-based uniforms, so a rerun erases the same steps), whatever it is: the control that
fires at a detector's rate without its information, with the same tabu redraw.

With `at_end` (issue 27, item 3: the visible dead end as the trigger), a step that ends the
stream (end-of-sequence) is not final yet: the erase rule is read once more where the
end-of-sequence was drawn, after the step's last token, as a model trained on dead-end retries
(`bootstrap.retry_placement=at_detection`) has its backspace there; where it fires, the last step
is erased (step unit: the part-written step) and redrawn with the tabu, so each retry tries
another move; where it does not, the stream ends.

Rollouts keep the raw stream (erased step, backspaces, chosen step), so evaluation judges them
like any other; `generated[i][j]` counts every token the search drew for sample j of ask i,
the candidates it threw away included (each up to the row's token budget), which is what
best-of-N is compared with. At most
`max_backspaces` erases per row, never into the prompt; the stream stops at end-of-sequence or
at `max_new_tokens` tokens (unfinished).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from search.backspace import Delim, Unit, apply_backspaces, is_step_end, pop_count
from search.errors import ConfigError
from search.types import Ask, Rollout, Valuer
from workers.options import check_decoding
from workers.sampler import TransformersPolicy, _row_seed, erase_seeds, uniforms


@dataclass
class _Row:
    prompt: tuple[int, ...]
    seed: int
    stream: list[int] = field(default_factory=list)  # generated: steps and backspaces
    extra: int = 0  # tokens of candidates drawn and thrown away
    erased: tuple[int, ...] = ()  # the step the last backspace erased
    last_lp: float = 0.0  # the mean token log-probability of the last step drawn
    erases: int = 0
    steps: int = 0
    ended: bool = False  # its last step ended with end-of-sequence, not yet final (`at_end`)
    done: bool = False
    finished: bool = False


class GuidedPolicy:
    """`sample(asks)` like any policy over the causal LM `model`, with the erase-and-redraw rule
    above (the value model's with `valuer` and `value_drop` > 0). `ban_ids` are never sampled
    (the backspace is emitted only by the rule). Its counters (`search.types.Policy`) count the
    candidates it throws away too: `discards` is True."""

    discards = True

    def __init__(
        self,
        model: torch.nn.Module,
        eos_id: int,
        delim_id: Delim,
        bksp_id: int,
        unit: Unit,
        m: int,
        temperature: float,
        max_new_tokens: int,
        max_batch: int = 256,
        ban_ids: Sequence[int] = (),
        pad_id: int = 0,
        max_backspaces: int = 4,
        bksp_threshold: float = 0.0,
        valuer: Valuer | None = None,
        value_drop: float = 0.0,
        erase_logprob: float = 0.0,
        at_end: bool = False,
        bksp_random: float = 0.0,
    ) -> None:
        if m < 1:  # 0 is "off" to make_policy, which then builds no guided policy
            raise ConfigError(f"bksp_search: m must be at least 1 candidate, got {m}")
        check_decoding(
            bksp_threshold,
            bksp_random,
            m,
            value_drop,
            value_model=valuer is not None,
            erase_logprob=erase_logprob,
        )
        banned = sorted({*ban_ids, bksp_id})

        def steps(temperature: float) -> TransformersPolicy:
            return TransformersPolicy(
                model,
                eos_id,
                delim_id,
                temperature,
                max_new_tokens,
                max_batch,
                logprobs=True,
                ban_ids=banned,
                pad_id=pad_id,
            )

        self.step, self.candidates = steps(temperature), steps(temperature or 1.0)
        self.model, self.others = model, [i for i in self.step.ban_ids if i != bksp_id]
        self.bksp_id, self.delim_id, self.unit = bksp_id, delim_id, unit
        self.m, self.temperature = m, temperature
        self.max_new_tokens, self.max_backspaces = max_new_tokens, max_backspaces
        self.bksp_threshold, self.erase_logprob = bksp_threshold, erase_logprob
        self.valuer, self.value_drop = valuer, value_drop
        self.at_end, self.bksp_random = at_end, bksp_random
        self._values: dict[tuple[int, ...], float] = {}  # per `sample` call: prefix -> value
        self.generated: list[list[int]] = []
        self.tokens_generated = 0

    def sample(self, asks: Sequence[Ask]) -> list[list[Rollout]]:
        rows = [_Row(a.prefix, _row_seed(a.seed, j)) for a in asks for j in range(a.n)]
        self._values = {}
        while live := [r for r in rows if not r.done]:
            erase = self._erase(live)
            for r, e in zip(live, erase, strict=True):
                if r.ended and not e:  # the end stands
                    r.done = r.finished = True
            plain = [(r, False) for r, e in zip(live, erase, strict=True) if not e and not r.done]
            redo = [(r, True) for r, e in zip(live, erase, strict=True) if e]
            for r, _ in redo:
                r.ended = False
                self._backspace(r)
            for policy, group, n in ((self.step, plain, 1), (self.candidates, redo, self.m)):
                if not group:
                    continue
                # no row needs more than its room (a longer draw is cut at the row's end)
                policy.max_new_tokens = max(self.max_new_tokens - len(r.stream) for r, _ in group)
                step_asks = [
                    Ask(self._visible(r), n, "step", _row_seed(r.seed, 1 + r.steps))
                    for r, _ in group
                ]
                got = policy.sample(step_asks)
                for (r, erased), drawn in zip(group, got, strict=True):
                    self._extend(r, drawn, erased)
        out: list[list[Rollout]] = [[] for _ in asks]
        self.generated = [[] for _ in asks]
        k = 0
        for i, a in enumerate(asks):
            for _ in range(a.n):
                r = rows[k]
                out[i].append(Rollout(tuple(r.stream), r.finished))
                self.generated[i].append(len(r.stream) + r.extra)
                self.tokens_generated += len(r.stream) + r.extra
                k += 1
        return out

    def _visible(self, r: _Row) -> tuple[int, ...]:
        ids = [*r.prompt, *r.stream]
        return tuple(apply_backspaces(ids, len(r.prompt), self.unit, self.bksp_id, self.delim_id))

    def _backspace(self, r: _Row) -> None:
        """Erase the last visible step of row `r`: its tokens go on the stream's record as
        backspaces (one per step, or one per token)."""
        visible = self._visible(r)
        n = pop_count(visible, len(r.prompt), "step", self.delim_id)
        r.erased = visible[len(visible) - n :]
        r.stream += [self.bksp_id] * (1 if self.unit == "step" else n)
        r.erases += 1

    def _extend(self, r: _Row, drawn: list[Rollout], erased: bool) -> None:
        """Append the kept step of `drawn` to row `r` and end the row where it should end."""
        pick = drawn[0]
        room = self.max_new_tokens - len(r.stream)
        if erased:
            fresh = [d for d in drawn if d.tokens != r.erased] or drawn
            pick = max(fresh, key=_mean_logprob)
            # the candidates thrown away, each up to where the row's token budget ends
            r.extra += sum(min(len(d.tokens), room) for d in drawn) - min(len(pick.tokens), room)
        kept = pick.tokens[:room]
        lp = (pick.logprobs or ())[: len(kept)]
        r.last_lp = sum(lp) / len(lp) if lp else 0.0
        r.stream += kept
        r.steps += 1
        if len(pick.tokens) > room or not pick.finished:
            r.done = True  # out of tokens: unfinished
        elif not kept or not is_step_end(kept[-1], self.delim_id):
            r.ended = self.at_end and bool(kept)  # end-of-sequence: final, or erasable once
            r.done = r.finished = not r.ended
        elif len(r.stream) >= self.max_new_tokens:
            r.done = True

    @torch.inference_mode()
    def _erase(self, live: list[_Row]) -> list[bool]:
        """Per live row: whether the erase rule (the model's own, the value model's, the step's
        likelihood or the coin) erases its last step now."""
        room = self.max_new_tokens
        idx = [
            i
            for i, r in enumerate(live)
            if r.steps > 0 and r.erases < self.max_backspaces and len(r.stream) < room
        ]
        out = [False] * len(live)
        if not idx:
            return out
        if self.erase_logprob < 0:
            decided = [live[i].last_lp < self.erase_logprob for i in idx]
        elif self.value_drop > 0:
            rows = [live[i] for i in idx]
            drops = self._drops(rows, [self._visible(r) for r in rows])
            decided = [d > self.value_drop for d in drops]
        else:
            decided = self._own_or_coin([live[i] for i in idx])
        for i, d in zip(idx, decided, strict=True):
            out[i] = d
        return out

    def _own_or_coin(self, rows: list[_Row]) -> list[bool]:
        """The model's own backspace (sampled at T from a counter-based uniform, greedy where it
        is the likeliest token, or where its probability reaches `bksp_threshold`), or with
        `bksp_random` the coin drawn from the same uniforms."""
        seeds = np.array([_row_seed(r.seed, 10_000 + r.steps) for r in rows], np.uint64)
        u = uniforms(erase_seeds(seeds), 0)
        if self.bksp_random > 0:
            return [bool(x < self.bksp_random) for x in u[: len(rows)]]
        out = []
        for k, (lp, lp_t, top) in enumerate(self._bksp_logprob([self._visible(r) for r in rows])):
            if self.bksp_threshold > 0:
                out.append(lp >= math.log(self.bksp_threshold))
            elif self.temperature <= 0:
                out.append(bool(top))
            else:
                out.append(bool(u[k] < math.exp(lp_t)))
        return out

    def _drops(self, rows: list[_Row], seqs: list[tuple[int, ...]]) -> list[float]:
        """Per row: the value of its visible prefix without its last step minus the value with
        it (each prefix valued once per `sample` call)."""
        before = [
            q[: len(q) - pop_count(q, len(r.prompt), "step", self.delim_id)]
            for r, q in zip(rows, seqs, strict=True)
        ]
        todo = list(dict.fromkeys(q for q in [*before, *seqs] if q not in self._values))
        if todo:
            assert self.valuer is not None  # checked at construction
            self._values.update(zip(todo, self.valuer.values(todo), strict=True))
        return [self._values[b] - self._values[a] for b, a in zip(before, seqs, strict=True)]

    def _bksp_logprob(self, seqs: list[tuple[int, ...]]) -> list[tuple[float, float, bool]]:
        """Per sequence: the backspace's log-probability next, the same under the temperature,
        and whether it is the most likely token (left-padded batches, plain attention: nothing
        erased is in what is visible)."""
        out = []
        dev, batch = self.step.device, self.step.max_batch
        for s in range(0, len(seqs), batch):
            chunk = seqs[s : s + batch]
            width = max(len(q) for q in chunk)
            ids = torch.full((len(chunk), width), self.step.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, q in enumerate(chunk):
                ids[i, width - len(q) :] = torch.tensor(q)
                mask[i, width - len(q) :] = 1
            ids, mask = ids.to(dev), mask.to(dev)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
            logits = logits[:, -1, : self.step.vocab].float()
            if self.others:
                logits[:, self.others] = float("-inf")
            lp = torch.log_softmax(logits, -1)[:, self.bksp_id]
            t = self.temperature if self.temperature > 0 else 1.0
            lp_t = torch.log_softmax(logits / t, -1)[:, self.bksp_id]
            top = logits.argmax(-1) == self.bksp_id
            out += list(zip(lp.tolist(), lp_t.tolist(), top.tolist(), strict=True))
        return out


def _mean_logprob(r: Rollout) -> float:
    lp = r.logprobs or ()
    return sum(lp) / len(lp) if lp else float("-inf")
