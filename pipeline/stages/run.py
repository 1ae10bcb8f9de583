"""The main job: expert iteration with a no-backtrack baseline at equal compute (docs/design.md §9),
measured so that it can carry a verdict.

    halluc run --preset arith-tiny                            # the demo: one seed
    halluc run --preset arith-tiny --set 'run.seeds=[0,1,2,3,4]'  # the verdict: five seeds
    ray job submit --working-dir . -- halluc run --preset countdown-gpu \
        --set model.path=/mnt/shared/models/m --set run.out_dir=/mnt/shared/runs/countdown

    bootstrap (unless model.path is given)
    for each round r < run.rounds, for each arm of run.arms (backtrack first):
        search   with the arm's current model (same search config for every arm); an arm whose
                 model and config hash match an arm searched before it this round (round 0:
                 baseline after backtrack, both the start model) gets a copy of that search
        select   backtrack: corrections, self-corrections, clean; baseline: clean only, drawn to
                 the same loss-bearing tokens as the backtrack arm's set; dpo: pairs, drawn to
                 the same loss-bearing tokens; rl: nothing (it samples its own streams);
                 sft_rl neither searches nor selects
        train    from the arm's current model on its selection, the others for the backtrack
                 arm's number of optimizer steps: the baseline without the backspace token, the
                 dpo arm with train.objective=dpo (as many sequences per step: half as many
                 pairs), the rl arm with train.objective=rl on the training problems
                 (batch_size // rl.group problems a step, rl.group streams each), the sft_rl
                 arm likewise but from the backtrack arm's model of this round (SFT then RL)
        evaluate the decoding sweep on the held-out problems, and on `eval.n_tune` training
                 problems to choose the arm's setting; then the baseline's best-of-N and majority
                 vote at the backtrack arm's generated tokens per problem

With `run.seeds`, each seed is a sub-run (`out_dir/seed-S/`, resumable on its own) and
`verdict.json` compares the arms over all of them (`measure.verdict`). Where everything goes:
`pipeline.layout`. Every stage skips what it finished, so rerunning the same command after a kill
resumes at the first unfinished stage.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from pipeline.arms import Arm, arm, in_order
from pipeline.config import Config, ConfigError
from pipeline.files import copy_dir, read_json, write_json
from pipeline.layout import RoundLayout, RunLayout, search_summary
from pipeline.loading import task_from_config
from pipeline.measure import budget, report
from pipeline.measure.evaluation import evaluate_to, format_table
from pipeline.measure.settings import sweep
from pipeline.measure.verdict import choose, verdict
from pipeline.runtime import record_environment, set_threads, stage_config, timed
from pipeline.stages import bootstrap, select, train
from pipeline.stages import search as search_stage
from search.types import Problem, Task

log = logging.getLogger(__name__)


def main(cfg: Config) -> dict[str, Any]:
    """Run (or resume) every round of both arms, for each seed of `run.seeds` (else `run.seed`);
    returns the verdict and where the report is."""
    if cfg.train.objective != "sft":
        raise ConfigError(
            f"train.objective={cfg.train.objective}: `halluc run` sets each arm's objective (sft "
            "for backtrack and baseline, dpo and rl for the arms of those names); leave "
            "train.objective=sft and add the arm: run.arms=[baseline,backtrack,dpo] or "
            "run.arms=[baseline,backtrack,rl]"
        )
    unsearched = [a.name for a in in_order(cfg.run.arms) if not a.searches]
    if unsearched and cfg.train.rl.credit == "tree":
        raise ConfigError(
            f"run.arms has {unsearched[0]} with train.rl.credit=tree: the {unsearched[0]} arm "
            "searches nothing, so it has no step values to credit erases with; use "
            "train.rl.credit=outcome, or the rl arm"
        )
    layout = RunLayout.of(cfg)
    stage_config(cfg, layout.root)
    record_environment(cfg, layout.environment)
    seeds = cfg.run.seeds or [cfg.run.seed]
    configs = [seed_config(cfg, s) for s in seeds] if cfg.run.seeds else [cfg]
    runs = [run_seed(c) for c in configs]
    subs = [RunLayout.of(c) for c in configs]
    result = verdict(runs, seeds)
    result["compute"] = [_compute(sub, cfg) for sub in subs]
    result["wall_seconds"] = [_wall(sub) for sub in subs]
    result["gates"] = gates(runs, seeds)
    write_json(layout.verdict, result)
    per_seed = {
        str(s): {a.name: [x["eval"] for x in run[a.name]] for a in in_order(cfg.run.arms)}
        for s, run in zip(seeds, runs, strict=True)
    }
    summary = report.write_verdict(layout, cfg, result | {"per_seed_evals": per_seed}, subs[0])
    return {"verdict": result, "summary": summary, "report": str(layout.report_html)}


def gates(runs: list[dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    """Every keep-best decision (`train.keep_best`): seed, arm, round, kept, validation
    accuracies."""
    return [
        {"seed": s, "arm": name, "round": r} | m["gate"]
        for s, run in zip(seeds, runs, strict=True)
        for name, rounds in run.items()
        if name != "controls"
        for r, m in enumerate(rounds)
        if "gate" in m
    ]


def describe(result: dict[str, Any]) -> str:
    return f"{result['summary']}\n\n{result['verdict']['sentence']}\nreport: {result['report']}"


def seed_config(cfg: Config, seed: int) -> Config:
    """Seed `seed`'s sub-run: its own directory, and every seed of the pipeline set to it."""
    return dataclasses.replace(
        cfg,
        run=dataclasses.replace(
            cfg.run, seed=seed, seeds=[], out_dir=str(RunLayout.of(cfg).seed(seed))
        ),
        bootstrap=dataclasses.replace(cfg.bootstrap, seed=seed),
        train=dataclasses.replace(cfg.train, seed=seed),
    )


