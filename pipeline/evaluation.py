"""Evaluation: how a model does on held-out problems, with and without its backspace (used by the
eval, bootstrap and run stages).

Four settings: greedy and temperature `eval.temperature` (pass@1 over `eval.samples` samples per
problem), each also with the backspace token banned (what the same model does without the
skill). Per setting: accuracy with a 95% Wilson interval, backtrack rate (samples with a
backspace), erase precision (backspace runs that erased a wrong finished step, by the exact step
checker; a half-written step is neither right nor wrong), the share of erased finished steps that
were wrong beside chance (the share of all written finished steps that were wrong), recovery
(samples that finished a wrong step and still ended right), tokens per solved sample. Decoding
uses the attention mode the model was trained with (`halluc.json` in its directory). Sampling goes
through `workers.policy` with `eval.policy` (transformers or vLLM).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from pipeline.config import Config, ConfigError, eval_key
from pipeline.files import read_json, write_json
from pipeline.loading import load_model
from search.metrics import StreamReport, analyze
from search.tree import Judge, derive_seed
from search.types import Ask, Policy, Problem, Task
from workers.policy import Decoding, Loaded, make_policy

log = logging.getLogger(__name__)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def evaluate_to(
    out: Path, path: Path, task: Task, problems: list[Problem], cfg: Config
) -> dict[str, Any]:
    """The figures of the checkpoint at `path`, cached in `out` with the key of what shaped them
    (`eval_key`); a file made with other settings is refused, never overwritten."""
    key = eval_key(cfg, len(problems))
    if out.exists():
        cached = dict(read_json(out))
        if cached.get("eval_key") != key:
            raise ConfigError(
                f"{out} holds figures made with other task, eval or decoding settings; delete it "
                "to evaluate again, or evaluate on its own with --set eval.model=PATH"
            )
        return cached
    result = evaluate_model(path, task, problems, cfg) | {"eval_key": key}
    write_json(out, result)
    return result


def evaluate_model(path: Path, task: Task, problems: list[Problem], cfg: Config) -> dict[str, Any]:
    """Every setting's metrics for the checkpoint at `path`."""
    loaded = load_model(cfg, cfg.eval.policy, path, task)
    e = cfg.eval
    settings = {
        "greedy": (0.0, 1, False),
        f"T={e.temperature}": (e.temperature, e.samples, False),
        "greedy, backspace banned": (0.0, 1, True),
        f"T={e.temperature}, backspace banned": (e.temperature, e.samples, True),
    }
    out: dict[str, Any] = {
        "model": str(path),
        "mode": loaded.mode,
        "unit": loaded.unit,
        "n_problems": len(problems),
        "settings": {},
    }
    for name, (temperature, samples, banned) in settings.items():
        decoding = Decoding(
            temperature=temperature,
            max_new_tokens=cfg.search.max_new_tokens,
            max_batch=cfg.search.max_batch,
            ban_backspace=banned,
            max_backspaces=e.max_backspaces,
            backspace_at=cfg.trace.backspace_at,
        )
        policy = make_policy(loaded, decoding)
        reports = _sample(policy, loaded, task, problems, samples, temperature, cfg.run.seed)
        out["settings"][name] = aggregate(reports, temperature, samples)
    return out


def _sample(
    policy: Policy,
    loaded: Loaded,
    task: Task,
    problems: list[Problem],
    samples: int,
    temperature: float,
    seed: int,
) -> list[StreamReport]:
    tok = loaded.tokenizer
    prompts = [tuple(tok.encode(p.prompt)) for p in problems]
    asks = [
        Ask(pr, samples, "end", derive_seed(seed, "eval", temperature, p.id))
        for p, pr in zip(problems, prompts, strict=True)
    ]
    reports = []
    for p, pr, rollouts in zip(problems, prompts, policy.sample(asks), strict=True):
        judge = Judge(task, p, tok, pr, loaded.unit)
        reports += [analyze(judge, r.tokens, r.finished) for r in rollouts]
    return reports


def aggregate(reports: list[StreamReport], temperature: float, samples: int) -> dict[str, Any]:
    """One setting's figures over its samples (definitions: `search.metrics`). `erase_precision`
    is per erase event; `step_erase_precision` is the share of erased finished steps that were
    wrong, and `chance_precision` what an eraser that picks finished steps at random would hit
    (the share of written finished steps that were wrong): a detector is only as good as its
    precision above chance."""
    n = len(reports)
    solved = sum(r.correct for r in reports)
    events = sum(r.erase_events for r in reports)
    precise = [r.precise_erases for r in reports if r.precise_erases is not None]
    erred = [r for r in reports if r.made_error]
    checked = [r for r in reports if r.erased_wrong_steps is not None]
    written = sum(r.steps_written for r in checked)
    erased = sum(r.erased_steps for r in checked)
    wrong_written = sum(r.wrong_steps_written or 0 for r in checked)
    return {
        "temperature": temperature,
        "samples_per_problem": samples,
        "samples": n,
        "accuracy": solved / n,
        "ci95": list(wilson(solved, n)),
        "backtrack_rate": sum(r.n_backspaces > 0 for r in reports) / n,
        "erase_events": events,
        "erase_precision": sum(precise) / events if events and precise else None,
        "erased_steps": erased,
        "step_erase_precision": (
            sum(r.erased_wrong_steps or 0 for r in checked) / erased if erased else None
        ),
        "chance_precision": wrong_written / written if written else None,
        "made_error": len(erred),
        "recovery": sum(r.correct for r in erred) / len(erred) if erred else None,
        "tokens_per_solved": sum(r.n_tokens for r in reports) / solved if solved else None,
    }


def format_table(result: dict[str, Any]) -> str:
    def f(x: Any, pct: bool = True) -> str:
        if x is None:
            return "-"
        return f"{100 * x:.1f}%" if pct else f"{x:.1f}"

    lines = [
        f"{result['model']} ({result['mode']} attention, {result['unit']} unit, "
        f"{result['n_problems']} held-out problems)",
        "| setting | accuracy | 95% CI | backtrack rate | erase precision | steps erased: "
        "wrong (chance) | recovery | tokens/solved |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in result["settings"].items():
        lo, hi = m["ci95"]
        lines.append(
            f"| {name} | {f(m['accuracy'])} | {f(lo)}–{f(hi)} | "
            f"{f(m['backtrack_rate'])} | {f(m['erase_precision'])} | "
            f"{f(m.get('step_erase_precision'))} ({f(m.get('chance_precision'))}) | "
            f"{f(m['recovery'])} | {f(m['tokens_per_solved'], pct=False)} |"
        )
    return "\n".join(lines)
