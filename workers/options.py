"""The rules the deliberate-backspace options of decoding obey, in one place.

The config checks `eval`'s options with `check_decoding` as it loads (`pipeline.config`), so a
stage hands the workers a checked config; a policy built without a config (`make_policy` with a
`Decoding` of its own, `TransformersPolicy` or `GuidedPolicy` called directly by tests and
benchmarks) is checked by the same function. Light on purpose (no torch): the config imports it.
"""

from __future__ import annotations

from search.errors import ConfigError


def check_decoding(
    bksp_threshold: float = 0.0,
    bksp_random: float = 0.0,
    bksp_search: int = 0,
    value_drop: float = 0.0,
    *,
    kind: str = "transformers",
    value_model: bool = False,
    erase_logprob: float = 0.0,
    erase_at_end: bool = False,
    erase_temperature: float = 0.0,
) -> None:
    """Raise `ConfigError` naming the option unless (0 is off everywhere): `bksp_threshold` and
    `bksp_random` are in [0, 1] and at most one of them is > 0; `value_drop` d > 0 is in (0, 1]
    and comes with a value model (`value_model`), `bksp_search` > 0 and no `bksp_threshold`; a
    `kind="vllm"` policy has none of the deliberate options; `bksp_search` m >= 0 (with
    `bksp_random`, the random eraser is guided search's erase rule, without `value_drop`);
    `erase_logprob` <= 0, when set with `bksp_search` > 0 and no other erase rule;
    `erase_at_end` with `bksp_search` > 0; `erase_temperature` >= 0, not with `bksp_search` (guided
    search draws its own candidates after an erase) nor on vLLM."""
    for name, value in (("bksp_threshold", bksp_threshold), ("bksp_random", bksp_random)):
        if not 0 <= value <= 1:
            raise ConfigError(f"{name}: must be in [0, 1] (0: off), got {value}")
    if bksp_threshold > 0 and bksp_random > 0:
        raise ConfigError(
            f"bksp_threshold ({bksp_threshold}) and bksp_random ({bksp_random}) are exclusive: "
            "the threshold emits the backspace by the model's probability, the random control "
            "regardless of it; set one of them to 0"
        )
    if value_drop and (
        not value_model or not bksp_search or bksp_threshold or not 0 < value_drop <= 1
    ):
        raise ConfigError(
            f"value_drop: {value_drop} is the value-triggered erase of guided search; it needs a "
            "value model (eval.value_model=PATH, a `halluc value` model), bksp_search=m > 0, no "
            "bksp_threshold (one erase rule at a time), and a drop in (0, 1]"
        )
    if kind == "vllm":
        _plain_only(bksp_threshold=bksp_threshold, bksp_random=bksp_random, bksp_search=bksp_search)
    _check_erase_temperature(erase_temperature, bksp_search, kind)
    if erase_logprob > 0 or (
        erase_logprob and (not bksp_search or bksp_threshold or bksp_random or value_drop)
    ):
        raise ConfigError(
            f"erase_logprob: {erase_logprob} is guided search's likelihood erase rule (erase a "
            "step whose mean token log-probability is below it); it must be < 0 (0: off), with "
            "bksp_search=m > 0 and no other erase rule (bksp_threshold, bksp_random, value_drop)"
        )
    if (
        bksp_search < 0
        or (bksp_search and bksp_random and value_drop)
        or (erase_at_end and not bksp_search)
    ):
        raise ConfigError(
            f"bksp_search: m candidates >= 0 (0: off), got {bksp_search}; with it the random "
            "eraser (bksp_random) is guided search's erase rule and takes no other (value_drop), "
            "and erase_at_end (guided search's erase rule read where a step ended the stream) "
            "needs it"
        )


def _check_erase_temperature(erase_temperature: float, bksp_search: int, kind: str) -> None:
    if kind == "vllm":
        _plain_only(erase_temperature=erase_temperature)
    if erase_temperature < 0 or (erase_temperature and bksp_search):
        raise ConfigError(
            f"erase_temperature: {erase_temperature} is the temperature of the step written "
            "right after an erase; it must be >= 0 (0: off) and cannot be set with bksp_search "
            "(guided search draws its own candidates after an erase)"
        )


def _plain_only(**options: float) -> None:
    """The vLLM policy's rule: none of the deliberate options is set."""
    for name, value in options.items():
        if value:
            raise ConfigError(
                f"{name}={value}: the vLLM policy does not implement deliberate backspaces "
                f"or guided search; sample with the transformers policy "
                f"(eval.policy=transformers) or set {name}=0"
            )
