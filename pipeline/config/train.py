"""The train section and its objectives' own sections (`train.dpo`, `train.rl`), as the search
section has its algorithms' (`search.omegaprm`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from search.backspace import Mode
from search.errors import ConfigError


@dataclass(frozen=True)
class DpoConfig:
    """`train.objective=dpo`: preference pairs from the round's `pairs` table, or its dpo
    selection (search/pairs.py): chosen = the wrong step, erased, then the backspaces and the
    fix; rejected = the wrong step and the model's own continuation. Each side's log-probability
    sums its loss-bearing tokens only (the prompt, the good steps and the wrong step carry none),
    in `train.mode` attention (erase: the fix never sees the wrong step). The reference is the
    start model with the backspace rows as training gets them (`train.init`, then
    `train.token_warmup` batches on the chosen sequences), frozen; its log-probabilities are
    computed once and kept in `train/reference.json`. A dpo batch holds `train.batch_size // 2`
    pairs (at least one): as many sequences per optimizer step as sft.

    `beta`: the DPO temperature β (TRL's `beta`). `sft_weight`: the weight of the SFT loss on the
    chosen sequences added to the DPO loss (the mean over their loss-bearing tokens,
    `train.error_weight` applied; TRL's `sft` loss type); 1 by default because DPO alone on pairs
    that share a long prefix tends to lower the chosen side's likelihood along with the rejected
    one's (Pang et al. 2024, iterative reasoning preference optimisation: the NLL term was needed
    on GSM8K); 0 is plain DPO. `right_pairs` adds a pair at each fix's first step, which lies on
    a path that ended right: carrying on is chosen, erasing that step is rejected, so unneeded
    backspaces are pushed down too. `lr`: the dpo objective's learning rate (0: `train.lr`, the
    SFT one)."""

    beta: float = 0.1
    sft_weight: float = 1.0
    right_pairs: bool = False
    lr: float = 0.0

    def __post_init__(self) -> None:
        if self.beta <= 0 or self.sft_weight < 0 or self.lr < 0:
            raise ConfigError(
                f"beta must be > 0, sft_weight >= 0 (0: plain DPO) and lr >= 0, got "
                f"beta={self.beta}, sft_weight={self.sft_weight}, lr={self.lr}"
            )


@dataclass(frozen=True)
class RlConfig:
    """`train.objective=rl`: on-policy RL, GRPO-style (trainers/rl.py, workers/grpo.py). Each
    optimizer step takes `train.batch_size // group` training problems (at least one;
    `task.n_train` of them, in a seeded order) and samples `group` streams per problem from the
    current model at temperature 1 with backspaces allowed (the project's sampler, `train.mode`
    attention, `trace.unit`, `trace.backspace_at`, and the streams of the `sampling` section:
    `stream_tokens`, `stream_backspaces`, `max_batch`). Reward: 1 when the task's exact check
    accepts the stream (`Judge.correct`), else 0, minus `token_cost` per generated token.
    Advantage: (r − mean) / (std + 1e-4) within each group (std with Bessel's correction, as
    TRL's GRPO). Loss: −A · log p on every generated token, erased tokens, backspaces and
    end-of-sequence included (each was an action of the policy), none on the prompt, recomputed
    through the collator so erase attention holds; plus `kl` times the k3 estimate of KL to the
    round's starting model (with the backspace rows as training gets them, `train.init` then
    `train.token_warmup` batches on the round's traces), frozen; the mean over the batch's
    loss-bearing tokens. One gradient step per batch of samples, so the importance ratio is 1
    and nothing is clipped. `credit=tree`: a backspace run that erases whole finished steps,
    from a visible prefix P+S back to P, takes the advantage v(P) − v(P+S) on its backspaces,
    the values from the round's `steps` table (its search's Monte Carlo values); where either
    prefix was not probed (the prompt alone never is), the outcome advantage. `credit=value`
    (issue 28, item 2): the same, with the value model at `eval.value_model` (`halluc value`)
    valuing every prefix the tree did not probe (the round's `steps` table where there is one),
    so every run that erases whole steps is credited. `lr`: the rl
    objective's learning rate (0: `train.lr`, the SFT one; policy-gradient steps on 32 streams
    are far noisier than SFT's). Steps: `train.max_steps`, else `train.epochs` passes over the
    training problems; `steps` > 0 fixes the rl objective's own optimizer steps per round
    instead (in `halluc run` the rl arm then trains that many, not the budget arm's: RL needs
    hundreds of steps where the SFT arms take a hundred; the compute table states each arm's);
    hashed only when set. Erase credit (issue 28, item 2; 0 gives the outcome-only reward): the
    reward adds `erase_bonus` per backspace run that erased a fresh error (a wrong step written on
    a right prefix: the first error, by the exact checker), subtracts `erase_penalty` per right
    finished step erased, and adds `repair_bonus` when the first error was erased before a later
    step and the stream ended correct (SCoRe's bonus for improving after an attempt); hashed only
    when set. A checkpoint every `train.save_steps` steps; a killed run resumes from
    the newest. `train.error_weight` does not apply. With `train.workers` N > 0 it runs under
    Ray Train: each worker samples its share of a step's problems (whole groups) and DDP
    averages the gradients, weighted so that the step is the same mean over all loss-bearing
    tokens."""

    group: int = 8
    kl: float = 0.04
    token_cost: float = 0.001
    credit: Literal["outcome", "tree", "value"] = "outcome"
    lr: float = 0.0
    erase_bonus: float = 0.0
    erase_penalty: float = 0.0
    repair_bonus: float = 0.0
    steps: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(
                f"steps={self.steps}: the rl objective's optimizer steps per round, > 0; "
                "0 (the default) leaves them to the run (the budget arm's, else train.max_steps "
                "or train.epochs)"
            )
        if min(self.erase_bonus, self.erase_penalty, self.repair_bonus) < 0:
            raise ConfigError(
                "erase_bonus, erase_penalty and repair_bonus are weights >= 0 (0: off); got "
                f"{self.erase_bonus}, {self.erase_penalty}, {self.repair_bonus}"
            )
        if self.group < 2 or self.kl < 0 or self.token_cost < 0 or self.lr < 0:
            raise ConfigError(
                f"group must be >= 2 (a group of one has no spread to normalise by), kl, "
                f"token_cost and lr >= 0; got group={self.group}, kl={self.kl}, "
                f"token_cost={self.token_cost}, lr={self.lr}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning on traces (design §7), from the model the round searched with, on the round's
    selection (or its search traces). `kinds`: comma-separated trace kinds to train on.
    `curriculum`: the traces are read in order of how much each erases, least first (clean
    traces first of all) instead of shuffled; a dpo run reads its pairs in their file order.
    `workers` > 0 runs under Ray Train with that many workers. `token_warmup` > 0 first fits only
    the new token's embedding rows for that many batches (learning rate 10 × `lr`), the rest
    frozen. `error_weight` scales the loss of the two targets that see a wrong step. `untie`: a
    model whose output layer is its input embedding matrix (GPT-2 and the bootstrap's models) gets
    an output layer of its own before fine-tuning, a copy of the embeddings, so the backspace's
    output row is learned apart from its input row; both arms, so they keep one architecture. The
    saved model is an ordinary untied checkpoint (config `tie_word_embeddings: false`).

    `objective`: `sft` (cross-entropy on the traces), `dpo` (preference pairs, set in `dpo`) or
    `rl` (on-policy RL, set in `rl`). In `halluc run` each arm sets `objective` itself
    (run.arms).

    `report_to`: where the training curves go (loss, learning rate, gradient norm; rl adds its
    reward, KL and backtrack rate). `tensorboard` (the default) writes event files to the round's
    `train/tb/`; the other names are the Trainer's own reporters (`wandb`, `mlflow`, ...: opt-in,
    each needs its package and its login) and reach sft and dpo only, rl's loop writing
    TensorBoard alone; `[]` writes none. Not hashed: it changes no weight or figure. The
    bootstrap and value stages always write their curves to their own `tb/`.

    Anchored expert iteration (ReST-EM): `anchor=start` trains every round from the start model
    (the bootstrap or `model.path`) instead of the previous round's (`previous`); the round still
    searches with the previous round's model. `accumulate` (sft arms: baseline, backtrack; dpo
    and rl read pairs or sample) trains round r on the arm's selections of rounds 0..r, rows that
    repeat an earlier one's tokens dropped, earlier rounds first. `keep_best`: a round's model
    replaces the arm's model only when its validation accuracy (at its setting chosen there) is
    not below that model's; otherwise the arm keeps the model it had, whose figures stand for the
    round, and the round's `gate.json` and the report say so (`halluc run`; an arm that trains
    another arm's model, sft_rl, is not gated). `replay` = s in [0, 1) (sft): the round's rows
    make 1 − s of what it trains on and rows of the bootstrap's own data (its training problems
    in its forms, drawn anew each round; without backspaces for an arm trained without the
    token) the share s, as ReST-style loops replay their start distribution. `replay_only` (with
    `replay` > 0): the control for replay: the round trains on as many rows as `replay` would
    give it in all, every one of them the bootstrap's (none of the round's selections), so what
    replay adds beyond training the start model further on its own data can be told apart.
    All five hashed only when set."""

    mode: Mode = "erase"
    init: Literal["mean", "words", "description", "subtokens"] = "mean"
    kinds: str = "correction,self_correction,clean"
    curriculum: bool = False
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
    dpo: DpoConfig = field(default_factory=DpoConfig)
    rl: RlConfig = field(default_factory=RlConfig)
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    anchor: Literal["previous", "start"] = "previous"
    accumulate: bool = False
    keep_best: bool = False
    replay: float = 0.0
    replay_only: bool = False

    def __post_init__(self) -> None:
        if {"all", "none"} & set(self.report_to):
            raise ConfigError(
                f"report_to={self.report_to}: name the reporters (tensorboard, wandb, ...), or "
                "give [] for none"
            )
        if self.objective == "rl" and self.workers > max(1, self.batch_size // self.rl.group):
            raise ConfigError(
                f"workers={self.workers} with objective=rl: each worker samples whole groups, "
                f"and a step has batch_size // rl.group = {self.batch_size // self.rl.group} "
                "problems; use at most that many workers, or a larger batch_size"
            )
        allowed = {"correction", "self_correction", "clean"}
        bad = set(self.kinds.split(",")) - allowed
        if bad:
            raise ConfigError(f"kinds: {sorted(bad)} not allowed; use {sorted(allowed)}")
        if not 0 <= self.replay < 1:
            raise ConfigError(
                f"replay={self.replay}: the share of each round's rows taken from the bootstrap's "
                "data must be in [0, 1)"
            )
        if self.replay_only and not self.replay:
            raise ConfigError(
                "replay_only=true trains a round on bootstrap rows only, as many as train.replay "
                "gives in all: set train.replay in (0, 1) too"
            )
        if self.batch_size < 1 or self.save_steps < 1 or self.workers < 0 or self.token_warmup < 0:
            raise ConfigError(
                "batch_size and save_steps must be >= 1, workers and token_warmup >= 0"
            )
