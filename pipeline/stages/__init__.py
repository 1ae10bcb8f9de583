"""The stages: one module per `halluc` subcommand, each with `main(...)` and `describe(result)`.

`STAGES` is the one list of them; the CLI, the layout test and the docs read it from here.

A *leaf* stage never imports another stage: what several stages share lives in library modules
beside them (`pipeline.layout`, `pipeline.files`, `pipeline.loading`, `pipeline.runtime`,
`pipeline.shards`, `pipeline.measure.*`, `pipeline.trainers.*`). The two *loop* stages compose
others: `run` calls bootstrap, search, select, train and eval per round; `grid` calls `run` per row.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One subcommand: `name` is both the subcommand and the module `pipeline.stages.<name>`.

    `config`: whether it takes `--preset`/`--set` and runs `main(cfg)` (release and table take
    their own arguments); `composes`: the stages it may call (loop stages only)."""

    name: str
    help: str
    config: bool = True
    composes: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return f"pipeline.stages.{self.name}"


STAGES: tuple[Stage, ...] = (
    Stage("bootstrap", "train a small model from scratch on the task's reference solutions"),
    Stage("search", "tree search for failing branches; writes traces/steps/pairs shards"),
    Stage("select", "pick the next training set from the shards"),
    Stage("train", "fine-tune on selected traces with backspaces"),
    Stage("eval", "accuracy, backtrack rate, erase precision and recovery on held-out problems"),
    Stage(
        "run",
        "the expert-iteration loop with a no-backtrack baseline",
        composes=("bootstrap", "search", "select", "train", "eval"),
    ),
    Stage(
        "probe",
        "a linear probe per layer on the hidden state at step ends: does the model know it erred?",
    ),
    Stage(
        "value", "train a value model (a PRM) on the search's steps table and measure its labels"
    ),
    Stage(
        "grid",
        "`halluc run` for each row of a grid file of overrides, and one table of verdicts",
        composes=("run",),
    ),
    Stage("release", "write a dataset release (and push it to the Hub)", config=False),
    Stage(
        "table", "a research table over finished runs (`halluc table --help`: which)", config=False
    ),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
