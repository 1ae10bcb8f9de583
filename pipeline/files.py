"""Writing outputs so that a reader never sees half a file and a kill loses nothing finished:
every JSON, YAML, torch state file and model directory goes to a temporary name in the same
directory and is renamed into place. Temporaries a kill left behind start with `.` and hold
`.tmp`; `remove_stale` clears them on the next run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
TMP = ".tmp"  # every temporary name holds this


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (temporary sibling, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_torch(path: Path, obj: Any) -> None:
    """`torch.save(obj)` to `path` atomically (temporary sibling, then rename)."""
    import torch  # here, not at import: the config and the CLI import this module

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def save_model(model: Any, tokenizer: Any, out: Path, extra: dict[str, Any] | None = None) -> None:
    """`save_pretrained` (safetensors) and the tokenizer into a temporary sibling directory, plus
    `extra` files (name -> JSON), then rename it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{TMP}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name, data in (extra or {}).items():
            (tmp / name).write_text(json.dumps(data))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def remove_stale(directory: Path) -> None:
    """Remove the temporaries a killed write left in `directory` (not below it)."""
    if not directory.is_dir():
        return
    for p in directory.glob(f".*{TMP}*"):
        log.info("removing %s, left by an interrupted write", p)
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def copy_dir(src: Path, out: Path) -> None:
    """Copy the directory `src` to `out` (which must not exist) through a temporary sibling that
    is renamed into place, so a killed copy never leaves half a directory at `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{TMP}.", dir=out.parent))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
