"""Value-guided search against Monte Carlo search on a finished run (issue 16, item 3): rollouts
and wall time per correctly located first error, at equal location accuracy where possible.

    .venv/bin/python experiments/value_search.py --run runs/arith-tiny-verdict/seed-0 \\
        [--value-model RUN/value/model] [--model PATH] [--problems 64] [--all-problems] \\
        [--thresholds 0.1,0.2,0.3,0.5] [--mix 0.5] [--modes model,mix] [--set K=V ...]

RUN holds the run's config.yaml (a seed directory of a verdict run holds its own), whose
`run.out_dir` is where the run's models are, and by default the value model `halluc value` wrote
in RUN/value/model (run it first: `halluc value --preset RUN/config.yaml`). Problems: the run's
training problems (`task.n_train`, the ones its search covered) that the value model held out
(value.json's split: none of their rows was trained on), the first `--problems` of them;
`--all-problems` takes them all. Policy: the run's start model (round 0's searcher, whose search
the value model learned from by default), or `--model`. Search parameters: the run's,
overridden by `--set`.

Methods, each on the same problems with the run's seeds (the same screening rollouts): OmegaPRM
with exhaustive per-step MC (the baseline of BENCHMARKS.md), with its binary search on MC, and with
the binary search's probes valued by the model (`model@t`: failing at value <= t, for each
threshold t: the `--thresholds`, and the value model's own best-accuracy threshold from its
label_quality.json) or by both (`mix@t`, model weight `--mix`; as many rollouts as MC, so `--modes
model` leaves it out); MCTS with MC leaf values and with the same value modes. Per method: failing
branches located, correct ones (the exact checker puts the first error of parent + step on the
step), location accuracy, rollouts beyond the screening, rollouts per correct location (and against
exhaustive MC's), prefixes valued, wall seconds (in the policy, in the value model). `matched`: per
algorithm, the value-guided method with the fewest rollouts per correct location among those at
least as accurate as the algorithm's MC method (OmegaPRM: binary), or, when none is, the most
accurate (flagged).

Writes RUN/value_search.json and RUN/value_search.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Config, load_config
from pipeline.files import read_json, write_json, write_text
from pipeline.layout import RunLayout
from pipeline.loading import task_from_config
from pipeline.value_data import split
from search.driver import Search, run_batched
from search.mcts import mcts
from search.omegaprm import omegaprm
from search.tree import Judge, SearchResult, Tree, derive_seed
from search.types import Policy, Problem, Task, Tokenizer, Valuer
from search.values import ValueParams


@dataclass(frozen=True)
class Method:
    name: str
    algorithm: str  # omegaprm or mcts
    locate: str  # OmegaPRM's: binary or exhaustive
    value: ValueParams


def methods(
    thresholds: Sequence[float], mix: float, modes: Sequence[str] = ("model", "mix")
) -> list[Method]:
    out = [
        Method("omegaprm exhaustive mc", "omegaprm", "exhaustive", ValueParams()),
        Method("omegaprm binary mc", "omegaprm", "binary", ValueParams()),
        Method("mcts mc", "mcts", "binary", ValueParams()),
    ]
    for algorithm in ("omegaprm", "mcts"):
        for mode in modes:
            out += [
                Method(f"{algorithm} {mode}@{t:g}", algorithm, "binary", ValueParams(mode, mix, t))
                for t in thresholds
            ]
    return out


class Timed:
    """A policy or valuer with the seconds spent inside it counted (a policy's counters are the
    inner policy's)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds = inner, 0.0

    def sample(self, asks: Any) -> Any:
        return self._timed(self.inner.sample, asks)

    def values(self, prefixes: Any) -> Any:
        return self._timed(self.inner.values, prefixes)

    @property
    def generated(self) -> list[list[int]]:
        return self.inner.generated

    @property
    def discards(self) -> bool:
        return self.inner.discards

    @property
    def tokens_generated(self) -> int:
        return self.inner.tokens_generated

    def _timed(self, call: Any, arg: Any) -> Any:
        t = time.perf_counter()
        try:
            return call(arg)
        finally:
            self.seconds += time.perf_counter() - t


def search(
    method: Method, cfg: Config, task: Task, tok: Tokenizer, problems: list[Problem]
) -> list[Search]:
    """The searches of `method` over `problems`, seeded as `halluc search` seeds them."""
    out = []
    for p in problems:
        tree = Tree(Judge(task, p, tok, tuple(tok.encode(p.prompt)), cfg.trace.unit))
        seed = derive_seed(cfg.run.seed, cfg.run.round, p.id)
        if method.algorithm == "mcts":
            out.append(Search(mcts(tree, cfg.search.mcts, seed, method.value)))
        else:
            params = dataclasses.replace(cfg.search.omegaprm, locate=method.locate)  # type: ignore[arg-type]
            out.append(Search(omegaprm(tree, params, seed, method.value)))
    return out


def figures(results: list[SearchResult]) -> dict[str, Any]:
    """Located and correctly located first errors, and what finding them cost."""
    located = correct = 0
    for r in results:
        for b in r.branches:
            located += 1
            correct += r.tree.judge.first_error([*b.parent, b.wrong_step]) == len(b.parent)
    rollouts = sum(r.rollouts_used - r.tree.root.n_rollouts for r in results)
    return {
        "located": located,
        "correct": correct,
        "accuracy": correct / located if located else None,
        "rollouts": rollouts,  # beyond the screening (the same in every method of an algorithm)
        "screening_rollouts": sum(r.tree.root.n_rollouts for r in results),
        "rollouts_per_correct": rollouts / correct if correct else None,
        "values": sum(r.tree.values_used for r in results),
    }


def compare(
    cfg: Config,
    task: Task,
    tok: Tokenizer,
    problems: list[Problem],
    policy: Policy,
    valuer: Valuer,
    chosen: list[Method],
) -> dict[str, Any]:
    """Every method's figures on `problems`, and the matched comparison per algorithm."""
    rows: dict[str, dict[str, Any]] = {}
    for method in chosen:
        timed_policy, timed_valuer = Timed(policy), Timed(valuer)
        start = time.perf_counter()
        searches = search(method, cfg, task, tok, problems)
        results = run_batched(searches, timed_policy, valuer=timed_valuer)
        wall = time.perf_counter() - start
        rows[method.name] = figures(results) | {
            "algorithm": method.algorithm,
            "mode": method.value.mode,
            "threshold": method.value.cut,
            "wall_s": wall,
            "policy_s": timed_policy.seconds,
            "value_s": timed_valuer.seconds,
        }
        print(f"{method.name}: {json.dumps(rows[method.name])}", file=sys.stderr)
    base = rows.get("omegaprm exhaustive mc", {}).get("rollouts_per_correct")
    for row in rows.values():
        per = row["rollouts_per_correct"]
        row["vs_exhaustive"] = per / base if per is not None and base else None
    return {"methods": rows, "matched": matched(rows)}


def matched(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per algorithm: the cheapest value-guided method at least as accurate as its MC one."""
    out: dict[str, Any] = {}
    for algorithm, ref in (("omegaprm", "omegaprm binary mc"), ("mcts", "mcts mc")):
        if ref not in rows:
            continue
        floor = rows[ref]["accuracy"] or 0.0
        guided = {
            k: r
            for k, r in rows.items()
            if r["algorithm"] == algorithm and r["mode"] != "mc" and r["correct"]
        }
        good = {k: r for k, r in guided.items() if (r["accuracy"] or 0) >= floor}
        pick = min(good, key=lambda k: good[k]["rollouts_per_correct"], default=None)
        if pick is None and guided:
            pick = max(guided, key=lambda k: guided[k]["accuracy"] or 0)
        out[algorithm] = {
            "mc": ref,
            "value": pick,
            "equal_accuracy": pick in good,
            "rollout_ratio": (
                rows[pick]["rollouts_per_correct"] / rows[ref]["rollouts_per_correct"]
                if pick and rows[ref]["rollouts_per_correct"]
                else None
            ),
        }
    return out


def held_out(problems: list[Problem], value_model: Path) -> list[Problem]:
    """The problems the value model did not train on (its value.json's split by problem id)."""
    share = read_json(value_model / "value.json")["split"]["val_share"]
    return [p for p, h in zip(problems, split([p.id for p in problems], share), strict=True) if h]


def thresholds_of(given: str, value_model: Path) -> list[float]:
    """The given thresholds and the value model's own best-accuracy one against exact labels."""
    out = [float(t) for t in given.split(",") if t]
    quality = value_model / "label_quality.json"
    figures = read_json(quality).get("model_vs_exact") or {} if quality.exists() else {}
    best = figures.get("threshold")
    if best is not None and 0 <= best < 1:
        out.append(round(float(best), 4))
    return sorted(set(out))


def markdown(result: dict[str, Any], command: str) -> str:
    def f(x: Any, pct: bool = False) -> str:
        if x is None:
            return "–"
        return f"{100 * x:.1f}%" if pct else (f"{x:.2f}" if isinstance(x, float) else str(x))

    lines = [
        f"`{command}`",
        "",
        f"{result['problems']} training problems ({result['which']}), policy {result['model']}, "
        f"value model {result['value_model']}",
        "",
        "| method | located | correct | accuracy | rollouts | per correct | vs exhaustive | "
        "values | wall s | policy s | value s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["methods"].items():
        lines.append(
            f"| {name} | {r['located']} | {r['correct']} | {f(r['accuracy'], True)} | "
            f"{r['rollouts']} | {f(r['rollouts_per_correct'])} | {f(r['vs_exhaustive'], True)} | "
            f"{r['values']} | {f(r['wall_s'])} | {f(r['policy_s'])} | {f(r['value_s'])} |"
        )
    lines.append("")
    for algorithm, m in result["matched"].items():
        note = "at least as accurate" if m["equal_accuracy"] else "less accurate: none reached MC"
        lines.append(
            f"- {algorithm}: {m['value']} against {m['mc']} ({note}): "
            f"{f(m['rollout_ratio'], True)} of its rollouts per correct location"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--value-model", type=Path)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--all-problems", action="store_true")
    ap.add_argument("--thresholds", default="0.1,0.2,0.3,0.5")
    ap.add_argument("--mix", type=float, default=0.5)
    ap.add_argument("--modes", default="model,mix", help="value modes to run (mix costs as MC)")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    args = ap.parse_args(argv)
    from pipeline.runtime import set_threads
    from pipeline.stages.search import build_state
    from workers.valuer import check_tokenizer, load_valuer

    cfg = load_config(str(RunLayout(args.run).config), args.sets)
    set_threads(cfg)
    task = task_from_config(cfg.task)
    value_model = args.value_model or RunLayout.of(cfg).value / "model"
    model = args.model or RunLayout.of(cfg).start_model
    problems = task.problems("train", cfg.task.n_train)
    which = "all" if args.all_problems else "held out from the value model"
    chosen_problems = problems if args.all_problems else held_out(problems, value_model)
    chosen_problems = chosen_problems[: args.problems]
    if not task.has_step_checker or not chosen_problems:
        raise SystemExit(f"{args.run}: no problems to measure, or a task without a step checker")
    check_tokenizer(value_model, model, chosen_problems[0].prompt, cfg.model.trust_remote_code)
    state = build_state(cfg, model, problems)  # the run's search policy, mc (no value model)
    m = cfg.model
    valuer = load_valuer(
        value_model, m.device, m.dtype, m.trust_remote_code, cfg.sampling.max_batch
    )
    modes = [m for m in args.modes.split(",") if m]
    chosen = methods(thresholds_of(args.thresholds, value_model), args.mix, modes)
    result = compare(cfg, task, state.tokenizer, chosen_problems, state.policy, valuer, chosen)
    result |= {
        "problems": len(chosen_problems),
        "which": which,
        "model": str(model),
        "value_model": str(value_model),
    }
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", "experiments/value_search.py", *map(str, given)])
    write_json(args.run / "value_search.json", result | {"command": command})
    write_text(args.run / "value_search.md", markdown(result, command))
    print(markdown(result, command))
    return result


if __name__ == "__main__":
    main()
