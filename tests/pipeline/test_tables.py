"""`halluc table`: each table over a finished run (`pipeline.tables`), and its CLI.

The tables that only read a run are checked on runs written by hand (`tests/tables_fixture.py`)
against `tests/golden/`: the Markdown the scripts they replace (benchmarks/arms_table.py,
sweep_diffs.py, compare_bootstraps.py at 88654bc) printed on the same figures, the run's path
written as RUN, with the intervals of protocol v2 (seeds, then problems) since issue 25. The tables
that also evaluate the run's models run on tiny random checkpoints.
"""

import json
import shutil
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.config import save_config
from pipeline.layout import RunLayout
from pipeline.loading import task_from_config
from pipeline.measure import evaluation
from pipeline.stages import table
from pipeline.tables import BY_NAME, TABLES, arms, compare_bootstraps, sweep_diffs
from pipeline.tables.common import TableError
from tests.conftest import tiny_cfg
from tests.tables_fixture import bootstrap_pair, synthetic_run

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return synthetic_run(tmp_path_factory.mktemp("tables") / "run")


def test_arms_prints_what_the_script_printed_and_writes_it(run, capsys):
    assert cli.main(["table", "arms", "--run", str(run)]) == 0
    printed = capsys.readouterr().out
    assert printed.replace(str(run), "RUN") == (GOLDEN / "arms.md").read_text()
    assert (run / "arms.md").read_text() + "\n" == printed


def test_arms_reads_a_run_of_one_seed_without_a_seed_directory(tmp_path):
    """`run.seeds` unset: the figures sit in the run directory itself, not under seed-0/."""
    seeded = synthetic_run(tmp_path / "seeded", seeds=(0,))
    flat = tmp_path / "flat"
    shutil.copytree(seeded / "seed-0", flat)
    shutil.copy(seeded / "verdict.json", flat)
    a, b = arms.compute(seeded), arms.compute(flat)
    assert a | {"run": b["run"]} == b and "| 0 | start model |" in arms.render(b)


def test_sweep_diffs_prints_what_the_script_printed(run, capsys):
    assert cli.main(["table", "sweep-diffs", "--run", str(run)]) == 0
    printed = capsys.readouterr().out
    assert printed.replace(str(run), "RUN") == (GOLDEN / "sweep-diffs.md").read_text()
    result = sweep_diffs.compute(run)
    assert result["names"] == ["T=0.7", "T=1.0"]  # greedy and the banned twins left out
    assert [r["round"] for r in result["tables"][0]["rows"]] == [1, 2]
    # since the script: every erasing arm's allowed − banned (its title names the arm), and the
    # figures per arm; the backtrack tables' figures are the script's


def test_sweep_diffs_gives_every_arm_its_first_error_figures_as_means_over_seeds(tmp_path, capsys):
    run = synthetic_run(tmp_path / "run", arms=("backtrack", "baseline", "rl"))
    for s, share in enumerate((0.1, 0.3, None)):  # seed 2 erased nothing: left out of the mean
        path = run / f"seed-{s}" / "rl" / "round-1" / "eval.json"
        figures = json.loads(path.read_text())
        figures["settings"]["T=1.0"] |= {
            "first_error_precision": share,
            "chance_first_error_precision": 0.05,
            "repair_rate": None if share is None else 0.5,
        }
        path.write_text(json.dumps(figures))
    result = sweep_diffs.compute(run, ["T=1.0"])
    assert result["names"] == ["T=1.0"]
    titles = [t["title"] for t in result["tables"]]
    assert titles == ["backtrack, allowed − banned", "rl, allowed − banned", "backtrack − baseline"]
    (rl,) = [f for f in result["figures"] if (f["arm"], f["round"]) == ("rl", 2)]
    assert rl["first_error_precision"] == pytest.approx(0.2) and rl["repair_rate"] == 0.5
    assert rl["chance_first_error_precision"] == pytest.approx(0.05)
    assert "| rl | 2 | T=1.0 |" in sweep_diffs.render(result)
    assert "| 20.0% (5.0%) |" in sweep_diffs.render(result)
    with pytest.raises(TableError, match="no sampled setting 'T=0.5'; there are"):
        sweep_diffs.compute(run, ["T=0.5"])
    assert cli.main(["table", "sweep-diffs", "--run", str(run), "--setting", "T=0.7"]) == 0
    assert "| T=1.0 |" not in capsys.readouterr().out
    (run / "seed-3" / "rl").mkdir(parents=True)  # a seed a grid is adding: not the verdict's
    assert sweep_diffs.compute(run, ["T=1.0"]) == result
    (run / "verdict.json").unlink()  # then every seed-S counts, and one is not evaluated
    with pytest.raises(TableError, match="seed-3/backtrack/round-0/eval.json: no such file"):
        sweep_diffs.compute(run)


