"""The decoding settings of an evaluation as records: what each setting decoded with, stored as
fields beside its figures in every evaluation file and read back from them, never from its name.

    sweep(cfg, banned)      the settings `eval` asks for, in order (greedy, each temperature; then
                            the same with the backspace banned)
    settings_of(result)     name -> Setting of one evaluation's `settings`, read from the fields
    Setting.name            the display name, and the key of the figures: "greedy", "T=0.7",
                            "T=0.7, backspace banned"

An evaluation file written before the fields existed holds only the names (and each setting's
temperature): `legacy_setting` reads those, the one place a name is parsed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pipeline.config import Config
from search.errors import HallucError

BANNED = ", backspace banned"  # the name's suffix of a setting with the backspace banned


class SettingError(HallucError, ValueError):
    """An evaluation's setting that neither carries its fields nor has a known name."""


@dataclass(frozen=True)
class Setting:
    """One decoding setting. `temperature` 0 is greedy; `samples_per_problem` samples are drawn
    per problem (pass@1 over them); `backspace_banned` forbids the backspace token. The
    deliberate-backspace options are the evaluation's (`eval.bksp_threshold`, `bksp_random`,
    `bksp_search`, `value_drop`; 0 is off; `workers.policy.Decoding` says what they do) and
    do not enter the name: every setting of one evaluation has the same."""

    temperature: float
    samples_per_problem: int = 1
    backspace_banned: bool = False
    bksp_threshold: float = 0.0
    bksp_random: float = 0.0
    bksp_search: int = 0
    value_drop: float = 0.0

    @property
    def name(self) -> str:
        base = f"T={self.temperature}" if self.temperature else "greedy"
        return base + BANNED if self.backspace_banned else base

    @property
    def sampling(self) -> bool:
        """Whether it samples (a temperature above 0), so that several samples can differ."""
        return self.temperature > 0

    def fields(self) -> dict[str, Any]:
        """What an evaluation file stores beside the setting's figures."""
        return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(Setting))


def sweep(cfg: Config, banned: bool | None = None) -> list[Setting]:
    """The decoding sweep of `cfg.eval`: greedy (one sample per problem) and each of
    `eval.temperatures` (`eval.samples` per problem), then, when `banned` (default
    `eval.banned`), each of those again with the backspace banned."""
    e = cfg.eval
    greedy = Setting(0.0, 1, False, e.bksp_threshold, e.bksp_random, e.bksp_search, e.value_drop)
    sampled = dataclasses.replace(greedy, samples_per_problem=e.samples)
    free = [greedy, *(dataclasses.replace(sampled, temperature=t) for t in e.temperatures)]
    if e.banned if banned is None else banned:
        free += [dataclasses.replace(s, backspace_banned=True) for s in free]
    return list({s.name: s for s in free}.values())  # a temperature listed twice runs once


def settings_of(result: dict[str, Any]) -> dict[str, Setting]:
    """Each setting of the evaluation `result` (an eval.json dict) by its name, read from its
    fields, or by `legacy_setting` where the file predates them."""
    out = {}
    for name, figures in result["settings"].items():
        if all(f in figures for f in FIELDS):
            out[name] = Setting(**{f: figures[f] for f in FIELDS})
        else:
            out[name] = legacy_setting(name, figures, result)
    return out


def legacy_setting(name: str, figures: dict[str, Any], result: dict[str, Any]) -> Setting:
    """The setting of an evaluation file written before settings carried their fields: whether
    the backspace was banned and (where the figures lack it) the temperature from the name, the
    samples per problem from the figures (1 where absent), the deliberate-backspace options from
    the evaluation's top level, where those files kept them (0 where absent)."""
    base = name.removesuffix(BANNED)
    if base != "greedy" and not base.startswith("T="):
        raise SettingError(
            f"evaluation setting {name!r} of {result.get('model', 'an evaluation')} carries no "
            f"fields ({', '.join(FIELDS)}) and its name is not one an evaluation writes "
            "('greedy' or 'T=t', optionally with ', backspace banned'); evaluate again"
        )
    try:
        temperature = float(figures.get("temperature", 0.0 if base == "greedy" else base[2:]))
    except ValueError:
        raise SettingError(
            f"evaluation setting {name!r} of {result.get('model', 'an evaluation')}: "
            f"{base[2:]!r} is not a temperature; evaluate again"
        ) from None
    return Setting(
        temperature=temperature,
        samples_per_problem=int(figures.get("samples_per_problem", 1)),
        backspace_banned=name.endswith(BANNED),
        bksp_threshold=result.get("bksp_threshold") or 0.0,
        bksp_random=result.get("bksp_random") or 0.0,
        bksp_search=result.get("bksp_search") or 0,
        value_drop=result.get("value_drop") or 0.0,
    )
