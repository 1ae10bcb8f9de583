"""The erasing bootstrap forms against what a user would do instead at the same generated tokens:
the optimal-path bootstrap of the same seed, sampled N times per problem (N matched per problem
to the erasing form's tokens) and picked by likelihood, by majority, or by a checker.

    .venv/bin/python experiments/forms_best_of_n.py --preset countdown-tiny --seeds 0,1,2 \\
        --root runs/bootstrap-forms-4000 --forms backspace-erased,backspace-tried \\
        [--base optimal] [--n 48] [--temperature 1.0] [--set KEY=VALUE ...] \\
        [--decode eval.KEY=VALUE ...]

The runs are `experiments/bootstrap_forms.py`'s, with the same `--preset`, `--root` and `--set`s
(the evaluations must exist). The base form's `n` samples per held-out problem at `--temperature`
are drawn once per seed into `root/BASE/seed-S/curve.json` (the problems of the forms'
evaluation; a cached file is reused). Each erasing form is compared at each of its settings
(greedy, T=1.0) through `experiments/erase_vs_best_of_n.py`: accuracy per attempt against the
base's selectors at that attempt's tokens, and against its own banned twin, paired over seeds then
problems. `--decode`: evaluate the erasing forms' models again with these `eval` options (an ad-hoc
`halluc eval` of each, in `root/FORM/seed-S/evals/`, cached) and compare that instead, e.g.
`--decode eval.erase_temperature=1.0`: greedy except for the step written after an erase. Writes
`root/best_of_n.md` (or `root/best_of_n-DECODE.md`), the table and the command.
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
from pipeline.stages import eval as eval_stage


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


def evaluation(
    preset: str, root: Path, form: str, seed: int, sets: list[str], decode: list[str]
) -> Path:
    """The evaluation of a form's run to compare: the bootstrap's own, or with `decode` an ad-hoc
    one of its model with those options (made unless cached)."""
    layout = RunLayout(RunLayout(root / form).seed(seed))
    if not decode:
        return layout.bootstrap_eval
    model = f"eval.model={layout.bootstrap_model}"
    adhoc = config(preset, root, form, seed, [*sets, *decode, model])
    eval_stage.main(adhoc)  # cached under its key
    return eval_stage.target(adhoc, RunLayout.of(adhoc))[1]


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
    ap.add_argument("--decode", action="append", default=[], help="eval.KEY=VALUE")
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
        evals = [evaluation(args.preset, root, form, s, args.sets, args.decode) for s in seeds]
        for setting in SETTINGS:
            got = [sides(r, e, setting, c) for r, e, c in zip(runs, evals, curves, strict=True)]
            lines.append(row(form, compare(got, setting)))
    text = "\n".join(lines) + "\n"
    name = "-".join(d.removeprefix("eval.").replace("=", "-") for d in args.decode)
    (root / f"best_of_n{'-' + name if name else ''}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
