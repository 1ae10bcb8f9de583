"""`halluc`: one subcommand per stage (DESIGN §11).

halluc search --preset arith-tiny --set search.n_mc=4
halluc presets
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pipeline.config import ConfigError, load_config, presets

STAGES: dict[str, str] = {
    "bootstrap": "train a small model from scratch on the task's reference solutions",
    "search": "tree search for failing branches; writes traces/steps/pairs shards",
    "select": "pick the next training set from the shards",
    "train": "fine-tune on selected traces with backspaces",
    "eval": "accuracy, backtrack rate, erase precision and recovery on held-out problems",
    "run": "the expert-iteration loop with a no-backtrack baseline",
    "release": "write a dataset release (and push it to the Hub)",
}


# stages that exist: the module whose main(cfg) runs each (imported only when it runs)
RUNNERS: dict[str, str] = {
    "run": "pipeline.run",
    "bootstrap": "pipeline.bootstrap",
    "search": "pipeline.search_stage",
    "train": "pipeline.train",
    "eval": "pipeline.evaluate",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="halluc",
        description="Teach a causal LM to erase its own mistakes with a backspace token.",
    )
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, help_text in STAGES.items():
        available = "" if name in RUNNERS else " (not available in this version)"
        p = sub.add_parser(name, help=help_text + available, description=help_text)
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
        if name in ("search", "run"):
            p.add_argument(
                "--address",
                help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)",
            )
    sub.add_parser("presets", help="list the shipped presets")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    if args.stage == "presets":
        print("\n".join(presets()))
        return 0
    module = RUNNERS.get(args.stage)
    if module is None:
        print(
            f"halluc {args.stage}: not available in this version; available stages: "
            f"{', '.join(RUNNERS)}",
            file=sys.stderr,
        )
        return 2
    overrides = list(args.overrides)
    if getattr(args, "address", None):
        overrides.append(f"search.address={args.address}")
    try:
        cfg = load_config(args.preset, overrides)
    except ConfigError as err:
        print(f"halluc {args.stage}: {err}", file=sys.stderr)
        return 2
    try:
        importlib.import_module(module).main(cfg)
    except _user_errors() as err:
        print(f"halluc {args.stage}: {err}", file=sys.stderr)
        return 2
    return 0


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors that mean bad input (config, data, checkpoint, cluster): a message, no traceback."""
    from pipeline.shards import ShardError
    from search.backspace import BackspaceError
    from search.tasks import TaskDataError
    from workers.actors import ClusterError
    from workers.hf import CheckpointError
    from workers.vllm_engine import BackendError

    return (
        ConfigError,
        ShardError,
        BackspaceError,
        TaskDataError,
        ClusterError,
        CheckpointError,
        BackendError,
    )


if __name__ == "__main__":
    sys.exit(main())
