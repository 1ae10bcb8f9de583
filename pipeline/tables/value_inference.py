"""`halluc table value-inference`: the value model at inference on a finished run (issue 16,
item 4): value best-of-N beside best-of-N and majority vote, and guided search erasing by the
value model against the same search erasing by the model's own backspace.

    halluc table value-inference --run runs/arith-tiny-verdict/seed-0 \\
        [--value-model RUN/value/model] [--round 1] [--m 4] [--drops 0.1,0.2,0.3] [--set K=V ...]

RUN holds the run's config.yaml (a seed directory of a verdict run) and by default the value model
in RUN/value/model (`halluc value --preset RUN/config.yaml`). Round `--round` (default: the last)
of both arms, on the held-out problems (`eval.n_problems`), nothing tuned (every drop reported):

- guided search (`eval.bksp_search=m`) with the backtrack arm's model, at greedy and T=1.0, erasing
  where the model emits its own backspace (`own`) and where the value fell by more than d over
  the last step (`value d`, `eval.value_drop`); per row: accuracy, backtrack rate, erased steps
  that were wrong (chance: written steps that were wrong), generated tokens per problem;
- the controls (`measure.evaluation.controls`) on the baseline arm's model at T=1.0, up to the
  own-backspace guided search's generated tokens per problem at T=1.0: best-of-N by likelihood,
  majority vote, and value best-of-N (the least step value), on the same samples.

Figures are cached in RUN/value_inference/ (a killed run resumes); writes RUN/value_inference.md
and RUN/value_inference.json.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import load_config
from pipeline.files import read_json, write_json
from pipeline.layout import RunLayout
from pipeline.loading import task_from_config
from pipeline.measure.budget import controls
from pipeline.measure.evaluation import evaluate_to
from pipeline.measure.settings import Setting
from pipeline.tables.common import TableError, add_round, add_sets, config_of, floats, pct, run_dir

SAMPLED = "T=1.0"


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", required=True, type=run_dir, help="a finished run's (or seed's) out_dir"
    )
    parser.add_argument("--value-model", type=Path, default=None, help="default: RUN's value/model")
    add_round(parser, "models are used")
    parser.add_argument("--m", type=int, default=4, help="guided search candidates (default: 4)")
    parser.add_argument(
        "--drops",
        type=floats,
        default=[0.1, 0.2, 0.3],
        metavar="D,D,...",
        help="value drops that erase (default: 0.1,0.2,0.3)",
    )
    add_sets(parser)


def compute(
    run: Path,
    value_model: Path | None = None,
    round_: int | None = None,
    m: int = 4,
    drops: Sequence[float] = (0.1, 0.2, 0.3),
    sets: Sequence[str] = (),
) -> dict[str, Any]:
    """The guided searches per erase rule and the controls, evaluated (and cached in
    RUN/value_inference/) on the held-out problems."""
    preset = config_of(run)
    base = ["eval.banned=false", "eval.temperatures=[1.0]", f"eval.bksp_search={m}", *sets]
    cfg = load_config(preset, base)
    task = task_from_config(cfg.task)
    r = round_ if round_ is not None else cfg.run.rounds - 1
    layout = RunLayout.of(cfg)
    backtrack, baseline = layout.round(r, "backtrack").model, layout.round(r, "baseline").model
    value_model = value_model or layout.value / "model"
    for path in (backtrack, baseline, value_model):
        if not path.exists():
            raise TableError(
                f"{run}: no {path}; give --round of a finished round, and --value-model or run "
                f"`halluc value --preset {preset}` first"
            )
    test = task.problems("test", cfg.eval.n_problems)
    out = run / "value_inference"
    # banned=False: no banned settings, and no detector figures (not what is compared here)
    rows = {"own": evaluate_to(out / f"m{m}-own.json", backtrack, task, test, cfg, False)}
    for d in drops:
        vcfg = load_config(
            preset, [*base, f"eval.value_model={value_model}", f"eval.value_drop={d}"]
        )
        rows[f"value {d:g}"] = evaluate_to(
            out / f"m{m}-value-{d:g}.json", backtrack, task, test, vcfg, False
        )
    path = out / f"controls-m{m}.json"
    if not path.exists():
        budget = rows["own"]["settings"][SAMPLED]["tokens_per_problem"]
        ccfg = load_config(preset, [*base, f"eval.value_model={value_model}"])
        write_json(path, controls(baseline, task, test, ccfg, Setting(1.0), budget))
    return {"round": r, "m": m, "guided": rows, "controls": dict(read_json(path))}


def render(result: dict[str, Any], command: str) -> str:
    lines = [
        f"`{command}`",
        "",
        f"Round {result['round']}, guided search with m={result['m']} candidates (backtrack arm):",
        "",
        "| decoding | erase rule | accuracy | backtrack rate | erased steps wrong (chance) | "
        "tokens per problem |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("greedy", SAMPLED):
        for rule, figures in result["guided"].items():
            s = figures["settings"][name]
            tokens = sum(s["tokens_per_problem"]) / len(s["tokens_per_problem"])
            lines.append(
                f"| {name} | {rule} | {pct(s['accuracy'])} | {pct(s['backtrack_rate'])} | "
                f"{pct(s.get('step_erase_precision'))} ({pct(s.get('chance_precision'))}) | "
                f"{tokens:.1f} |"
            )
    c = result["controls"]
    lines += [
        "",
        f"Baseline arm at T=1.0, N samples up to the own-rule guided search's tokens (mean N "
        f"{c['best_of_n']['mean_n']:.1f}):",
        "",
        "| control | accuracy |",
        "|---|---|",
        *(
            f"| {k} | {pct(c[k]['accuracy'])} |"
            for k in ("best_of_n", "majority", "value_best_of_n")
            if k in c
        ),
    ]
    return "\n".join(lines) + "\n"
