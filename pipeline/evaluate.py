"""The eval stage: how a model does on held-out problems, with and without its backspace.

    halluc eval --preset arith-tiny                                   # the round's trained model
    halluc eval --preset arith-tiny --set eval.model=runs/x/model --set eval.samples=4

Four settings: greedy and temperature `eval.temperature` (pass@1 over `eval.samples` samples per
problem), each also with the backspace token banned (what the same model does without the
skill). Per setting: accuracy with a 95% Wilson interval, backtrack rate (samples with a
backspace), erase precision (backspace runs that erased a real error, by the exact step checker),
recovery (samples that made an error and still ended right), tokens per solved sample. Decoding
uses the attention mode the model was trained with (`halluc.json` in its directory). Printed as a
table and saved as `eval.json` beside the model directory.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from pipeline.config import Config
from search.metrics import StreamReport, analyze
from search.tree import Judge, derive_seed
from search.types import Ask, Problem, Task
from workers.hf import SearchTokenizer, backtrack_meta, load_checkpoint
from workers.sampler import TransformersPolicy

log = logging.getLogger(__name__)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def default_model(cfg: Config) -> Path:
    """`eval.model`, else the round's trained model, else the bootstrap model."""
    if cfg.eval.model:
        return Path(cfg.eval.model)
    trained = Path(cfg.run.out_dir) / f"round-{cfg.run.round}" / "train" / "model"
    return trained if trained.exists() else Path(cfg.run.out_dir) / "bootstrap" / "model"


def main(cfg: Config) -> dict[str, Any]:
    from pipeline.search_stage import make_task_from

    path = default_model(cfg)
    task = make_task_from(cfg)
    result = evaluate_model(path, task, task.problems("test", cfg.eval.n_problems), cfg)
    out = path.parent / "eval.json"
    out.write_text(json.dumps(result, indent=2))
    print(format_table(result))
    log.info("eval of %s saved to %s", path, out)
    return result


def evaluate_model(path: Path, task: Task, problems: list[Problem], cfg: Config) -> dict[str, Any]:
    """Every setting's metrics for the checkpoint at `path`."""
    model, hf = load_checkpoint(
        path, cfg.model.device, cfg.model.dtype, cfg.model.trust_remote_code
    )
    meta = backtrack_meta(path)
    unit = meta.get("unit", cfg.trace.unit)
    tok = SearchTokenizer.wrap(
        hf, task.step_delimiter, meta.get("bksp_token", cfg.trace.bksp_token)
    )
    e = cfg.eval
    settings = {
        "greedy": (0.0, 1, False),
        f"T={e.temperature}": (e.temperature, e.samples, False),
        "greedy, backspace banned": (0.0, 1, True),
        f"T={e.temperature}, backspace banned": (e.temperature, e.samples, True),
    }
    out: dict[str, Any] = {
        "model": str(path),
        "mode": meta.get("mode", "stream"),
        "unit": unit,
        "n_problems": len(problems),
        "settings": {},
    }
    for name, (temperature, samples, banned) in settings.items():
        policy = TransformersPolicy(
            model,
            tok.eos_id,
            tok.delim_id,
            temperature,
            cfg.search.max_new_tokens,
            cfg.search.max_batch,
            ban_ids=[tok.bksp_id] if banned else [],
            pad_id=hf.pad_token_id or 0,
            bksp_id=tok.bksp_id,
            mode=out["mode"],
            unit=unit,
            max_backspaces=e.max_backspaces,
            step_end_only=cfg.trace.step_end_only(unit),
        )
        reports = _sample(policy, tok, task, problems, samples, temperature, unit, cfg)
        out["settings"][name] = aggregate(reports, temperature, samples)
    return out


def _sample(
    policy: TransformersPolicy,
    tok: SearchTokenizer,
    task: Task,
    problems: list[Problem],
    samples: int,
    temperature: float,
    unit: Any,
    cfg: Config,
) -> list[StreamReport]:
    prompts = [tuple(tok.encode(p.prompt)) for p in problems]
    asks = [
        Ask(pr, samples, "end", derive_seed(cfg.run.seed, "eval", temperature, p.id))
        for p, pr in zip(problems, prompts, strict=True)
    ]
    reports = []
    for p, pr, rollouts in zip(problems, prompts, policy.sample(asks), strict=True):
        judge = Judge(task, p, tok, pr, unit)
        reports += [analyze(judge, r.tokens, r.finished) for r in rollouts]
    return reports


def aggregate(reports: list[StreamReport], temperature: float, samples: int) -> dict[str, Any]:
    n = len(reports)
    solved = sum(r.correct for r in reports)
    events = sum(r.erase_events for r in reports)
    precise = [r.precise_erases for r in reports if r.precise_erases is not None]
    erred = [r for r in reports if r.made_error]
    return {
        "temperature": temperature,
        "samples_per_problem": samples,
        "samples": n,
        "accuracy": solved / n,
        "ci95": list(wilson(solved, n)),
        "backtrack_rate": sum(r.n_backspaces > 0 for r in reports) / n,
        "erase_events": events,
        "erase_precision": sum(precise) / events if events and precise else None,
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
        "| setting | accuracy | 95% CI | backtrack rate | erase precision | recovery | "
        "tokens/solved |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in result["settings"].items():
        lo, hi = m["ci95"]
        lines.append(
            f"| {name} | {f(m['accuracy'])} | {f(lo)}–{f(hi)} | "
            f"{f(m['backtrack_rate'])} | {f(m['erase_precision'])} | "
            f"{f(m['recovery'])} | {f(m['tokens_per_solved'], pct=False)} |"
        )
    return "\n".join(lines)
