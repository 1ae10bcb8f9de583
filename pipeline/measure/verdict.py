"""The comparison that carries a verdict: each arm at the decoding setting chosen on validation
problems, on the same held-out problems and seeds, with a paired bootstrap interval.

    choose(result)                   the most accurate setting of an evaluation (on validation
                                     problems for the verdict)
    verdict(per_seed)                every round's comparison over the seeds, and one sentence
    strongest(...)                   per seed the better of the baseline at its chosen setting
                                     and its best-of-N at the backtrack arm's tokens
    one_seed_verdict(seed, evals)    a descriptive comparison of evaluations without tuning
                                     figures (the report of `report.write`; never a verdict)

A run's figures per problem are each problem's share of correct samples (`per_problem` in an
eval); the difference between arms is taken problem by problem within a seed, and the interval
resamples the seeds, then the problems within each drawn seed (`stats.seeds_then_problems`): the
seed is the unit, since one bootstrap seed alone can move accuracy by more than the arms differ.
Each seed's own difference is kept beside it (`per_seed`). With one seed only the problems can be
resampled, and the interval says nothing about seeds (the sentence names the seed count).
"""

from __future__ import annotations

from typing import Any

from pipeline.arms import REQUIRED
from pipeline.measure.settings import settings_of
from pipeline.measure.stats import paired_normal, seeds_then_problems

Evals = dict[str, list[dict[str, Any]]]  # arm -> its evaluation (an eval.json dict) by round


def choose(result: dict[str, Any], sampling: bool = False) -> str:
    """The name of the setting of the evaluation `result` with the highest accuracy; among
    equals the first (greedy, then the lowest temperature). Settings with the backspace banned
    are never chosen; with `sampling`, neither is greedy (a control that draws several samples
    needs a temperature)."""
    figures = result["settings"]
    allowed = [
        name
        for name, s in settings_of(result).items()
        if not s.backspace_banned and (s.sampling or not sampling)
    ]
    return max(allowed, key=lambda k: (figures[k]["accuracy"], -allowed.index(k)))


def _side(evals: list[dict[str, Any]], settings: list[str]) -> dict[str, Any]:
    """One arm over the seeds, each seed read at its own chosen setting."""
    figures = [e["settings"][k] for e, k in zip(evals, settings, strict=True)]
    return {
        "setting": settings[0] if len(set(settings)) == 1 else " / ".join(settings),
        "accuracy": sum(f["accuracy"] for f in figures) / len(figures),
        "per_seed": [f["accuracy"] for f in figures],
    }


def compare_round(seeds: list[dict[str, Any]], r: int) -> dict[str, Any]:
    """Round `r` over the seeds. Each item of `seeds`: {"backtrack": {"eval", "tune"} per round,
    "baseline": ..., "controls": per round} as `pipeline.stages.run` keeps them, and any other arm
    (dpo) like the backtrack one: it goes to `arms`, each compared with the baseline."""
    bt = [s["backtrack"][r] for s in seeds]
    bl = [s["baseline"][r] for s in seeds]
    # each seed is read at its own chosen setting
    chosen = {
        "backtrack": [choose(x["tune"]) for x in bt],
        "baseline": [choose(x["tune"]) for x in bl],
    }
    a = [
        x["eval"]["settings"][k]["per_problem"]
        for x, k in zip(bt, chosen["backtrack"], strict=True)
    ]
    b = [
        x["eval"]["settings"][k]["per_problem"] for x, k in zip(bl, chosen["baseline"], strict=True)
    ]
    out: dict[str, Any] = {
        "round": r,
        "backtrack": _side([x["eval"] for x in bt], chosen["backtrack"]),
        "baseline": _side([x["eval"] for x in bl], chosen["baseline"]),
        "chosen": chosen,
        "difference": seeds_then_problems(a, b),
    }
    controls = [s["controls"][r] for s in seeds if s.get("controls") and s["controls"][r]]
    if len(controls) == len(seeds):
        for name in ("best_of_n", "majority", "value_best_of_n"):
            if not all(name in x for x in controls):  # value best-of-N: with eval.value_model
                continue
            c = [x[name]["per_problem"] for x in controls]
            out[name] = {
                "accuracy": sum(map(sum, c)) / sum(map(len, c)),
                "per_seed": [x[name]["accuracy"] for x in controls],
                "mean_n": sum(x[name]["mean_n"] for x in controls) / len(controls),
                "temperature": controls[0][name].get("temperature"),
                "difference": seeds_then_problems(a, c),
            }
    if "best_of_n" in out:
        bon = [x["best_of_n"] for x in controls]
        out["strongest"] = strongest(bt, bl, chosen, bon, a)
    out["detector_auc"] = {
        arm: _mean_auc([x["eval"] for x in side])
        for arm, side in (("backtrack", bt), ("baseline", bl))
    }
    out["precision"] = precision([x["eval"] for x in bt], chosen["backtrack"])
    out["detector_lift"] = _mean_lift([x["eval"] for x in bt])
    others = [k for k in seeds[0] if k not in ("backtrack", "baseline", "controls")]
    if others:
        out["arms"] = {arm: against_baseline([s[arm][r] for s in seeds], b) for arm in others}
    return out


