"""A scripted policy that makes known mistakes, for tests and benchmarks (docs/design.md §12).

It knows each problem's reference solution. From a prefix still on the reference path it writes
the next reference step, except that step i goes wrong with probability `p[i]` (a digit changed);
once off the path it never recovers: every later step is a perturbed reference step, so the final
answer is wrong. Each problem has `n_traps` steps with the higher `trap_rate`, which makes failing
branches with 0 < mc < 1 at known places. With `fix_rate` > 0 it sometimes notices a wrong step,
erases it with backspaces and writes the right one (what a trained model should do).

Every ask is answered from `random.Random(ask.seed)` alone, so the answer does not depend on what
else is in the batch: batched and one-at-a-time search give the same trees.

`ScriptedValuer` is the value model that goes with it: the true value of a prefix under the
script, with noise of a known size, so value-guided search can be tested against a value model
of known quality.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from search.backspace import Unit
from search.errors import ParamError, check_params
from search.tree import derive_seed, split_steps
from search.types import Ask, Problem, Rollout, Task, Tokenizer


@dataclass(frozen=True)
class FakeParams:
    """The scripted policy's mistakes: each step is wrong with `error_rate`, except `n_traps`
    trap steps per problem, wrong with `trap_rate`; a wrong step is erased and fixed with
    `fix_rate` (a policy that already backtracks)."""

    error_rate: float = 0.05
    trap_rate: float = 0.5
    n_traps: int = 1
    fix_rate: float = 0.0

    def __post_init__(self) -> None:
        check_params(self, (), ("error_rate", "trap_rate", "fix_rate"))
        if self.n_traps < 0:
            raise ParamError(f"n_traps: must be >= 0, got {self.n_traps}")


@dataclass(frozen=True)
class _Script:
    reference: list[str]
    p_error: list[float]


class ScriptedPolicy:
    """`sample(asks)`: the rollouts of every ask, for problems given at construction. Its
    counters (`search.types.Policy`): `generated` each rollout's length; `tokens_generated`
    stays 0, since no model decodes them (the search stats count no compute for it)."""

    discards = False
    tokens_generated = 0

    def __init__(
        self,
        task: Task,
        problems: Sequence[Problem],
        tokenizer: Tokenizer,
        error_rate: float = 0.05,
        trap_rate: float = 0.5,
        n_traps: int = 1,
        fix_rate: float = 0.0,
        unit: Unit = "token",
        max_new_tokens: int = 512,
        seed: int = 0,
    ) -> None:
        self.tok = tokenizer
        self.fix_rate = fix_rate
        self.unit = unit
        self.max_new_tokens = max_new_tokens
        self._scripts: dict[tuple[int, ...], _Script] = {}
        for problem in problems:
            ref = task.reference(problem)
            rng = random.Random(derive_seed(seed, problem.id))
            traps = set(rng.sample(range(len(ref)), min(n_traps, len(ref))))
            p = [trap_rate if i in traps else error_rate for i in range(len(ref))]
            self._scripts[tuple(tokenizer.encode_prompt(problem.prompt))] = _Script(ref, p)
        self._prompt_lens = sorted({len(k) for k in self._scripts})
        self.generated: list[list[int]] = []

    def true_p_error(self, prompt: str) -> list[float]:
        """The per-step error probabilities scripted for a prompt (for tests and benchmarks)."""
        return self._scripts[tuple(self.tok.encode(prompt))].p_error

    def sample(self, asks: Sequence[Ask]) -> list[list[Rollout]]:
        out = [self._answer(ask) for ask in asks]
        self.generated = [[len(r.tokens) for r in rs] for rs in out]
        return out

    def true_value(self, prefix: tuple[int, ...]) -> float:
        """The probability that a rollout from `prefix` (prompt and whole steps) ends correct:
        the product of 1 - p over the reference steps still to write when every step so far is
        the reference's, else 0 (with `fix_rate` 0; a fix would lift it)."""
        script, gen = self._lookup(prefix)
        steps = [self.tok.decode(s).rstrip("\n") for s in split_steps(gen, self.tok.step_ends)]
        if steps != script.reference[: len(steps)]:
            return 0.0
        value = 1.0
        for p in script.p_error[len(steps) :]:
            value *= 1 - p
        return value

    def _answer(self, ask: Ask) -> list[Rollout]:
        script, gen = self._lookup(ask.prefix)
        steps = [self.tok.decode(s).rstrip("\n") for s in split_steps(gen, self.tok.step_ends)]
        on_path = steps == script.reference[: len(steps)]
        rng = random.Random(ask.seed)
        return [self._rollout(script, len(steps), on_path, ask.until, rng) for _ in range(ask.n)]

    def _lookup(self, prefix: tuple[int, ...]) -> tuple[_Script, tuple[int, ...]]:
        for n in self._prompt_lens:
            script = self._scripts.get(prefix[:n])
            if script is not None:
                return script, prefix[n:]
        raise KeyError("the scripted policy was not given the problem of this prefix")

    def _rollout(
        self, s: _Script, start: int, on_path: bool, until: str, rng: random.Random
    ) -> Rollout:
        end = len(s.reference) if until == "end" else min(start + 1, len(s.reference))
        ids: list[int] = []
        for i in range(start, end):
            step = s.reference[i]
            last = i == len(s.reference) - 1
            if on_path and rng.random() < s.p_error[i]:
                wrong = _perturb(step, rng)
                if rng.random() < self.fix_rate:
                    ids += self._erased(wrong, last)
                else:
                    on_path, step = False, wrong
            elif not on_path:
                step = _perturb(step, rng)
            ids += self.tok.encode(step if last else step + "\n")
        finished = len(ids) <= self.max_new_tokens
        return Rollout(tuple(ids[: self.max_new_tokens]), finished)

    def _erased(self, wrong: str, last: bool) -> list[int]:
        written = self.tok.encode(wrong if last else wrong + "\n")
        n = len(written) if self.unit == "token" else 1
        return written + [self.tok.bksp_id] * n


def _perturb(step: str, rng: random.Random) -> str:
    """The step with one digit changed (or a wrong word when it has no digit)."""
    digits = [i for i, ch in enumerate(step) if ch.isdigit()]
    if not digits:
        return step + " wrong"
    i = rng.choice(digits)
    new = rng.choice([d for d in "0123456789" if d != step[i]])
    return step[:i] + new + step[i + 1 :]


class ScriptedValuer:
    """`values(prefixes)`: the `policy`'s true value of each prefix plus Gaussian noise of standard
    deviation `noise`, clipped to [0, 1], drawn from (seed, prefix) alone (the same prefix always
    gets the same value, whatever else is in the batch). `calls` counts the batches."""

    def __init__(self, policy: ScriptedPolicy, noise: float = 0.0, seed: int = 0) -> None:
        self.policy, self.noise, self.seed = policy, noise, seed
        self.calls = 0

    def values(self, prefixes: Sequence[tuple[int, ...]]) -> list[float]:
        self.calls += 1
        out = []
        for prefix in prefixes:
            value = self.policy.true_value(prefix)
            if self.noise:
                value += random.Random(derive_seed(self.seed, *prefix)).gauss(0.0, self.noise)
            out.append(min(1.0, max(0.0, value)))
        return out
