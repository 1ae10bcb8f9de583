"""Writing outputs so that a reader never sees half a file and a kill loses nothing finished:
every JSON, YAML, torch state file, shard and model directory goes to a temporary name in the same
directory, is flushed to disk (`fsync`, the file and then its directory), and is renamed into
place (`publish`). Temporaries a kill left behind start with `.` and hold `.tmp`; `remove_stale`
clears them on the next run. What is published takes the permissions the user's umask gives a new
file or folder (a team on shared storage reads each other's runs), not the private mode of a
temporary name."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from search.errors import HallucError

log = logging.getLogger(__name__)
TMP = ".tmp"  # every temporary name holds this


class DiskFull(HallucError):
    """The device ran out of space while writing an output; what was finished before is kept."""


def umask_mode(directory: bool) -> int:
    """The mode the user's umask gives a new folder (`directory`) or file."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def fsync_tree(path: Path) -> None:
    """Flush `path` (a file, or a folder with everything below it) to disk."""
    if path.is_dir():
        for child in path.iterdir():
            fsync_tree(child)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap `a` and `b` in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return bool(renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0)


def publish(tmp: Path, final: Path) -> None:
    """Put the finished temporary `tmp` (a file or a folder, beside `final`) at `final`: flushed
    to disk, given the umask's permissions, renamed in (a folder that exists is swapped out in one
    step and then removed, so `final` is never missing), and the rename itself flushed."""
    modes = {True: umask_mode(True), False: umask_mode(False)}
    for p in [tmp, *(tmp.rglob("*") if tmp.is_dir() else [])]:
        p.chmod(modes[p.is_dir()])
    fsync_tree(tmp)
    if tmp.is_dir() and final.is_dir():
        if _exchange(tmp, final):
            shutil.rmtree(tmp)
        else:  # two renames: a kill between them leaves the old one under a temporary name
            old = final.with_name(f".{final.name}{TMP}.old")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    fd = os.open(final.parent, os.O_RDONLY)  # the rename itself
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_full(err: BaseException, path: Path) -> DiskFull | None:
    """A one-line `DiskFull` when `err`, raised writing `path`, is the device running out of space
    (ENOSPC, or torch's writer failing on a device with no space left); None otherwise."""
    nospace = isinstance(err, OSError) and err.errno == errno.ENOSPC
    if not nospace and isinstance(err, RuntimeError) and "write" in str(err).lower():
        try:
            nospace = shutil.disk_usage(path.parent).free < 1 << 20
        except OSError:
            nospace = False
    if not nospace:
        return None
    return DiskFull(
        f"no space left on the device writing {path}; everything finished before it is kept "
        "(the half-written file was removed): free some space and rerun the same command to "
        "resume"
    )


def _temporary(path: Path, directory: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        return Path(tempfile.mkdtemp(prefix=f".{path.name}{TMP}.", dir=path.parent))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP}.", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_with(path: Path, write: Any, directory: bool = False) -> None:
    """Call `write(tmp)` on a temporary sibling of `path` (a file, or a folder when `directory`),
    then `publish` it; a failure removes the temporary (a full disk is one line: `DiskFull`)."""
    tmp = _temporary(path, directory)
    try:
        write(tmp)
        publish(tmp, path)
    except (OSError, RuntimeError) as err:
        full = disk_full(err, path)
        if full is not None:
            raise full from None
        raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (temporary sibling, fsync, rename)."""
    write_with(path, lambda tmp: tmp.write_text(text))


def save_torch(path: Path, obj: Any) -> None:
    """`torch.save(obj)` to `path` atomically (temporary sibling, fsync, rename)."""
    import torch  # here, not at import: the config and the CLI import this module

    write_with(path, lambda tmp: torch.save(obj, tmp))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def save_model(model: Any, tokenizer: Any, out: Path, extra: dict[str, Any] | None = None) -> None:
    """`save_pretrained` (safetensors) and the tokenizer into a temporary sibling directory, plus
    `extra` files (name -> JSON), then publish it at `out` (an existing `out` is swapped out in
    one step, never removed first)."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name, data in (extra or {}).items():
            (tmp / name).write_text(json.dumps(data))

    write_with(out, write, directory=True)


def remove_stale(directory: Path) -> None:
    """Remove the temporaries a killed write left in `directory` (not below it)."""
    if not directory.is_dir():
        return
    for p in directory.glob(f".*{TMP}*"):
        log.info("removing %s, left by an interrupted write", p)
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def copy_dir(src: Path, out: Path) -> None:
    """Copy the directory `src` to `out` (which must not exist) through a temporary sibling that
    is published at `out`, so a killed copy never leaves half a directory there."""
    write_with(out, lambda tmp: shutil.copytree(src, tmp, dirs_exist_ok=True), directory=True)