def strongest(
    bt: list[dict[str, Any]],
    bl: list[dict[str, Any]],
    chosen: dict[str, list[str]],
    best_of_n: list[dict[str, Any]],
    mine: list[list[float]],
) -> dict[str, Any]:
    """Per seed, the stronger on the held-out problems of two things a user could run at the
    backtrack arm's generated tokens: the baseline at its chosen setting (where it generates no
    more tokens per problem than the backtrack arm at its own; greedy, at N = 1, is often better
    than one sample) and the baseline's best-of-N at the arm's tokens. Picked with hindsight on
    the test problems, so it favours the alternative: an arm ahead of it is ahead of either.
    `mine`: the backtrack arm's per-problem figures per seed."""
    picks, names = [], []
    for i, control in enumerate(best_of_n):
        base = bl[i]["eval"]["settings"][chosen["baseline"][i]]
        arm = bt[i]["eval"]["settings"][chosen["backtrack"][i]]
        spent, budget = _tokens(base), _tokens(arm)
        fits = spent is not None and budget is not None and spent <= budget
        if fits and base["accuracy"] >= control["accuracy"]:
            picks.append(base)
            names.append(chosen["baseline"][i])
        else:
            picks.append(control)
            names.append(f"best-of-N (N≈{control['mean_n']:.1f})")
    return {
        "accuracy": sum(p["accuracy"] for p in picks) / len(picks),
        "per_seed": [p["accuracy"] for p in picks],
        "picked": names,
        "difference": seeds_then_problems(mine, [p["per_problem"] for p in picks]),
    }


def _tokens(figures: dict[str, Any]) -> float | None:
    """Mean generated tokens per sample and problem (None where the eval kept none)."""
    tokens = figures.get("tokens_per_problem")
    return sum(tokens) / len(tokens) if tokens else None


def against_baseline(side: list[dict[str, Any]], baseline: list[list[float]]) -> dict[str, Any]:
    """One more arm over the seeds (its {"eval", "tune"} per seed), each seed read at its own
    chosen setting: accuracy, the paired difference with the baseline's per-problem figures
    `baseline` (at its chosen settings), detector AUC and erase precision."""
    evals = [x["eval"] for x in side]
    chosen = [choose(x["tune"]) for x in side]
    mine = [e["settings"][k]["per_problem"] for e, k in zip(evals, chosen, strict=True)]
    return _side(evals, chosen) | {
        "chosen": chosen,
        "difference": seeds_then_problems(mine, baseline),
        "detector_auc": _mean_auc(evals),
        "precision": precision(evals, chosen),
    }


# what `precision` averages over seeds: erased steps wrong (inherited wrongness counts), and the
# first-error figures (search.metrics), each beside its chance
PRECISION = (
    "step_erase_precision",
    "chance_precision",
    "first_error_precision",
    "chance_first_error_precision",
    "first_error_recall",
    "chance_first_error_recall",
    "repair_rate",
    "over_erasure",
)


def _mean_lift(evals: list[dict[str, Any]]) -> float | None:
    """The detector's AUC within problem minus the best trivial score's (pipeline.measure.strata),
    the mean over seeds; None where a seed lacks it."""
    lifts = [(e.get("detector") or {}).get("stratified", {}).get("lift", {}) for e in evals]
    vals = [x.get("within_problem") for x in lifts]
    return None if not vals or any(v is None for v in vals) else sum(vals) / len(vals)


def _mean_auc(evals: list[dict[str, Any]]) -> float | None:
    aucs = [e.get("detector", {}).get("roc_auc") for e in evals]
    return None if any(a is None for a in aucs) or not aucs else sum(aucs) / len(aucs)


def precision(evals: list[dict[str, Any]], settings: list[str]) -> dict[str, float | None]:
    """Mean over `evals` (one per seed, each read at its own setting of `settings`) of the share
    of erased finished steps that were wrong, chance's share, and the backtrack rate; None where
    any seed lacks the figure."""
    out: dict[str, float | None] = {}
    for key in (*PRECISION, "backtrack_rate"):
        vals = [e["settings"][k].get(key) for e, k in zip(evals, settings, strict=True)]
        out[key] = None if any(v is None for v in vals) else sum(vals) / len(vals)
    return out


def verdict(seeds: list[dict[str, Any]], seed_ids: list[int]) -> dict[str, Any]:
    """Every round's comparison over the seeds, and the last round's verdict in one sentence."""
    rounds = [compare_round(seeds, r) for r in range(len(seeds[0]["backtrack"]))]
    return {"seeds": seed_ids, "rounds": rounds, "sentence": sentence(rounds[-1], len(seed_ids))}


