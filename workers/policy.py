"""The one way a policy gets built, for the search and for evaluation alike.

    loaded = load("transformers", path, delimiter="\\n", bksp_token="<|bksp|>", unit="step")
    policy = make_policy(loaded, Decoding(temperature=0.7, max_new_tokens=64))

`load` reads a checkpoint once (weights into torch, or a vLLM engine) with its tokenizer and the
backspace semantics it was trained with (`halluc.json`: attention mode and unit); `make_policy`
builds a policy of that kind with the given decoding options, as often as needed (evaluation
builds one per setting over one load). `load_fake` stands in for a checkpoint with the scripted
policy of `search.fake`. Sampling never emits a special token that is not part of the task's
output (padding, unknown, and any other special token the tokenizer has); end-of-sequence, the
step delimiter and the backspace stay allowed, and a model not trained on backspaces never emits
one by chance: its backspace is banned too. Heavy libraries are imported only for the kind that
needs them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from search.backspace import Mode, Unit
from search.fake import FakeParams
from search.types import Policy, Problem, Task, Tokenizer, Valuer
from workers.options import check_decoding

if TYPE_CHECKING:
    from workers.hf import SearchTokenizer

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # models already warned of guided search not applying to them

Kind = Literal["transformers", "vllm", "fake"]


@dataclass(frozen=True)
class Decoding:
    """How a policy samples. `temperature` 0 is greedy; `max_batch` rows per forward pass
    (transformers); `ban_backspace` forbids the backspace; at most `max_backspaces` per row;
    `backspace_at="step_end"` allows one only right after a step delimiter or another backspace
    (step unit only); `logprobs` returns each sampled token's log-probability.

    Deliberate backspaces (transformers only; at most one of the two > 0, 0 is off): wherever a
    backspace is allowed, `bksp_threshold` emits it if and only if the model's own probability
    of it (before temperature) is at least the threshold; `bksp_random` emits it with that
    probability, whatever the model (the random-eraser control). Elsewhere the backspace is
    banned and the token drawn among the rest as usual. `bksp_search` m > 0 (transformers, a
    model trained on backspaces, backspace not banned): backspace-guided search
    (`workers.guided`), with `bksp_threshold` as its erase rule when set, or with `value_drop`
    d > 0 the value model's: erase a step whose value fell by more than d (`make_policy` is given
    the value model), or with `erase_logprob` < 0 the step's own likelihood: erase a step whose
    mean token log-probability is below it; `erase_at_end` lets that rule also erase a step
    that ended the stream (`workers.guided`, `at_end`). `erase_temperature` T_e > 0 (transformers,
    no `bksp_search`): a row that has just emitted a backspace samples at T_e until the step it
    writes next ends (`workers.sampler`). `make_policy` checks these options
    (`workers.options.check_decoding`)."""

    temperature: float = 1.0
    max_new_tokens: int = 64
    max_batch: int = 256
    ban_backspace: bool = False
    max_backspaces: int = 16
    backspace_at: Literal["any", "step_end"] = "any"
    logprobs: bool = False
    bksp_threshold: float = 0.0
    bksp_random: float = 0.0
    bksp_search: int = 0
    value_drop: float = 0.0
    erase_logprob: float = 0.0
    erase_at_end: bool = False
    erase_temperature: float = 0.0


@dataclass(frozen=True)
class Loaded:
    """A checkpoint loaded for sampling. `backend`: the torch model, the vLLM engine, or the
    fake policy; `trained`: it carries `halluc.json` (it was trained on backspaces), whose
    `mode` and `unit` decoding must use."""

    kind: Kind
    name: str
    tokenizer: Tokenizer
    backend: Any
    mode: Mode
    unit: Unit
    trained: bool
    pad_id: int = 0
    banned: tuple[int, ...] = ()  # special tokens that are never part of the task's output


def load(
    kind: Kind,
    path: str | Path,
    delimiter: str,
    bksp_token: str,
    unit: Unit,
    *,
    device: str = "auto",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    gpu_memory: float = 0.85,
    seed: int = 0,
    chat: tuple[bool, str] = (False, ""),
) -> Loaded:
    """The checkpoint at `path` for a `kind` ("transformers" or "vllm") policy. `unit` applies
    to a model without `halluc.json`; `chat`: (use the chat template, system prompt)."""
    from workers.hf import SearchTokenizer, backtrack_meta, load_checkpoint, load_tokenizer

    if kind == "vllm":
        from workers.vllm_engine import VllmEngine

        hf = load_tokenizer(path, trust_remote_code)
        backend: Any = VllmEngine(path, dtype, gpu_memory, trust_remote_code, seed)
    elif kind == "transformers":
        backend, hf = load_checkpoint(path, device, dtype, trust_remote_code)
    else:
        raise ValueError(f"load() takes a checkpoint kind (transformers, vllm), not {kind!r}")
    tok = SearchTokenizer.wrap(hf, delimiter, bksp_token, *chat)
    meta = backtrack_meta(path)
    mode = meta.get("mode", "stream")
    unit = meta.get("unit", unit)
    trained = bool(meta) and meta.get("backspace", True)  # a clean-only arm records False
    return Loaded(kind, str(path), tok, backend, mode, unit, trained, pad_of(hf), bans(hf, tok))


def pad_of(hf: Any) -> int:
    """The padding id, the one rule for every batch the project pads: the tokenizer's own, else
    end-of-sequence (Llama-family tokenizers have no pad token), else 0. Padding is masked, so
    its id changes no figure."""
    for pad in (hf.pad_token_id, hf.eos_token_id):
        if pad is not None:
            return int(pad)
    return 0


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")


def context_limit(config: Any) -> int | None:
    """The positions a model takes, from its config (a transformers config object, or
    config.json's dict) under the names architectures give it; None where it names none."""
    for key in CONTEXT_KEYS:
        value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def bans(hf: Any, tok: SearchTokenizer) -> tuple[int, ...]:
    """What sampling never emits: special tokens that are not part of the task's output, and
    tokens that hold the step delimiter before their end (a step boundary inside a token), listed
    in a log line once."""
    straddling = tok.straddling
    if straddling:
        shown = ", ".join(repr(tok.decode([i])) for i in straddling[:5])
        log.warning(
            "sampling bans %d tokens with the step delimiter inside them (%s%s): a step ends at "
            "a token's end",
            len(straddling),
            shown,
            ", ..." if len(straddling) > 5 else "",
        )
    specials = non_output_specials(hf, (tok.eos_id, tok.delim_id, tok.bksp_id))
    return tuple(sorted({*specials, *straddling}))


def non_output_specials(hf: Any, keep: Sequence[int]) -> tuple[int, ...]:
    """Ids of every special token of the tokenizer `hf` (named ones such as padding and unknown,
    and added tokens marked special) except those in `keep`."""
    ids = set(hf.all_special_ids)
    ids |= {i for i, t in hf.added_tokens_decoder.items() if getattr(t, "special", False)}
    return tuple(sorted(ids - set(keep)))


def load_fake(
    task: Task,
    problems: Sequence[Problem],
    params: FakeParams,
    bksp_token: str,
    unit: Unit,
    seed: int,
) -> Loaded:
    """The scripted policy with known mistakes on `problems`, over a character tokenizer."""
    from search.tokenizer import CharTokenizer

    tok = CharTokenizer(bksp_token=bksp_token)
    name = f"fake:{params.error_rate}/{params.trap_rate}"
    return Loaded("fake", name, tok, (task, list(problems), params, seed), "stream", unit, True)


def make_policy(loaded: Loaded, d: Decoding, valuer: Valuer | None = None) -> Policy:
    """A policy of `loaded.kind` over `loaded` with decoding options `d` (`valuer`: the value
    model `d.value_drop` needs)."""
    tok = loaded.tokenizer
    check_decoding(
        d.bksp_threshold,
        d.bksp_random,
        d.bksp_search,
        d.value_drop,
        kind=loaded.kind,
        value_model=valuer is not None,
        erase_logprob=d.erase_logprob,
        erase_at_end=d.erase_at_end,
        erase_temperature=d.erase_temperature,
    )
    if loaded.kind == "fake":
        return _scripted(loaded, d)
    options: dict[str, Any] = {
        "temperature": d.temperature,
        "max_new_tokens": d.max_new_tokens,
        "logprobs": d.logprobs,
        "ban_ids": [
            *loaded.banned,
            *([tok.bksp_id] if d.ban_backspace or not loaded.trained else []),
        ],
        "bksp_id": tok.bksp_id,
        "mode": loaded.mode,
        "unit": loaded.unit,
        "max_backspaces": d.max_backspaces,
        "step_end_only": d.backspace_at == "step_end" and loaded.unit == "step",
    }
    if loaded.kind == "vllm":
        from workers.segments import SegmentPolicy

        return SegmentPolicy(loaded.backend, tok.eos_id, tok.step_ends, **options)
    if d.bksp_search and not (d.ban_backspace or not loaded.trained):
        return _guided(loaded, d, valuer)
    if d.bksp_search and not d.ban_backspace and loaded.name not in _WARNED:
        _WARNED.add(loaded.name)  # once per model: a run decodes its baseline this way by design
        log.warning(
            "eval.bksp_search: %s was not trained on backspaces (no halluc.json), so it is decoded "
            "by plain sampling and no erase rule (the model's, erase_logprob, bksp_random, "
            "value_drop) applies to it; give a model trained with the backspace token",
            loaded.name,
        )
    from workers.sampler import TransformersPolicy

    return TransformersPolicy(
        loaded.backend,
        tok.eos_id,
        tok.step_ends,
        max_batch=d.max_batch,
        pad_id=loaded.pad_id,
        bksp_threshold=d.bksp_threshold,
        bksp_random=d.bksp_random,
        erase_temperature=d.erase_temperature,
        **options,
    )


def _scripted(loaded: Loaded, d: Decoding) -> Policy:
    """The scripted stand-in model (`model.path: fake`) with the parameters it was loaded with."""
    from search.fake import ScriptedPolicy

    task, problems, params, seed = loaded.backend
    return ScriptedPolicy(
        task,
        problems,
        loaded.tokenizer,
        **vars(params),
        unit=loaded.unit,
        max_new_tokens=d.max_new_tokens,
        seed=seed,
    )


def _guided(loaded: Loaded, d: Decoding, valuer: Valuer | None) -> Policy:
    """Sampling that, at a point where the model would erase, searches `d.bksp_search` ways on."""
    from workers.guided import GuidedPolicy

    tok = loaded.tokenizer
    return GuidedPolicy(
        loaded.backend,
        tok.eos_id,
        tok.step_ends,
        tok.bksp_id,
        loaded.unit,
        d.bksp_search,
        d.temperature,
        d.max_new_tokens,
        d.max_batch,
        ban_ids=loaded.banned,
        pad_id=loaded.pad_id,
        max_backspaces=d.max_backspaces,
        bksp_threshold=d.bksp_threshold,
        valuer=valuer if d.value_drop else None,
        value_drop=d.value_drop,
        erase_logprob=d.erase_logprob,
        at_end=d.erase_at_end,
        bksp_random=d.bksp_random,
    )
