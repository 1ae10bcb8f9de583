"""`halluc`: one subcommand per stage (docs/design.md §11).

halluc search --preset arith-tiny --set search.omegaprm.n_mc=4
halluc value --preset arith-tiny --set value.targets=exact
halluc grid --preset arith-tiny --grid levers.yaml --seeds 0,1,2
halluc release runs/arith-tiny --name arith-tiny-backtracks [--push user/repo]
halluc table arms --run runs/arith-arms        # `halluc table --help`: every table
halluc presets
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys
from pathlib import Path

from pipeline.config import load_config, presets
from pipeline.files import disk_full
from pipeline.runtime import run_lock
from pipeline.stages import BY_NAME, STAGES
from pipeline.tables import TABLES
from search.errors import HallucError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="halluc",
        description="Teach a causal LM to erase its own mistakes with a backspace token.",
    )
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for stage in STAGES:
        name, help_text = stage.name, stage.help
        if name == "release":
            _release_parser(sub.add_parser(name, help=help_text, description=help_text))
            continue
        if name == "table":
            _table_parser(sub.add_parser(name, help=help_text, description=help_text))
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--preset",
            default="arith-tiny",
            help="a shipped preset name or a YAML file (default: arith-tiny)",
        )
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override one config value (repeatable)",
        )
        if name in ("search", "run", "grid"):
            p.add_argument(
                "--address",
                help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)",
            )
        if name == "grid":
            _grid_parser(p)
    sub.add_parser("presets", help="list the shipped presets")
    return parser


def _grid_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--grid",
        required=True,
        metavar="FILE",
        help="YAML list of rows: `- name: NAME` with `set: {SECTION.KEY: VALUE, ...}`",
    )
    p.add_argument(
        "--seeds",
        type=_seeds,
        metavar="S,S,...",
        help="the seeds of every row (default: run.seeds, else run.seed)",
    )
    p.add_argument(
        "--rows",
        type=_names,
        metavar="NAME,NAME,...",
        help="run (and tabulate) only these rows of the grid file (default: every row)",
    )


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give row names as a,b, each once")
    return names


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give seeds as 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: each seed once")
    return seeds


def _release_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a `halluc run` (or `halluc search`) output directory")
    p.add_argument("--name", required=True, help="release name: writes OUT/NAME/")
    p.add_argument("--out", default="datasets", help="where releases go (default: datasets)")
    p.add_argument("--license", default="apache-2.0", help="card license (default: apache-2.0)")
    p.add_argument(
        "--bump", action="store_true", help="keep an existing release as NAME@vN, write vN+1"
    )
    p.add_argument("--push", default="", metavar="REPO_ID", help="upload to this Hub dataset repo")
    p.add_argument("--private", action="store_true", help="create the Hub repo private")
    p.add_argument(
        "--value-model",
        default="",
        metavar="DIR",
        help="include this value model (halluc value's model/ directory) and its label quality",
    )


def _table_parser(p: argparse.ArgumentParser) -> None:
    tables = p.add_subparsers(dest="table", metavar="TABLE", required=True)
    for table in TABLES:
        module = importlib.import_module(table.module)
        t = tables.add_parser(
            table.name,
            help=table.help,
            description=module.__doc__ or table.help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.arguments(t)


def _table(args: argparse.Namespace) -> int:
    from pipeline.stages import table

    options = {k: v for k, v in vars(args).items() if k not in ("stage", "table", "argv")}
    command = shlex.join(["halluc", *args.argv])
    print(table.describe(table.main(args.table, options, command)))
    return 0


def _release(args: argparse.Namespace) -> int:
    from pipeline.stages import release

    folder = release.main(
        args.run_dir,
        args.name,
        args.out,
        args.license,
        args.bump,
        args.push,
        args.private,
        args.value_model,
    )
    print(folder)
    return 0


def _grid(args: argparse.Namespace) -> int:
    from pipeline.stages import grid

    out_dir = Path(load_config(args.preset, _overrides(args)).run.out_dir)
    with run_lock(out_dir):
        result = grid.main(args.grid, args.preset, _overrides(args), args.seeds, args.rows)
    print(grid.describe(result))
    return 0


def _overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides)
    if getattr(args, "address", None):
        overrides.append(f"run.address={args.address}")
    return overrides


def _stage(args: argparse.Namespace) -> int:
    cfg = load_config(args.preset, _overrides(args))
    module = importlib.import_module(BY_NAME[args.stage].module)
    with run_lock(Path(cfg.run.out_dir)):  # one writer per run directory
        result = module.main(cfg)
    describe = getattr(module, "describe", None)
    if describe is not None:
        print(describe(result))
    return 0


# stages with arguments of their own; every other stage runs main(load_config(...))
SPECIAL = {"release": _release, "grid": _grid, "table": _table}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command line as given, which a table records beside its figures
    if args.stage == "presets":
        print("\n".join(presets()))
        return 0
    try:
        return SPECIAL.get(args.stage, _stage)(args)
    except HallucError as err:  # bad input: one line that says what to do, no traceback
        print(f"halluc {args.stage}: {err}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as err:  # a full disk is one line too, wherever it struck
        full = disk_full(err, Path(getattr(err, "filename", None) or "."))
        if full is None:
            raise
        print(f"halluc {args.stage}: {full}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
