"""The main job: expert iteration with a no-backtrack baseline at equal compute (DESIGN §9).

    halluc run --preset arith-tiny                 # the demo: CPU, about 6 minutes after set-up
    ray job submit --working-dir . -- halluc run --preset countdown-gpu \
        --set model.path=/mnt/shared/models/m --set run.out_dir=/mnt/shared/runs/countdown

    bootstrap (unless model.path is given)
    for each round r < run.rounds, for each arm:
        search   with the arm's current model (same search config for both arms)
        select   backtrack: corrections, self-corrections, clean; baseline: clean only, drawn to
                 the same number of tokens as the backtrack arm's set
        train    from the arm's current model on its selection (same trainer settings)
        evaluate on the same held-out problems -> the arm's model for round r + 1

Where everything goes: `pipeline.layout`. Every stage skips what it finished, so rerunning the
same command after a kill resumes at the first unfinished stage.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from pipeline import bootstrap, report, search_stage, select, train
from pipeline.config import Config
from pipeline.evaluation import evaluate_to, format_table
from pipeline.layout import ARMS, RunLayout
from pipeline.loading import task_from_config
from pipeline.runtime import record_environment, set_threads, stage_config

log = logging.getLogger(__name__)


def main(cfg: Config) -> dict[str, Any]:
    """Run (or resume) every round of both arms; returns each arm's eval figures by round and
    the report's summary table."""
    layout = RunLayout.of(cfg)
    stage_config(cfg, layout.root)
    record_environment(cfg, layout.environment)
    set_threads(cfg)
    task = task_from_config(cfg.task)
    test = task.problems("test", cfg.eval.n_problems)
    if cfg.model.path:
        start_eval = evaluate_to(layout.start_eval, layout.start_model, task, test, cfg)
    else:
        start_eval = bootstrap.main(cfg)
    evals: dict[str, list[dict[str, Any]]] = {arm: [start_eval] for arm in ARMS}
    for r in range(cfg.run.rounds):
        rcfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, round=r))
        tokens = None
        for arm in ARMS:
            rnd, model = layout.round(r, arm), layout.model(r, arm)
            search_stage.search(rcfg, model, rnd.search)
            _, tokens = select.select(rcfg, arm, rnd, tokens)
            train.train(rcfg, model, rnd)
            set_threads(cfg)  # Ray Train or the search may have left another count
            evals[arm].append(evaluate_to(rnd.eval, rnd.model, task, test, rcfg))
            log.info("round %d, %s arm:\n%s", r + 1, arm, format_table(evals[arm][-1]))
    summary = report.write(layout, cfg, evals)
    return {"evals": evals, "summary": summary, "report": str(layout.report_html)}


def describe(result: dict[str, Any]) -> str:
    return f"{result['summary']}\nreport: {result['report']} (and report.md)"
