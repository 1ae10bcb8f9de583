"""Multi-digit addition and multiplication with a canonical digit-level scratchpad.

The scratchpad works right to left, one digit position per step, so every step is determined by
the problem and the exact step checker is a comparison with the reference:

    347+589=?        add: 7+9+0=16 / 4+8+1=13 / 3+5+1=9 / ans 936
    347*9=?          mul: 7*9+0=63 / 4*9+6=42 / 3*9+4=31 / ans 3123
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

from search.tasks import TaskDataError, check_split, hash_split
from search.types import Problem, content_id

OPS = ("add", "mul")
_SYMBOL = {"add": "+", "mul": "*"}


def scratchpad(a: int, b: int, op: str) -> list[str]:
    """The reference steps for `a op b`: one step per digit of `a` from the right, then the answer.

    add: "{da}+{db}+{carry}={s}" (b padded with zeros on the left); mul: "{da}*{b}+{carry}={v}"
    with `b` a single digit. The carry into the next step is the result divided by ten.
    """
    digits_a = [int(d) for d in reversed(str(a))]
    digits_b = [int(d) for d in reversed(str(b).zfill(len(digits_a)))]
    steps, carry = [], 0
    for i, da in enumerate(digits_a):
        if op == "add":
            value = da + digits_b[i] + carry
            steps.append(f"{da}+{digits_b[i]}+{carry}={value}")
        else:
            value = da * b + carry
            steps.append(f"{da}*{b}+{carry}={value}")
        carry = value // 10
    steps.append(f"ans {a + b if op == 'add' else a * b}")
    return steps


class ArithmeticTask:
    """`digits`-digit addition (a + b) or multiplication by a single digit 2..9 (a * b).

    Prompts look like "347+589=?\\n". A problem is in "test" iff the sha1 of its prompt is 0 mod 10,
    in "validation" iff it is 1 mod 10, else in "train" (`search.tasks.hash_split`), so the splits
    are disjoint and stable whatever the seed; `seed` picks which problems are drawn.
    """

    name = "arithmetic"
    step_delimiter = "\n"

    def __init__(self, op: Literal["add", "mul"] = "add", digits: int = 3, seed: int = 0) -> None:
        if op not in OPS:
            raise TaskDataError(f"arithmetic op must be one of {', '.join(OPS)}, got {op!r}")
        if not isinstance(digits, int) or digits < 1:
            raise TaskDataError(f"arithmetic digits must be a positive integer, got {digits!r}")
        self.op = op
        self.digits = digits
        self.seed = seed

    @property
    def has_step_checker(self) -> bool:
        return True

    def make_problem(self, a: int, b: int) -> Problem:
        """The problem `a op b` with this task's op (no range checks: any non-negative operands)."""
        prompt = f"{a}{_SYMBOL[self.op]}{b}=?{self.step_delimiter}"
        result = a + b if self.op == "add" else a * b
        return Problem(
            id=content_id(self.name, prompt),
            prompt=prompt,
            answer=str(result),
            meta={"a": a, "b": b, "op": self.op},
        )

    def _draw(self, rng: random.Random) -> Problem:
        low, high = 10 ** (self.digits - 1), 10**self.digits - 1
        b = rng.randint(low, high) if self.op == "add" else rng.randint(2, 9)
        return self.make_problem(rng.randint(low, high), b)

    def problems(self, split: Literal["train", "validation", "test"], n: int) -> list[Problem]:
        """Exactly `n` distinct problems of `split`, the same for the same (op, digits, seed).

        Raises ValueError when `n` distinct problems cannot be found (too few digits for `n`).
        """
        check_split(split)
        if n < 0:
            raise TaskDataError(f"number of problems must be non-negative, got {n}")
        rng = random.Random(f"{self.seed}-{split}")
        found: dict[str, Problem] = {}
        max_attempts = 10_000 + 100 * n
        for _ in range(max_attempts):
            if len(found) == n:
                break
            problem = self._draw(rng)
            if hash_split(problem.prompt) == split:
                found.setdefault(problem.id, problem)
        if len(found) < n:
            raise TaskDataError(
                f"found only {len(found)} distinct {split} problems of {self.digits}-digit "
                f"{self.op} after {max_attempts} draws, {n} asked; ask for fewer or raise digits"
            )
        return list(found.values())

    def reference(self, problem: Problem) -> list[str]:
        """The canonical scratchpad of `problem` (see `scratchpad`)."""
        meta = problem.meta
        return scratchpad(meta["a"], meta["b"], meta["op"])

    def is_correct(self, problem: Problem, steps: Sequence[str]) -> bool:
        """True iff the last step is exactly "ans {answer}" (intermediate steps are not checked)."""
        return bool(steps) and steps[-1].strip() == f"ans {problem.answer}"

    def first_error(self, problem: Problem, steps: Sequence[str]) -> int | None:
        """Index of the first step that differs from the canonical scratchpad, or of the first step
        past its end; None when `steps` is a prefix of it (the reference itself included)."""
        reference = self.reference(problem)
        for i, step in enumerate(steps):
            if i >= len(reference) or step.strip() != reference[i]:
                return i
        return None

    def solution(self, problem: Problem, lines: Sequence[str]) -> list[str]:
        """The lines themselves: an arithmetic output is never a search stream."""
        return list(lines)

    def detection_step(self, problem: Problem, steps: Sequence[str]) -> None:
        """None: a wrong scratchpad step shows only in the final answer."""
        return None

    @property
    def has_wrong_steps(self) -> bool:
        return True

    def wrong_step(self, problem: Problem, before: Sequence[str], rng: random.Random) -> str:
        """A plausible wrong version of reference step `len(before)` (`before`: the reference's
        first steps), drawn uniformly from: the step with one digit of its result one off (mod 10,
        no new leading zero; "4+8+1=14"), or, where a carry comes in, the carry dropped and the
        rest done right ("4+8+0=12" for "4+8+1=13"). Only steps `first_error` flags are drawn."""
        right = self.reference(problem)[len(before)]
        head, sep, value = right.rpartition("=") if "=" in right else right.partition(" ")
        slips = []
        for i, digit in enumerate(value):
            for delta in (1, -1):
                new = value[:i] + str((int(digit) + delta) % 10) + value[i + 1 :]
                if len(new) == 1 or new[0] != "0":
                    slips.append(head + sep + new)
        operands, carry = head.rsplit("+", 1) if sep == "=" else (head, "0")
        if carry != "0":
            slips.append(f"{operands}+0={int(value) - int(carry)}")
        flagged = [s for s in slips if self.first_error(problem, [*before, s]) == len(before)]
        if not flagged:
            raise TaskDataError(f"no wrong version of step {right!r} of {problem.prompt.strip()}")
        return rng.choice(flagged)
