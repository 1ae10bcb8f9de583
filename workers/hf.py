"""Loading a Hugging Face checkpoint directory, and the tokenizer the search sees.

`load_checkpoint(path)` is the one way a model gets in: a local directory with safetensors weights
and a tokenizer, through `AutoModelForCausalLM` / `AutoTokenizer` exactly as a Hub model would load
(`trust_remote_code` off unless asked; pickled `.bin` weights refused). Every failure says what is
missing and what to do.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from search.errors import HallucError

Precision = Literal["fp32", "bf16", "auto"]
log = logging.getLogger(__name__)


@functools.cache
def _native_bf16(kind: str) -> bool:
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None) if kind == "cpu" else None
    return bool(check()) if check is not None else False


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` multiplies bf16 matrices natively: a CUDA GPU that supports bf16, or a CPU
    whose oneDNN has bf16 kernels (AVX-512 or AMX). Elsewhere (an AVX2-only CPU, MPS) bf16
    autocast is emulated: measured on an AVX2 CPU, a 1024x1024 bf16 product took 2.2 s against
    15 ms in fp32 (BENCHMARKS.md, scale)."""
    return _native_bf16(torch.device(device).type)


def resolve_precision(precision: str, device: torch.device | str) -> Literal["fp32", "bf16"]:
    """`precision` as it runs on `device`: `auto` is bf16 where the device multiplies bf16
    natively (`native_bf16`), else fp32; fp32 and bf16 stay as asked."""
    if precision not in ("fp32", "bf16", "auto"):
        raise ValueError(f"precision is fp32, bf16 or auto, not {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return "bf16" if precision == "bf16" else "fp32"


def set_precision(model: torch.nn.Module, precision: Precision) -> torch.nn.Module:
    """Run `model`'s forward under bf16 autocast (`"bf16"`: matrix products in bfloat16; weights,
    optimizer state and the ops autocast keeps in float32 (softmax, losses, norms) as they are) or
    as it is (`"fp32"`); `"auto"`: bf16 where the model's device multiplies bf16 natively, else
    fp32 (`resolve_precision`). The one switch for training (mixed precision: fp32 master weights)
    and sampling alike, on CPU and GPU; returns `model`. Forward hooks, not a patched `forward`: a
    `copy.deepcopy` of the model (rl's reference) keeps the switch and stays its own model. bf16
    asked for on a device without it runs as asked, with a warning that it is slow there."""
    if precision not in ("fp32", "bf16", "auto"):
        raise ValueError(f"precision is fp32, bf16 or auto, not {precision!r}")
    for handle in getattr(model, "_halluc_precision", ()):
        handle.remove()
    model._halluc_precision = ()  # type: ignore[assignment]
    if precision != "fp32":
        hooks = _Autocast(auto=precision == "auto")
        model._halluc_precision = (  # type: ignore[assignment]
            model.register_forward_pre_hook(hooks.enter),
            model.register_forward_hook(hooks.exit, always_call=True),
        )
    return model


class _Autocast:
    """Enter bf16 autocast before a forward and leave it after, on the module's device; with
    `auto`, only where that device multiplies bf16 natively (decided at the forward, so a model
    moved to a GPU after `set_precision` gets bf16 there). bf16 asked for on a device without it
    runs as asked, with one warning that it is slow there."""

    def __init__(self, auto: bool) -> None:
        self.auto = auto
        self.warned = False
        self.open: list[Any] = []

    def enter(self, module: torch.nn.Module, args: Any) -> None:
        device = next(module.parameters()).device
        native = native_bf16(device)
        if self.auto and not native:
            ctx: Any = contextlib.nullcontext()
        else:
            ctx = torch.autocast(device.type, dtype=torch.bfloat16)
            if not native and not self.warned:
                self.warned = True
                log.warning(
                    f"model.precision=bf16 on {device.type} without native bf16 matrix products "
                    f"(CPU capability {torch.backends.cpu.get_cpu_capability()}): autocast "
                    "emulates them, many times slower than fp32; model.precision=auto picks fp32 "
                    "on such a device"
                )
        ctx.__enter__()
        self.open.append(ctx)

    def exit(self, module: torch.nn.Module, args: Any, out: Any) -> None:
        self.open.pop().__exit__(None, None, None)


class CheckpointError(HallucError, ValueError):
    """A checkpoint directory that cannot be used as it is."""


def check_checkpoint_dir(path: str | Path) -> Path:
    """Fail fast on a directory without weights or without a tokenizer."""
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(
            f"checkpoint directory {p} does not exist; give a local model directory or run "
            "`halluc bootstrap` first"
        )
    if not (p / "config.json").exists():
        raise CheckpointError(f"{p} has no config.json: not a Hugging Face checkpoint directory")
    if not list(p.glob("*.safetensors")):
        has_bin = bool(list(p.glob("*.bin")))
        hint = (
            " (it has pickled .bin weights, which are not loaded; convert them to safetensors)"
            if has_bin
            else ""
        )
        raise CheckpointError(f"{p} has no *.safetensors weights{hint}")
    for weights in sorted(p.glob("*.safetensors")):
        try:
            with safe_open(str(weights), "pt") as f:
                f.keys()
        except (SafetensorError, OSError) as err:
            raise CheckpointError(
                f"{weights} is damaged ({err}): a copy or a save that did not finish? copy or "
                "save the model again"
            ) from None
    if not ((p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists()):
        raise CheckpointError(
            f"{p} has no tokenizer (tokenizer.json / tokenizer_config.json); save the tokenizer "
            "into the checkpoint directory with tokenizer.save_pretrained"
        )
    return p


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


META = "halluc.json"  # written beside a model trained on backspaces: mode, unit, backspace token


def backtrack_meta(path: str | Path) -> dict[str, Any]:
    """How the model at `path` was trained to backspace (`META`); empty for any other model."""
    meta = Path(path) / META
    return dict(json.loads(meta.read_text())) if meta.exists() else {}


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer of a checked checkpoint directory (for backends that load the weights)."""
    p = check_checkpoint_dir(path)
    try:
        return AutoTokenizer.from_pretrained(p, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        missing = "" if (p / "tokenizer.json").exists() else " (it has no tokenizer.json)"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{p}: its tokenizer does not load{missing}: {first}; save the tokenizer into the "
            "directory with tokenizer.save_pretrained (a fast tokenizer writes tokenizer.json)"
        ) from None


def load_checkpoint(
    path: str | Path,
    device: str = "auto",
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> tuple[Any, PreTrainedTokenizerBase]:
    """Model (eval mode, on `device`) and tokenizer from a local checkpoint directory."""
    p = check_checkpoint_dir(path)
    tokenizer = load_tokenizer(p, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            p,
            dtype=getattr(torch, dtype),
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
        )
    except (SafetensorError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{p}: its weights do not load: {first}") from None
    model.to(pick_device(device))  # type: ignore[arg-type]
    return model.eval(), tokenizer


@dataclass
class SearchTokenizer:
    """The search's view of a HF tokenizer: ids of end-of-sequence, step delimiter and backspace.

    The backspace token is added to the tokenizer when missing (the id it gets is the one training
    will use after `add_special_tokens`). The step delimiter must be exactly one token on its own.
    `step_ends`: every id whose text ends with the delimiter (a byte-level BPE merges it with the
    punctuation before it: `.\n`), each of which ends a step as the bare delimiter does.
    `straddling`: ids whose text holds the delimiter before its end (`\nThe`); a step boundary
    inside a token cannot be cut at, so sampling bans them (`workers.policy.load`): a model then
    writes its step end and the next step's start as two tokens, which its own vocabulary allows.
    """

    hf: PreTrainedTokenizerBase
    eos_id: int
    delim_id: int
    bksp_id: int
    step_ends: frozenset[int] = frozenset()
    straddling: tuple[int, ...] = ()
    chat: tuple[str, str] | None = None  # (delimiter, system prompt) with the chat template

    @classmethod
    def wrap(
        cls,
        hf: PreTrainedTokenizerBase,
        delimiter: str,
        bksp_token: str,
        chat_template: bool = False,
        system_prompt: str = "",
    ) -> SearchTokenizer:
        if hf.eos_token_id is None:
            raise CheckpointError("the tokenizer has no eos_token; set one in tokenizer_config")
        if bksp_token not in hf.get_vocab():
            hf.add_special_tokens({"additional_special_tokens": [bksp_token]})
        delim = hf.encode(delimiter, add_special_tokens=False)
        if len(delim) != 1:
            raise CheckpointError(
                f"the tokenizer encodes the step delimiter {delimiter!r} as {len(delim)} tokens "
                f"{delim}; the search needs it to be exactly one token (pick a task delimiter the "
                "tokenizer has as a single token)"
            )
        bksp_id = hf.convert_tokens_to_ids(bksp_token)
        assert isinstance(bksp_id, int)  # one token string in, one id out
        ends, straddling = step_end_ids(hf, delimiter, (hf.eos_token_id, bksp_id))
        if chat_template:
            require_chat_template(hf)
        chat = (delimiter, system_prompt) if chat_template else None
        return cls(hf, hf.eos_token_id, delim[0], bksp_id, ends | {delim[0]}, straddling, chat)

    def encode_prompt(self, text: str) -> list[int]:
        """A problem's prompt as the model reads it: as it is, or with the chat template the
        user's turn (after the system prompt's, when given) and the opening of the assistant's
        turn, ending with the delimiter so that the first step starts on a fresh line."""
        if self.chat is None:
            return self.encode(text)
        return self.encode(chat_prompt(self.hf, text, *self.chat))  # the template writes any BOS

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.hf.decode(list(ids), skip_special_tokens=False)).replace(
            str(self.hf.eos_token), ""
        )


def require_chat_template(hf: PreTrainedTokenizerBase) -> None:
    """Fail unless the tokenizer `hf` has a chat template (`task.chat_template`)."""
    if not getattr(hf, "chat_template", None):
        raise CheckpointError(
            "task.chat_template=true, but the tokenizer has no chat template (a base model, "
            "or the bootstrap's); give an instruct model's checkpoint or set it to false"
        )


def chat_prompt(hf: PreTrainedTokenizerBase, text: str, delimiter: str, system: str = "") -> str:
    """A problem's prompt `text` in `hf`'s chat template: the system turn (when `system`), the
    user's turn, the opening of the assistant's; ending with `delimiter`, appended if missing."""
    require_chat_template(hf)
    turns = [{"role": "system", "content": system}] if system else []
    turns.append({"role": "user", "content": text.removesuffix(delimiter)})
    chat = str(hf.apply_chat_template(turns, tokenize=False, add_generation_prompt=True))
    return chat if chat.endswith(delimiter) else f"{chat}{delimiter}"


def step_end_ids(
    hf: PreTrainedTokenizerBase, delimiter: str, skip: Sequence[int] = ()
) -> tuple[frozenset[int], tuple[int, ...]]:
    """The ids of `hf`'s vocabulary whose text ends with `delimiter`, and those whose text holds
    it before its end (`SearchTokenizer`); special tokens and `skip` are neither. One decode per
    id, once per load."""
    specials = {*hf.all_special_ids, *skip}
    ids = [i for i in range(len(hf)) if i not in specials]
    texts = hf.batch_decode([[i] for i in ids], skip_special_tokens=False)
    ends = frozenset(i for i, t in zip(ids, texts, strict=True) if t.endswith(delimiter))
    inside = tuple(
        i for i, t in zip(ids, texts, strict=True) if delimiter in t and not t.endswith(delimiter)
    )
    return ends, inside


def check_erase_support(model: Any) -> None:
    """Fail unless erase mode is exact for `model` (a model or its config): every layer must attend
    to the whole visible prefix. A sliding window (`sliding_window`: Mistral, Gemma2/3, Qwen2 with
    `use_sliding_window`), chunked attention (`attention_chunk_size`) or layers of another kind
    (`layer_types`) limit attention by position or cache column, which the erase-mode mask
    (positions renumbered after erased tokens) and the cropped cache do not follow: training logits
    differ from re-encoding and the cache crop fails. Refused whenever such a field is set, even
    when the window is longer than every sequence (harmless then, but not checked per sequence)."""
    config = getattr(model, "config", model)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(text, "sliding_window", None)
    if getattr(text, "use_sliding_window", None) is False:
        window = None  # older Qwen2 configs keep the field with the window switched off
    chunk = getattr(text, "attention_chunk_size", None)
    kinds = sorted({k for k in getattr(text, "layer_types", None) or [] if k != "full_attention"})
    if window is not None:
        what = f"sliding_window={window}"
    elif chunk is not None:
        what = f"attention_chunk_size={chunk}"
    elif kinds:
        what = f"layer_types with {kinds}"
    else:
        return
    raise CheckpointError(
        f"erase mode needs every layer to attend to the whole visible prefix, but this "
        f"{type(text).__name__} sets {what} in its config: erase-mode training would not match "
        "decoding and the KV cache cannot be cropped. Use train.mode=stream (erased tokens stay "
        "visible), or a model without a sliding window; a window longer than every sequence is "
        'harmless but refused whenever set: then set "sliding_window": null (and every '
        '"layer_types" entry to "full_attention") in its config.json'
    )


def cache_kwarg(model: Any) -> str:
    """The forward argument that takes the KV cache: `cache` in recent transformers, before that
    `past_key_values` (vLLM images pin an older transformers, so both are supported)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def last_logits_only(model: Any) -> dict[str, int]:
    """The forward argument that computes the logits of the last position only (a prefill then
    makes `[batch, 1, vocab]` logits, not `[batch, prompt, vocab]`: with a 50k-token vocabulary
    and long prompts that is gigabytes), under its name in this transformers version; none where
    the model takes neither."""
    params = inspect.signature(model.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return {name: 1}
    return {}


def forward_cached(model: Any, kwarg: str, cache: Any, **inputs: Any) -> tuple[torch.Tensor, Any]:
    """One forward pass with a KV cache; returns the logits and the updated cache."""
    out = model(**inputs, **{kwarg: cache}, use_cache=True)
    new_cache = out.cache if hasattr(out, "cache") else out.past_key_values
    return out.logits, new_cache


def select_rows(cache: Any, index: torch.Tensor) -> Any:
    """Keep only the batch rows `index` (a LongTensor) of a KV cache: the `Cache` object's own
    `batch_select_indices`, or, for the legacy tuple of (key, value) per layer, an index_select
    of every tensor (dimension 0 is the batch)."""
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(index)
        return cache
    return tuple(tuple(x.index_select(0, index) for x in layer) for layer in cache)
