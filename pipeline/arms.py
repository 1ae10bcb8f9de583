"""The arms of `halluc run`: one record per arm, the one place that says how the arms differ
(`pipeline.stages.run` runs them, `pipeline.layout` places their models, the config checks
`run.arms` against the names, the report draws the required two).

    arm       searches  selects                            objective  backspace  starts from
    backtrack yes       corrections, self-corrections,     sft        yes        its own model
                        clean (`select.select_backtrack`)
    baseline  yes       clean only, to the same tokens     sft        no         its own model
    dpo       yes       pairs, to the same tokens          dpo        yes        its own model
    rl        yes       nothing (samples its own streams)  rl         yes        its own model
    sft_rl    no        nothing                            rl         yes        the backtrack
                                                                                 arm's model of
                                                                                 the same round

The table's order is the order the arms run in each round: the backtrack arm first, since it sets
the budget (loss-bearing tokens and optimizer steps) the others match, and sft_rl trains its model
further. Light on purpose: no torch, no config import (the config imports the names from here).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from search.errors import HallucError

ArmName = Literal["backtrack", "baseline", "dpo", "rl", "sft_rl"]
SelectArm = Literal["backtrack", "baseline", "dpo"]  # the arms with a selection (`select.arm`)
Objective = Literal["sft", "dpo", "rl"]


class ArmError(HallucError, ValueError):
    """A name that is no arm's."""


@dataclass(frozen=True)
class Arm:
    """One arm. `required`: every run has it (the verdict compares the required two); `searches`:
    it runs the search each round with its own current model; `selects`: what the select stage
    keeps for it (None: it trains on no selection); `objective`: its `train.objective`;
    `backspace`: it trains with the backspace token (the baseline without it, unless
    `run.baseline_backspace`); `starts_from`: None, each round starts from the arm's own model of
    the round before (the start model in round 0), else from that arm's model of the same round;
    `sets_budget`: its selection's loss-bearing tokens and its optimizer steps are what the other
    arms of the round are drawn and trained to."""

    name: ArmName
    required: bool
    searches: bool
    selects: Literal["corrections", "clean", "pairs"] | None
    objective: Objective
    backspace: bool
    starts_from: ArmName | None = None
    sets_budget: bool = False


ARMS: tuple[Arm, ...] = (  # in the order they run
    Arm("backtrack", True, True, "corrections", "sft", True, sets_budget=True),
    Arm("baseline", True, True, "clean", "sft", False),
    Arm("dpo", False, True, "pairs", "dpo", True),
    Arm("rl", False, True, None, "rl", True),
    Arm("sft_rl", False, False, None, "rl", True, starts_from="backtrack"),
)
REQUIRED: tuple[str, ...] = tuple(a.name for a in ARMS if a.required)  # backtrack, baseline


def arm(name: str) -> Arm:
    """The arm called `name`; `ArmError` names the arms there are."""
    (found,) = in_order([name])
    return found


def in_order(names: Iterable[str]) -> tuple[Arm, ...]:
    """The arms called `names` (`run.arms`) in the order they run (backtrack first); `ArmError`
    for a name that is no arm's."""
    wanted = set(names)
    unknown = sorted(wanted - {a.name for a in ARMS})
    if unknown:
        raise ArmError(
            f"no arm is called {unknown[0]!r}; the arms are {', '.join(a.name for a in ARMS)}"
        )
    return tuple(a for a in ARMS if a.name in wanted)
