"""The main job: expert iteration with a no-backtrack baseline at equal compute (DESIGN §9).

    halluc run --preset arith-tiny                 # the demo: CPU, about 3 minutes after set-up
    ray job submit --working-dir . -- halluc run --preset countdown-gpu \
        --set model.path=/mnt/shared/models/m --set run.out_dir=/mnt/shared/runs/countdown

    bootstrap (unless model.path is given)
    for each round r < run.rounds, for each arm:
        search   with the arm's current model (same search config for both arms)
        select   backtrack: corrections, self-corrections, clean; baseline: clean only, drawn to
                 the same number of tokens as the backtrack arm's set
        train    from the arm's current model on its selection (same trainer settings)
        evaluate on the same held-out problems -> the arm's model for round r + 1

Layout: `run.out_dir/bootstrap/`, `run.out_dir/ARM/round-R/` (`search/`, `selected.parquet`,
`train/`, `eval.json`), `report.md`, `report.html`. Every stage skips what it finished, so rerunning
the same command after a kill resumes at the first unfinished stage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from pipeline import bootstrap, report, search_stage, select, train
from pipeline.config import Config, check_resumable, save_config
from pipeline.evaluate import evaluate_model, format_table

log = logging.getLogger(__name__)
ARMS = ("backtrack", "baseline")


class RunError(RuntimeError):
    """A round that cannot go on with what the search found."""


def main(cfg: Config) -> dict[str, Any]:
    root = Path(cfg.run.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    check_resumable(cfg, root / "config.yaml")
    save_config(cfg, root / "config.yaml")
    task = search_stage.make_task_from(cfg)
    test = task.problems("test", cfg.eval.n_problems)
    if cfg.model.path:
        start = Path(cfg.model.path)
        start_eval = _evaluate(start, root / "start-eval.json", task, test, cfg)
    else:
        start_eval = bootstrap.main(cfg)
        start = bootstrap.model_dir(cfg)
    evals: dict[str, list[dict[str, Any]]] = {arm: [start_eval] for arm in ARMS}
    models = {arm: start for arm in ARMS}
    for r in range(cfg.run.rounds):
        tokens = None
        for arm in ARMS:
            acfg = arm_config(cfg, arm, r, models[arm])
            search_stage.main(acfg)
            data, tokens = _select(acfg, arm, tokens)
            tcfg = dataclasses.replace(
                acfg, train=dataclasses.replace(acfg.train, base=str(models[arm]), data=str(data))
            )
            models[arm] = train.main(tcfg)
            evals[arm].append(
                _evaluate(models[arm], models[arm].parent.parent / "eval.json", task, test, acfg)
            )
            log.info("round %d, %s arm:\n%s", r + 1, arm, format_table(evals[arm][-1]))
    summary = report.write(root, cfg, evals)
    print(f"{summary}\nreport: {root / 'report.html'} (and report.md)", flush=True)
    return evals


def arm_config(cfg: Config, arm: str, r: int, model: Path) -> Config:
    """The config of one arm's round: its own directory and its current model."""
    return dataclasses.replace(
        cfg,
        run=dataclasses.replace(cfg.run, out_dir=str(Path(cfg.run.out_dir) / arm), round=r),
        model=dataclasses.replace(cfg.model, path=str(model)),
    )


def _select(cfg: Config, arm: str, tokens: int | None) -> tuple[Path, int]:
    """Write (once) and return the arm's selection and its token count."""
    out = Path(cfg.run.out_dir) / f"round-{cfg.run.round}" / "selected.parquet"
    if out.exists():
        return out, select.n_tokens(select.read_selected(out))
    rows = select.read_traces(search_stage.stage_dir(cfg))
    seed = cfg.run.seed + 1000 * cfg.run.round
    if arm == "backtrack":
        chosen = select.select_backtrack(rows, cfg.select, seed)
    else:
        chosen = select.select_baseline(rows, cfg.select, tokens or 0, seed)
    if not chosen:
        raise RunError(
            f"the {arm} arm selected no traces in round {cfg.run.round}: the search found no "
            "usable trace (a model that is always right or always wrong? see "
            f"{search_stage.stage_dir(cfg) / 'summary.json'}); train the model more or less, "
            "or raise search.budget"
        )
    select.write_selected(chosen, out)
    return out, select.n_tokens(chosen)


def _evaluate(model: Path, out: Path, task: Any, test: list[Any], cfg: Config) -> dict[str, Any]:
    if out.exists():
        return dict(json.loads(out.read_text()))
    result = evaluate_model(model, task, test, cfg)
    out.write_text(json.dumps(result, indent=2))
    return result
