"""Configuration: one small frozen dataclass per stage, YAML presets, `key=value` overrides.

    cfg = load_config("arith-tiny", ["search.omegaprm.n_mc=4", "run.out_dir=/tmp/run"])

A preset is a YAML file in `pipeline/presets/` (shipped inside the package) with one mapping per
section; sections nest (`search.omegaprm`, `task.countdown`), and `--set a.b.c=v` reaches any
depth. Unknown sections or keys and values of the wrong type fail at once with `ConfigError`,
naming the key (and the preset file) and what is allowed; a key that moved names its new place.
The resolved config is saved as YAML beside every output, with its hash on every row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.files import write_text
from search.errors import HallucError, ParamError
from search.fake import FakeParams
from search.mcts import MctsParams
from search.omegaprm import OmegaParams
from search.traces import Placement
from search.values import ValueMode
from workers.policy import check_deliberate


class ConfigError(HallucError, ValueError):
    """A preset or override that names an unknown key or gives a bad value."""


Arm = Literal["backtrack", "baseline", "dpo", "rl", "sft_rl"]
SelectArm = Literal["backtrack", "baseline", "dpo"]  # the rl arm trains on no selection


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
    """Which problems: the task `name`, and that task's own options in its section."""

    name: Literal["arithmetic", "countdown", "jsonl"] = "arithmetic"
    n_train: int = 256
    n_test: int = 500
    seed: int = 0
    arithmetic: ArithmeticConfig = field(default_factory=ArithmeticConfig)
    countdown: CountdownConfig = field(default_factory=CountdownConfig)
    jsonl: JsonlConfig = field(default_factory=JsonlConfig)

    def __post_init__(self) -> None:
        if self.n_train < 1 or self.n_test < 1:
            raise ConfigError("n_train and n_test must be at least 1")
        if self.name == "jsonl" and not self.jsonl.path:
            raise ConfigError(
                "task.jsonl.path: the jsonl task needs a JSONL file or dataset directory; "
                "give --set task.jsonl.path=FILE"
            )


