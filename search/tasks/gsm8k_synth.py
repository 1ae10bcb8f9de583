"""GSM8K-format word problems, generated: templated questions whose answers are reasoning lines
with calculator annotations (`<<6*4=24>>`) and a final "#### N" line, as GSM8K writes them. For
running the `jsonl` task (and the `gsm8k` preset) end to end where the real data cannot be
downloaded; each step ends with punctuation and the delimiter, which byte-level BPE tokenizers
merge (`.\\n`)."""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ["Ann", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gia", "Hal", "Ivy", "Jon"]
ITEMS = ["apples", "books", "cards", "pens", "shells", "stamps", "toys", "coins"]


def _one(rng: random.Random) -> dict[str, str]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 9)
    kind = rng.randrange(4)
    if kind == 0:
        q = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have?"
        steps = [f"{name} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {item}."]
        answer = a + b
    elif kind == 1:
        q = f"{name} buys {a} boxes of {b} {item} and gives away {c}. How many are left?"
        steps = [
            f"{name} buys {a} * {b} = <<{a}*{b}={a * b}>>{a * b} {item}.",
            f"After giving {c} away, {a * b} - {c} = <<{a * b}-{c}={a * b - c}>>{a * b - c} left.",
        ]
        answer = a * b - c
    elif kind == 2:
        q = f"{name} reads {a} pages a day for {b} days, then {c} more pages. How many pages?"
        steps = [
            f"In {b} days {name} reads {a} * {b} = <<{a}*{b}={a * b}>>{a * b} pages.",
            f"With {c} more, {a * b} + {c} = <<{a * b}+{c}={a * b + c}>>{a * b + c} pages.",
        ]
        answer = a * b + c
    else:
        total = a * b
        q = f"{name} shares {total} {item} equally among {b} friends. How many does each get?"
        steps = [f"Each friend gets {total} / {b} = <<{total}/{b}={a}>>{a} {item}."]
        answer = a
    return {"question": q, "answer": "\n".join([*steps, f"#### {answer}"])}


def generate(n: int, seed: int = 0) -> list[dict[str, str]]:
    """`n` distinct problems (question, answer) drawn with `seed`."""
    rng = random.Random(seed)
    out: dict[str, dict[str, str]] = {}
    while len(out) < n:
        row = _one(rng)
        out.setdefault(row["question"], row)
    return list(out.values())


def write_jsonl(path: Path, n: int, seed: int = 0) -> Path:
    """Write `generate(n, seed)` to `path` as JSONL (one object per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in generate(n, seed)))
    return path
