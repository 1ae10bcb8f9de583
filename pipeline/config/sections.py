"""Each stage's own section (bootstrap, search, select, eval, value; train's is in
`pipeline.config.train`), and `Config`, the whole: one section per stage plus the shared ones
(`pipeline.config.shared`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.arms import SelectArm
from pipeline.config.bootstrap import BootstrapConfig
from pipeline.config.keys import config_hash
from pipeline.config.shared import (
    ModelConfig,
    RunConfig,
    SamplingConfig,
    TaskConfig,
    TraceConfig,
)
from pipeline.config.train import TrainConfig
from search.errors import ConfigError
from search.fake import FakeParams
from search.mcts import MctsParams
from search.omegaprm import OmegaParams
from search.values import ValueMode
from workers.options import check_decoding


@dataclass(frozen=True)
class SearchConfig:
    """Tree search (docs/design.md §5): `algorithm` with its parameters in `omegaprm` or `mcts`.
    `policy=fake` is the scripted policy with known mistakes (no model), set in `fake`;
    `policy=vllm` samples with vLLM on one GPU per worker (`gpu_memory` is its share of it).

    Value-guided search (search/values.py; issue 16): `value` says where a node's value comes
    from. `mc` (default): k Monte Carlo rollouts, the search as before. `model`: the value model
    at `value_model` (a `halluc value` checkpoint directory, e.g. RUN/value/model, trained on
    searches of this model's tokenizer) instead of the rollouts: MCTS values each new child by
    it, OmegaPRM each binary-search probe (its screening stays K rollouts). `mix`:
    (1 - `value_mix`) * mc + `value_mix` * the model's value, with the rollouts. In model and
    mix modes a step whose value is at most `value_threshold` counts as failing (mc: mc == 0).
    The value model runs on transformers on `model.device`, beside a vLLM policy too. A node
    valued by the model alone has no rollouts, so no correction trace starts from it (its
    `steps` row has n_rollouts 0). The four keys enter the config hash only when `value` is not
    `mc`.

    `fresh_problems`: round r searches training problems r·n .. (r+1)·n − 1 (n = `task.n_train`),
    none of which an earlier round searched, instead of the same first n every round (the rl
    arm's streams likewise): a round then cannot learn the answers of the problems the next one
    searches.

    How far and how wide it samples (`max_new_tokens`, `max_batch`) is the `sampling` section's,
    the Ray cluster its workers join `run.address`."""

    algorithm: Literal["omegaprm", "mcts"] = "omegaprm"
    policy: Literal["fake", "transformers", "vllm"] = "transformers"
    omegaprm: OmegaParams = field(default_factory=OmegaParams)
    mcts: MctsParams = field(default_factory=MctsParams)
    fake: FakeParams = field(default_factory=FakeParams)
    gpu_memory: float = 0.85
    batch_size: int = 16
    max_corrections: int = 1
    temperature: float = 1.0
    workers: int = 1
    value: ValueMode = "mc"
    value_model: str = ""
    value_mix: float = 0.5
    value_threshold: float = 0.5
    fresh_problems: bool = False

    def __post_init__(self) -> None:
        if self.value != "mc" and not self.value_model:
            raise ConfigError(
                f"value: {self.value} needs a value model; give search.value_model=PATH (the "
                "model/ directory `halluc value` wrote, e.g. RUN/value/model) or set "
                "search.value=mc"
            )
        if self.value != "mc" and self.policy == "fake":
            raise ConfigError(
                f"value: {self.value} needs a real policy: a value model reads the token ids of "
                "the tokenizer it was trained with, and the scripted policy has none; set "
                "search.policy=transformers (or vllm), or search.value=mc"
            )
        if not 0 <= self.value_mix <= 1 or not 0 <= self.value_threshold < 1:
            raise ConfigError(
                f"value_mix must be in [0, 1] and value_threshold in [0, 1), got "
                f"value_mix={self.value_mix}, value_threshold={self.value_threshold}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be at least 1, got {self.batch_size}")
        if not 0 < self.gpu_memory <= 1:
            raise ConfigError(f"gpu_memory: must be in (0, 1], got {self.gpu_memory}")
        if self.temperature < 0:
            raise ConfigError(f"temperature: must be >= 0 (0 is greedy), got {self.temperature}")
        if self.workers < 0:
            raise ConfigError(f"workers: must be >= 0 (0 searches in-process), got {self.workers}")


AUTO_SHARE = -1.0  # select.bksp_share: the searched model's own per-step error rate


@dataclass(frozen=True)
class SelectConfig:
    """What each arm trains on next (docs/design.md §6). `arm` is the arm that
    `halluc select` selects for on its own (the loop selects for each of `run.arms`); the dpo
    arm's selection is pairs, at most `corrections_per_problem` per problem. Clean solutions
    are taken at most `clean_per_problem` per problem and distinct (a solution whose tokens
    repeat an earlier one's is passed over): several per problem is the filtered
    self-improvement recipe, more problems per round is `task.n_train`.

    Cleaner selection (backtrack arm; off by default). `agree`: keep a correction only where the
    exact step checker puts the first error on the step the Monte Carlo search located (a task
    without an exact checker, such as jsonl, keeps every correction: the option changes nothing
    there). `precise_only`: keep a self-correction only when every one of its backspace runs
    erased a finished step the exact checker calls wrong (search/metrics.py's precise erase: a
    run that erases only a partly written step, the answer line included, is not precise;
    without a checker the option changes nothing). `bksp_share` p > 0: the clean rows are taken
    (instead of by `clean_share`) so that the selection's backspace runs per finished step
    written come as close to p as whole rows allow; when every clean row is in and the share is
    still above p, correction and self-correction rows are dropped (seeded); a share below p
    stays (nothing raises it). -1: p is the searched model's own per-step error rate
    (`step_error_rate` in the search's summary.json: of the steps its screening rollouts
    finished on a right prefix, the share the exact checker calls wrong; a task without a
    checker has none, and selection fails). The share reached is logged."""

    corrections_per_problem: int = 2
    self_corrections_per_problem: int = 2
    clean_per_problem: int = 1
    clean_share: float = 0.3
    min_parent_mc: float = 0.0
    agree: bool = False
    precise_only: bool = False
    bksp_share: float = 0.0
    arm: SelectArm = "backtrack"

    def __post_init__(self) -> None:
        if not 0 <= self.clean_share < 1:
            raise ConfigError(f"clean_share: must be in [0, 1), got {self.clean_share}")
        if not (0 <= self.bksp_share < 1 or self.bksp_share == AUTO_SHARE):
            raise ConfigError(
                "bksp_share: must be in [0, 1) (0: off) or -1 (the searched model's own "
                f"per-step error rate), got {self.bksp_share}"
            )


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation (docs/design.md §8): a sweep: greedy and each of `temperatures`, with
    `samples` samples per problem (pass@1 over them, and pass@k), each also with the backspace
    banned when `banned`. Each arm's decoding setting is chosen on `n_tune` validation problems
    (never on the held-out ones); a stream's token and backspace budgets are the `sampling`
    section's (`stream_tokens`, `stream_backspaces`). `policy` samples with transformers or vLLM;
    `model` evaluates any checkpoint (its figures go under `run.out_dir/evals/`). The options
    below are checked together by `workers.options.check_decoding`, the rules the policies
    obey.

    Deliberate backspaces (every setting where the backspace is not banned; transformers only; 0
    is off, at most one of the two > 0): `bksp_threshold` emits the backspace wherever it is
    allowed and the model's own probability of it (before temperature) is at least the
    threshold, and never elsewhere. Choose the threshold on validation problems (an evaluation with
    `eval.n_problems` drawn from the train split, or the tuning problems), never on the held-out
    ones. `bksp_random` is its control: a random eraser that emits the backspace wherever it is
    allowed with that probability, whatever the model (set it to the rate the threshold gave).

    `bksp_search` m > 0 (transformers only): backspace-guided search (`workers.guided`): decoding
    goes a step at a time; where the model erases its last step (the backspace sampled at a step
    end, or by `bksp_threshold`), m candidates for the step are drawn and the likeliest kept. Its
    generated tokens count the candidates thrown away (compare with best-of-N at those tokens).

    Value model (issue 16, item 4; a `halluc value` checkpoint directory at `value_model`,
    trained on searches of the evaluated models' tokenizer). With `value_model` set, the
    controls (`halluc run`, `halluc table value-inference`) add `value_best_of_n`: of the same N
    samples as best-of-N, the one whose least value over its step prefixes is highest (a
    solution is as good as its worst step). `value_drop` d > 0 (with `bksp_search` m > 0, no
    `bksp_threshold`): guided search's erase rule becomes the value model's, erasing the last
    step where its value fell by more than d from the prefix before it to the prefix after it,
    so it can be set against the model's own backspace. Both keys enter the config hash only
    when set, and `value_model` enters the evaluation's key only with `value_drop`.

    `erase_logprob` < 0 (with `bksp_search` m > 0, no other erase rule): guided search's erase rule
    is the step's own likelihood: erase the last step where the mean log-probability the model
    gave its tokens as they were drawn is below it, and redraw with the erased step tabu. Choose
    it on validation problems. `erase_at_end` (with `bksp_search`): the erase rule is read once
    more where a step ended the stream, so a model trained on dead-end retries
    (`bootstrap.retry_placement=at_detection`) can erase its last move there and retry another
    (`workers.guided`). Both enter the config hash only when set.

    `erase_temperature` T_e > 0 (transformers, without `bksp_search`): a row that has just
    emitted a backspace samples at T_e until the step it writes next ends, then goes back to the
    setting's temperature; so a greedy setting stays greedy everywhere except right after an
    erase, where greedy decoding of an erase-attention model writes the move it erased again
    (the erase hid it). 0 is off; it enters the config hash only when set."""

    n_problems: int = 500
    temperatures: list[float] = field(default_factory=lambda: [0.5, 0.7, 1.0])
    samples: int = 4
    banned: bool = True
    n_tune: int = 100
    policy: Literal["transformers", "vllm"] = "transformers"
    model: str = ""
    bksp_threshold: float = 0.0
    bksp_random: float = 0.0
    bksp_search: int = 0
    value_model: str = ""
    value_drop: float = 0.0
    erase_logprob: float = 0.0
    erase_at_end: bool = False
    erase_temperature: float = 0.0

    def __post_init__(self) -> None:
        check_decoding(
            self.bksp_threshold,
            self.bksp_random,
            self.bksp_search,
            self.value_drop,
            kind=self.policy,
            value_model=bool(self.value_model),
            erase_logprob=self.erase_logprob,
            erase_at_end=self.erase_at_end,
            erase_temperature=self.erase_temperature,
        )
        if self.n_problems < 1 or self.samples < 1 or self.n_tune < 1:
            raise ConfigError(
                "n_problems, samples and n_tune must be >= 1 (settings are chosen on validation "
                "problems)"
            )
        if any(t <= 0 for t in self.temperatures):
            raise ConfigError(
                f"temperatures: each must be > 0 (greedy is always run), got {self.temperatures}"
            )


@dataclass(frozen=True)
class ValueConfig:
    """The value model (`halluc value`, stages/value.py): a process reward model trained on the
    `steps` rows of the finished search stages under each of `runs` (a run directory, or one
    ROUND/search directory; empty: `run.out_dir`), written to `out_dir` (empty:
    `run.out_dir/value`), its model in `model/`.

    `init`: the checkpoint it starts from (empty: the run's start model, `model.path` or the
    bootstrap model); its tokenizer must be the one the rows were searched with. `head`:
    `separate` trains the whole model (a value model of its own); `shared` freezes the policy's
    backbone and trains only the scalar head on it, so the policy's own last hidden state gives
    the value. `targets`: `mc` (the soft Monte Carlo value, binary cross-entropy), `hard` (1 when
    any rollout from the step ended correct, OmegaPRM's hard label), or `exact` (the task's exact
    step label where the row has one, else its MC value). `val_share` of the problems (drawn by
    problem id, the same whatever the seed) are held out: none of their rows is trained on.
    `epochs` over the training rows, `batch_size` rows per step, AdamW at `lr`.

    This section shapes only the value model: it is not in the config hash, and the other stages
    do not compare it when they resume."""

    runs: list[str] = field(default_factory=list)
    out_dir: str = ""
    init: str = ""
    head: Literal["separate", "shared"] = "separate"
    targets: Literal["mc", "hard", "exact"] = "mc"
    val_share: float = 0.2
    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 3e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.val_share < 1:
            raise ConfigError(f"val_share: must be in (0, 1), got {self.val_share}")
        if self.epochs <= 0 or self.lr <= 0 or self.batch_size < 1:
            raise ConfigError(
                f"epochs and lr must be > 0, batch_size >= 1; got epochs={self.epochs}, "
                f"lr={self.lr}, batch_size={self.batch_size}"
            )


@dataclass(frozen=True)
class ProbeConfig:
    """The residual-stream probe (`halluc probe`, `pipeline.measure.probe`): the model at
    `eval.model` (empty: the run's start model) writes `eval.samples` solutions per problem on
    `n_train` training problems (the probe's data), `eval.n_tune` validation problems (the layer
    is chosen there) and `eval.n_problems` test problems (its figures); a logistic probe per layer
    with an L2 penalty `l2` on standardized features. Written to `out_dir` (empty:
    `run.out_dir/probes/MODEL/`). Shapes only the probe: not in the config hash."""

    n_train: int = 300
    l2: float = 1e-3
    out_dir: str = ""

    def __post_init__(self) -> None:
        if self.n_train < 1 or self.l2 < 0:
            raise ConfigError(
                f"n_train must be >= 1 and l2 >= 0; got n_train={self.n_train}, l2={self.l2}"
            )


@dataclass(frozen=True)
class Config:
    """The whole config: what `load_config` returns and every stage reads."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trace: TraceConfig = field(default_factory=TraceConfig)
    run: RunConfig = field(default_factory=RunConfig)
    value: ValueConfig = field(default_factory=ValueConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def hash(self) -> str:
        """A short hash of everything that shapes the outputs, not of where or on how many
        workers they are made (those must not change a row): `keys.config_hash`."""
        return config_hash(self)
