"""The vLLM engine behind `SegmentPolicy`: GPU rollouts with prefix caching (docs/design.md §10).

    engine = VllmEngine(path)                       # one GPU per search actor
    policy = SegmentPolicy(engine, eos_id, delim_id, ...)  # same contract as TransformersPolicy
    policy.sample(asks)
    engine.load(next_round_checkpoint)              # new weights, empty prefix cache

vLLM gets token-id prompts, `n` samples per prompt with the request's seed (vLLM gives sample i
the seed `seed + i`), the stop tokens as `stop_token_ids` (the model's own end-of-sequence is
ignored: the policy's stop ids decide), log-probs of the sampled token (vLLM's default raw
log-probs: before temperature and bans), special tokens kept, no detokenisation. Siblings in the
search tree share their path from the root, which prefix caching serves from the cache.

vLLM is imported only here, when an engine is built: it is an optional extra (`pip install
'halluc[vllm]'`) for CUDA machines and never loaded on the CPU path.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from search.errors import HallucError
from workers.hf import check_checkpoint_dir
from workers.segments import Piece, Request

log = logging.getLogger(__name__)

# vLLM clamps logit_bias to [-100, 100]; exp(-100) is zero for any sampler in float32
_BAN = -100.0


class BackendError(HallucError, RuntimeError):
    """A policy backend that cannot run here (missing package, no GPU)."""


def require_vllm() -> None:
    """Fail with what to do when vLLM cannot run on this machine."""
    try:
        import vllm  # noqa: F401
    except ImportError as err:
        raise BackendError(
            f"search.policy=vllm needs vLLM ({err}); install it on a CUDA machine with "
            "`pip install 'halluc[vllm]'` (or use the image in docker/), or set "
            "search.policy=transformers to sample with transformers"
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise BackendError(
            "search.policy=vllm needs a CUDA GPU and this process sees none; run on a GPU node "
            "(a Ray actor asks for one GPU each) or set search.policy=transformers"
        )


class VllmEngine:
    """`Engine` over `vllm.LLM` for one local checkpoint directory (safetensors, tokenizer)."""

    def __init__(
        self,
        path: str | Path,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        trust_remote_code: bool = False,
        seed: int = 0,
    ) -> None:
        require_vllm()
        self.options: dict[str, Any] = {
            "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "trust_remote_code": trust_remote_code,
            "seed": seed,
            "enable_prefix_caching": True,
            # the project's sampling settings win: a model's generation_config.json (its own
            # temperature, top-p, ...) is never merged into them
            "generation_config": "vllm",
        }
        self.llm: Any = None
        self.load(path)

    def load(self, path: str | Path) -> None:
        """Serve the checkpoint at `path` from now on, with an empty prefix cache (a new round's
        weights must not reuse the old round's keys and values)."""
        from vllm import LLM

        check_checkpoint_dir(Path(path))
        if self.llm is not None:
            self.llm.reset_prefix_cache()
            core = getattr(self.llm.llm_engine, "engine_core", None)
            if core is not None:
                core.shutdown()  # frees the GPU before the next engine starts
            self.llm = None
            gc.collect()
        self.llm = LLM(model=str(path), tokenizer=str(path), **self.options)
        self.llm.reset_prefix_cache()
        self.vocab = _vocab_size(Path(path))
        log.info("vllm: serving %s (vocab %d)", path, self.vocab)

    def generate(self, requests: Sequence[Request]) -> list[list[Piece]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt)) for r in requests]
        params = [
            SamplingParams(
                n=r.n,
                seed=r.seed,
                temperature=r.temperature,
                max_tokens=r.max_tokens,
                stop_token_ids=list(r.stop_ids),
                ignore_eos=True,
                logprobs=0,
                logit_bias={t: _BAN for t in r.ban_ids if t < self.vocab} or None,
                skip_special_tokens=False,
                detokenize=False,
            )
            for r in requests
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [[_piece(c) for c in out.outputs] for out in outputs]


def _vocab_size(path: Path) -> int:
    """The model's vocabulary size from its config.json (ids at or past it cannot be sampled)."""
    config = json.loads((path / "config.json").read_text())
    return int(config.get("vocab_size") or config.get("text_config", {})["vocab_size"])


def _piece(completion: Any) -> Piece:
    """Tokens and sampled-token log-probs of one `CompletionOutput`, its stop token last."""
    tokens = list(completion.token_ids)
    logprobs = [float(lp[t].logprob) for t, lp in zip(tokens, completion.logprobs, strict=True)]
    stop = completion.stop_reason
    if completion.finish_reason == "stop" and isinstance(stop, int) and tokens[-1:] != [stop]:
        tokens.append(stop)  # not every version keeps the stop token in token_ids
        logprobs.append(float("nan"))
    return Piece(tuple(tokens), tuple(logprobs))
