"""Search benchmarks on the scripted policy (no model): figures for BENCHMARKS.md.

    .venv/bin/python benchmarks/search_bench.py [--problems 500] [--out bench-search.json]

1. Locating the first wrong step: OmegaPRM's binary search vs exhaustive per-step MC (k rollouts
   at every step prefix of the wrong rollout). 8-digit addition (9 steps). With budget 1 both
   modes localise exactly the same rollout per problem (the screening and the first selection are
   identical), so the comparison is paired. Accuracy: the located step equals the exact
   checker's first error of that rollout.
2. Search overhead: seconds spent in the search (state machines, tree, judging) per 1,000
   rollouts, against the seconds the scripted policy itself took, in the same run.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from search.driver import Search, run_batched
from search.fake import ScriptedPolicy
from search.omegaprm import OmegaParams, omegaprm
from search.tasks.arithmetic import ArithmeticTask
from search.tokenizer import CharTokenizer
from search.traces import table_rows
from search.tree import Judge, Tree, split_steps


def searches(task, problems, tok, **params: Any) -> list[Search]:
    out = []
    for p in problems:
        tree = Tree(Judge(task, p, tok, tuple(tok.encode(p.prompt))))
        out.append(Search(omegaprm(tree, OmegaParams(**params), seed=11)))
    return out


def locate(task, problems, tok, policy, mode: str, budget: int, k: int) -> dict[str, Any]:
    results = run_batched(
        searches(task, problems, tok, locate=mode, budget=budget, n_mc=k, n_screen=32), policy
    )
    selections = sum(n.visits for r in results for n in r.tree.nodes.values())
    screening = sum(r.tree.root.n_rollouts for r in results)
    rollouts = sum(r.rollouts_used for r in results) - screening
    hits = total = 0
    for r in results:
        for b in r.branches:
            full = [*b.parent, b.wrong_step, *split_steps(b.wrong_continuation, tok.delim_id)]
            hits += r.tree.judge.first_error(full) == len(b.parent)
            total += 1
    return {
        "mode": mode,
        "budget": budget,
        "k": k,
        "selections": selections,
        "locate_rollouts": rollouts,
        "rollouts_per_selection": rollouts / max(selections, 1),
        "branches": total,
        "accuracy": hits / max(total, 1),
    }


class Timed:
    """The scripted policy with its time and rollouts counted; its counters are the policy's."""

    def __init__(self, policy: ScriptedPolicy) -> None:
        self.policy, self.seconds, self.rollouts = policy, 0.0, 0

    def sample(self, asks):
        t = time.perf_counter()
        out = self.policy.sample(asks)
        self.seconds += time.perf_counter() - t
        self.rollouts += sum(a.n for a in asks)
        return out

    @property
    def generated(self) -> list[list[int]]:
        return self.policy.generated

    @property
    def discards(self) -> bool:
        return self.policy.discards

    @property
    def tokens_generated(self) -> int:
        return self.policy.tokens_generated


def overhead(task, problems, tok, policy) -> dict[str, Any]:
    timed = Timed(policy)
    t = time.perf_counter()
    results = run_batched(searches(task, problems, tok, budget=32), timed)
    total = time.perf_counter() - t
    t = time.perf_counter()
    n_rows = sum(len(rows) for r in results for rows in table_rows(r).values())
    rows_s = time.perf_counter() - t
    search_s = total - timed.seconds
    per_k = 1000 / timed.rollouts
    return {
        "rollouts": timed.rollouts,
        "search_s_per_1k_rollouts": search_s * per_k,
        "fake_policy_s_per_1k_rollouts": timed.seconds * per_k,
        "search_over_fake_policy": search_s / timed.seconds,
        "rows": n_rows,
        "table_rows_s_per_1k_rollouts": rows_s * per_k,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--out", default="bench-search.json")
    args = ap.parse_args()
    task = ArithmeticTask(op="add", digits=8)
    problems = task.problems("train", args.problems)
    tok = CharTokenizer()
    policy = ScriptedPolicy(task, problems, tok, error_rate=0.05, trap_rate=0.5, n_traps=1)
    report: dict[str, Any] = {"steps_per_solution": len(task.reference(problems[0]))}
    report["locate"] = [
        locate(task, problems, tok, policy, mode, budget, k)
        for budget in (1, 16)
        for k in (8,)
        for mode in ("binary", "exhaustive")
    ]
    report["overhead"] = overhead(task, problems[:200], tok, policy)
    print(json.dumps(report, indent=2))
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