def sentence(last: dict[str, Any], n_seeds: int) -> str:
    d = last["difference"]
    lo, hi = (100 * x for x in d["ci95"])
    if lo > 0:
        verb = "beats"
    elif hi < 0:
        verb = "trails"
    else:
        verb = "cannot be told apart from"
    text = (
        f"After round {last['round']}, the backtrack arm ({last['backtrack']['setting']}) {verb} "
        f"the clean baseline at its best decoding ({last['baseline']['setting']}): "
        f"{100 * d['mean']:+.1f} points, 95% paired interval {lo:+.1f} to {hi:+.1f} "
        f"({n_seeds} seed{'s' if n_seeds > 1 else ''})"
    )
    if n_seeds > 1:  # the seed is the unit: say so, and show each seed's own difference
        each = ", ".join(f"{100 * x:+.1f}" for x in d["per_seed"])
        text += f" resampling seeds, then problems; per seed {each}"
    rate = last.get("precision", {}).get("backtrack_rate")
    if rate is not None:
        text += f"; at that setting the backtrack arm backspaces in {100 * rate:.1f}% of samples"
        if rate == 0:
            text += " (so the difference comes from training, not from erasing at inference)"
    if "best_of_n" in last:
        b = last["best_of_n"]["difference"]
        blo, bhi = (100 * x for x in b["ci95"])
        n = last["best_of_n"]["mean_n"]
        text += (
            f"; against best-of-N at equal generated tokens (N={n:.1f} on average, sampled at "
            f"T={last['best_of_n'].get('temperature', '?')}): "
            f"{100 * b['mean']:+.1f} points ({blo:+.1f} to {bhi:+.1f})"
        )
    if "strongest" in last:
        st = last["strongest"]["difference"]
        slo, shi = (100 * x for x in st["ci95"])
        text += (
            f"; against the stronger of the two per seed, picked on the test problems "
            f"({', '.join(last['strongest']['picked'])}): "
            f"{100 * st['mean']:+.1f} points ({slo:+.1f} to {shi:+.1f})"
        )
    for arm, other in (last.get("arms") or {}).items():
        o = other["difference"]
        olo, ohi = (100 * x for x in o["ci95"])
        text += (
            f"; the {arm} arm ({other['setting']}) against the baseline: "
            f"{100 * o['mean']:+.1f} points ({olo:+.1f} to {ohi:+.1f})"
        )
    return text + "."


# --- evaluations without tuning figures: a descriptive comparison ----------------------------


def one_seed_verdict(seed: int, evals: Evals) -> dict[str, Any]:
    """The comparison of one seed's evaluations by round without tuning evals, shaped like
    `verdict`'s (plus `per_seed_evals`): each arm at its most accurate held-out setting
    (`choose`, the same rule for both; a verdict chooses on validation problems instead), with its
    interval; the difference's interval is `stats.paired_normal`'s (None unless both arms have
    per-problem figures). Best-of-N: the baseline eval's `controls.best_of_n`, else the
    backtrack eval's; majority vote alike. Descriptive only, never the run's verdict."""
    rounds = [
        _one_round(r, b, a)
        for r, (b, a) in enumerate(zip(evals["backtrack"], evals["baseline"], strict=True))
    ]
    return {"seeds": [seed], "rounds": rounds, "sentence": "", "per_seed_evals": {str(seed): evals}}


def _one_round(r: int, b: dict[str, Any], a: dict[str, Any]) -> dict[str, Any]:
    key, best = choose(b), choose(a)
    mb, ma = b["settings"][key], a["settings"][best]
    bon, maj = (_control(name, a, b) for name in ("best_of_n", "majority"))
    return {
        "round": r,
        "backtrack": _arm(key, mb),
        "baseline": _arm(best, ma),
        "difference": paired_normal(mb, ma),
        "best_of_n": bon and _arm(None, bon) | {"difference": paired_normal(mb, bon)},
        "majority": maj and _arm(None, maj) | {"difference": paired_normal(mb, maj)},
        "detector_auc": {
            arm: (e.get("detector") or {}).get("roc_auc")
            for arm, e in zip(REQUIRED, (b, a), strict=True)
        },
        "precision": {k: mb.get(k) for k in ("step_erase_precision", "chance_precision")},
    }


def _control(name: str, *evals: dict[str, Any]) -> dict[str, Any] | None:
    """Control `name` from the first of `evals` that has it."""
    return next((c for e in evals if (c := (e.get("controls") or {}).get(name))), None)


def _arm(setting: str | None, m: dict[str, Any]) -> dict[str, Any]:
    return {"setting": setting, "accuracy": m["accuracy"], "per_seed": [m["accuracy"]]} | (
        {"ci95": m["ci95"]} if m.get("ci95") else {}
    )
