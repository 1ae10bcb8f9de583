"""Configuration: one small frozen dataclass per stage, YAML presets, `key=value` overrides.

    cfg = load_config("arith-tiny", ["search.omegaprm.n_mc=4", "run.out_dir=/tmp/run"])

A preset is a YAML file in `pipeline/presets/` (shipped inside the package) with one mapping per
section; sections nest (`search.omegaprm`, `train.dpo`, `task.countdown`), and `--set a.b.c=v`
reaches any depth. Unknown sections or keys and values of the wrong type fail at once with
`ConfigError`, naming the key (and the preset file) and what is allowed; every option rule is
checked there, so the stages and workers trust a loaded config. A key that moved is read at its
new place (or names it), a retired one is dropped. The resolved config is saved as YAML beside
every output, with its hash on every row.

    shared.py    the sections several stages read: task, model, sampling, trace, run
    sections.py  each stage's own section (bootstrap, search, select, eval, value) and `Config`
    train.py     the train section with its objectives' own (train.dpo, train.rl)
    load.py      presets, overrides, checking values, the resume check, saving
    history.py   keys that moved or went away, and the old layout the hashes are computed on
    keys.py      the config hash and the evaluation cache keys
"""

from pipeline.config.bootstrap import SIZES
from pipeline.config.keys import (
    EVAL_VALUE_KEYS,
    LATE_TASK_KEYS,
    NOT_HASHED,
    OWN_SECTIONS,
    SEARCH_VALUE_KEYS,
    SHAPES,
    config_hash,
    eval_key,
    eval_keys,
)
from pipeline.config.load import (
    build,
    check_resumable,
    config_diff,
    load_config,
    presets,
    save_config,
)
from pipeline.config.sections import (
    AUTO_SHARE,
    BootstrapConfig,
    Config,
    EvalConfig,
    ProbeConfig,
    SearchConfig,
    SelectArm,
    SelectConfig,
    ValueConfig,
)
from pipeline.config.shared import (
    ArithmeticConfig,
    Arm,
    CountdownConfig,
    JsonlConfig,
    ModelConfig,
    RunConfig,
    SamplingConfig,
    TaskConfig,
    TraceConfig,
)
from pipeline.config.train import DpoConfig, RlConfig, TrainConfig
from search.errors import ConfigError

__all__ = [
    "AUTO_SHARE",
    "EVAL_VALUE_KEYS",
    "LATE_TASK_KEYS",
    "NOT_HASHED",
    "SHAPES",
    "OWN_SECTIONS",
    "SEARCH_VALUE_KEYS",
    "ArithmeticConfig",
    "Arm",
    "BootstrapConfig",
    "SIZES",
    "Config",
    "ConfigError",
    "CountdownConfig",
    "DpoConfig",
    "EvalConfig",
    "JsonlConfig",
    "ModelConfig",
    "RlConfig",
    "RunConfig",
    "SamplingConfig",
    "SearchConfig",
    "SelectArm",
    "SelectConfig",
    "TaskConfig",
    "TraceConfig",
    "TrainConfig",
    "ProbeConfig",
    "ValueConfig",
    "build",
    "check_resumable",
    "config_diff",
    "config_hash",
    "eval_key",
    "eval_keys",
    "load_config",
    "presets",
    "save_config",
]
