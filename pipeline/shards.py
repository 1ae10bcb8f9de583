"""Parquet shards of the three tables, safe to re-run (DESIGN §6, STYLE §4).

Layout under a shard directory:

    traces/batch-00003.parquet   steps/batch-00003.parquet   pairs/batch-00003.parquet

One file per table per batch of problems, named by the batch (never by the worker), so a batch that
runs twice (a Ray retry, a resumed run) rewrites the same files. Each file is written to a temporary
name and renamed into place once closed; `traces` is written last, so a batch is done exactly when
its `traces` file exists. The schema is explicit (`datasets.Features`), never inferred from rows,
so every shard has the same types and `datasets.load_dataset("parquet", ...)` loads any set of them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, List, Value

from search.errors import HallucError

SCHEMA_VERSION = 1
TABLES = ("steps", "pairs", "traces")  # write order: traces last marks the batch done

_ids = List(Value("int32"))
PROVENANCE = {
    "problem_id": Value("string"),
    "task": Value("string"),
    "round": Value("int32"),
    "model_id": Value("string"),
    "config_hash": Value("string"),
    "seed": Value("int64"),
    "schema_version": Value("int32"),
}
FEATURES: dict[str, Features] = {
    "traces": Features(
        PROVENANCE
        | {
            "kind": Value("string"),  # correction | self_correction | clean
            "input_ids": _ids,
            "loss_mask": List(Value("int8")),
            "erase_spans": List(List(Value("int32"))),  # [start, end) of erased tokens
            "n_backspaces": Value("int32"),
            "prompt_len": Value("int32"),
            "prompt_text": Value("string"),
            "raw_text": Value("string"),
            "visible_text": Value("string"),
            "correct": Value("bool"),
            "parent_mc": Value("float32"),
            "parent_n": Value("int32"),
            "error_mc": Value("float32"),
            "error_n": Value("int32"),
            "mc_error_step": Value("int32"),
            "exact_error_step": Value("int32"),  # null: no exact checker, or it finds no error
        }
    ),
    "steps": Features(
        PROVENANCE
        | {
            "prefix_ids": _ids,
            "step_ids": _ids,
            "step_index": Value("int32"),
            "step_text": Value("string"),
            "mc": Value("float32"),
            "n_rollouts": Value("int32"),
            "n_correct": Value("int32"),
            "terminal": Value("bool"),
            "exact_label": Value("bool"),  # null where the task has no exact step checker
        }
    ),
    "pairs": Features(
        PROVENANCE
        | {
            "prompt_ids": _ids,
            "chosen_ids": _ids,
            "rejected_ids": _ids,
            "prompt_text": Value("string"),
            "chosen_text": Value("string"),
            "rejected_text": Value("string"),
        }
    ),
}


class ShardError(HallucError, ValueError):
    """Rows that do not fit a table's schema, or a shard of another schema version."""


def shard_path(root: Path, table: str, batch: int) -> Path:
    return Path(root) / table / f"batch-{batch:05d}.parquet"


def batch_done(root: Path, batch: int) -> bool:
    """A batch is done exactly when its `traces` file exists (it is written last)."""
    return shard_path(root, "traces", batch).exists()


def write_shard(root: Path, table: str, batch: int, rows: list[dict[str, Any]]) -> Path:
    """Write one table's rows of one batch atomically; returns the final path."""
    schema = FEATURES[table].arrow_schema
    for i, row in enumerate(rows):
        if row.keys() != set(schema.names):
            missing, extra = set(schema.names) - row.keys(), row.keys() - set(schema.names)
            raise ShardError(
                f"row {i} for table {table!r} of batch {batch}: missing columns "
                f"{sorted(missing)}, unknown columns {sorted(extra)}"
            )
    try:
        arrow = pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ShardError(
            f"rows for table {table!r} of batch {batch} do not fit its schema: {err}"
        ) from err
    final = shard_path(root, table, batch)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        pq.write_table(arrow, tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return final


def write_batch(root: Path, batch: int, tables: dict[str, list[dict[str, Any]]]) -> None:
    """Write every table of a batch, `traces` last."""
    for table in TABLES:
        write_shard(root, table, batch, tables.get(table, []))


def shard_files(root: Path, table: str) -> list[str]:
    """The finished shard files of a table, in batch order (temporary files excluded)."""
    return sorted(str(p) for p in (Path(root) / table).glob("batch-*.parquet"))


def checked_shard_files(root: Path, table: str) -> list[str]:
    """`shard_files` of a table, each checked to be of this schema version."""
    files = shard_files(root, table)
    for f in files:
        check_schema_version(f)
    return files


def check_schema_version(path: str) -> None:
    """Fail with a clear message on a shard written by another schema version."""
    meta = pq.read_schema(path)
    if "schema_version" not in meta.names:
        raise ShardError(f"{path} is not a Halluc shard (no schema_version column)")
    versions = set(pq.read_table(path, columns=["schema_version"]).column(0).to_pylist())
    if versions - {SCHEMA_VERSION}:
        raise ShardError(
            f"{path} has schema version {sorted(versions)}, this Halluc reads version "
            f"{SCHEMA_VERSION}: regenerate the shards with this version"
        )
