"""The Stream-of-Search comparison at small scale: bootstraps on optimal paths, on search streams
and on backspace streams, at equal optimizer steps and loss-bearing tokens, over seeds.

    .venv/bin/python experiments/bootstrap_forms.py --preset countdown-tiny --seeds 0,1,2 \\
        --root runs/bootstrap-forms \\
        [--forms optimal,stream,backspace,backspace-erased,backspace-visible,backspace-tried] \\
        [--set KEY=VALUE ...]

Each form and seed is one `halluc bootstrap` run (`bootstrap.data=FORM`, `bootstrap.seed=S`;
`backspace-erased`: the backspace form with `bootstrap.erased_loss=true`; `backspace-visible`:
that with `bootstrap.attention=stream`; `backspace-tried`: that with `bootstrap.attention=tried`) in
`root/FORM/seed-S` (rerunning reuses what is done). The defaults below make the forms
comparable: every batch holds `bootstrap.batch_tokens` loss-bearing tokens (so the forms see
equal tokens in equal steps), positions and the generation budget fit the longest streams, and
every form is evaluated on the same held-out problems (the task's seed stays fixed), so the
differences are paired per problem. `--set` overrides them.

Writes `root/forms.md` (the table and the command) and `root/forms.json`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from pipeline.config import Config, load_config
from pipeline.layout import RunLayout, compute_of
from pipeline.measure.stats import interval, seeds_then_problems
from pipeline.stages import bootstrap
from pipeline.tables.common import diff, mean_known, num, pct

COMPARABLE = [
    "bootstrap.batch_tokens=1024",  # about 64 optimal solutions of countdown-tiny
    "bootstrap.n_positions=640",
    "sampling.stream_tokens=600",
    "eval.n_problems=200",
    "eval.temperatures=[1.0]",
    "eval.samples=2",
    "eval.banned=false",  # a model without the backspace token: banning it changes nothing
    "bootstrap.retry_rate=0",  # the forms of the data alone (retries are a lever of their own)
]
SETTINGS = ["greedy", "T=1.0"]  # the backspace form also has them with the backspace banned
# forms that are a `bootstrap.data` value and more: the backspace form with loss on the moves
# it erases (the model learns to try dead ends and to erase them, as Stream of Search learns to
# search; without it the erased moves carry no loss and only the kept path and the backspaces
# are learned); that with every token visible (`bootstrap.attention=stream`): the moves tried
# stay in view of what follows, as in the stream form, and the backspaces take them out of the
# answer; and that with only the moves tried at the current branch point in view
# (`bootstrap.attention=tried`): deeper dead ends hidden as in erase attention
ERASED = ["bootstrap.data=backspace", "bootstrap.erased_loss=true"]
VARIANTS = {
    "backspace-erased": ERASED,
    "backspace-visible": [*ERASED, "bootstrap.attention=stream"],
    "backspace-tried": [*ERASED, "bootstrap.attention=tried"],
}


def config(preset: str, root: Path, form: str, seed: int, sets: list[str]) -> Config:
    """The configuration of one form and seed, its run in `root/FORM/seed-S`."""
    out = RunLayout(root / form).seed(seed)
    banned = ["eval.banned=true"] if "backspace" in form else []  # erasing against not
    data = VARIANTS.get(form, [f"bootstrap.data={form}"])
    return load_config(
        preset,
        [*COMPARABLE, *banned, f"run.out_dir={out}", *data, f"bootstrap.seed={seed}", *sets],
    )


def run(preset: str, root: Path, form: str, seed: int, sets: list[str]) -> dict[str, Any]:
    cfg = config(preset, root, form, seed, sets)
    figures = bootstrap.main(cfg)
    model = RunLayout(Path(cfg.run.out_dir)).bootstrap_model
    figures["compute"] = json.loads(compute_of(model).read_text())
    return figures


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per form and setting: mean accuracy with its interval, the paired difference from the
    first form, tokens per solved problem, backtrack rate; and the compute of each form."""
    forms = list(results)
    out: dict[str, Any] = {}
    for form, seeds in results.items():
        row: dict[str, Any] = {"compute": [s["compute"] for s in seeds]}
        for name in SETTINGS:
            figs = [s["settings"][name] for s in seeds]
            row[name] = {
                "accuracy": interval([f["per_problem"] for f in figs]),
                "per_seed": [f["accuracy"] for f in figs],
                "tokens_per_solved": mean_known([f["tokens_per_solved"] for f in figs]),
                "backtrack_rate": mean_known([f["backtrack_rate"] for f in figs]),
                "truncation_rate": mean_known([f["truncation_rate"] for f in figs]),
            }
            if form != forms[0]:
                base = [s["settings"][name]["per_problem"] for s in results[forms[0]]]
                row[name]["minus_first"] = seeds_then_problems(
                    [f["per_problem"] for f in figs], base
                )
        out[form] = row
    return out


def table(summary: dict[str, Any], command: str, seeds: list[int]) -> str:
    first = next(iter(summary))
    lines = [
        f"Command: `{command}` (seeds {', '.join(map(str, seeds))})",
        "",
        f"| form | setting | solved (95% interval) | per seed | − {first} (paired 95%) "
        "| tokens per solved | backtrack rate | truncated | loss tokens, steps (per seed) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for form, row in summary.items():
        compute = row["compute"][0]
        for name in SETTINGS:
            r = row[name]
            acc = r["accuracy"]
            lines.append(
                f"| {form} | {name} | {pct(acc['mean'])} ({pct(acc['ci95'][0])}–"
                f"{pct(acc['ci95'][1])}) | {', '.join(pct(a) for a in r['per_seed'])} | "
                f"{diff(r.get('minus_first'))} | {num(r['tokens_per_solved'], 0)} | "
                f"{pct(r['backtrack_rate'])} | "
                f"{pct(r['truncation_rate'])} | {compute['loss_tokens']:,}, "
                f"{compute['optimizer_steps']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="countdown-tiny")
    ap.add_argument("--root", default="runs/bootstrap-forms")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--forms", default="optimal,stream,backspace")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    root = Path(args.root)
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {
        form: [run(args.preset, root, form, s, args.sets) for s in seeds]
        for form in args.forms.split(",")
    }
    summary = summarize(results)
    command = " ".join(shlex.quote(a) for a in ["experiments/bootstrap_forms.py", *sys.argv[1:]])
    text = table(summary, command, seeds)
    root.mkdir(parents=True, exist_ok=True)
    (root / "forms.md").write_text(text)
    (root / "forms.json").write_text(json.dumps(summary, indent=2))
    print(text)


if __name__ == "__main__":
    main()
