"""What every stage does before it works: refuse a directory made with another config, save its
own config, set its math threads from the config, and record the environment it ran in.

Bit-for-bit reproducibility holds for the same machine kind (CPU flags), the same library versions
(`constraints-cpu.txt`) and the same thread counts; `environment.json` in the run directory records
all three, and the git commit, for every invocation that differed from the one before.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

from pipeline.config import Config, check_resumable, save_config
from pipeline.files import read_json, write_json
from pipeline.layout import config_of

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
