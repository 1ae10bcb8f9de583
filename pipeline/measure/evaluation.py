"""Evaluation: how a model does on held-out problems, with and without its backspace (used by the
eval, bootstrap and run stages).

The settings (`pipeline.measure.settings.sweep`): greedy and each of `eval.temperatures` (pass@1
over `eval.samples` samples per problem), each also with the backspace token banned (what the
same model does without the skill); each setting's figures carry its fields (temperature, samples
per problem, backspace banned, the deliberate-backspace options), which readers use instead of
its name. The file carries a digest of the problems' ids in order (`problems_digest`).
Per setting: accuracy with a 95% interval (bootstrap over problems; Wilson over samples
where per-problem figures are not at hand), backtrack rate (samples with a
backspace), erase precision (backspace runs that erased a wrong finished step, by the exact step
checker; a half-written step is neither right nor wrong), the share of erased finished steps that
were wrong beside chance (the share of all written finished steps that were wrong), recovery
(samples that finished a wrong step and still ended right), tokens per solved sample. Decoding
uses the attention mode the model was trained with (`halluc.json` in its directory). Sampling goes
through `workers.policy` with `eval.policy` (transformers or vLLM). With `eval.bksp_threshold` or
`eval.bksp_random` every setting that allows the backspace emits it by that rule (the settings keep
their names; the figures record both values and the table's title names the one set). With
`eval.value_drop` guided search (`eval.bksp_search`) erases by the value model at
`eval.value_model` instead of by the model's own backspace. Best-of-N, majority vote and the
accuracy-against-tokens curves are `pipeline.measure.budget`'s.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from pipeline.config import Config, ConfigError, eval_key, eval_keys
from pipeline.files import read_json, write_json
from pipeline.loading import check_prompts, load_model
from pipeline.measure.detector import detector_figures
from pipeline.measure.settings import Setting, sweep
from pipeline.measure.stats import interval, wilson
from search.metrics import StreamReport, analyze, first_error
from search.tree import Judge, derive_seed
from search.types import Ask, Policy, Problem, Rollout, Task, Valuer
from workers.policy import Decoding, Loaded, make_policy

log = logging.getLogger(__name__)


def evaluate_to(
    out: Path,
    path: Path,
    task: Task,
    problems: list[Problem],
    cfg: Config,
    banned: bool | None = None,
) -> dict[str, Any]:
    """The figures of the checkpoint at `path`, cached in `out` with the key of what shaped them
    (`eval_key`); a file made with other settings is refused, never overwritten."""
    key = eval_key(cfg, len(problems), banned)
    if out.exists():
        cached = dict(read_json(out))
        if cached.get("eval_key") not in eval_keys(cfg, len(problems), banned):
            raise ConfigError(
                f"{out} holds figures made with other task, eval or decoding settings; delete it "
                "to evaluate again, or evaluate on its own with --set eval.model=PATH"
            )
        return cached
    detector = banned is None  # the held-out evaluation; the tuning one needs no detector
    figures = evaluate_model(path, task, problems, cfg, banned, detector)
    result = figures | {"eval_key": key, "problems_digest": problems_digest(problems)}
    write_json(out, result)
    return result


def problems_digest(problems: list[Problem]) -> str:
    """A short hash of the problems' ids in order: two evaluations pair problem by problem only
    where it is equal (files written before it existed carry none)."""
    return hashlib.sha256("\n".join(p.id for p in problems).encode()).hexdigest()[:16]


def evaluate_model(
    path: Path,
    task: Task,
    problems: list[Problem],
    cfg: Config,
    banned: bool | None = None,
    detector: bool = True,
) -> dict[str, Any]:
    """Every setting's figures for the checkpoint at `path` (`settings.sweep`), each under its
    name with the setting's fields (`Setting.fields`), and with `detector` how well its
    backspace probability tells its own wrong steps from right ones under teacher forcing
    (`pipeline.measure.detector`; transformers and an exact step checker only)."""
    if cfg.eval.policy != "fake":
        room = cfg.sampling.stream_length  # a stream with its backspaces
        check_prompts(cfg, path, problems, room, "sampling.stream_tokens")
    loaded = load_model(cfg, cfg.eval.policy, path, task)
    out: dict[str, Any] = {
        "model": str(path),
        "mode": loaded.mode,
        "unit": loaded.unit,
        "n_problems": len(problems),
        "bksp_threshold": cfg.eval.bksp_threshold,
        "bksp_random": cfg.eval.bksp_random,
        "bksp_search": cfg.eval.bksp_search,
        "erase_logprob": cfg.eval.erase_logprob,
        "erase_at_end": cfg.eval.erase_at_end,
        "erase_temperature": cfg.eval.erase_temperature,
        "settings": {},
    }
    valuer = None
    if cfg.eval.value_drop:
        out |= {"value_drop": cfg.eval.value_drop, "value_model": cfg.eval.value_model}
        valuer = load_value_model(cfg)
    for s in sweep(cfg, banned):
        out["settings"][s.name] = _figures(s, loaded, task, problems, cfg, valuer)
    if detector and task.has_step_checker and loaded.kind == "transformers":
        out["detector"] = detector_figures(
            loaded,
            task,
            problems,
            cfg.run.seed,
            samples=cfg.eval.samples,
            max_new_tokens=cfg.sampling.stream_length,
            backspace_at=cfg.trace.backspace_at,
            max_batch=cfg.sampling.max_batch,
        )
    return out


def _figures(
    s: Setting,
    loaded: Loaded,
    task: Task,
    problems: list[Problem],
    cfg: Config,
    valuer: Valuer | None,
) -> dict[str, Any]:
    """One setting's figures (`aggregate`, the bootstrap interval over problems, per-problem
    accuracy and tokens) and its fields."""
    t, samples = s.temperature, s.samples_per_problem
    policy = make_policy(loaded, decoding(cfg, t, s.backspace_banned), valuer)
    drawn = sample_rollouts(policy, loaded, task, problems, samples, t, cfg.run.seed)
    reports = [report for _, report in drawn]
    solved = per_problem(reports, samples)
    # guided search draws candidates it throws away: they count as generated tokens too
    drawn_tokens = policy.generated
    m = (
        aggregate(reports, t, samples)
        | {
            "ci95": interval([solved])["ci95"],  # bootstrap over problems
            "per_problem": solved,
            "tokens_per_problem": [sum(n) / samples for n in drawn_tokens],
        }
        | s.fields()
    )
    if all("target" in p.meta for p in problems):  # Countdown: results by target
        m["by_target"] = by_target(problems, solved)
    if policy.discards:  # the stream's tokens and the candidates thrown away
        m["generated_tokens"] = sum(map(sum, drawn_tokens))
        m["tokens_per_solved"] = m["generated_tokens"] / max(1, sum(r.correct for r in reports))
    return m


def by_target(problems: list[Problem], solved: list[float]) -> dict[str, dict[str, float]]:
    """Accuracy and problem count per target (in target order)."""
    groups: dict[int, list[float]] = {}
    for p, x in zip(problems, solved, strict=True):
        groups.setdefault(int(p.meta["target"]), []).append(x)
    return {
        str(t): {"accuracy": sum(xs) / len(xs), "n": len(xs)} for t, xs in sorted(groups.items())
    }


def decoding(cfg: Config, temperature: float, ban: bool, logprobs: bool = False) -> Decoding:
    return Decoding(
        temperature=temperature,
        max_new_tokens=cfg.sampling.stream_length,
        max_batch=cfg.sampling.max_batch,
        ban_backspace=ban,
        max_backspaces=cfg.sampling.stream_backspaces,
        backspace_at=cfg.trace.backspace_at,
        logprobs=logprobs,
        bksp_threshold=cfg.eval.bksp_threshold,
        bksp_random=cfg.eval.bksp_random,
        bksp_search=cfg.eval.bksp_search,
        value_drop=cfg.eval.value_drop,
        erase_logprob=cfg.eval.erase_logprob,
        erase_at_end=cfg.eval.erase_at_end,
        erase_temperature=cfg.eval.erase_temperature,
    )


def load_value_model(cfg: Config) -> Valuer:
    """The value model at `eval.value_model`, on `model.device`."""
    from workers.valuer import load_valuer

    m = cfg.model
    return load_valuer(cfg.eval.value_model, m.device, m.dtype, m.trust_remote_code)


def per_problem(reports: list[StreamReport], k: int) -> list[float]:
    """Each problem's share of correct samples (`reports` holds k per problem, in order)."""
    return [sum(r.correct for r in reports[i : i + k]) / k for i in range(0, len(reports), k)]


