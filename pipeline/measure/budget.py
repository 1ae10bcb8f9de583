"""Accuracy against generated tokens: what a user would do instead of backtracking, drawn once
per model and read two ways (docs/measurement.md).

    draw(path, task, problems, cfg, setting)   N_MAX samples per problem at `setting`'s
                                               temperature, each kept as a `Sample`
    curve(drawn)                               per N in NS: generated tokens per problem and the
                                               accuracy of likelihood best-of-N, majority vote,
                                               value best-of-N (when scored) and oracle pass@N
    matched(drawn, budget)                     the same selectors with N chosen per problem to
                                               spend `budget` tokens (the verdict's control)
    controls(path, ..., budget)                draw, then matched (what `halluc run` and the
                                               research tables call)

Best-of-N takes the sample the model finds most likely (mean log-probability per token); majority
vote the most common final step, its likeliest member; value best-of-N the sample whose least
value over its visible step prefixes is highest (`search.values.least_values`); oracle pass@N
counts a problem solved when any of the N is right (a ceiling no selector can pass). The first N
of the same N_MAX samples are used for every N, so the curves are nested. A value model's forward
passes are not generated tokens and are not counted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.loading import load_model
from pipeline.measure.evaluation import decoding, load_value_model, sample_rollouts
from pipeline.measure.settings import Setting
from search.tree import Judge
from search.types import Problem, Rollout, Task, Valuer
from search.values import least_values
from workers.policy import Loaded, make_policy

NS = (1, 2, 4, 8, 16)
N_MAX = NS[-1]


@dataclass(frozen=True)
class Sample:
    correct: bool
    tokens: int  # generated, backspaces and erased tokens included
    logprob: float  # mean per generated token (-inf when none)
    answer: str  # the last visible step, the text majority vote counts
    value: float | None = None  # least step value (None: no value model)

    def row(self) -> list[Any]:
        lp = None if math.isinf(self.logprob) else round(self.logprob, 5)
        return [int(self.correct), self.tokens, lp, self.answer, self.value]

    @classmethod
    def of(cls, row: list[Any]) -> Sample:
        lp = float("-inf") if row[2] is None else row[2]
        return cls(bool(row[0]), int(row[1]), lp, str(row[3]), row[4])


def draw(
    path: Path,
    task: Task,
    problems: list[Problem],
    cfg: Config,
    setting: Setting,
    valuer: Valuer | None = None,
    n: int = N_MAX,
) -> list[list[Sample]]:
    """`n` samples per problem from the checkpoint at `path` at `setting`'s temperature (greedy
    settings sample at T=1: one greedy answer has nothing to select from), its backspace banned
    or not as `setting` says; scored by `valuer`, else the value model at `eval.value_model` when
    one is set."""
    loaded = load_model(cfg, cfg.eval.policy, path, task)
    temperature = setting.temperature or 1.0
    policy = make_policy(
        loaded, decoding(cfg, temperature, setting.backspace_banned, logprobs=True)
    )
    drawn = sample_rollouts(policy, loaded, task, problems, n, temperature, cfg.run.seed + 1)
    if valuer is None and cfg.eval.value_model:
        valuer = load_value_model(cfg)
    judges = [_judge(loaded, task, p) for p in problems]
    visible = [judges[i // n].visible_steps(r.tokens) for i, (r, _) in enumerate(drawn)]
    values = _values(valuer, judges, visible, n) if valuer else [None] * len(drawn)
    tok = loaded.tokenizer
    samples = [
        Sample(
            rep.correct,
            len(r.tokens),
            _mean_logprob(r),
            tok.decode(list(steps[-1])).strip() if steps else "",
            v,
        )
        for (r, rep), steps, v in zip(drawn, visible, values, strict=True)
    ]
    return [samples[i : i + n] for i in range(0, len(samples), n)]


def _judge(loaded: Loaded, task: Task, problem: Problem) -> Judge:
    tok = loaded.tokenizer
    return Judge(task, problem, tok, tuple(tok.encode_prompt(problem.prompt)), loaded.unit)


def _values(
    valuer: Valuer,
    judges: list[Judge],
    visible: list[list[tuple[int, ...]] | None],
    n: int,
) -> list[float | None]:
    """Each sample's least value over its visible step prefixes; -inf for a stream whose
    backspaces reach into the prompt."""
    valid = [i for i, s in enumerate(visible) if s is not None]
    out: list[float | None] = [float("-inf")] * len(visible)
    got = least_values(valuer, [(judges[i // n].prompt, visible[i] or []) for i in valid])
    for i, v in zip(valid, got, strict=True):
        out[i] = v
    return out


def _mean_logprob(rollout: Rollout) -> float:
    lp = rollout.logprobs or ()
    return sum(lp) / len(lp) if lp else float("-inf")


def likeliest(chosen: list[Sample]) -> Sample:
    return max(chosen, key=lambda s: s.logprob)


def majority(chosen: list[Sample]) -> Sample:
    """The likeliest sample among those whose final step is the most common one (a tie goes to
    the answer with the likeliest sample)."""
    counts = Counter(s.answer for s in chosen)
    best = {a: likeliest([s for s in chosen if s.answer == a]) for a in counts}
    return best[max(counts, key=lambda a: (counts[a], best[a].logprob))]


def best_value(chosen: list[Sample]) -> Sample:
    """The sample with the highest least step value; the first such on a tie."""
    return max(chosen, key=lambda s: -math.inf if s.value is None else s.value)


SELECTORS: dict[str, Callable[[list[Sample]], Sample]] = {
    "best_of_n": likeliest,
    "majority": majority,
    "value_best_of_n": best_value,
}


def _pick(drawn: list[list[Sample]], ns: list[int], temperature: float) -> dict[str, Any]:
    """Every selector's figures when problem i keeps its first ns[i] samples."""
    scored = all(s.value is not None for mine in drawn for s in mine)
    common = {
        "temperature": temperature,
        "mean_n": sum(ns) / len(ns),
        "generated_tokens": sum(
            sum(s.tokens for s in m[:n]) for m, n in zip(drawn, ns, strict=True)
        ),
    }
    out = {}
    for name, select in SELECTORS.items():
        if name == "value_best_of_n" and not scored:
            continue
        got = [float(select(m[:n]).correct) for m, n in zip(drawn, ns, strict=True)]
        out[name] = common | {"accuracy": sum(got) / len(got), "per_problem": got}
    got = [float(any(s.correct for s in m[:n])) for m, n in zip(drawn, ns, strict=True)]
    out["oracle"] = common | {"accuracy": sum(got) / len(got), "per_problem": got}
    return out


