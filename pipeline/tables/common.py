"""What the tables share: cell formats, means over seeds, the seed directories of a run.

Cells: a share as `12.3%`, a paired difference as `+1.2 (-0.4 to +2.9)` (percentage points, 95%
interval), anything missing as `–`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.files import read_json
from pipeline.layout import RunLayout
from search.errors import HallucError

MISSING = "–"


class TableError(HallucError, ValueError):
    """A table asked of directories that do not hold what it reads."""


def pct(x: float | None) -> str:
    """A share in percent, one decimal."""
    return MISSING if x is None else f"{100 * x:.1f}%"


def diff(d: dict[str, Any] | None) -> str:
    """A paired difference (`seeds_then_problems`'s mean and ci95) in percentage points."""
    if not d:
        return MISSING
    lo, hi = d["ci95"]
    return f"{100 * d['mean']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f})"


def num(x: float | None, digits: int) -> str:
    return MISSING if x is None else f"{x:.{digits}f}"


def mean_all(values: list[float | None]) -> float | None:
    """The mean, or None when any value is missing (a figure some seed lacks is not averaged)."""
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None) / len(values)


def mean_known(values: list[Any]) -> float | None:
    """The mean of the values present (None when none is)."""
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def read_verdict(run: Path) -> dict[str, Any]:
    """The run's verdict.json, or a TableError saying the run is not finished."""
    if not RunLayout(run).verdict.is_file():
        raise TableError(
            f"{run}: no verdict.json; give the out_dir of a finished `halluc run` (rerun the same "
            "command to finish it)"
        )
    return dict(read_json(RunLayout(run).verdict))


def seed_dirs(run: Path, seeds: list[int] | None = None) -> list[Path]:
    """The run's seed directories (`seed-S/`: the given seeds, else every one), or the run itself
    when it has none (a run of one seed without `run.seeds`)."""
    layout = RunLayout(run)
    if seeds:
        return [layout.seed(s) for s in seeds]
    return layout.seed_dirs() or [run]


def held_dir(seed_dir: Path, where: str) -> Path:
    """The directory of the figures that stand for `where` (ARM/round-R, or bootstrap) in one
    seed's run: where the keep-best gate (`train.keep_best`) rejected round R, the round whose
    model the arm kept (or bootstrap/ for the start model)."""
    arm, sep, r = where.partition("/round-")
    if not sep:
        return seed_dir / where
    held = RunLayout(seed_dir).kept(int(r), arm)
    return held.root if held else seed_dir / "bootstrap"


def config_of(seed_dir: Path) -> str:
    """The saved config of a run (or seed) directory, as a preset path for `load_config`."""
    path = seed_dir / "config.yaml"
    if not path.is_file():
        raise TableError(
            f"{seed_dir}: no config.yaml; give the out_dir of a finished `halluc run` (or one of "
            "its seed-S directories)"
        )
    return str(path)


def run_dir(text: str) -> Path:
    """argparse type of `--run`: an existing directory."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such directory")
    return path


def floats(text: str) -> list[float]:
    """argparse type of a comma-separated list of numbers."""
    try:
        return [float(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers as 0.1,0.2") from None


def ints(text: str) -> list[int]:
    """argparse type of a comma-separated list of integers."""
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give integers as 2,4") from None


def add_round(parser: argparse.ArgumentParser, which: str) -> None:
    """`--round R` (stored as `round_`): the round whose models the table evaluates; `which` says
    what it picks, for the help text."""
    parser.add_argument(
        "--round",
        dest="round_",
        metavar="R",
        type=int,
        default=None,
        help=f"the round whose {which} (default: the last)",
    )


def add_sets(parser: argparse.ArgumentParser) -> None:
    """`--set K=V` (repeatable): overrides of the run's saved config for the table's evaluations."""
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a value of the run's saved config (repeatable)",
    )
