"""Shards: explicit schema, atomic per-batch files, loadable with `datasets`."""

import datasets
import pyarrow.parquet as pq
import pytest

from pipeline.shards import (
    FEATURES,
    SCHEMA_VERSION,
    ShardError,
    batch_done,
    check_schema_version,
    shard_files,
    write_batch,
    write_shard,
)
from search.driver import run_batched
from search.traces import table_rows
from tests.conftest import scripted
from tests.test_search import omega


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