def curve(drawn: list[list[Sample]], temperature: float) -> list[dict[str, Any]]:
    """Per N in NS (up to the samples drawn): N, generated tokens per problem, and each
    selector's accuracy with its per-problem figures."""
    have = min(map(len, drawn))
    rows = []
    for n in (n for n in NS if n <= have):
        picked = _pick(drawn, [n] * len(drawn), temperature)
        tokens = next(iter(picked.values()))["generated_tokens"] / len(drawn)
        rows.append({"n": n, "tokens_per_problem": tokens} | picked)
    return rows


def matched(
    drawn: list[list[Sample]], budget: list[float], temperature: float, oracle: bool = False
) -> dict[str, Any]:
    """Each selector with N per problem the smallest count whose expected tokens (the mean over
    that problem's drawn samples) reach its `budget` tokens, capped at the samples drawn; with
    `oracle`, also whether any of those N is right (a checker's pick, where answers are
    checkable)."""
    ns = []
    for mine, b in zip(drawn, budget, strict=True):
        per_sample = max(1.0, sum(s.tokens for s in mine) / len(mine))
        ns.append(max(1, min(len(mine), math.ceil(b / per_sample))))
    picked = _pick(drawn, ns, temperature)
    if not oracle:
        picked.pop("oracle")
    return picked


def controls(
    path: Path,
    task: Task,
    problems: list[Problem],
    cfg: Config,
    setting: Setting,
    budget: list[float],
    valuer: Valuer | None = None,
) -> dict[str, Any]:
    """Best-of-N, majority vote (and value best-of-N with a value model) at `budget` generated
    tokens per problem, from N_MAX samples per problem at `setting`."""
    drawn = draw(path, task, problems, cfg, setting, valuer)
    return matched(drawn, budget, setting.temperature or 1.0)


def measure(
    path: Path,
    task: Task,
    problems: list[Problem],
    cfg: Config,
    setting: Setting,
    budget: list[float] | None = None,
    n: int = N_MAX,
) -> dict[str, Any]:
    """The curve of the checkpoint at `path` at `setting` (its name and temperature beside it),
    from `n` samples per problem, the samples it was read from (`draw`, as rows, so a budget can
    be matched later without sampling again) and, with `budget`, the matched controls."""
    drawn = draw(path, task, problems, cfg, setting, n=n)
    temperature = setting.temperature or 1.0
    out: dict[str, Any] = {
        "setting": setting.name,
        "temperature": temperature,
        "backspace_banned": setting.backspace_banned,
        "curve": curve(drawn, temperature),
        "draw": [[s.row() for s in mine] for mine in drawn],
    }
    if budget is not None:
        out["matched"] = matched(drawn, budget, temperature)
    return out


def samples_of(measured: dict[str, Any]) -> list[list[Sample]]:
    return [[Sample.of(row) for row in mine] for mine in measured["draw"]]
