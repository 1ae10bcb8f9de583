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


# 2-digit addition, 400 steps (about 10 s): right about half the time at T=1.0
TINY = [
    "task.arithmetic.digits=2",
    "bootstrap.steps=400",
    "bootstrap.n_problems=2000",
    "eval.n_problems=40",
    "eval.temperatures=[1.0]",
    "eval.samples=2",
    "eval.n_tune=8",
    "bootstrap.n_layer=2",
    "bootstrap.n_embd=64",
    "bootstrap.batch_size=32",
    "bootstrap.warmup=10",
    "search.workers=0",
    "task.n_train=16",
    "search.batch_size=8",
    "search.omegaprm.budget=4",
    "train.token_warmup=5",
]


# a bootstrap of a few steps on a one-layer model, evaluated on a handful of problems
SMALL = [
    "bootstrap.n_problems=60",
    "bootstrap.steps=3",
    "bootstrap.n_layer=1",
    "bootstrap.n_embd=32",
    "bootstrap.n_positions=512",
    "eval.n_problems=4",
    "eval.temperatures=[1.0]",
    "eval.samples=1",
    "eval.n_tune=2",
    "sampling.stream_tokens=40",
]


def tiny_cfg(out, *extra):
    from pipeline.config import load_config

    return load_config("arith-tiny", [f"run.out_dir={out}", *TINY, *extra])


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A bootstrap model that is right about half the time, and its evaluation."""
    from pipeline.stages import bootstrap

    out = tmp_path_factory.mktemp("boot")
    return out, bootstrap.main(tiny_cfg(out))


@pytest.fixture(scope="session")
def searched(trained):
    """The trained fixture's run directory after a search (token unit)."""
    from pipeline.stages import search as search_stage

    out, _ = trained
    search_stage.main(tiny_cfg(out))
    return out


def read_curves(stage_dir):
    """The scalars of the TensorBoard event files in `stage_dir`'s tb/ as TensorBoard shows them
    (what a resumed run's purge step hides left out): tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(stage_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags}


CURVES = {"train/loss", "train/learning_rate", "train/grad_norm"}  # every training stage's


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def listening_off_loopback(pids):
    """The TCP listening sockets of the processes `pids` that are not on loopback, as
    (pid, address, port): what another machine could connect to."""
    import psutil

    return [
        (c.pid, c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids and c.laddr.ip not in LOOPBACK
    ]


def one_line(err):
    """Whether the CLI's stderr `err` says what failed in one line of its own and no traceback
    (progress bars drawn before it aside)."""
    said = [line for line in err.splitlines() if line.startswith("halluc ")]
    return len(said) == 1 and "Traceback" not in err
