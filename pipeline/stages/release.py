"""`halluc release`: a run's search tables as a Hugging Face dataset repo folder (docs/releases.md;
docs/design.md §6, §10).

    halluc release runs/arith-tiny --name arith-tiny-backtracks            # datasets/NAME/
    halluc release runs/arith-tiny --name arith-tiny-backtracks --push me/arith-tiny-backtracks
    halluc release runs/arith-tiny --name arith-tiny-prm --value-model runs/arith-tiny/value/model

The folder holds `data/{traces,steps,pairs}-NNNNN-of-NNNNN.parquet` (the shard schema, explicit) and
a `README.md` card whose YAML names the three configs and their `data_files`, so
`datasets.load_dataset("OUT/NAME", "traces")` (or the Hub repo id) loads each (OUT: `--out`,
default `datasets`). Rows come from every finished search stage under RUN_DIR (both arms, every
round); a row that two stages wrote identically (round 0 of both arms searches the same model with
the same seeds) is kept once.

Versions: `release.json` records the version and a fingerprint of the source shards (their bytes
and their paths within the run, so the same run given by another path, or copied, is the same
release). Releasing the same shards again is a no-op; releasing other shards under an existing
name fails unless `--bump`, which moves the old folder to `OUT/NAME@vN` and writes version N+1.
The folder is written under a temporary name and renamed into place, so a killed release leaves
nothing half-written; the next release of that name removes such a temporary. Every source shard
is checked (`pipeline.shards.read_table`) before anything is written or pushed.

`--value-model DIR` adds a value model (`halluc value`'s `model/` directory) as `value-model/`,
and a card section that says where its labels come from and how accurate they measured
(its `value.json` and `label_quality.json`); its files enter the fingerprint. Without it the
release holds no model and its card says nothing of one.

`--push REPO_ID` uploads the folder as a dataset repo with `huggingface_hub` (token: HF_TOKEN or a
`huggingface-cli login`), creating the repo if needed. The token is never logged or written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.files import umask_mode
from pipeline.layout import search_dirs, search_summary
from pipeline.measure import value_quality
from pipeline.shards import FEATURES, SCHEMA_VERSION, checked_shard_files, read_table
from search.errors import HallucError

log = logging.getLogger(__name__)
CONFIGS = ("traces", "steps", "pairs")
VALUE_DIR = "value-model"  # where a value model goes inside a release
ROWS_PER_FILE = 200_000


class ReleaseError(HallucError, ValueError):
    """A release that cannot be written or pushed as asked."""


def main(
    run_dir: str | Path,
    name: str,
    out: str | Path = "datasets",
    license: str = "apache-2.0",
    bump: bool = False,
    push: str = "",
    private: bool = False,
    value_model: str | Path = "",
) -> Path:
    """Write (or find up to date) the release folder `out/name`, with the value model directory
    `value_model` when given; push it when `push` is given."""
    run, folder = Path(run_dir), Path(out) / name
    if not name or "/" in name or name.startswith("."):
        raise ReleaseError(f"--name {name!r}: give a plain folder name such as my-run-v1")
    stages = search_stages(run)
    value = check_value_model(Path(value_model)) if value_model else None
    fingerprint = _fingerprint(run, stages, value)
    previous = _read_meta(folder)
    if previous and previous["fingerprint"] == fingerprint:
        log.info("release: %s already holds these shards (version %d)", folder, previous["version"])
    else:
        if previous and not bump:
            raise ReleaseError(
                f"{folder} already holds release version {previous['version']} of other shards "
                f"(from {previous['source']}); pass --bump to keep it as "
                f"{folder.name}@v{previous['version']} and write version {previous['version'] + 1}"
                ", or choose another --name"
            )
        if folder.exists() and not previous:
            raise ReleaseError(
                f"{folder} exists and is not a Halluc release; choose another --name"
            )
        version = previous["version"] + 1 if previous else 1
        _write(run, stages, folder, name, license, version, fingerprint, value)
    if push:
        upload(folder, push, private)
    return folder


def search_stages(run: Path) -> list[Path]:
    """Every finished search stage under `run` (a `halluc run` or `halluc search` out_dir)."""
    if not run.is_dir():
        raise ReleaseError(f"run directory {run} does not exist")
    stages = search_dirs(run)
    unfinished = [str(p) for p in stages if not search_summary(p).exists()]
    if unfinished:
        raise ReleaseError(
            f"search stages not finished (no summary.json): {', '.join(unfinished)}; rerun the "
            "same command to finish them, then release"
        )
    if not stages:
        raise ReleaseError(f"{run} holds no search stage (ROUND/search); run `halluc run` first")
    return stages


def check_value_model(path: Path) -> Path:
    """`path` if it is a value model directory written by `halluc value`, else a clear error."""
    missing = [n for n in ("value.json", "label_quality.json") if not (path / n).is_file()]
    if missing or not list(path.glob("*.safetensors")):
        raise ReleaseError(
            f"--value-model {path}: not a value model written by `halluc value` (missing "
            f"{', '.join(missing) or '*.safetensors'}); give its model/ directory, e.g. "
            "RUN/value/model"
        )
    return path


def _fingerprint(run: Path, stages: list[Path], value: Path | None = None) -> str:
    """Hash of every checked shard's bytes and its path relative to `run`, in that path's order
    (the same for the same run given by a relative or absolute path, or copied elsewhere), and
    of the value model's files when one is released."""
    files = [Path(f) for s in stages for t in CONFIGS for f in checked_shard_files(s, t)]
    named = [(f.relative_to(run).as_posix(), f) for f in files]
    if value is not None:
        named += [(f"{VALUE_DIR}/{f.relative_to(value).as_posix()}", f) for f in _files(value)]
    digest = hashlib.sha256()
    for rel, f in sorted(named):
        digest.update(rel.encode() + b"\0")
        digest.update(hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith("."))