@dataclass(frozen=True)
class SearchConfig:
    """Tree search (DESIGN §5): `algorithm` with its parameters in `omegaprm` or `mcts`.
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
    `mc`."""

    algorithm: Literal["omegaprm", "mcts"] = "omegaprm"
    policy: Literal["fake", "transformers", "vllm"] = "transformers"
    omegaprm: OmegaParams = field(default_factory=OmegaParams)
    mcts: MctsParams = field(default_factory=MctsParams)
    fake: FakeParams = field(default_factory=FakeParams)
    gpu_memory: float = 0.85
    batch_size: int = 16
    max_corrections: int = 1
    temperature: float = 1.0
    max_new_tokens: int = 64
    max_batch: int = 256
    workers: int = 1
    address: str = ""
    value: ValueMode = "mc"
    value_model: str = ""
    value_mix: float = 0.5
    value_threshold: float = 0.5

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
        for name in ("batch_size", "max_new_tokens", "max_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if not 0 < self.gpu_memory <= 1:
            raise ConfigError(f"gpu_memory: must be in (0, 1], got {self.gpu_memory}")
        if self.temperature < 0:
            raise ConfigError(f"temperature: must be >= 0 (0 is greedy), got {self.temperature}")
        if self.workers < 0:
            raise ConfigError(f"workers: must be >= 0 (0 searches in-process), got {self.workers}")


@dataclass(frozen=True)
class ModelConfig:
    """The model the stages load: a local Hugging Face checkpoint directory (empty: the run's
    bootstrap model). Remote code runs only if `trust_remote_code` is set."""

    path: str = ""
    device: str = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False


@dataclass(frozen=True)
class BootstrapConfig:
    """A small decoder trained from scratch on the task's reference solutions (DESIGN §9).

    `data` (Countdown: a task with search streams): `optimal` (the solver's path), `stream` (a
    Stream-of-Search stream of the heuristic search in `search_order`, dead ends and "back" lines
    visible, plain attention), `backspace` (the same search, each dead end erased back to the
    state it branched from: step-unit backspaces, erase attention; the model has the backspace
    token from step 0), or `optimal+stream` / `optimal+backspace` (each problem drawn in one of
    the two forms at random). `erased_loss`: the backspace form's erased moves carry loss too
    (the model learns to try them; off: it learns the path kept and when to erase). `batch_tokens`
    > 0: each batch is filled to that many loss-bearing tokens instead of `batch_size` examples,
    so forms of different lengths train on equal tokens and steps.

    `retry_rate` p (arithmetic and countdown, `data=optimal` only): each solution, with
    probability p (seeded, a generator of its own), has one step chosen uniformly typed wrong
    first, erased by one step backspace and typed right; the data has backspaces, so erase
    attention and the token from step 0, as for `backspace`. `retry_source`: where the wrong step
    comes from; `synthetic` (the task's `wrong_step`: a plausible slip its exact checker flags)
    is the only one, since errors sampled from a model need a model and a bootstrap has none."""

    arch: Literal["gpt2", "llama"] = "gpt2"
    n_layer: int = 3
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 256
    n_problems: int = 20000
    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 100
    seed: int = 0
    data: Literal["optimal", "stream", "backspace", "optimal+stream", "optimal+backspace"] = (
        "optimal"
    )
    search_order: Literal["dfs", "bfs"] = "dfs"
    max_states: int = 100
    erased_loss: bool = False
    batch_tokens: int = 0
    retry_rate: float = 0.0
    retry_source: Literal["synthetic"] = "synthetic"

    def __post_init__(self) -> None:
        if self.max_states < 1 or self.batch_tokens < 0:
            raise ConfigError("max_states must be >= 1 and batch_tokens >= 0")
        if not 0 <= self.retry_rate <= 1:
            raise ConfigError(f"retry_rate: must be in [0, 1], got {self.retry_rate}")
        if self.retry_rate and self.data != "optimal":
            raise ConfigError(
                f"retry_rate: retries are added to optimal solutions only; set data=optimal "
                f"(not {self.data}) or retry_rate=0"
            )
        positive = ("n_layer", "n_embd", "n_head", "n_positions", "n_problems", "steps")
        for name in (*positive, "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning on traces (DESIGN §7), from the model the round searched with, on the round's
    selection (or its search traces). `kinds`: comma-separated trace kinds to train on.
    `workers` > 0 runs under Ray Train with that many workers. `token_warmup` > 0 first fits only
    the new token's embedding rows for that many batches (learning rate 10 × `lr`), the rest
    frozen. `error_weight` scales the loss of the two targets that see a wrong step. `untie`: a
    model whose output layer is its input embedding matrix (GPT-2 and the bootstrap's models) gets
    an output layer of its own before fine-tuning, a copy of the embeddings, so the backspace's
    output row is learned apart from its input row; both arms, so they keep one architecture. The
    saved model is an ordinary untied checkpoint (config `tie_word_embeddings: false`).

    `objective`: `sft` (cross-entropy on the traces) or `dpo` (preference pairs from the round's
    `pairs` table, or its dpo selection; search/pairs.py): chosen = the wrong step, erased, then
    the backspaces and the fix; rejected = the wrong step and the model's own continuation. Each
    side's log-probability sums its loss-bearing tokens only (the prompt, the good steps and the
    wrong step carry none), in `mode` attention (erase: the fix never sees the wrong step). The
    reference is the start model with the backspace rows as training gets them (`init`, then
    `token_warmup` batches on the chosen sequences), frozen; its log-probabilities are computed
    once and kept in `train/reference.json`. A dpo batch holds `batch_size // 2` pairs (at least
    one): as many sequences per optimizer step as sft. `dpo_beta`: the DPO temperature β (TRL's
    `beta`). `dpo_sft_weight`: the weight of the SFT loss on the chosen sequences added to the DPO
    loss (the mean over their loss-bearing tokens, `error_weight` applied; TRL's `sft` loss
    type); 1 by default because DPO alone on pairs that share a long prefix tends to lower the
    chosen side's likelihood along with the rejected one's (Pang et al. 2024, iterative
    reasoning preference optimisation: the NLL term was needed on GSM8K); 0 is plain DPO.
    `dpo_right_pairs` adds a pair at each fix's first step, which lies on a path that ended
    right: carrying on is chosen, erasing that step is rejected, so unneeded backspaces are
    pushed down too. `dpo_lr`: the dpo objective's learning rate (0: `lr`, the SFT one).

    `objective=rl`: on-policy RL, GRPO-style (trainers/rl.py, workers/grpo.py). Each optimizer
    step takes `batch_size // rl_group` training problems (at least one; `task.n_train` of them,
    in a seeded order) and samples `rl_group` streams per problem from the current model at
    temperature 1 with backspaces allowed (the project's sampler, `mode` attention, `trace.unit`,
    `trace.backspace_at`, `eval.max_backspaces`, the evaluation's token budget). Reward: 1 when
    the task's exact check accepts the stream (`Judge.correct`), else 0, minus `rl_token_cost`
    per generated token. Advantage: (r − mean) / (std + 1e-4) within each group (std with
    Bessel's correction, as TRL's GRPO). Loss: −A · log p on every generated token, erased
    tokens, backspaces and end-of-sequence included (each was an action of the policy), none on
    the prompt, recomputed through the collator so erase attention holds; plus `rl_kl` times
    the k3 estimate of KL to the round's starting model (with the backspace rows as training
    gets them, `init` then `token_warmup` batches on the round's traces), frozen; the mean over
    the batch's loss-bearing tokens. One gradient step per batch of samples, so the importance
    ratio is 1 and nothing is clipped. `rl_credit=tree`: a backspace run that erases whole
    finished steps, from a visible prefix P+S back to P, takes the advantage v(P) − v(P+S) on
    its backspaces, the values from the round's `steps` table (its search's Monte Carlo
    values); where either prefix was not probed (the prompt alone never is), the outcome
    advantage. `rl_lr`: the rl objective's learning rate (0: `lr`, the SFT one; policy-gradient
    steps on 32 streams are far noisier than SFT's). Steps: `max_steps`, else `epochs` passes
    over the training problems. A
    checkpoint every `save_steps` steps; a killed run resumes from the newest. `error_weight`
    does not apply. With `workers` N > 0 it runs under Ray Train: each worker samples its share of
    a step's problems (whole groups) and DDP averages the gradients, weighted so that the step
    is the same mean over all loss-bearing tokens.

    In `halluc run` each arm sets `objective` itself (run.arms).

    `report_to`: where the training curves go (loss, learning rate, gradient norm; rl adds its
    reward, KL and backtrack rate). `tensorboard` (the default) writes event files to the round's
    `train/tb/`; the other names are the Trainer's own reporters (`wandb`, `mlflow`, ...: opt-in,
    each needs its package and its login) and reach sft and dpo only, rl's loop writing
    TensorBoard alone; `[]` writes none. Not hashed: it changes no weight or figure. The
    bootstrap and value stages always write their curves to their own `tb/`."""

    mode: Literal["stream", "erase"] = "erase"
    init: Literal["mean", "words", "description", "subtokens"] = "mean"
    kinds: str = "correction,self_correction,clean"
    epochs: float = 2.0
    max_steps: int = -1
    lr: float = 3e-4
    dropout: float = 0.0
    error_weight: float = 1.0
    token_warmup: int = 0
    warmup: int = 10
    batch_size: int = 32
    save_steps: int = 50
    workers: int = 0
    seed: int = 0
    untie: bool = False
    objective: Literal["sft", "dpo", "rl"] = "sft"
    dpo_beta: float = 0.1
    dpo_sft_weight: float = 1.0
    dpo_right_pairs: bool = False
    dpo_lr: float = 0.0
    rl_group: int = 8
    rl_kl: float = 0.04
    rl_token_cost: float = 0.001
    rl_credit: Literal["outcome", "tree"] = "outcome"
    rl_lr: float = 0.0
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])

    def __post_init__(self) -> None:
        if {"all", "none"} & set(self.report_to):
            raise ConfigError(
                f"report_to={self.report_to}: name the reporters (tensorboard, wandb, ...), or "
                "give [] for none"
            )
        if self.rl_group < 2 or self.rl_kl < 0 or self.rl_token_cost < 0 or self.rl_lr < 0:
            raise ConfigError(
                f"rl_group must be >= 2 (a group of one has no spread to normalise by), rl_kl, "
                f"rl_token_cost and rl_lr >= 0; got rl_group={self.rl_group}, rl_kl="
                f"{self.rl_kl}, rl_token_cost={self.rl_token_cost}, rl_lr={self.rl_lr}"
            )
        if self.objective == "rl" and self.workers > max(1, self.batch_size // self.rl_group):
            raise ConfigError(
                f"workers={self.workers} with objective=rl: each worker samples whole groups, "
                f"and a step has batch_size // rl_group = {self.batch_size // self.rl_group} "
                "problems; use at most that many workers, or a larger batch_size"
            )
        if self.dpo_beta <= 0 or self.dpo_sft_weight < 0 or self.dpo_lr < 0:
            raise ConfigError(
                f"dpo_beta must be > 0, dpo_sft_weight >= 0 (0: plain DPO) and dpo_lr >= 0, got "
                f"dpo_beta={self.dpo_beta}, dpo_sft_weight={self.dpo_sft_weight}, dpo_lr="
                f"{self.dpo_lr}"
            )
        allowed = {"correction", "self_correction", "clean"}
        bad = set(self.kinds.split(",")) - allowed
        if bad:
            raise ConfigError(f"kinds: {sorted(bad)} not allowed; use {sorted(allowed)}")
        if self.batch_size < 1 or self.save_steps < 1 or self.workers < 0 or self.token_warmup < 0:
            raise ConfigError(
                "batch_size and save_steps must be >= 1, workers and token_warmup >= 0"
            )


AUTO_SHARE = -1.0  # select.bksp_share: the searched model's own per-step error rate


@dataclass(frozen=True)
class SelectConfig:
    """What each arm trains on next (DESIGN §6; pipeline/stages/select.py). `arm` is the arm that
    `halluc select` selects for on its own (the loop selects for each of `run.arms`); the dpo
    arm's selection is pairs, at most `corrections_per_problem` per problem.

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
    curriculum: bool = False
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
    """Held-out evaluation (DESIGN §8), a decoding sweep: greedy and each of `temperatures`, with
    `samples` samples per problem (pass@1 over them, and pass@k), each also with the backspace
    banned when `banned`. Each arm's decoding setting is chosen on `n_tune` training problems
    (never on the held-out ones). `max_new_tokens` 0: twice the search's, room for the erase
    budget. `policy` samples with transformers or vLLM; `model` evaluates any checkpoint (its
    figures go under `run.out_dir/evals/`).

    Deliberate backspaces (every setting where the backspace is not banned; transformers only; 0
    is off, at most one of the two > 0): `bksp_threshold` emits the backspace wherever it is
    allowed and the model's own probability of it (before temperature) is at least the
    threshold, and never elsewhere. Choose the threshold on training problems (an evaluation with
    `eval.n_problems` drawn from the train split, or the tuning problems), never on the held-out
    ones. `bksp_random` is its control: a random eraser that emits the backspace wherever it is
    allowed with that probability, whatever the model (set it to the rate the threshold gave).

    `bksp_search` m > 0 (transformers only): backspace-guided search (`workers.guided`): decoding
    goes a step at a time; where the model erases its last step (the backspace sampled at a step
    end, or by `bksp_threshold`), m candidates for the step are drawn and the likeliest kept. Its
    generated tokens count the candidates thrown away (compare with best-of-N at those tokens).

    Value model (issue 16, item 4; a `halluc value` checkpoint directory at `value_model`,
    trained on searches of the evaluated models' tokenizer). With `value_model` set, the
    controls (`halluc run`, benchmarks/value_inference.py) add `value_best_of_n`: of the same N
    samples as best-of-N, the one whose least value over its step prefixes is highest (a
    solution is as good as its worst step). `value_drop` d > 0 (with `bksp_search` m > 0, no
    `bksp_threshold`): guided search's erase rule becomes the value model's, erasing the last
    step where its value fell by more than d from the prefix before it to the prefix after it,
    so it can be set against the model's own backspace. Both keys enter the config hash only
    when set, and `value_model` enters the evaluation's key only with `value_drop`."""

    n_problems: int = 500
    temperatures: list[float] = field(default_factory=lambda: [0.5, 0.7, 1.0])
    samples: int = 4
    banned: bool = True
    n_tune: int = 100
    max_new_tokens: int = 0
    max_backspaces: int = 16
    policy: Literal["transformers", "vllm"] = "transformers"
    model: str = ""
    bksp_threshold: float = 0.0
    bksp_random: float = 0.0
    bksp_search: int = 0
    value_model: str = ""
    value_drop: float = 0.0

    def __post_init__(self) -> None:
        check_deliberate(self.bksp_threshold, self.bksp_random)
        if self.value_drop and (
            not self.value_model
            or not self.bksp_search
            or self.bksp_threshold
            or not 0 < self.value_drop <= 1
        ):
            raise ConfigError(
                f"value_drop: {self.value_drop} is the value-triggered erase of guided search; "
                "it needs eval.value_model=PATH (a `halluc value` model), eval.bksp_search=m > 0, "
                "no eval.bksp_threshold (one erase rule at a time), and a drop in (0, 1]"
            )
        if self.policy == "vllm" and (self.bksp_threshold or self.bksp_random or self.bksp_search):
            raise ConfigError(
                "bksp_threshold, bksp_random and bksp_search: the vLLM policy does not implement "
                "deliberate backspaces or guided search; set eval.policy=transformers or them to 0"
            )
        if self.bksp_search < 0 or (self.bksp_search and self.bksp_random):
            raise ConfigError(
                f"bksp_search: m candidates >= 0 (0: off), got {self.bksp_search}; the random "
                "eraser (bksp_random) does not combine with it"
            )
        if self.n_problems < 1 or self.samples < 1 or self.max_backspaces < 0:
            raise ConfigError("n_problems and samples must be >= 1, max_backspaces >= 0")
        if self.n_tune < 1 or self.max_new_tokens < 0:
            raise ConfigError(
                "n_tune must be >= 1 (settings are chosen on training problems), "
                "max_new_tokens >= 0"
            )
        if any(t <= 0 for t in self.temperatures):
            raise ConfigError(
                f"temperatures: each must be > 0 (greedy is always run), got {self.temperatures}"
            )


@dataclass(frozen=True)
class TraceConfig:
    """The backspace token and what one backspace erases (DESIGN §4). `backspace_at=step_end`
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
    share them: `threads // search.workers` each). The baseline arm's model has no backspace
    token unless `baseline_backspace`.

    `arms`: the arms `halluc run` runs side by side, each searching with its own model under the
    same search config: `backtrack` (sft on corrections, self-corrections and clean solutions)
    and `baseline` (sft on clean solutions only, no backspace token) always, since the verdict
    compares them and the backtrack arm sets the training budget; `dpo` optionally (train.
    objective=dpo on its own search's pairs, drawn to the backtrack arm's loss-bearing tokens,
    right-step pairs on top, and trained for its optimizer steps), compared with the baseline in
    the verdict and the report; `rl` optionally (train.objective=rl on the training problems,
    from its own model like every arm, searching like every arm: its search gives the values of
    rl_credit=tree and the traces of the token warm-up; trained for the backtrack arm's
    optimizer steps with as many sampled streams per step as the backtrack arm's sequences);
    `sft_rl` optionally (SFT then RL: each round, train.objective=rl from the backtrack arm's
    model of that round, for as many steps again; it searches nothing, so rl_credit=outcome
    only, and its compute is the backtrack arm's plus its own).
    Adding an arm to a finished run resumes it: only the new arm runs."""

    out_dir: str = "runs/default"
    seed: int = 0
    seeds: list[int] = field(default_factory=list)
    round: int = 0
    rounds: int = 2
    model_id: str = ""
    threads: int = 2
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
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trace: TraceConfig = field(default_factory=TraceConfig)
    run: RunConfig = field(default_factory=RunConfig)
    value: ValueConfig = field(default_factory=ValueConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def hash(self) -> str:
        """A short hash of everything that shapes the outputs, not of where or on how many
        workers they are made (those must not change a row)."""
        d = self.to_dict()
        for section, key in NOT_HASHED:
            del d[section][key]
        for section in OWN_SECTIONS:
            del d[section]
        if self.search.value == "mc":  # they shape nothing then: the hash they had before
            for key in SEARCH_VALUE_KEYS:
                del d["search"][key]
        for key in EVAL_VALUE_KEYS:  # likewise, unless set
            if not d["eval"][key]:
                del d["eval"][key]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# where things are and how many workers make them; the model itself is named by each row's model_id
NOT_HASHED = [
    ("run", "out_dir"),
    ("run", "threads"),
    ("search", "workers"),
    ("search", "address"),
    ("model", "device"),
    ("model", "path"),
    ("eval", "model"),
    ("value", "out_dir"),
    ("value", "runs"),  # what they hold, and the init, are recorded beside the value model
    ("value", "init"),
    ("run", "arms"),  # which arms run shapes no arm's outputs (adding one resumes a run)
    ("train", "report_to"),  # where the curves go
]

# value-guided search (SearchConfig): hashed only when search.value is not mc
SEARCH_VALUE_KEYS = ("value", "value_model", "value_mix", "value_threshold")
EVAL_VALUE_KEYS = ("value_model", "value_drop")  # EvalConfig: hashed only when set

# sections that shape only their own stage's output (nothing the search, training or
# evaluation writes): not hashed, and compared on resume only by a stage that names them
OWN_SECTIONS = ("value",)

# keys that moved (old flat name -> new place) or went away (-> what to do instead)
MOVED = {
    **{f"search.{k}": f"search.omegaprm.{k}" for k in ("n_mc", "budget", "alpha", "beta")},
    **{f"search.{k}": f"search.omegaprm.{k}" for k in ("length_scale", "c_puct", "locate")},
    "search.n_screen": "search.omegaprm.n_screen (or search.mcts.n_screen)",
    "search.simulations": "search.mcts.simulations",
    "search.width": "search.mcts.width",
    "search.mcts_c_puct": "search.mcts.c_puct",
    **{f"search.fake_{k}": f"search.fake.{k}" for k in ("error_rate", "trap_rate", "fix_rate")},
    "search.fake_n_traps": "search.fake.n_traps",
    "eval.temperature": "eval.temperatures (a list: greedy and each of them are evaluated)",
    "task.op": "task.arithmetic.op",
    "task.digits": "task.arithmetic.digits",
    **{f"task.{k}": f"task.jsonl.{k}" for k in ("path", "question_field", "answer_field")},
}
REMOVED = {
    "train.base": "training starts from the model the round searched with (model.path or the "
    "bootstrap model in round 0, the previous round's model after that)",
    "train.data": "training reads the round's selected.parquet, else its search traces",
    "bootstrap.eval_problems": "the start model is evaluated like every round's, on "
    "eval.n_problems held-out problems",
}


def presets() -> list[str]:
    """Names of the presets shipped with the package."""
    files = resources.files("pipeline") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in files.iterdir() if p.name.endswith(".yaml"))


def load_config(
    preset: str = "arith-tiny", overrides: list[str] | None = None, where: str = ""
) -> Config:
    """A preset (a shipped name or a path to a YAML file) with `a.b=value` / `a.b.c=value`
    overrides. A bad key or value is reported as in `where` (default: the preset file)."""
    path = _preset_path(preset)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: a preset must be a mapping of sections, got {type(raw).__name__}"
        )
    for item in overrides or []:
        _override(raw, item, path)
    return build(Config, raw, where or str(path))


