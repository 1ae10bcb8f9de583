"""Two bootstraps of the same preset, seed by seed, paired per held-out problem: each one's
`bootstrap/eval.json` (the run stage's figures of its start model) at every setting.

    PYTHONPATH=. .venv/bin/python benchmarks/compare_bootstraps.py \\
        --a runs/countdown-retry/seed-{0,1,2} --b runs/countdown-levers/defaults/seed-{0,1,2}

`--a` and `--b` take one directory per seed, in the same seed order. Prints a Markdown table:
per setting, each side's mean accuracy (and per seed), a − b with its 95% paired interval
(`stats.paired_bootstrap`), and for side a: the setting against the same one with the backspace
banned (what erasing itself adds), its backtrack rate and erased steps wrong against chance.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from pipeline.layout import RunLayout
from pipeline.measure.settings import settings_of
from pipeline.measure.stats import paired_bootstrap


def load(dirs: list[str]) -> list[dict]:
    return [json.loads(RunLayout(Path(d)).bootstrap_eval.read_text()) for d in dirs]


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", nargs="+", required=True)
    ap.add_argument("--b", nargs="+", required=True)
    args = ap.parse_args()
    if len(args.a) != len(args.b):
        raise SystemExit("--a and --b need one directory per seed each, in the same order")
    a, b = load(args.a), load(args.b)
    head = "| setting | a | b | a − b (95% paired) | a: allowed − banned | a: backtrack rate |"
    print(head + " a: erased steps wrong (chance) |")
    print("|---|---|---|---|---|---|---|")
    for name, setting in settings_of(a[0]).items():
        sa = [e["settings"][name] for e in a]
        sb = [e["settings"].get(name) for e in b]
        if any(s is None for s in sb):
            continue
        d = paired_bootstrap([s["per_problem"] for s in sa], [s["per_problem"] for s in sb])  # type: ignore[index]
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        each = lambda ss: " · ".join(pct(s["accuracy"]) for s in ss)  # noqa: E731
        prec = [
            s.get("step_erase_precision") for s in sa if s.get("step_erase_precision") is not None
        ]
        chance = [s.get("chance_precision") for s in sa if s.get("chance_precision") is not None]
        lo, hi = d["ci95"]
        banned = replace(setting, backspace_banned=True).name
        own = "–"
        if not setting.backspace_banned and banned in a[0]["settings"]:
            e = paired_bootstrap(
                [s["per_problem"] for s in sa], [x["settings"][banned]["per_problem"] for x in a]
            )
            own = f"{100 * e['mean']:+.1f} ({100 * e['ci95'][0]:+.1f} to {100 * e['ci95'][1]:+.1f})"
        print(
            f"| {name} | {pct(mean([s['accuracy'] for s in sa]))} [{each(sa)}] | "
            f"{pct(mean([s['accuracy'] for s in sb]))} [{each(sb)}] | "  # type: ignore[index]
            f"{100 * d['mean']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f}) | {own} | "
            f"{pct(mean([s['backtrack_rate'] for s in sa]))} | "
            f"{pct(mean(prec) if prec else None)} ({pct(mean(chance) if chance else None)}) |"
        )


if __name__ == "__main__":
    main()