def _read_meta(folder: Path) -> dict[str, Any] | None:
    path = folder / "release.json"
    return dict(json.loads(path.read_text())) if path.exists() else None


def _write(
    run: Path,
    stages: list[Path],
    folder: Path,
    name: str,
    license: str,
    version: int,
    fingerprint: str,
    value: Path | None = None,
) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=folder.parent))
    tmp.chmod(umask_mode(directory=True))  # a folder like any other, not mkdtemp's private one
    try:
        counts = {t: _write_config(stages, t, tmp / "data") for t in CONFIGS}
        meta = {
            "name": name,
            "version": version,
            "fingerprint": fingerprint,
            "source": str(run),
            "stages": [str(s.relative_to(run)) for s in stages],
            "schema_version": SCHEMA_VERSION,
            "rows": {t: c["rows"] for t, c in counts.items()},
            "value_model": str(value) if value else None,
        }
        section = ""
        if value is not None:
            shutil.copytree(value, tmp / VALUE_DIR, ignore=shutil.ignore_patterns(".*"))
            section = value_section(value, folder / VALUE_DIR)
        (tmp / "release.json").write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "README.md").write_text(card(run, folder, license, version, counts, section))
        if folder.exists():
            os.replace(folder, folder.with_name(f"{folder.name}@v{version - 1}"))
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("release: wrote %s (version %d): %s", folder, version, meta["rows"])


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove the temporary folders (`.NAME.XXXXXXXX.tmp`, mkdtemp's names) that a killed release
    of this name left beside `folder`; other names' temporaries are left alone."""
    pattern = re.compile(rf"\.{re.escape(folder.name)}\.[a-z0-9_]{{8}}(\.tmp)?")
    for p in folder.parent.iterdir():
        if p.is_dir() and pattern.fullmatch(p.name):
            log.info("release: removing %s, left by a killed release", p)
            shutil.rmtree(p)


def _write_config(stages: list[Path], table: str, data: Path) -> dict[str, Any]:
    """Rows of `table` from every stage, duplicates dropped, into `data/TABLE-*.parquet`."""
    schema = FEATURES[table].arrow_schema
    seen: set[bytes] = set()
    parts: list[pa.Table] = []
    stats: dict[str, Any] = {
        "rows": 0,
        "kinds": Counter(),
        "rounds": set(),
        "models": set(),
        "hashes": set(),
    }
    for stage in stages:
        keep = []
        for row in read_table(stage, table).to_pylist():
            key = hashlib.sha256(json.dumps(row, sort_keys=True).encode()).digest()
            if key not in seen:
                seen.add(key)
                keep.append(row)
                _count(stats, row)
        if keep:
            parts.append(pa.Table.from_pylist(keep, schema=schema))
    whole = pa.concat_tables(parts) if parts else schema.empty_table()
    n_files = max(1, -(-whole.num_rows // ROWS_PER_FILE))
    data.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        chunk = whole.slice(i * ROWS_PER_FILE, ROWS_PER_FILE)
        pq.write_table(chunk, data / f"{table}-{i:05d}-of-{n_files:05d}.parquet")
    return stats


def _count(stats: dict[str, Any], row: dict[str, Any]) -> None:
    stats["rows"] += 1
    stats["rounds"].add(row["round"])
    stats["models"].add(row["model_id"])
    stats["hashes"].add(row["config_hash"])
    if "kind" in row:
        stats["kinds"][row["kind"]] += 1


def size_category(n: int) -> str:
    """The Hub's size_categories bucket of `n` rows."""
    labels = ["n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M"]
    for i, label in enumerate(labels[:-1]):
        if n < 1_000 * 10**i:
            return label
    return labels[-1]


def value_section(value: Path, released: Path) -> str:
    """The card's section on the value model at `value`, released at `released`."""
    meta = json.loads((value / "value.json").read_text())
    quality = json.loads((value / "label_quality.json").read_text())
    return value_quality.card_section(meta, quality, str(released)) + "\n"


def card(
    run: Path,
    folder: Path,
    license: str,
    version: int,
    counts: dict[str, Any],
    value_section: str = "",
) -> str:
    """The dataset card of the release folder `folder`: YAML metadata the Hub and `load_dataset`
    read, a usage snippet that loads `folder`, then provenance (and `value_section`, a released
    value model's, before the evaluation)."""
    t = counts["traces"]
    kinds = ", ".join(f"{k}: {v:,}" for k, v in sorted(t["kinds"].items())) or "none"
    rows = "\n".join(f"| `{c}` | {counts[c]['rows']:,} |" for c in CONFIGS)
    return f"""{_metadata(license, t["rows"])}
# {folder.name}

Stream-of-search traces in which a language model erases its own wrong step with a backspace
token and continues correctly, found by tree search over the model's own rollouts (Halluc),
with the process labels and preference pairs the same search produced. Version {version}.

```python
from datasets import load_dataset
traces = load_dataset({json.dumps(str(folder))}, "traces", split="train")  # or the Hub repo id
```

| config | rows |
|---|---|
{rows}

- `traces`: training sequences; `input_ids` with backspaces, `loss_mask`, `erase_spans`, the raw
  text (backspaces as the token string) and the visible text. By `kind`: {kinds}.
- `steps`: one row per probed (prefix, step): Monte Carlo value, rollouts, exact label where the
  task has a step checker (a process reward dataset).
- `pairs`: chosen = wrong step, backspaces, correction; rejected = the model's own continuation
  of the error.

## Provenance

- Source run: `{run}`; search rounds {sorted(t["rounds"])}.
- Models (the policy that sampled each row is in `model_id`): {_list(t["models"])}.
- Config hashes (`config_hash` on every row): {_list(t["hashes"])}.
- Schema version {SCHEMA_VERSION}; every row also carries `problem_id`, `round` and `seed`.

{value_section}{_eval_table(run)}
"""


def _metadata(license: str, n_traces: int) -> str:
    """The card's YAML front matter: what the Hub and `load_dataset` read (one config per table,
    `traces` the default)."""
    configs = "".join(
        f"- config_name: {t}\n  data_files:\n  - split: train\n    path: data/{t}-*.parquet\n"
        + ("  default: true\n" if t == "traces" else "")
        for t in CONFIGS
    )
    return f"""---
license: {license}
task_categories:
- text-generation
tags:
- self-correction
- backtracking
- process-supervision
- synthetic
size_categories:
- {size_category(n_traces)}
configs:
{configs}---
"""


def _list(values: set[Any]) -> str:
    return ", ".join(f"`{v}`" for v in sorted(values)) or "none"


def _eval_table(run: Path) -> str:
    """The run report's comparison table, when the run has one."""
    report = run / "report.md"
    if not report.exists():
        return "## Evaluation\n\nThis directory holds no run report (search only).\n"
    lines = report.read_text().splitlines()
    table = [ln for ln in lines if ln.startswith("|")]
    setting = next((ln for ln in lines if ln.startswith("Task ")), "")
    return "## Evaluation (from the run report)\n\n" + setting + "\n\n" + "\n".join(table) + "\n"


def upload(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload `folder` to the Hub dataset repo `repo_id`; returns the commit URL."""
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        raise ReleaseError(
            "no Hugging Face token: set HF_TOKEN to a write token (huggingface.co/settings/tokens) "
            "or run `huggingface-cli login`; the release folder is written, nothing was uploaded"
        )
    meta = _read_meta(folder) or {}
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=f"Halluc release {folder.name} version {meta.get('version', '?')}",
        )
    except Exception as err:  # network, permission, quota: any of them is one line to the user
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise ReleaseError(
            f"pushing {folder} to the Hub dataset repo {repo_id} failed ({type(err).__name__}: "
            f"{first}); the release folder is written and kept: fix the cause and rerun with "
            "--push to upload it"
        ) from None
    log.info("release: pushed %s to %s", folder, repo_id)
    return str(getattr(commit, "commit_url", commit))
