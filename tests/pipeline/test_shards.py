"""Shards: explicit schema, atomic per-batch files, loadable with `datasets`."""

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.shards import (
    FEATURES,
    SCHEMA_VERSION,
    ShardError,
    batch_done,
    check_schema_version,
    checked_shard_files,
    read_table,
    shard_files,
    shard_path,
    write_batch,
    write_shard,
)
from search.driver import run_batched
from search.traces import table_rows
from tests.conftest import scripted
from tests.search.test_tree_search import omega


def prov(problem_id):
    return {
        "problem_id": problem_id,
        "task": "arithmetic",
        "round": 0,
        "model_id": "fake",
        "config_hash": "abc",
        "seed": 1,
        "schema_version": SCHEMA_VERSION,
    }


@pytest.fixture
def tables(add8, tok):
    task, problems = add8
    policy = scripted(task, problems, tok, error_rate=0.05)
    results = run_batched([omega(task, p, tok, budget=6) for p in problems[:4]], policy)
    out = {"traces": [], "steps": [], "pairs": []}
    for p, r in zip(problems, results, strict=False):
        for t, rows in table_rows(r).items():
            out[t] += [prov(p.id) | row for row in rows]
    return out


def test_directory_of_shards_loads_with_declared_features(tmp_path, tables):
    half = {t: rows[: len(rows) // 2] for t, rows in tables.items()}
    rest = {t: rows[len(rows) // 2 :] for t, rows in tables.items()}
    write_batch(tmp_path, 0, half)
    write_batch(tmp_path, 1, rest)
    for table in ("traces", "steps", "pairs"):
        ds = datasets.load_dataset(
            "parquet", data_files=shard_files(tmp_path, table), split="train"
        )
        assert ds.features == FEATURES[table]
        assert len(ds) == len(tables[table])
    kinds = set(
        datasets.load_dataset("parquet", data_files=shard_files(tmp_path, "traces"), split="train")[
            "kind"
        ]
    )
    assert {"correction", "clean"} <= kinds


def test_empty_tables_still_have_the_schema(tmp_path):
    write_batch(tmp_path, 3, {})
    assert batch_done(tmp_path, 3)
    for table in FEATURES:
        assert pq.read_schema(shard_files(tmp_path, table)[0]).names == list(FEATURES[table])


def test_rewriting_a_batch_replaces_its_file(tmp_path, tables):
    write_batch(tmp_path, 0, tables)
    first = pq.read_table(shard_files(tmp_path, "traces")[0])
    write_batch(tmp_path, 0, tables)  # a retried batch, maybe on another worker
    assert shard_files(tmp_path, "traces") == [str(tmp_path / "traces" / "batch-00000.parquet")]
    assert pq.read_table(shard_files(tmp_path, "traces")[0]).equals(first)
    assert not list(tmp_path.rglob("*.tmp"))


def test_batch_is_done_only_when_traces_exist(tmp_path, tables):
    write_shard(tmp_path, "steps", 0, tables["steps"])
    write_shard(tmp_path, "pairs", 0, tables["pairs"])
    assert not batch_done(tmp_path, 0)
    write_shard(tmp_path, "traces", 0, tables["traces"])
    assert batch_done(tmp_path, 0)


def test_rows_that_do_not_fit_fail_and_leave_nothing(tmp_path, tables):
    bad = [dict(tables["traces"][0], n_backspaces="many")]
    with pytest.raises(ShardError, match="traces"):
        write_shard(tmp_path, "traces", 0, bad)
    missing = [{k: v for k, v in tables["traces"][0].items() if k != "loss_mask"}]
    with pytest.raises(ShardError, match="loss_mask"):
        write_shard(tmp_path, "traces", 0, missing)
    assert not list(tmp_path.rglob("*.parquet")) and not list(tmp_path.rglob("*.tmp"))


def test_other_schema_version_is_refused(tmp_path, tables):
    rows = [dict(r, schema_version=SCHEMA_VERSION + 1) for r in tables["traces"]]
    path = write_shard(tmp_path, "traces", 0, rows)
    with pytest.raises(ShardError, match="schema version"):
        check_schema_version(str(path))


def rewrite_without(path, *columns):
    """Rewrite a shard in place without some columns (a damaged or hand-edited shard)."""
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(list(columns)), path)


def test_every_reader_checks_the_full_schema(tmp_path, tables):
    write_batch(tmp_path, 0, tables)
    write_batch(tmp_path, 1, tables)
    bad = shard_path(tmp_path, "traces", 1)
    rewrite_without(bad, "loss_mask", "visible_text")
    for read in (
        lambda: checked_shard_files(tmp_path, "traces"),
        lambda: read_table(tmp_path, "traces"),
        lambda: batch_done(tmp_path, 1),
    ):
        with pytest.raises(ShardError, match=r"batch-00001\.parquet.*loss_mask.*visible_text"):
            read()
    assert batch_done(tmp_path, 0)  # the good batch is still done
    good = pq.read_table(shard_path(tmp_path, "steps", 1))
    pq.write_table(
        good.set_column(1, "task", good.column("round")), shard_path(tmp_path, "steps", 1)
    )
    with pytest.raises(ShardError, match=r"steps.*batch-00001\.parquet.*'task' is int32"):
        read_table(tmp_path, "steps")


def test_damaged_and_foreign_files_are_named(tmp_path, tables):
    write_batch(tmp_path, 0, tables)
    foreign = tmp_path / "traces" / "foreign.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    with pytest.raises(ShardError, match="foreign.parquet"):
        read_table(tmp_path, "traces", columns=["kind"])
    foreign.unlink()
    cut = shard_path(tmp_path, "pairs", 0)
    cut.write_bytes(cut.read_bytes()[:100])  # a truncated copy
    with pytest.raises(ShardError, match=r"pairs/batch-00000\.parquet is not a readable Parquet"):
        read_table(tmp_path, "pairs")
    with pytest.raises(ShardError, match=r"pairs/batch-00000\.parquet"):
        batch_done(tmp_path, 0)


def test_checked_reader_returns_the_rows_and_skips_temporaries(tmp_path, tables):
    write_batch(tmp_path, 0, tables)
    (tmp_path / "traces" / ".batch-00001.parquet.abcd1234.tmp").write_bytes(b"half a file")
    got = read_table(tmp_path, "traces", columns=["kind", "loss_mask"])
    assert got.column_names == ["kind", "loss_mask"]
    assert got.to_pylist() == [
        {"kind": r["kind"], "loss_mask": r["loss_mask"]} for r in tables["traces"]
    ]
    assert read_table(tmp_path / "none", "traces").schema.equals(FEATURES["traces"].arrow_schema)


def test_a_write_removes_what_a_killed_write_left(tmp_path, tables):
    folder = tmp_path / "traces"
    folder.mkdir()
    stale = folder / ".batch-00002.parquet.k1ll3d00.tmp"  # a write killed before its rename
    stale.write_bytes(b"half a file")
    other = folder / ".batch-00003.parquet.busy0000.tmp"  # another batch, maybe being written
    other.write_bytes(b"in progress")
    write_shard(tmp_path, "traces", 2, tables["traces"])
    assert not stale.exists() and other.exists()
    assert read_table(tmp_path, "traces").num_rows == len(tables["traces"])


def test_train_refuses_a_damaged_search_directory(tmp_path, tables):
    from pipeline.config import load_config
    from pipeline.layout import RunLayout
    from pipeline.trainers.sft import load_traces

    rnd = RunLayout(tmp_path).round(0)
    write_batch(rnd.search, 0, tables)
    rewrite_without(shard_path(rnd.search, "traces", 0), "loss_mask")
    with pytest.raises(ShardError, match=r"batch-00000\.parquet.*loss_mask"):
        load_traces(load_config("arith-tiny", [f"run.out_dir={tmp_path}"]), rnd)


def test_resumed_search_names_a_foreign_file_instead_of_a_traceback(tmp_path, capsys):
    from tests.pipeline.stages.test_search import run

    assert run(tmp_path) == 0
    pq.write_table(
        pa.table({"x": [1]}), tmp_path / "round-0" / "search" / "traces" / "mine.parquet"
    )
    assert run(tmp_path) == 2  # a message, not a TypeError traceback
    assert "mine.parquet" in capsys.readouterr().err


def test_a_shard_from_before_the_added_columns_still_loads(tmp_path, tables):
    from pipeline.config import load_config
    from pipeline.layout import RunLayout
    from pipeline.shards import ADDED
    from pipeline.stages.select import read_selected, write_selected
    from pipeline.trainers.sft import load_traces

    rnd = RunLayout(tmp_path).round(0)
    write_batch(rnd.search, 0, tables)
    write_batch(rnd.search, 1, tables)
    added = list(ADDED["traces"])
    rewrite_without(shard_path(rnd.search, "traces", 1), *added)  # written before them
    assert batch_done(rnd.search, 1)
    got = read_table(rnd.search, "traces").to_pylist()
    n = len(tables["traces"])
    assert [r["steps_written"] is None for r in got] == [False] * n + [True] * n
    assert got[n:] == [r | dict.fromkeys(added) for r in tables["traces"]]
    assert read_table(rnd.search, "traces", columns=["kind", added[0]]).num_rows == 2 * n
    cfg = load_config("arith-tiny", [f"run.out_dir={tmp_path}"])
    assert len(load_traces(cfg, rnd)) == 2 * n  # a search resumed across the change
    rewrite_without(shard_path(rnd.search, "traces", 0), "loss_mask")
    with pytest.raises(ShardError, match="loss_mask"):  # any other missing column still fails
        read_table(rnd.search, "traces")
    write_selected(got[n:], rnd.selected)
    rewrite_without(rnd.selected, *added)
    assert read_selected(rnd.selected) == got[n:]
