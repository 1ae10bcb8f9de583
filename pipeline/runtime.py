"""What every stage does before it works: refuse a directory made with another config, save its
own config, set its math threads from the config, and record the environment it ran in.

Bit-for-bit reproducibility holds for the same machine kind (CPU flags), the same library versions
(`constraints-cpu.txt`) and the same thread counts; `environment.json` in the run directory records
all three, and the git commit, for every invocation that differed from the one before.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import os
import platform
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.config import Config, check_resumable, save_config
from pipeline.files import read_json, write_json
from pipeline.layout import config_of, done_of
from search.errors import HallucError

LIBRARIES = (
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "datasets",
    "pyarrow",
    "numpy",
    "ray",
    "vllm",
)


def stage_config(cfg: Config, directory: Path, only: tuple[str, ...] = ()) -> None:
    """Refuse `directory` if it holds work made with another config (in the sections `only` that
    shape it, when given; naming the keys that differ), then write `cfg` as its config.yaml."""
    check_resumable(cfg, config_of(directory), only)
    directory.mkdir(parents=True, exist_ok=True)
    save_config(cfg, config_of(directory))


def finished(directory: Path, outputs: list[Path]) -> bool:
    """Whether the stage in `directory` is done: every one of its `outputs` exists. Its marker
    (`done.json`) is then written if a kill came between the last output and the marker; with an
    output missing the marker is removed and the stage redoes (or finishes) the missing part."""
    marker = done_of(directory)
    if all(p.exists() for p in outputs):
        if not marker.exists():
            mark_done(directory, outputs)
        return True
    marker.unlink(missing_ok=True)
    return False


def mark_done(directory: Path, outputs: list[Path]) -> None:
    """Write `directory`'s completion marker, naming the outputs it vouches for; call it after
    the last of them is written."""
    write_json(done_of(directory), {"outputs": [str(p.relative_to(directory)) for p in outputs]})


def kill_point(name: str) -> None:
    """Die here, as a kill -9 would, when HALLUC_KILL_AT names this point: how the tests stop a
    stage in the windows between its writes, without timing luck. A no-op otherwise."""
    if os.environ.get("HALLUC_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


LOCK = ".halluc.lock"  # in the run directory: the pid of the process writing it


class RunLocked(HallucError):
    """Another process is writing the run directory."""


@contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Hold the run directory `directory` for this process: a second `halluc` on it fails at once,
    naming the holder's pid. An `fcntl` lock on `directory/.halluc.lock`: the kernel releases it
    when the process exits, however it dies, so a lock file left behind is never stale."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunLocked(
            f"{directory} is being written by another halluc process (pid {holder}); wait for "
            "it to finish or stop it, or give this one another run.out_dir"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def timed(path: Path, stage: str, arm: str = "", r: int | None = None) -> Iterator[None]:
    """Add the wall seconds of the block to `path` (a JSON list of {stage, arm, round, seconds},
    kept across resumes: a stage that finds its work done adds its few seconds again), so a run
    says where its time went."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        rows = list(read_json(path)) if path.exists() else []
        rows.append({"stage": stage, "arm": arm, "round": r, "seconds": time.perf_counter() - t0})
        write_json(path, rows)


def set_threads(cfg: Config) -> None:
    """Use `run.threads` math threads in this process (1 vs 2 threads changes float results)."""
    import torch

    if torch.get_num_threads() != cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)


def environment(cfg: Config) -> dict[str, Any]:
    """Library versions, thread counts, the CPU and its flags, the git commit."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "libraries": versions,
        "threads": {"stage": cfg.run.threads, "search_workers": cfg.search.workers},
        "machine": platform.machine(),
        "cpu": _cpu(),
        "git": _git(),
    }


def record_environment(cfg: Config, path: Path) -> None:
    """Append this invocation's environment to `path` (a JSON list) when it differs from the
    last one recorded."""
    seen = read_json(path) if path.exists() else []
    now = environment(cfg)
    if not seen or seen[-1] != now:
        write_json(path, [*seen, now])


def _cpu() -> dict[str, Any]:
    info: dict[str, Any] = {"model": platform.processor(), "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            info["model"] = value.strip()
        if key.strip() == "flags":
            info["flags"] = sorted(value.split())
            break
    return info


def _git() -> dict[str, Any] | None:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None  # an installed package, not a checkout
    return {"commit": commit, "dirty": bool(dirty)}
