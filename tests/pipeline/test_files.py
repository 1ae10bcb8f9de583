"""Atomic writes and what a killed writer leaves behind: `pipeline.files`."""

import os
import shutil
import stat
from pathlib import Path

import pytest

from pipeline.files import TMP, DiskFull, disk_full, remove_stale, save_model, write_json
from pipeline.layout import RunLayout
from pipeline.shards import shard_path, write_shard
from tests.conftest import one_line
from tests.pipeline.stages.test_search import run


def test_interrupted_writes_are_removed_on_the_next_run(tmp_path):
    stats = RunLayout(tmp_path).round(0).search / "stats"
    stats.mkdir(parents=True)
    stale = stats.parent / f".summary.json{TMP}.abc123"
    stale.write_text("{")
    remove_stale(stats.parent)
    assert not stale.exists()
    write_json(stats / "batch-00000.json", {"a": 1})
    assert [p.name for p in stats.iterdir()] == ["batch-00000.json"]  # no temporary left


def test_stats_temporaries_of_a_killed_search_are_removed(tmp_path):
    search = RunLayout(tmp_path).round(0).search
    (search / "stats").mkdir(parents=True)
    stale = search / "stats" / f".batch-00001.json{TMP}.k1ll3d"
    stale.write_text("{")
    assert run(tmp_path) == 0
    assert not stale.exists()


def test_outputs_are_flushed_to_disk_before_and_after_the_rename(tmp_path, monkeypatch):
    """Before: nothing was fsynced before os.replace, so a crash of the machine could publish a
    name whose contents never reached the disk."""
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_json(tmp_path / "a.json", {"a": 1})
    assert any(".a.json.tmp" in p for p in synced)  # the file, under its temporary name
    assert synced[-1] == str(tmp_path)  # then the directory, holding the rename


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_take_the_permissions_of_the_umask(tmp_path, umask):
    """Before: mkstemp's 0600 (and mkdtemp's 0700) stayed on every output, so a team on shared
    storage could not read each other's runs."""

    class Tok:
        def save_pretrained(self, path):
            (Path(path) / "tokenizer.json").write_text("{}")

    class Model(Tok):
        def save_pretrained(self, path, safe_serialization=True):
            (Path(path) / "model.safetensors").write_bytes(b"x")

    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {})
        save_model(Model(), Tok(), tmp_path / "model")
        write_shard(tmp_path / "shards", "pairs", 0, [])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "model" / "tokenizer.json").stat().st_mode) == 0o666 & ~umask
    shard = shard_path(tmp_path / "shards", "pairs", 0)
    assert stat.S_IMODE(shard.stat().st_mode) == 0o666 & ~umask


def test_a_model_is_replaced_without_ever_being_missing(tmp_path, monkeypatch):
    """Before: save_model removed the old directory before renaming the new one in: a kill
    between the two left no model at all."""

    class Writes:
        def __init__(self, text):
            self.text = text

        def save_pretrained(self, path, safe_serialization=True):
            (Path(path) / "weights.txt").write_text(self.text)

    out = tmp_path / "model"
    save_model(Writes("old"), Writes("old"), out)
    removed = []
    real = shutil.rmtree

    def rmtree(path, *a, **kw):
        removed.append((Path(path), (out / "weights.txt").read_text()))  # out is whole here
        return real(path, *a, **kw)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    save_model(Writes("new"), Writes("new"), out)
    assert (out / "weights.txt").read_text() == "new"
    assert removed and all(p != out for p, _ in removed)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_full_disk_is_one_line_and_leaves_no_temporary(tmp_path, monkeypatch, capsys):
    """Before: a full disk was an `OSError: [Errno 28]` traceback in search, and in training an
    `inline_container.cc` error that never mentions the disk."""
    import errno

    import pyarrow.parquet as pq

    real, calls = pq.write_table, {"n": 0}

    def full(table, where, *a, **kw):
        calls["n"] += 1
        if calls["n"] > 6:  # two batches of three tables are written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        return real(table, where, *a, **kw)

    monkeypatch.setattr(pq, "write_table", full)
    assert run(tmp_path) == 2
    err = capsys.readouterr().err
    assert one_line(err)
    assert "no space left on the device writing" in err and "kept" in err
    search = RunLayout(tmp_path).round(0).search
    assert len(list((search / "traces").glob("batch-*.parquet"))) == 2  # what finished is kept
    assert not [p for p in search.rglob("*") if TMP in p.name]
    # torch's writer says only that a write failed: the free space tells it was the disk
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 0))
    err = RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed")
    assert isinstance(disk_full(err, tmp_path / "x.pt"), DiskFull)
    assert disk_full(RuntimeError("shape mismatch"), tmp_path / "x.pt") is None
