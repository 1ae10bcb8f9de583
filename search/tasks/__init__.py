"""Tasks: arithmetic and countdown (generated, exact step checkers) and JSONL data (GSM8K-style).

`make_task(name, **options)` builds one by name; see `search.types.Task` for the contract.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from search.errors import HallucError

if TYPE_CHECKING:
    from search.types import Task

SPLITS = ("train", "validation", "test")


class TaskDataError(HallucError, ValueError):
    """Task data that cannot be used as it is; the message names the file, the line and the fix."""


class TaskCapabilityError(HallucError, NotImplementedError):
    """A task asked for what it declares it cannot do (`has_step_checker` or `has_wrong_steps`
    False); the message names the task and what to use instead."""


def hash_split(text: str) -> Literal["train", "validation", "test"]:
    """The split of a problem whose split is decided by its text, stably: "test" for one in ten,
    "validation" for another one in ten (carved out of what was the training bucket, so the test
    problems are those of every earlier run), "train" for the rest."""
    bucket = int(hashlib.sha1(text.encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def check_split(split: str) -> None:
    """Raise a TaskDataError naming the allowed splits unless `split` is one of them."""
    if split not in SPLITS:
        raise TaskDataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


def make_task(name: str, **options: Any) -> Task:
    """The task called `name` ("arithmetic", "countdown" or "jsonl"), built with `options`.

    Raises TaskDataError listing the allowed names for an unknown name, and the accepted options for
    an option the task does not take.
    """
    from search.tasks.arithmetic import ArithmeticTask
    from search.tasks.countdown import CountdownTask
    from search.tasks.jsonl import JsonlTask

    tasks: dict[str, Callable[..., Task]] = {  # typed so that mypy checks each is a Task
        "arithmetic": ArithmeticTask,
        "countdown": CountdownTask,
        "jsonl": JsonlTask,
    }
    if name not in tasks:
        raise TaskDataError(f"unknown task {name!r}; choose one of: {', '.join(sorted(tasks))}")
    cls = tasks[name]
    signature = inspect.signature(cls)
    try:
        signature.bind(**options)
    except TypeError as err:
        accepted = ", ".join(signature.parameters)
        raise TaskDataError(f"task {name!r}: {err}; it accepts the options: {accepted}") from None
    return cls(**options)