def _override(raw: dict[str, Any], item: str, path: Path) -> None:
    key, sep, value = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {item!r} must look like section.key=value")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"{path}: {where} is {child!r}, not a mapping, so --set {key} cannot go in it; "
                f"fix {where} in the preset"
            )
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"override {item!r}: {value!r} is not a YAML value") from None


def _preset_path(preset: str) -> Path:
    if preset.endswith((".yaml", ".yml")):
        path = Path(preset)
        if not path.is_file():
            raise ConfigError(f"preset file {preset} does not exist")
        return path
    path = Path(str(resources.files("pipeline") / "presets" / f"{preset}.yaml"))
    if not path.is_file():
        raise ConfigError(f"unknown preset {preset!r}; shipped presets: {', '.join(presets())}")
    return path


def build(cls: type, raw: Any, where: str, prefix: str = "") -> Any:
    """An instance of dataclass `cls` from a mapping, every value checked against its type.
    `where` names the preset file, `prefix` the dotted key of this section."""
    label = f"{where}: {prefix}" if prefix else where
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: expected a mapping for {cls.__name__}, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for name in sorted(set(raw) - set(names)):
        full = f"{prefix}.{name}" if prefix else name
        if full in MOVED:
            raise ConfigError(f"{where}: {full} has moved: use {MOVED[full]}")
        if full in REMOVED:
            raise ConfigError(f"{where}: {full} was removed: {REMOVED[full]}")
        raise ConfigError(f"{label}: unknown key {name!r}; allowed keys: {', '.join(names)}")
    values = {}
    for name, value in raw.items():
        full = f"{prefix}.{name}" if prefix else name
        values[name] = _check(hints[name], value, where, full)
    try:
        return cls(**values)
    except (ConfigError, ParamError) as err:
        raise ConfigError(f"{label}.{err}" if prefix else f"{label}: {err}") from None


