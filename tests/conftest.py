"""Shared fixtures: a task, its problems, the character tokenizer and the scripted policy."""

import pytest

from search.fake import ScriptedPolicy
from search.tasks.arithmetic import ArithmeticTask
from search.tokenizer import CharTokenizer
from search.tree import Judge, Tree


@pytest.fixture
def tok():
    return CharTokenizer()


@pytest.fixture
def add8():
    """8-digit addition: 9 steps per solution."""
    task = ArithmeticTask(op="add", digits=8)
    return task, task.problems("train", 12)


def make_tree(task, problem, tok, unit="token"):
    return Tree(Judge(task, problem, tok, tuple(tok.encode(problem.prompt)), unit))


def scripted(task, problems, tok, **kw):
    kw = {"error_rate": 0.02, "trap_rate": 0.5, "n_traps": 1, **kw}
    return ScriptedPolicy(task, problems, tok, **kw)