def test_sweep_diffs_reads_a_round_the_keep_best_gate_rejected_as_the_model_the_arm_kept(
    tmp_path,
):
    run = synthetic_run(tmp_path / "run")
    seeds = sweep_diffs.seeds_of(run)
    gate = seeds[0] / "backtrack" / "round-1" / "gate.json"
    gate.write_text(json.dumps({"kept": False, "validation": 0.1, "held_validation": 0.2}))
    got = sweep_diffs.evals(seeds, "backtrack", 2)
    kept = json.loads((seeds[0] / "backtrack" / "round-0" / "eval.json").read_text())
    assert got[0] == kept and got[1]["settings"] != kept["settings"]
    (seeds[0] / "backtrack" / "round-0" / "gate.json").write_text(gate.read_text())
    start = json.loads((seeds[0] / "bootstrap" / "eval.json").read_text())
    assert sweep_diffs.evals(seeds, "backtrack", 2)[0] == start  # both rejected: the start model


def test_compare_bootstraps_prints_what_the_script_printed(tmp_path, capsys):
    a, b = bootstrap_pair(tmp_path)
    argv = ["table", "compare-bootstraps", "--a", *map(str, a), "--b", *map(str, b)]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == (GOLDEN / "compare-bootstraps.md").read_text()


def test_compare_bootstraps_takes_eval_json_files_as_the_directories_they_stand_for(
    tmp_path, capsys
):
    """An eval.json given on either side is read as is: the same table as its directory's."""
    a, b = bootstrap_pair(tmp_path)
    files = [str(d / "bootstrap" / "eval.json") for d in a]
    assert cli.main(["table", "compare-bootstraps", "--a", *files, "--b", *map(str, b)]) == 0
    assert capsys.readouterr().out == (GOLDEN / "compare-bootstraps.md").read_text()
    with pytest.raises(SystemExit):  # neither a directory nor a file: argparse names it
        cli.main(["table", "compare-bootstraps", "--a", str(tmp_path / "nope.json"), "--b", *files])
    assert "nope.json: no such directory" in capsys.readouterr().err
    short = tmp_path / "short.json"  # an evaluation of fewer problems cannot be paired with them
    figures = json.loads(Path(files[0]).read_text())
    for setting in figures["settings"].values():
        setting["per_problem"] = setting["per_problem"][:-1]
    short.write_text(json.dumps(figures))
    with pytest.raises(TableError, match=r"hold \[\d+, \d+\] problems"):
        compare_bootstraps.compute([short, *map(Path, files[1:])], b)
    marked = []  # as many problems, but other ones: the digests tell (files without one pass)
    for i, digest in enumerate(("0" * 16, "1" * 16)):
        marked.append(tmp_path / f"marked-{i}.json")
        figures = json.loads(Path(files[i]).read_text())
        marked[-1].write_text(json.dumps(figures | {"problems_digest": digest}))
    with pytest.raises(TableError, match="same number of different problems"):
        compare_bootstraps.compute([*marked, Path(files[2])], b)


