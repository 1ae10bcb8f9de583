"""The sections several stages read: which problems (`task`), which model (`model`), how the
policies sample (`sampling`), what a backspace is (`trace`), and where and how a run runs
(`run`). Each stage's own section is in `pipeline.config.sections`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.arms import ArmName as Arm
from search.errors import ConfigError
from search.traces import Placement


@dataclass(frozen=True)
class ArithmeticConfig:
    """`digits`-digit addition or multiplication with a digit-level scratchpad."""

    op: Literal["add", "mul"] = "add"
    digits: int = 3

    def __post_init__(self) -> None:
        if self.digits < 1:
            raise ConfigError(f"digits: must be at least 1, got {self.digits}")


@dataclass(frozen=True)
class CountdownConfig:
    """Reach a target in [min_target, max_target] from `n_numbers` numbers in
    min_number..max_number. The test split's targets: `heldout_targets` if given, else Stream of
    Search's split (`heldout_sos_seed`: the seed its generator shuffles the targets with, 4 in its
    scripts; it holds out the first tenth), else a `heldout_share` of the targets, else
    `n_heldout_targets` of them (drawn once, fixed)."""

    n_numbers: int = 4
    min_number: int = 1
    max_number: int = 99
    min_target: int = 10
    max_target: int = 100
    n_heldout_targets: int = 10
    heldout_share: float | None = None
    heldout_targets: list[int] | None = None
    heldout_sos_seed: int | None = None


@dataclass(frozen=True)
class JsonlConfig:
    """Question/answer records from a JSONL file or a saved dataset directory."""

    path: str = ""
    question_field: str = "question"
    answer_field: str = "answer"


@dataclass(frozen=True)
class TaskConfig:
    """Which problems: the task `name`, and that task's own options in its section. The test
    split's size is `eval.n_problems`.

    `chat_template`: each prompt is wrapped in the model tokenizer's chat template as the user's
    turn (after a system turn holding `system_prompt`, when given), with the generation prompt
    that opens the assistant's turn, for instruct models; the steps follow the assistant turn
    (the delimiter is appended where the template does not end with it). A bootstrap model's
    tokenizer has no template: give model.path."""

    name: Literal["arithmetic", "countdown", "jsonl"] = "arithmetic"
    n_train: int = 256
    seed: int = 0
    arithmetic: ArithmeticConfig = field(default_factory=ArithmeticConfig)
    countdown: CountdownConfig = field(default_factory=CountdownConfig)
    jsonl: JsonlConfig = field(default_factory=JsonlConfig)
    chat_template: bool = False
    system_prompt: str = ""

    def __post_init__(self) -> None:
        if self.system_prompt and not self.chat_template:
            raise ConfigError("system_prompt: it goes in the chat template; set chat_template=true")
        if self.n_train < 1:
            raise ConfigError(f"n_train: must be at least 1, got {self.n_train}")
        if self.name == "jsonl" and not self.jsonl.path:
            raise ConfigError(
                "task.jsonl.path: the jsonl task needs a JSONL file or dataset directory; "
                "give --set task.jsonl.path=FILE"
            )


@dataclass(frozen=True)
class ModelConfig:
    """The model the stages load: a local Hugging Face checkpoint directory (empty: the run's
    bootstrap model). Remote code runs only if `trust_remote_code` is set. `dtype`: the weights'
    type as sampling loads them (search, evaluation, rl's streams). `precision`: how training
    computes (the bootstrap, the train stage, the value model): `bf16` runs its forwards under
    bf16 autocast over float32 master weights (loaded in float32 whatever `dtype` says), `fp32`
    all in float32, `auto` bf16 where the device multiplies bf16 natively (a GPU with bf16, a CPU
    with AVX-512 or AMX) and fp32 elsewhere (`workers.hf.resolve_precision`). On a CPU with AMX
    bf16 training steps are 1.5-1.9x faster, and bf16 sampling slower (BENCHMARKS.md, scale),
    hence the split; on an AVX2-only CPU bf16 is emulated and many times slower than fp32."""

    path: str = ""
    device: str = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False
    precision: Literal["fp32", "bf16", "auto"] = "fp32"

    @property
    def train_dtype(self) -> str:
        """The weights' type for training: float32 master weights under bf16 (or `auto`), else
        `dtype`."""
        return self.dtype if self.precision == "fp32" else "float32"


@dataclass(frozen=True)
class SamplingConfig:
    """How far and how wide the policies sample, for every stage that samples. `max_batch`: rows
    per forward pass (transformers) in the search, the evaluation, rl's streams, the value
    model's scoring and the detector. `max_new_tokens`: a search rollout's tokens.
    `stream_tokens`: the tokens of a stream decoded from the prompt with erasing allowed, in the
    evaluation and rl (0: twice `max_new_tokens`, room for erased steps and their redo);
    `stream_backspaces`: the backspaces one such stream may emit (the search's rollouts keep
    the sampler's own limit, 16)."""

    max_batch: int = 256
    max_new_tokens: int = 64
    stream_tokens: int = 0
    stream_backspaces: int = 16

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.stream_tokens < 0 or self.stream_backspaces < 0:
            raise ConfigError(
                f"stream_tokens (0: twice max_new_tokens) and stream_backspaces must be >= 0, "
                f"got stream_tokens={self.stream_tokens}, "
                f"stream_backspaces={self.stream_backspaces}"
            )

    @property
    def stream_length(self) -> int:
        """A stream's token budget: `stream_tokens`, else twice a rollout's."""
        return self.stream_tokens or 2 * self.max_new_tokens


@dataclass(frozen=True)
class TraceConfig:
    """The backspace token and what one backspace erases (design §4). `backspace_at=step_end`
    (step unit only): decoding may emit a backspace only right after a step delimiter or another
    backspace, where the traces have them, never inside a step.

    `placement`: where a correction trace's backspaces sit (search/traces.py); what stays visible
    is always the good steps and the fix. `at_error`: right after the wrong step. `at_detection`:
    the model's own continuation of the error goes on to the step where the failure shows (on
    countdown a visible dead end: an invalid step, or one number left that is not the target),
    then everything from the wrong step on is erased; a task that cannot tell (arithmetic, jsonl)
    shows it at the end, so the whole wrong solution, final answer included, is erased.
    `at_token`: right after the wrong step's first token that differs from the fix, erasing
    the step up to it (token unit: one backspace per token; step unit: one backspace, which
    erases a part-written step back to its start), so never with `backspace_at=step_end`.
    """

    bksp_token: str = "<|bksp|>"
    unit: Literal["token", "step"] = "token"
    backspace_at: Literal["any", "step_end"] = "any"
    placement: Placement = "at_error"

    def __post_init__(self) -> None:
        if self.placement == "at_token" and self.step_end_only(self.unit):
            raise ConfigError(
                "placement: at_token puts each backspace inside a step, but trace.backspace_at="
                "step_end with trace.unit=step lets decoding emit one only after a step "
                "delimiter; set trace.backspace_at=any or choose another trace.placement"
            )

    def step_end_only(self, unit: str) -> bool:
        """Whether decoding in `unit` (the model's own, from halluc.json) keeps backspaces to step
        ends."""
        return self.backspace_at == "step_end" and unit == "step"


@dataclass(frozen=True)
class RunConfig:
    """Where outputs go, the run seed every other seed derives from (`seeds`: `halluc run` runs
    one sub-run per seed, `out_dir/seed-S/`, and compares the arms over all of them), the round a
    stage run on its own works on, and the math threads of each in-process stage (search workers
    share them: `threads // search.workers` each). `address`: the Ray cluster the search's
    workers and Ray Train join (`--address`; empty: RAY_ADDRESS, else a local cluster). The
    baseline arm's model has no backspace token unless `baseline_backspace`.

    `arms`: the arms `halluc run` runs side by side, each searching with its own model under the
    same search config: `backtrack` (sft on corrections, self-corrections and clean solutions)
    and `baseline` (sft on clean solutions only, no backspace token) always, since the verdict
    compares them and the backtrack arm sets the training budget; `dpo` optionally (train.
    objective=dpo on its own search's pairs, drawn to the backtrack arm's loss-bearing tokens,
    right-step pairs on top, and trained for its optimizer steps), compared with the baseline in
    the verdict and the report; `rl` optionally (train.objective=rl on the training problems,
    from its own model like every arm, searching like every arm: its search gives the values of
    train.rl.credit=tree and the traces of the token warm-up; trained for the backtrack arm's
    optimizer steps with as many sampled streams per step as the backtrack arm's sequences);
    `sft_rl` optionally (SFT then RL: each round, train.objective=rl from the backtrack arm's
    model of that round, for as many steps again; it searches nothing, so train.rl.credit=
    outcome only, and its compute is the backtrack arm's plus its own).
    Adding an arm to a finished run resumes it: only the new arm runs."""

    out_dir: str = "runs/default"
    seed: int = 0
    seeds: list[int] = field(default_factory=list)
    round: int = 0
    rounds: int = 2
    model_id: str = ""
    threads: int = 2
    address: str = ""
    baseline_backspace: bool = False
    arms: list[Arm] = field(default_factory=lambda: ["baseline", "backtrack"])

    def __post_init__(self) -> None:
        if self.round < 0 or self.rounds < 0 or self.threads < 1:
            raise ConfigError("round and rounds must be >= 0, threads >= 1")
        if len(set(self.arms)) != len(self.arms) or not {"baseline", "backtrack"} <= {*self.arms}:
            raise ConfigError(
                f"arms: each arm once, baseline and backtrack always (the verdict compares them "
                f"and the backtrack arm sets the training budget), got {self.arms}; e.g. "
                "run.arms=[baseline,backtrack,dpo]"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: each seed once, got {self.seeds}")
