"""Parquet shards of the three tables, safe to re-run (docs/design.md §6).

Layout under a shard directory:

    traces/batch-00003.parquet   steps/batch-00003.parquet   pairs/batch-00003.parquet

One file per table per batch of problems, named by the batch (never by the worker), so a batch that
runs twice (a Ray retry, a resumed run) rewrites the same files. Each file is written to a temporary
name and renamed into place once closed; `traces` is written last, so a batch is done exactly when
its `traces` file exists. A write first removes the temporaries a killed earlier write of the same
file left behind. The schema is explicit (`datasets.Features`), never inferred from rows, so every
shard has the same types and `datasets.load_dataset("parquet", ...)` loads any set of them.

Reading: `read_table` (or `checked_shard_files` for another reader) checks every file before any row
is used: its full schema (column names, order and types of `FEATURES[table]`, from the Parquet
footer) and its schema version. A table folder holds only `batch-NNNNN.parquet` files: any other
entry is an error naming it, since other readers of the folder (`pq.read_table(folder)`,
`load_dataset("parquet", data_dir=...)`) would read it as rows. Names starting with "." (our
temporaries) are skipped, as every Parquet reader skips them. Columns added to a table since its
schema version was first written (`ADDED`) may be missing from a shard; `read_table` and
`read_shard` give them as nulls.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, List, Value

from pipeline.files import write_with
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
            # the stream as search/metrics.py reads it (ADDED: older shards lack them)
            "steps_written": Value("int32"),  # finished steps written, erased ones included
            "erase_events": Value("int32"),  # backspace runs
            "precise_erases": Value("int32"),  # runs that erased a wrong step; null: no checker
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

# columns added to a table after shards of this schema version were written, last in its schema:
# a shard without them is still a shard of the version, and the readers here give them as nulls
ADDED: dict[str, tuple[str, ...]] = {
    "traces": ("steps_written", "erase_events", "precise_erases"),
}

SHARD_NAME = re.compile(r"batch-\d{5,}\.parquet")


class ShardError(HallucError, ValueError):
    """Rows that do not fit a table's schema, or a file in a shard folder that is not a shard of
    this schema (another schema version, other columns, damaged, or not a shard at all)."""


def shard_path(root: Path, table: str, batch: int) -> Path:
    return Path(root) / table / f"batch-{batch:05d}.parquet"


def batch_done(root: Path, batch: int) -> bool:
    """A batch is done exactly when its `traces` file exists (it is written last); then each of its
    three files is checked (`check_shard`), so a resumed run never skips a damaged batch."""
    if not shard_path(root, "traces", batch).exists():
        return False
    for table in TABLES:
        path = shard_path(root, table, batch)
        if not path.exists():
            raise ShardError(
                f"{path} is missing although batch {batch} is marked done by its traces file; "
                f"delete {shard_path(root, 'traces', batch)} and rerun to redo the batch"
            )
        check_shard(path, table)
    return True


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
    for stale in final.parent.glob(f".{final.name}*.tmp*"):  # left by a killed earlier write
        stale.unlink(missing_ok=True)
    write_with(final, lambda tmp: pq.write_table(arrow, tmp))
    return final


def write_batch(root: Path, batch: int, tables: dict[str, list[dict[str, Any]]]) -> None:
    """Write every table of a batch, `traces` last."""
    for table in TABLES:
        write_shard(root, table, batch, tables.get(table, []))


def shard_files(root: Path, table: str) -> list[str]:
    """The finished shard files of a table, in batch order, unchecked (temporary files excluded)."""
    folder = Path(root) / table
    if not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.iterdir() if SHARD_NAME.fullmatch(p.name))


def checked_shard_files(root: Path, table: str) -> list[str]:
    """`shard_files` of a table, each checked by `check_shard`; fails on any other entry of the
    table's folder (hidden names excepted), naming it."""
    folder = Path(root) / table
    if folder.is_dir():
        stray = sorted(
            str(p)
            for p in folder.iterdir()
            if not p.name.startswith(".") and not (SHARD_NAME.fullmatch(p.name) and p.is_file())
        )
        if stray:
            raise ShardError(
                f"{folder} holds entries that are not Halluc shards (batch-NNNNN.parquet): "
                f"{', '.join(stray)}; move them out of the folder (other Parquet readers of the "
                "folder would read them as rows)"
            )
    files = shard_files(root, table)
    for f in files:
        check_shard(f, table)
    return files


