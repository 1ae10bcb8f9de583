"""Question/answer data (GSM8K, MATH-style) from JSONL files or a saved Hugging Face dataset.

Answers look like GSM8K's: reasoning lines, then "#### 1,234". Only the final answer is checked
(numerically when both sides are numbers), so this task has no exact step checker.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from search.tasks import SPLITS, TaskCapabilityError, TaskDataError, check_split, hash_split
from search.types import Problem, content_id

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_TOLERANCE = 1e-6
# (question, answer text, where it came from: "file, line 3")
Record = tuple[str, str, str]


def extract_answer(text: str) -> str | None:
    """The text after the last "####", stripped; None when there is no "####"."""
    if "####" not in text:
        return None
    return text.rsplit("####", 1)[1].strip()


def normalize_number(s: str) -> float | None:
    """`s` as a number once stripped of spaces, commas, "$" and a trailing "."; None otherwise."""
    cleaned = s.strip().replace(",", "").replace("$", "").removesuffix(".")
    if not _NUMBER.fullmatch(cleaned):
        return None
    return float(cleaned)


def answers_match(predicted: str, answer: str) -> bool:
    """Equal within an absolute 1e-6 when both are numbers, else equal as stripped strings."""
    a, b = normalize_number(predicted), normalize_number(answer)
    if a is not None and b is not None:
        return math.isclose(a, b, rel_tol=0.0, abs_tol=_TOLERANCE)
    return predicted.strip() == answer.strip()


def _check_record(obj: Any, fields: tuple[str, str], where: str) -> Record:
    """The (question, answer) of one row, or TaskDataError saying what is wrong with it."""
    if not isinstance(obj, dict):
        raise TaskDataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    values = []
    for name in fields:
        if name not in obj:
            raise TaskDataError(
                f"{where}: missing field {name!r} (has {sorted(obj)}); set question_field / "
                "answer_field to the names your data uses"
            )
        if not isinstance(obj[name], str):
            raise TaskDataError(
                f"{where}: field {name!r} must be a string, got {type(obj[name]).__name__}"
            )
        values.append(obj[name])
    return values[0], values[1], where


def _read_jsonl(path: Path, fields: tuple[str, str]) -> list[Record]:
    """Every non-blank line of `path`, checked; TaskDataError names the file and line."""
    records = []
    with path.open("rb") as f:  # bytes: a line that is not UTF-8 is named like any other error
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}, line {lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise TaskDataError(
                    f"{where}: not UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1}); "
                    "save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise TaskDataError(f"{where}: not valid JSON ({err.msg})") from None
            records.append(_check_record(obj, fields, where))
    return records


def _read_rows(rows: Iterable[Any], fields: tuple[str, str], where: str) -> list[Record]:
    return [_check_record(row, fields, f"{where}, row {k}") for k, row in enumerate(rows, 1)]


def _to_problem(record: Record) -> Problem:
    question, answer_text, where = record
    if not question.strip():
        raise TaskDataError(f"{where}: the question is empty")
    answer = extract_answer(answer_text)
    if answer is None:
        if normalize_number(answer_text) is None:
            raise TaskDataError(
                f"{where}: the answer has no '#### <final answer>' line and is not a plain number"
            )
        answer = answer_text.strip()
    reasoning = answer_text.rsplit("####", 1)[0] if "####" in answer_text else ""
    steps = [line.strip() for line in reasoning.splitlines() if line.strip()]
    prompt = question.strip() + "\n"
    return Problem(
        id=content_id("jsonl", prompt, answer),
        prompt=prompt,
        answer=answer,
        meta={"solution": [*steps, f"#### {answer}"]},
    )


def _unique(problems: Iterable[Problem], exclude: set[str]) -> list[Problem]:
    """`problems` in order without repeated ids or ids in `exclude`."""
    seen = set(exclude)
    kept = []
    for problem in problems:
        if problem.id not in seen:
            seen.add(problem.id)
            kept.append(problem)
    return kept


class JsonlTask:
    """Problems from `path`: a .jsonl file (split 1:9 test:train by a hash of the question), a
    directory with train.jsonl / test.jsonl, or a `save_to_disk` Hugging Face Dataset (hash split)
    or DatasetDict. `split_field_map` renames splits, e.g. {"test": "validation"} reads
    validation.jsonl or the "validation" split for "test". Data is read on first use.
    """

    name = "jsonl"
    step_delimiter = "\n"

    def __init__(
        self,
        path: str,
        question_field: str = "question",
        answer_field: str = "answer",
        split_field_map: dict[str, str] | None = None,
    ) -> None:
        unknown = set(split_field_map or {}) - set(SPLITS)
        if unknown:
            raise TaskDataError(
                f"split_field_map keys must be among {SPLITS}, got {sorted(unknown)}"
            )
        self.path = Path(path)
        self.fields = (question_field, answer_field)
        chosen = split_field_map or {}
        self.source_splits = {split: chosen.get(split, split) for split in SPLITS}
        if self.source_splits["validation"] in {chosen.get(s) for s in ("train", "test")}:
            del self.source_splits["validation"]  # that source is another split's: carve instead
        self._splits: dict[str, list[Problem]] | None = None

    @property
    def has_step_checker(self) -> bool:
        return False

    def _load_records(self) -> dict[str, list[Record]] | list[Record]:
        """Records per split, or one list to split by hash."""
        path = self.path
        if not path.exists():
            raise TaskDataError(
                f"jsonl task: {path} does not exist; give a JSONL file or a saved dataset "
                "directory (task.jsonl.path)"
            )
        if path.is_file():
            if path.suffix != ".jsonl":
                raise TaskDataError(f"jsonl task: {path} is not a .jsonl file")
            return _read_jsonl(path, self.fields)
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return self._load_hf(path)
        files = {s: path / f"{name}.jsonl" for s, name in self.source_splits.items()}
        if not any(f.exists() for f in files.values()):
            expected = " or ".join(f.name for f in files.values())
            raise TaskDataError(f"jsonl task: {path} holds neither {expected} nor a saved dataset")
        return {s: _read_jsonl(f, self.fields) if f.exists() else [] for s, f in files.items()}

    def _load_hf(self, path: Path) -> dict[str, list[Record]] | list[Record]:
        # Imported here: heavy, and only this data source needs it.
        from datasets import DatasetDict, load_from_disk

        data = load_from_disk(str(path))
        if isinstance(data, DatasetDict):
            return {
                s: _read_rows(data[name], self.fields, f"{path} [{name}]") if name in data else []
                for s, name in self.source_splits.items()
            }
        return _read_rows(data, self.fields, str(path))

    def _load(self) -> dict[str, list[Problem]]:
        if self._splits is None:
            records = self._load_records()
            if isinstance(records, list):
                problems = [_to_problem(r) for r in records]
                by_split = {s: [p for p in problems if hash_split(p.prompt) == s] for s in SPLITS}
            else:
                by_split = {s: [_to_problem(r) for r in rs] for s, rs in records.items()}
            pool = by_split["train"]
            if not by_split.get("validation"):  # none given: carved out of train by hash
                by_split["validation"] = [p for p in pool if hash_split(p.prompt) == "validation"]
                pool = [p for p in pool if hash_split(p.prompt) != "validation"]
            test = _unique(by_split["test"], set())
            validation = _unique(by_split["validation"], {p.id for p in test})
            train = _unique(pool, {p.id for p in (*test, *validation)})
            if len(train) < len(pool):
                log.info(
                    "%s: dropped %d repeated, test or validation train problems",
                    self.path,
                    len(pool) - len(train),
                )
            self._splits = {"train": train, "validation": validation, "test": test}
        return self._splits

    def problems(self, split: Literal["train", "validation", "test"], n: int) -> list[Problem]:
        """The first `n` problems of `split` in file order (all of them when n <= 0)."""
        check_split(split)
        problems = self._load()[split]
        if not problems:
            raise TaskDataError(f"jsonl task: {self.path} has no {split} problems")
        return list(problems) if n <= 0 else problems[:n]

    def reference(self, problem: Problem) -> list[str]:
        """The reasoning lines of the data's answer, then "#### {answer}"."""
        return list(problem.meta["solution"])

    def is_correct(self, problem: Problem, steps: Sequence[str]) -> bool:
        """True iff the last step holds "#### X" with X matching the answer (see answers_match)."""
        predicted = extract_answer(steps[-1]) if steps else None
        return predicted is not None and answers_match(predicted, problem.answer)

    def solution(self, problem: Problem, lines: Sequence[str]) -> list[str]:
        """The lines themselves: a JSONL answer is never a search stream."""
        return list(lines)

    def first_error(self, problem: Problem, steps: Sequence[str]) -> int | None:
        raise TaskCapabilityError(
            "the jsonl task has no exact step checker (has_step_checker is False); "
            "use Monte Carlo labels or a task with one (arithmetic, countdown)"
        )

    def detection_step(self, problem: Problem, steps: Sequence[str]) -> None:
        """None: nothing but the final answer is checked."""
        return None

    @property
    def has_wrong_steps(self) -> bool:
        return False

    def wrong_step(self, problem: Problem, before: Sequence[str], rng: random.Random) -> str:
        raise TaskCapabilityError(
            "the jsonl task cannot make wrong steps (has_wrong_steps is False): it has no step "
            "checker to flag them; set bootstrap.retry_rate=0"
        )
