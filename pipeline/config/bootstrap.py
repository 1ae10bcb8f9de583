"""The bootstrap's section (`BootstrapConfig`) and the model-size ladder's shapes (`SIZES`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from search.backspace import Mode
from search.errors import ConfigError

# the model-size ladder (`bootstrap.size`): (n_layer, n_embd, n_head) of a GPT-2-shaped decoder;
# parameters with a 30-token character vocabulary and 256 positions
SIZES: dict[str, tuple[int, int, int]] = {
    "0.6m": (3, 128, 4),  # 0.63M, the presets' model
    "2.7m": (6, 192, 3),  # 2.72M
    "10m": (8, 320, 5),  # 9.96M
}


DataForm = Literal["optimal", "stream", "backspace", "optimal+stream", "optimal+backspace"]


@dataclass(frozen=True)
class BootstrapConfig:
    """A small decoder trained from scratch on the task's reference solutions (docs/design.md §9).

    `data` (Countdown: a task with search streams): `optimal` (the solver's path), `stream` (a
    Stream-of-Search stream of the heuristic search in `search_order`, dead ends and "back" lines
    visible, plain attention), `backspace` (the same search, each dead end erased back to the
    state it branched from: step-unit backspaces, erase attention; the model has the backspace
    token from step 0), or `optimal+stream` / `optimal+backspace` (each problem drawn in one of
    the two forms at random). `erased_loss`: the backspace form's erased moves carry loss too
    (the model learns to try them; off: it learns the path kept and when to erase). `attention`
    (data with backspaces): `erase` hides what a backspace erased from every later token, in
    training and decoding alike (docs/design.md's erase attention); `stream` keeps every token
    visible, so a tried move stays in view of what follows, and the backspaces still take it out
    of the answer; `tried` is erase attention that keeps in view the moves tried at the current
    branch point, with their backspaces, until the search backs above it (a tabu list in
    context; `search.backspace.erase_schedule`). `batch_tokens`
    > 0: each batch is filled to that many loss-bearing tokens instead of `batch_size` examples,
    so forms of different lengths train on equal tokens and steps.

    `retry_rate` p (arithmetic and countdown, `data=optimal` only): each solution, with
    probability p (seeded, a generator of its own), has one step chosen uniformly typed wrong
    first, erased by one step backspace and typed right; the data has backspaces, so erase
    attention and the token from step 0, as for `backspace`. The wrong step is the task's
    `wrong_step` (a plausible slip its exact checker flags), or with `retry_model` (a checkpoint,
    e.g. a clean bootstrap) the model's own: its first wrong step in `retry_samples` samples at
    T=1.0, on its own right prefix, then a right continuation (`pipeline.own_errors`);
    `retry_detector=logprob` erases instead the first step whose mean token log-probability is
    below `retry_tau` (< 0), right or wrong: the backspace learns that detector's decisions.
    `retry_placement` (countdown): `at_error` erases the wrong step right after it;
    `at_detection` plays the wrong move on (random legal moves) to the visible dead end, one
    number left that is not the target, writes the backspaces where end-of-sequence would
    have gone (after the last move, before any delimiter), and erases back to the branching
    move: the trigger Stream of Search backtracks at (a wrong step that is itself invalid, or
    the last move, is erased where it stands).

    `tokenizer`: `char` (one token per character: the delimiter is always a token of its own) or
    a byte-level BPE of `vocab_size` tokens trained on the solutions with GPT-2's or Qwen2's
    pre-tokenizer (`gpt2-bpe`, `qwen2-bpe`: the tokenizers users' checkpoints bring, whose steps
    end in merged tokens such as `.\n`; no pad token), for clean data (`data=optimal`, no
    retries). `arch` `qwen2` is a Qwen2 config (grouped-query attention, 2 key/value heads when
    `n_head` allows)."""

    arch: Literal["gpt2", "llama", "qwen2"] = "gpt2"
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
    data: DataForm = "optimal"
    search_order: Literal["dfs", "bfs"] = "dfs"
    max_states: int = 100
    erased_loss: bool = False
    attention: Mode = "erase"
    batch_tokens: int = 0
    retry_rate: float = 0.0
    tokenizer: Literal["char", "gpt2-bpe", "qwen2-bpe"] = "char"
    vocab_size: int = 512
    size: Literal["", "0.6m", "2.7m", "10m"] = ""
    fresh: bool = False
    retry_model: str = ""
    retry_samples: int = 4
    retry_placement: Literal["at_error", "at_detection"] = "at_error"
    retry_detector: Literal["checker", "logprob"] = "checker"
    retry_tau: float = -1.0

    def shape(self) -> tuple[int, int, int]:
        """(n_layer, n_embd, n_head): the `size` rung's, else the keys as given."""
        return SIZES[self.size] if self.size else (self.n_layer, self.n_embd, self.n_head)

    def has_backspaces(self) -> bool:
        """Whether it trains on data with backspaces (the backspace form, or retries): the model
        gets the backspace token from step 0, and `attention` applies."""
        return "backspace" in self.data.split("+") or self.retry_rate > 0

    def _check_size(self) -> None:
        given = (self.n_layer, self.n_embd, self.n_head)
        if self.size and given not in (SIZES[self.size], (3, 128, 4)):
            raise ConfigError(
                f"size={self.size} sets n_layer, n_embd, n_head to {SIZES[self.size]}; they are "
                f"set to {given} too: give one or the other"
            )

    def _check_retry(self) -> None:
        if self.retry_placement != "at_error" and (not self.retry_rate or self.retry_model):
            raise ConfigError(
                f"retry_placement={self.retry_placement}: places synthetic retries, so it needs "
                f"retry_rate > 0 (got {self.retry_rate}) and no retry_model"
            )
        if self.retry_detector == "logprob" and (not self.retry_model or self.retry_tau >= 0):
            raise ConfigError(
                f"retry_detector=logprob: flags a step of retry_model's own samples whose mean "
                f"token log-probability is below retry_tau; set retry_model and retry_tau < 0 "
                f"(got {self.retry_model!r}, {self.retry_tau})"
            )
        if not 0 <= self.retry_rate <= 1:
            raise ConfigError(f"retry_rate: must be in [0, 1], got {self.retry_rate}")
        if self.retry_model and (not self.retry_rate or self.retry_samples < 1):
            raise ConfigError(
                f"retry_model: errors of {self.retry_model} become retries only at retry_rate "
                f"> 0 (got {self.retry_rate}) with retry_samples >= 1 (got {self.retry_samples})"
            )
        if self.retry_rate and self.data != "optimal":
            raise ConfigError(
                f"retry_rate: retries are added to optimal solutions only; set data=optimal "
                f"(not {self.data}) or retry_rate=0"
            )

    def __post_init__(self) -> None:
        self._check_size()
        if self.tokenizer != "char" and (self.data != "optimal" or self.retry_rate):
            raise ConfigError(
                f"tokenizer={self.tokenizer}: a BPE bootstrap trains on clean solutions; set "
                "data=optimal and retry_rate=0, or tokenizer=char"
            )
        if self.vocab_size < 300:
            raise ConfigError(
                f"vocab_size: at least 300 (256 bytes and merges), got {self.vocab_size}"
            )
        if self.max_states < 1 or self.batch_tokens < 0:
            raise ConfigError("max_states must be >= 1 and batch_tokens >= 0")
        self._check_retry()
        if self.attention != "erase" and not self.has_backspaces():
            raise ConfigError(
                f"attention={self.attention}: says how data with backspaces is attended; "
                f"data={self.data} without retries has none (leave attention=erase)"
            )
        positive = ("n_layer", "n_embd", "n_head", "n_positions", "n_problems", "steps")
        for name in (*positive, "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        _, n_embd, n_head = self.shape()
        if n_embd % n_head:
            raise ConfigError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