def sample_rollouts(
    policy: Policy,
    loaded: Loaded,
    task: Task,
    problems: list[Problem],
    samples: int,
    temperature: float,
    seed: int,
) -> list[tuple[Rollout, StreamReport]]:
    tok = loaded.tokenizer
    prompts = [tuple(tok.encode_prompt(p.prompt)) for p in problems]
    asks = [
        Ask(pr, samples, "end", derive_seed(seed, "eval", temperature, p.id))
        for p, pr in zip(problems, prompts, strict=True)
    ]
    out = []
    for p, pr, rollouts in zip(problems, prompts, policy.sample(asks), strict=True):
        judge = Judge(task, p, tok, pr, loaded.unit)
        out += [(r, analyze(judge, r.tokens, r.finished)) for r in rollouts]
    return out


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
        **first_error(reports),
        "tokens_per_solved": sum(r.n_tokens for r in reports) / solved if solved else None,
        "generated_tokens": sum(r.n_tokens for r in reports),
        "truncation_rate": sum(not r.finished for r in reports) / n,
        "pass_at_k": _pass_at_k(reports, samples),
    }


def _pass_at_k(reports: list[StreamReport], k: int) -> float:
    """The share of problems with at least one correct sample among their k."""
    groups = [reports[i : i + k] for i in range(0, len(reports), k)]
    return sum(any(r.correct for r in g) for g in groups) / len(groups)


def format_table(result: dict[str, Any]) -> str:
    def f(x: Any, pct: bool = True) -> str:
        if x is None:
            return "-"
        return f"{100 * x:.1f}%" if pct else f"{x:.1f}"

    deliberate = "".join(  # absent from figures made before these options existed
        f", {name} {result[key]}"
        for key, name in (
            ("bksp_threshold", "backspace threshold"),
            ("bksp_random", "random eraser"),
            ("bksp_search", "guided search, candidates"),
            ("value_drop", "value-triggered erase, drop"),
            ("erase_logprob", "likelihood-triggered erase below"),
        )
        if result.get(key)
    )
    lines = [
        f"{result['model']} ({result['mode']} attention, {result['unit']} unit{deliberate}, "
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
    det = result.get("detector")
    if det:
        auc = "-" if det.get("roc_auc") is None else f"{det['roc_auc']:.3f}"
        pr = "-" if det.get("pr_auc") is None else f"{det['pr_auc']:.3f}"
        lines.append(
            f"\ndetector (P(backspace) at step ends, teacher-forced on its own samples): "
            f"ROC-AUC {auc}, PR-AUC {pr} (base rate {f(det.get('base_rate'))}, "
            f"{det.get('n_positions', 0)} positions)"
        )
    return "\n".join(lines)