def run_seed(cfg: Config) -> dict[str, Any]:
    """One seed's run: per arm and round, the held-out eval and the tuning eval; per round the
    baseline's controls (None in round 0, where both arms are the start model)."""
    layout = RunLayout.of(cfg)
    stage_config(cfg, layout.root)
    set_threads(cfg)
    task = task_from_config(cfg.task)
    test = task.problems("test", cfg.eval.n_problems)
    tune = task.problems("validation", cfg.eval.n_tune)  # choices never see test or training
    clock = layout.timing
    if not cfg.model.path:
        with timed(clock, "bootstrap"):
            bootstrap.main(cfg)
    paths = (layout.start_eval, layout.start_tune, layout.start_curve)
    start = _measure(clock, "start", 0, layout.start_model, paths, task, test, tune, cfg)
    out: dict[str, Any] = {a.name: [start] for a in in_order(cfg.run.arms)} | {"controls": [None]}
    for r in range(cfg.run.rounds):
        tokens, steps = None, -1  # the budget arm's (backtrack), which the other arms match
        searched: dict[tuple[Path, str], Path] = {}
        for a in in_order(cfg.run.arms):
            acfg = arm_config(cfg, a.name, r)
            rnd, model = layout.round(r, a.name), layout.model(r, a.name)
            if a.searches:
                with timed(clock, "search", a.name, r + 1):
                    search(acfg, model, rnd.search, searched)
            if a.selects:
                _, n = select.select(acfg, a.name, rnd, tokens)
            backspace = a.backspace or cfg.run.baseline_backspace
            with timed(clock, "train", a.name, r + 1):
                base = train.base_of(acfg, layout, r, a.name)
                earlier = train.earlier_of(acfg, layout, r, a.name)
                train.train(acfg, base, rnd, backspace, steps, earlier)
            if a.sets_budget:
                tokens = n
                steps = read_json(rnd.compute)["optimizer_steps"]
            set_threads(cfg)  # Ray Train or the search may have left another count
            paths = (rnd.eval, rnd.tune, rnd.curve)
            got = _measure(clock, a.name, r + 1, rnd.model, paths, task, test, tune, acfg)
            if cfg.train.keep_best and not a.starts_from:
                got = gate(rnd, out[a.name][-1], got)
            out[a.name].append(got)
            log.info("round %d, %s arm:\n%s", r + 1, a.name, format_table(out[a.name][-1]["eval"]))
        out["controls"].append(_controls(layout, r, out))
    return out


def search(cfg: Config, model: Path, out: Path, searched: dict[tuple[Path, str], Path]) -> None:
    """Search the round with `model` into `out`, first copying the finished search of an arm that
    searched the same checkpoint under the same config hash this round (`searched`: (model, hash)
    to its directory): its shards are the ones this search would write, since seeds derive from
    (run seed, round, problem id) and every row carries the hash. Its generated tokens still
    count as this arm's compute; only the wall time is saved."""
    same = searched.setdefault((model, cfg.hash), out)
    if same != out and search_summary(same).exists() and not out.exists():
        log.info("search: %s searched %s under the same config; copying it to %s", same, model, out)
        out.parent.mkdir(parents=True, exist_ok=True)
        copy_dir(same, out)
    search_stage.search(cfg, model, out)  # checks the config and sums the copied batches


def cfg_round(cfg: Config, r: int) -> Config:
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, round=r))


def arm_config(cfg: Config, name: str, r: int) -> Config:
    """Round `r` of the arm called `name`: its objective (`pipeline.arms`), and no token warm-up
    for an arm that starts from another arm's model (sft_rl: that model's backspace rows were
    trained by sft)."""
    a: Arm = arm(name)
    training = dataclasses.replace(cfg.train, objective=a.objective)
    if a.starts_from:
        training = dataclasses.replace(training, token_warmup=0)
    return dataclasses.replace(cfg_round(cfg, r), train=training)