def read_table(root: Path, table: str, columns: list[str] | None = None) -> pa.Table:
    """Every shard of `table` under `root`, checked (`checked_shard_files`), as one Arrow table in
    batch order: the given `columns` (default: all, in schema order); an empty table of the
    schema when there is no shard. A column a shard predates (`ADDED`) comes as nulls."""
    parts = [read_shard(f, table, columns) for f in checked_shard_files(root, table)]
    if parts:
        return pa.concat_tables(parts)
    empty = FEATURES[table].arrow_schema.empty_table()
    return empty.select(columns) if columns is not None else empty


def read_shard(path: str | Path, table: str, columns: list[str] | None = None) -> pa.Table:
    """One shard's `columns` (default: all, in schema order), unchecked, with the columns it
    predates (`ADDED`) as nulls."""
    schema = FEATURES[table].arrow_schema
    fields = list(schema) if columns is None else [schema.field(c) for c in columns]
    present = pq.read_schema(path).names
    got = pq.read_table(path, columns=[f.name for f in fields if f.name in present])
    for f in fields:
        if f.name not in present:
            got = got.append_column(f, pa.nulls(got.num_rows, f.type))
    return got.select([f.name for f in fields])


def check_shard(path: str | Path, table: str) -> None:
    """Fail, naming `path`, unless it is a readable Parquet file with exactly the columns of
    `FEATURES[table]` (names, order, types; a column added later, `ADDED`, may be missing) and
    this schema version in every row. Reads the footer and the `schema_version` column only."""
    try:
        got = pq.read_schema(path)
    except (OSError, pa.ArrowException) as err:
        raise ShardError(
            f"{path} is not a readable Parquet file ({err}); delete it and rerun the search "
            "with the same command to rewrite its batch"
        ) from err
    if "schema_version" in got.names:
        check_schema_version(str(path))
    want = FEATURES[table].arrow_schema
    for name in ADDED.get(table, ()):
        if name not in got.names:  # written before the column was added
            want = want.remove(want.get_field_index(name))
    wrong = _schema_differences(got, want)
    if wrong:
        raise ShardError(
            f"{path} is not a {table!r} shard of schema version {SCHEMA_VERSION}: "
            f"{'; '.join(wrong)}; it was not written by this Halluc's search (or was altered): "
            "delete it and rerun the search with the same command to rewrite its batch"
        )


def _schema_differences(got: pa.Schema, want: pa.Schema) -> list[str]:
    missing = [n for n in want.names if n not in got.names]
    unknown = [n for n in got.names if n not in want.names]
    out = [f"missing columns {missing}"] if missing else []
    out += [f"unknown columns {unknown}"] if unknown else []
    for field in want:
        i = got.get_field_index(field.name)
        if i >= 0 and not got.field(i).type.equals(field.type):
            out.append(f"column {field.name!r} is {got.field(i).type}, not {field.type}")
    if not out and got.names != want.names:
        out.append(f"columns in the order {got.names}, not {want.names}")
    return out


def check_schema_version(path: str) -> None:
    """Fail with a clear message on a shard written by another schema version."""
    meta = pq.read_schema(path)
    if "schema_version" not in meta.names:
        raise ShardError(f"{path} is not a Halluc shard (no schema_version column)")
    try:
        column = pq.read_table(path, columns=["schema_version"]).column(0)
    except (OSError, pa.ArrowException) as err:
        raise ShardError(f"{path} cannot be read ({err}); delete it and rerun the search") from err
    versions = set(column.to_pylist())
    if versions - {SCHEMA_VERSION}:
        raise ShardError(
            f"{path} has schema version {sorted(versions, key=str)}, this Halluc reads version "
            f"{SCHEMA_VERSION}: regenerate the shards with this version"
        )