def test_compare_bootstraps_pairs_the_backspace_auc_seed_by_seed(tmp_path):
    """P(backspace)'s AUC per seed on each side and a − b over seeds, pooled and within problem;
    no AUC row where a seed of either side has no figure."""
    a, b = bootstrap_pair(tmp_path)
    aucs = {"a": [(0.7, 0.6), (0.8, 0.65), (0.75, None)], "b": [(0.6, 0.5), (0.6, 0.5), (0.5, 0.5)]}
    for side, dirs in (("a", a), ("b", b)):
        for d, (pooled, within) in zip(dirs, aucs[side], strict=True):
            path = d / "bootstrap" / "eval.json"
            e = json.loads(path.read_text())
            e["detector"] = {
                "stratified": {"detector": {"pooled": pooled, "within_problem": within}}
            }
            path.write_text(json.dumps(e))
    rows = compare_bootstraps.compute(a, b)["detector"]
    assert [r["measure"] for r in rows] == ["pooled"]  # a's seed 2 has no within-problem AUC
    assert rows[0]["minus_b"]["per_seed"] == pytest.approx([0.1, 0.2, 0.25])
    assert rows[0]["minus_b"]["mean"] == pytest.approx(0.55 / 3)
    lo, hi = rows[0]["minus_b"]["ci95"]
    assert 0.1 - 1e-9 <= lo < hi <= 0.25 + 1e-9  # resamples the three seeds
    text = compare_bootstraps.render(compare_bootstraps.compute(a, b))
    assert (
        "| pooled | 0.750 [0.700 · 0.800 · 0.750] | 0.567 [0.600 · 0.600 · 0.500] | +0.183" in text
    )


def test_compare_bootstraps_either_way_round(tmp_path):
    """b − a is minus a − b, setting by setting; only a side with a backspace has a banned twin."""
    a, b = bootstrap_pair(tmp_path)
    ab = compare_bootstraps.compute(a, b)["rows"]
    ba = compare_bootstraps.compute(b, a)["rows"]
    assert [r["setting"] for r in ab] == [r["setting"] for r in ba] == ["greedy", "T=1.0"]
    for x, y in zip(ab, ba, strict=True):
        assert x["minus_b"]["mean"] == pytest.approx(-y["minus_b"]["mean"])
        assert x["a"] == y["b"] and x["minus_banned"] and y["minus_banned"] is None
    with pytest.raises(TableError, match="one directory per seed"):
        compare_bootstraps.compute(a, b[:2])


def test_table_help_lists_every_table_and_each_its_options(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["table", "--help"])
    assert done.value.code == 0
    listing = capsys.readouterr().out
    assert all(t.name in listing for t in TABLES)
    for t in TABLES:
        with pytest.raises(SystemExit) as done:
            cli.main(["table", t.name, "--help"])
        assert done.value.code == 0
        flag = "--a" if t.name.startswith("compare-") else "--run"
        assert flag in capsys.readouterr().out