def gate(rnd: RoundLayout, held: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`train.keep_best`: the round's model is kept when its validation accuracy at its chosen
    setting is not below that of `held`, the model it would replace (both measurements as
    `_measure` returns them); else the arm keeps `held`, whose figures stand for the round. The
    decision goes to the round's gate.json (read back on resume) and onto the figures returned."""
    if rnd.gate.exists():
        decision = dict(read_json(rnd.gate))
    else:
        now, before = (m["tune"]["settings"][choose(m["tune"])]["accuracy"] for m in (new, held))
        decision = {"kept": now >= before, "validation": now, "held_validation": before}
        write_json(rnd.gate, decision)
    return (new if decision["kept"] else held) | {"gate": decision}


def _measure(
    clock: Path,
    arm: str,
    r: int,
    model: Path,
    paths: tuple[Path, Path, Path],
    task: Task,
    test: list[Problem],
    tune: list[Problem],
    cfg: Config,
) -> dict[str, Any]:
    """`_evaluate` then `_curve` (`paths`: eval.json, tune.json, curve.json), each timed."""
    with timed(clock, "eval", arm, r):
        got = _evaluate(model, paths[:2], task, test, tune, cfg)
    with timed(clock, "curve", arm, r):
        _curve(got, paths[2], model, task, test, cfg)
    return got


def _evaluate(
    model: Path,
    paths: tuple[Path, ...],
    task: Task,
    test: list[Problem],
    tune: list[Problem],
    cfg: Config,
) -> dict[str, Any]:
    """The held-out sweep (`paths[0]`) and the sweep on validation problems (`paths[1]`)."""
    held = evaluate_to(paths[0], model, task, test, cfg)
    tuned = evaluate_to(paths[1], model, task, tune, cfg, banned=False)
    return {"eval": held, "tune": tuned}


def _curve(
    evaluated: dict[str, Any], path: Path, model: Path, task: Task, test: list[Problem], cfg: Config
) -> None:
    """The model's accuracy against generated tokens on the held-out problems at its sampling
    setting chosen on validation problems (`measure.budget`; cached at `path`), added to its
    held-out figures as `curve` (without the samples, which stay in the file)."""
    if path.exists():
        measured = dict(read_json(path))
    else:  # measured now: kept in memory, not read back
        chosen = choose(evaluated["tune"], sampling=True)
        measured = budget.measure(model, task, test, cfg, {s.name: s for s in sweep(cfg)}[chosen])
        write_json(path, measured)
    measured = {k: v for k, v in measured.items() if k != "draw"}
    evaluated["eval"] = evaluated["eval"] | {"curve": measured}


def _controls(layout: RunLayout, r: int, out: dict[str, Any]) -> dict[str, Any]:
    """The baseline at its sampling setting chosen on validation problems, N samples per problem
    up to the backtrack arm's generated tokens per problem at its chosen setting, read from the
    baseline's curve samples (cached in the baseline round's controls.json)."""
    path = layout.round(r, "baseline").controls
    if path.exists():
        return dict(read_json(path))
    bt = out["backtrack"][-1]
    tokens = bt["eval"]["settings"][choose(bt["tune"])]["tokens_per_problem"]
    held = layout.kept(r, "baseline")  # the baseline the arm holds after the round
    measured = dict(read_json(held.curve if held else layout.start_curve))
    drawn = budget.samples_of(measured)
    result = budget.matched(drawn, tokens, measured["temperature"])
    write_json(path, result)
    return result


def _wall(layout: RunLayout) -> dict[str, float]:
    """A seed's wall seconds by stage (bootstrap, search, train, eval, curve) and in all, summed
    over every time the run was started."""
    rows = list(read_json(layout.timing)) if layout.timing.exists() else []
    out: dict[str, float] = {}
    for row in rows:
        out[row["stage"]] = out.get(row["stage"], 0.0) + row["seconds"]
    return out | {"total": sum(out.values())}


def _compute(layout: RunLayout, cfg: Config) -> dict[str, list[dict[str, Any]]]:
    """Per arm and round: rows, loss-bearing tokens, optimizer steps, generated tokens in search
    and in evaluation (what each arm cost; equal compute is stated, not assumed). An arm that
    starts from another's model (sft_rl) has its own stage's figures: that arm's round comes
    before it."""
    out: dict[str, list[dict[str, Any]]] = {}
    for a in in_order(cfg.run.arms):
        out[a.name] = []
        for r in range(cfg.run.rounds):
            rnd = layout.round(r, a.name)
            trained = read_json(rnd.compute) if rnd.compute.exists() else {}
            trained.pop("history", None)  # the rl arm's figures by step stay in compute.json
            if a.starts_from:
                trained["after"] = f"the {a.starts_from} arm's round (its compute comes on top)"
            searched = read_json(rnd.summary) if rnd.summary.exists() else {}
            figures = read_json(rnd.eval)["settings"]
            out[a.name].append(
                trained
                | {
                    "search_generated_tokens": searched.get("generated_tokens"),
                    "eval_generated_tokens": sum(
                        f.get("generated_tokens", 0) for f in figures.values()
                    ),
                }
            )
    return out
