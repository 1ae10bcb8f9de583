"""`halluc table`: a research table over finished runs (`pipeline.tables`), printed as Markdown.

    halluc table --help                                   # the tables
    halluc table arms --run runs/arith-arms               # writes runs/arith-arms/arms.md
    halluc table sweep-diffs --run runs/arith-tiny-verdict
    halluc table threshold-sweep --run runs/arith-tiny-verdict --thresholds 0.1,0.3

A table reads what finished stages wrote; `threshold-sweep`, `guided-search` and
`value-inference` also evaluate the run's models, caching each evaluation under the run (a rerun
of the same command reads them back). Tables that save their output write it under `--run`
(`pipeline.tables.TABLES` names the files): the Markdown, and the figures with the command as
JSON.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.files import write_json, write_text
from pipeline.tables import BY_NAME
from pipeline.tables.common import TableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """A computed table: its figures (`figures`), its Markdown (`text`), the files written."""

    name: str
    figures: dict[str, Any]
    text: str
    written: list[Path] = field(default_factory=list)


def main(name: str, options: dict[str, Any], command: str = "") -> Result:
    """Compute the table `name` with `options` (its `compute` parameters: what
    `halluc table NAME`'s options parse to), render it, and write its outputs under
    `options["run"]`. `command`: the line to record in it (default: `halluc table NAME`)."""
    table = BY_NAME.get(name)
    if table is None:
        raise TableError(f"no table {name!r}; the tables are {', '.join(BY_NAME)}")
    module = importlib.import_module(table.module)
    command = command or f"halluc table {name}"
    figures = module.compute(**options)
    text = module.render(figures, command)
    written = []
    for file in table.outputs:
        path = Path(options["run"]) / file
        if path.suffix == ".md":
            write_text(path, text)
        else:
            write_json(path, figures | {"command": command})
        written.append(path)
    log.info("table %s: wrote %s", name, ", ".join(map(str, written)) or "nothing")
    return Result(name, figures, text, written)


def describe(result: Result) -> str:
    """The table as printed: its Markdown."""
    return result.text
