"""Research tables over finished runs: `halluc table NAME --run DIR [options]`.

    halluc table --help                 # the tables
    halluc table arms --help            # one table's options
    halluc table arms --run runs/arith-arms

`TABLES` is the one list of them; the CLI and `pipeline.stages.table` read it from here. Each is a
module `pipeline.tables.<name with _ for ->` with:

- `arguments(parser)`: its options (argparse), whose destinations are `compute`'s parameters;
- `compute(**options) -> dict`: the table's figures, read from finished run directories (three
  tables also evaluate the run's models on the way, cached under the run, so a killed one
  resumes: `threshold-sweep`, `guided-search`, `value-inference`);
- `render(result, command) -> str`: the Markdown, `command` being the line that made it.

A table never imports a stage: what it reads is laid out by `pipeline.layout` and written by
`pipeline.measure.*`. Experiments that train models or run searches of their own are scripts in
`experiments/`; speed benchmarks are in `benchmarks/`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    """One table: `name` is its `halluc table` name; `outputs` the files written under `--run`
    (`NAME.md`: the rendered Markdown; `NAME.json`: the figures and the command), none when the
    table only prints."""

    name: str
    help: str
    outputs: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return f"pipeline.tables.{self.name.replace('-', '_')}"


TABLES: tuple[Table, ...] = (
    Table(
        "main",
        "the main table under verdict v2: each arm per round against the baseline and the "
        "start model (seeds then problems), first-error figures, stratified detector AUC, "
        "best-of-N against tokens, compute and wall time",
        ("main.md",),
    ),
    Table(
        "arms",
        "every arm of a finished run per round, paired against the baseline, with its cost",
        ("arms.md",),
    ),
    Table(
        "sweep-diffs",
        "paired differences per temperature over seeds: backspace allowed − banned for every "
        "arm that erases, and backtrack − baseline; each arm's first-error figures",
    ),
    Table(
        "compare-bootstraps",
        "two bootstraps of one preset, seed by seed, paired per held-out problem",
    ),
    Table(
        "compare-rows",
        "two rows of a grid (runs of the same seeds), arm by arm and round by round, paired per "
        "held-out problem, each against its start model",
    ),
    Table(
        "threshold-sweep",
        "deliberate decoding: the backspace only above a probability threshold chosen on "
        "validation problems (evaluates the run's models)",
        ("threshold.md", "threshold.json"),
    ),
    Table(
        "guided-search",
        "backspace-guided search against own sampling, the baseline and best-of-N at equal "
        "tokens (evaluates the run's models)",
        ("guided.md", "guided.json"),
    ),
    Table(
        "value-inference",
        "the value model at inference: value best-of-N and value-erasing guided search "
        "(evaluates the run's models)",
        ("value_inference.md", "value_inference.json"),
    ),
)

BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}
