"""The one error type users see: every error that means bad input (config, task data, shards,
checkpoints, runs, clusters) derives from `HallucError`, and the CLI prints it as one line."""

from __future__ import annotations


class HallucError(Exception):
    """Bad input a user can act on: the message says what is wrong, where, and what to do."""


class ParamError(HallucError, ValueError):
    """An algorithm parameter out of its range (the config names the key it came from)."""


class ConfigError(HallucError, ValueError):
    """A preset or override that names an unknown key or gives a bad value, or options that do
    not go together (the config raises it as it loads; `workers.options` for a policy built
    without a config)."""


def check_params(params: object, at_least_one: tuple[str, ...], shares: tuple[str, ...]) -> None:
    """Raise `ParamError` naming the first field of `params` below 1 or outside [0, 1]."""
    for name in at_least_one:
        if getattr(params, name) < 1:
            raise ParamError(f"{name}: must be at least 1, got {getattr(params, name)}")
    for name in shares:
        if not 0 <= getattr(params, name) <= 1:
            raise ParamError(f"{name}: must be in [0, 1], got {getattr(params, name)}")