def test_table_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["table", "arms", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("halluc table: ") and "verdict.json" in err and "\n" not in err
    with pytest.raises(SystemExit):
        cli.main(["table", "arms", "--run", str(tmp_path / "nowhere")])
    assert "no such directory" in capsys.readouterr().err
    with pytest.raises(TableError, match="the tables are main, arms"):
        table.main("arm", {"run": tmp_path})


def test_the_stage_and_the_modules_agree(run):
    """`table.main` is the module's compute then render, with its outputs written under --run."""
    result = table.main("arms", {"run": run}, "halluc table arms --run X")
    assert result.text == arms.render(arms.compute(run))
    assert result.written == [run / f for f in BY_NAME["arms"].outputs]
    assert table.describe(result) == result.text


# --- the tables that evaluate the run's models --------------------------------------------------


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    """A run of one round whose models are tiny random checkpoints (the backtrack arm's with the
    backspace token, as training leaves it), with the baseline's own figures of that round."""
    from tests.models import tiny_checkpoint
    from workers.hf import load_checkpoint
    from workers.tokens import add_backspace_token

    root = tmp_path_factory.mktemp("model-run")
    init = tiny_checkpoint(root / "init")
    run = root / "run"
    layout = RunLayout(run)
    for arm in ("backtrack", "baseline"):
        model, hf = load_checkpoint(init, "cpu")
        if arm == "backtrack":
            add_backspace_token(model, hf, "<|bksp|>")
        model.save_pretrained(layout.round(0, arm).model, safe_serialization=True)
        hf.save_pretrained(layout.round(0, arm).model)
    meta = {"mode": "erase", "unit": "step", "bksp_token": "<|bksp|>", "backspace": True}
    (layout.round(0, "backtrack").model / "halluc.json").write_text(json.dumps(meta))
    sets = ["eval.n_problems=4", "eval.n_tune=2", "sampling.stream_tokens=12", "eval.samples=1"]
    cfg = tiny_cfg(run, "run.rounds=1", "trace.unit=step", *sets)
    save_config(cfg, run / "config.yaml")
    task = task_from_config(cfg.task)
    base = layout.round(0, "baseline")
    model = base.model
    evaluation.evaluate_to(base.eval, model, task, task.problems("test", 4), cfg, banned=False)
    evaluation.evaluate_to(base.tune, model, task, task.problems("train", 2), cfg, banned=False)
    return run


def no_model(*args, **kwargs):
    raise AssertionError("a rerun evaluated a model instead of reading its cached figures")


def test_threshold_sweep_on_a_tiny_run_and_again_from_its_cache(model_run, monkeypatch):
    first = table.main("threshold-sweep", {"run": model_run, "thresholds": [0.2, 0.6]}, "cmd")
    settings = first.figures["settings"]
    assert set(settings) == {"greedy", "T=1.0"}
    cached = model_run / "threshold"
    for name, s in settings.items():
        (h,) = s["chosen"]
        assert h in (0.2, 0.6) and set(s["tune_curve"]) == {"0.2", "0.6"}
        held = json.loads((cached / f"test-{h}.json").read_text())["settings"][name]
        rate = held["erase_events"] / held["generated_tokens"] if held["generated_tokens"] else 0
        assert s["random_rate"] == [min(max(rate, 1e-9), 1.0)]
    saved = json.loads((model_run / "threshold.json").read_text())
    assert saved == first.figures | {"command": "cmd"}
    assert (model_run / "threshold.md").read_text() == first.text
    assert first.text.startswith("Command: `cmd`") and "| T=1.0 | 0.2 |" in first.text
    monkeypatch.setattr(evaluation, "evaluate_model", no_model)
    again = table.main("threshold-sweep", {"run": model_run, "thresholds": [0.2, 0.6]}, "cmd")
    assert again.figures == first.figures and again.text == first.text


def test_guided_search_on_a_tiny_run_and_again_from_its_cache(model_run, monkeypatch, capsys):
    argv = ["table", "guided-search", "--run", str(model_run), "--m", "2", "--round", "0"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    saved = json.loads((model_run / "guided.json").read_text())
    assert saved["command"] == "halluc " + " ".join(argv) and saved["n_seeds"] == 1
    assert set(saved["T=1.0"]) == {"own", "m=2"} and "best_of_n" in saved["T=1.0"]["m=2"]
    assert "best_of_n" not in saved["greedy"]["m=2"]  # best-of-N samples: T=1.0 only
    assert printed == (model_run / "guided.md").read_text() + "\n"
    monkeypatch.setattr(evaluation, "evaluate_model", no_model)
    monkeypatch.setattr("pipeline.tables.guided_search.controls", no_model)
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == printed


def test_main_table_takes_seeds_as_the_unit(run):
    from pipeline.tables import main

    result = main.compute(run)
    rows = result["rows"]
    assert rows[0]["arm"] == "start model" and rows[0]["minus_start"] is None
    bt = next(r for r in rows if r["round"] == 2 and r["arm"] == "backtrack")
    d = bt["minus_baseline"]
    assert len(d["per_seed"]) == 3 and d["unit"] == "seeds, then problems"
    assert d["mean"] == pytest.approx(sum(d["per_seed"]) / 3)
    assert next(r for r in rows if r["arm"] == "baseline")["minus_baseline"] is None
    text = main.render(result)
    assert text.count("| 2 | backtrack |") == 1 and "backtrack − it: +3.1" in text
    # each round's best-of-N row is followed by the stronger of it and the baseline, per seed
    controls = [(b["round"], b["what"]) for b in result["best_of_n"]]
    assert [w for r, w in controls if r == 2] == [w for _, w in main.CONTROLS]
    assert text.count("| 2 | the stronger per seed of the baseline and its best-of-N") == 1
    # the compute columns are sums over the seeds, and the table says so
    costs = [c["backtrack"][1] for c in main.read_verdict(run)["compute"]]
    assert bt["optimizer_steps"] == sum(c.get("optimizer_steps", 0) for c in costs)
    assert "sums over the seeds" in text
    assert cli.main(["table", "main", "--run", str(run)]) == 0
    assert (run / "main.md").exists()


def test_compare_rows_pairs_two_runs_seed_by_seed_at_their_chosen_settings(tmp_path, capsys):
    from pipeline.tables import compare_rows

    a = synthetic_run(tmp_path / "a", seed=1)
    b = synthetic_run(tmp_path / "b", seed=2)
    result = compare_rows.compute(a, b)
    assert [(r["round"], r["arm"]) for r in result["rows"]][:3] == [
        (1, "backtrack"),
        (1, "baseline"),
        (1, "dpo"),
    ]
    for r in result["rows"]:
        d = r["a_minus_b"]
        assert d["unit"] == "seeds, then problems" and len(d["per_seed"]) == 3
        # per problem paired within a seed: each seed's difference is its accuracies' difference
        gaps = [x - y for x, y in zip(r["a_per_seed"], r["b_per_seed"], strict=True)]
        assert d["per_seed"] == pytest.approx(gaps)
        assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    same = compare_rows.compute(a, a)
    assert all(r["a_minus_b"]["mean"] == 0 for r in same["rows"])
    assert cli.main(["table", "compare-rows", "--a", str(a), "--b", str(b)]) == 0
    assert "| 2 | backtrack |" in capsys.readouterr().out
    other = synthetic_run(tmp_path / "c", seeds=(0, 1))
    with pytest.raises(TableError, match="pair the same seeds"):
        compare_rows.compute(a, other)
    # --seeds pairs the seeds both have: seed by seed the same as the full comparison's
    two = compare_rows.compute(a, b, seeds=[0, 2])
    for full, part in zip(result["rows"], two["rows"], strict=True):
        assert part["a_minus_b"]["per_seed"] == [full["a_minus_b"]["per_seed"][i] for i in (0, 2)]
        assert part["a_per_seed"] == [full["a_per_seed"][i] for i in (0, 2)]
        assert 0 < part["a_cost"][0] < full["a_cost"][0]
    assert compare_rows.compute(a, other, seeds=[0, 1])["seeds"] == [0, 1]
    with pytest.raises(TableError, match=r"not \[2\]: pair seeds both have"):
        compare_rows.compute(a, other, seeds=[0, 2])
    argv = ["table", "compare-rows", "--a", str(a), "--b", str(other), "--seeds", "0,1"]
    assert cli.main(argv) == 0
    # a side given as one run per seed reads as the run of all of them
    per_seed = [synthetic_run(tmp_path / f"a{s}", seeds=(s,), seed=10 + s) for s in (0, 1, 2)]
    whole = synthetic_run(tmp_path / "whole", seeds=(0, 1, 2), seed=20)
    for s in (0, 1, 2):  # the whole run's seed directories are those of the per-seed runs
        shutil.rmtree(whole / f"seed-{s}")
        shutil.copytree(per_seed[s] / f"seed-{s}", whole / f"seed-{s}")
    verdict = json.loads((whole / "verdict.json").read_text())
    verdict["compute"] = [
        json.loads((r / "verdict.json").read_text())["compute"][0] for r in per_seed
    ]
    (whole / "verdict.json").write_text(json.dumps(verdict))
    split, joined = compare_rows.compute(per_seed, b), compare_rows.compute(whole, b)
    assert [r["a_minus_b"] for r in split["rows"]] == [r["a_minus_b"] for r in joined["rows"]]
    assert [r["a_cost"] for r in split["rows"]] == [r["a_cost"] for r in joined["rows"]]
    with pytest.raises(TableError, match="seed 0 is in .* give disjoint seeds"):
        compare_rows.compute([per_seed[0], whole], b)
    argv = ["table", "compare-rows", "--a", *map(str, per_seed), "--b", str(b)]
    assert cli.main(argv) == 0 and "a0 + a1 + a2 − b" in capsys.readouterr().out