def _check(hint: Any, value: Any, where: str, key: str) -> Any:
    """`value` checked against the type `hint` of the key `key` (a section, a Literal, an
    optional, a list, or a scalar)."""
    if dataclasses.is_dataclass(hint):
        return build(hint, {} if value is None else value, where, key)  # type: ignore[arg-type]
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(
                f"{where}: {key}: {value!r} is not allowed; choose one of {list(allowed)}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        return _check(inner, value, where, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_check(item, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    return _scalar(hint, value, where, key)


def _scalar(hint: type, value: Any, where: str, key: str) -> Any:
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key}: expected {hint.__name__}, got {value!r}")
    return value


def config_diff(
    old: Config, new: Config, free: set[tuple[str, str]], only: tuple[str, ...] = ()
) -> list[str]:
    """`key: old there, new now` for every leaf key (dotted) that differs, outside `free`, in the
    sections `only` (all when empty)."""

    def leaves(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            full = f"{prefix}.{k}" if prefix else k
            out |= leaves(v, full) if isinstance(v, dict) else {full: v}
        return out

    skip = {f"{s}.{k}" for s, k in free}
    a, b = leaves(old.to_dict()), leaves(new.to_dict())
    keys = [k for k in b if k not in skip and (not only or k.split(".")[0] in only)]
    return [f"{k}: {a.get(k)!r} there, {b[k]!r} now" for k in keys if a.get(k) != b[k]]


def check_resumable(cfg: Config, saved: Path, only: tuple[str, ...] = ()) -> None:
    """Fail when `saved` (a run's or a stage's config.yaml) holds another config than `cfg` (in
    the sections `only`, when given): resuming would mix the finished work of one config with the
    rest of another. Paths, worker and thread counts and `run.rounds` (extending a run) may
    differ, and so may the `OWN_SECTIONS` not named in `only`."""
    if not saved.exists():
        return
    allowed = {*NOT_HASHED, ("run", "rounds"), ("run", "round")}
    d = cfg.to_dict()
    allowed |= {(s, k) for s in OWN_SECTIONS if s not in only for k in d[s]}
    diff = config_diff(load_config(str(saved)), cfg, allowed, only)
    if diff:
        raise ConfigError(
            f"{saved.parent} holds work made with another config ({'; '.join(diff)}); give "
            "another run.out_dir, or delete that directory to start over"
        )


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML, atomically (and nothing secret: the config holds no
    tokens)."""
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# task keys added after evaluations were cached under protocol 2, with the default that leaves
# every task as it was: a file cached before one existed holds the same evaluation
LATE_TASK_KEYS = {("countdown", "heldout_sos_seed"): None}


def eval_keys(cfg: Config, n_problems: int, banned: bool | None = None) -> set[str]:
    """The keys a cached evaluation of these settings may carry: `eval_key`'s, and where every
    late task key is at its default, the key made before those keys existed (so a run evaluated
    then still resumes)."""
    keys = {eval_key(cfg, n_problems, banned)}
    task = cfg.to_dict()["task"]
    if all(task[s][k] == default for (s, k), default in LATE_TASK_KEYS.items()):
        keys.add(eval_key(cfg, n_problems, banned, late=False))
    return keys


def eval_key(cfg: Config, n_problems: int, banned: bool | None = None, late: bool = True) -> str:
    """A hash of what shapes an evaluation's figures (not the model: that is its path); without
    the `LATE_TASK_KEYS` when not `late`."""
    d = cfg.to_dict()
    if not late:
        for section, key in LATE_TASK_KEYS:
            del d["task"][section][key]
    # the deliberate-backspace options enter only when set, so the keys of evaluations made
    # before they existed still match
    off = {k for k in ("bksp_threshold", "bksp_random", "bksp_search") if not d["eval"][k]}
    if not d["eval"]["value_drop"]:  # then the value model reranks the controls only
        off |= {"value_model", "value_drop"}
    shaping = {
        "task": d["task"],
        "eval": {
            k: v for k, v in d["eval"].items() if k not in ("model", "policy", "n_problems", *off)
        },
        # where the search's traces put backspaces shapes the model, not how it is evaluated
        "trace": {k: v for k, v in d["trace"].items() if k != "placement"},
        "max_new_tokens": cfg.search.max_new_tokens,
        "seed": cfg.run.seed,
        "dtype": cfg.model.dtype,
        "n_problems": n_problems,
        "banned": banned,
        "protocol": 2,  # what an evaluation holds; raise it when that changes
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:12]
