"""The erasing bootstrap forms against what a user would do instead at the same generated tokens:
the optimal-path bootstrap of the same seed, sampled N times per problem (N matched per problem
to the erasing form's tokens) and picked by likelihood, by majority, or by a checker.

    .venv/bin/python experiments/forms_best_of_n.py --preset countdown-tiny --seeds 0,1,2 \\
        --root runs/bootstrap-forms-4000 --forms backspace-erased,backspace-tried \\
        [--base optimal] [--n 48] [--temperature 1.0] [--set KEY=VALUE ...]

The runs are `experiments/bootstrap_forms.py`'s, with the same `--preset`, `--root` and `--set`s
(the evaluations must exist). The base form's `n` samples per held-out problem at `--temperature`
are drawn once per seed into `root/BASE/seed-S/curve.json` (the problems of the forms'
evaluation; a cached file is reused). Each erasing form is compared at each of its settings
(greedy, T=1.0) through `experiments/erase_vs_best_of_n.py`: accuracy per attempt against the
base's selectors at that attempt's tokens, and against its own banned twin, paired over seeds then
problems. Writes `root/best_of_n.md` (the table and the command).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from experiments.bootstrap_forms import SETTINGS, config
from experiments.erase_vs_best_of_n import HEADER, compare, row, sides
from pipeline.files import read_json, write_json
from pipeline.layout import RunLayout
from pipeline.loading import task_from_config
from pipeline.measure import budget
from pipeline.measure.evaluation import problems_digest
from pipeline.measure.settings import Setting


def base_curve(cfg: Any, n: int, temperature: float) -> Path:
    """`n` samples per held-out problem from the run of `cfg` (cached in its seed directory)."""
    layout = RunLayout(Path(cfg.run.out_dir))
    path = layout.root / "curve.json"
    task = task_from_config(cfg.task)
    problems = task.problems("test", cfg.eval.n_problems)
    digest = read_json(layout.bootstrap_eval)["problems_digest"]
    if digest != problems_digest(problems):
        raise SystemExit(f"{layout.bootstrap_eval}: evaluated on other problems than these")
    if path.exists():
        have = read_json(path)
        if have.get("n") == n and have.get("temperature") == temperature:
            return path
    setting = Setting(temperature, cfg.eval.samples)
    measured = budget.measure(layout.bootstrap_model, task, problems, cfg, setting, n=n)
    write_json(path, measured | {"n": n})
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="countdown-tiny")
    ap.add_argument("--root", default="runs/bootstrap-forms-4000")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--forms", default="backspace-erased,backspace-tried")
    ap.add_argument("--base", default="optimal")
    ap.add_argument("--n", type=int, default=48, help="samples per problem of the base")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    root, seeds = Path(args.root), [int(s) for s in args.seeds.split(",")]
    curves = [
        base_curve(config(args.preset, root, args.base, s, args.sets), args.n, args.temperature)
        for s in seeds
    ]
    command = " ".join(shlex.quote(a) for a in ["experiments/forms_best_of_n.py", *sys.argv[1:]])
    lines = [f"Command: `{command}` (seeds {args.seeds}; base: {args.base})", "", HEADER]
    for form in args.forms.split(","):
        runs = [RunLayout(root / form).seed(s) for s in seeds]
        for setting in SETTINGS:
            got = [
                sides(r, RunLayout(r).bootstrap_eval, setting, c)
                for r, c in zip(runs, curves, strict=True)
            ]
            lines.append(row(form, compare(got, setting)))
    text = "\n".join(lines) + "\n"
    (root / "best_of_n.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
