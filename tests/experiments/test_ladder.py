"""experiments/ladder.py's summary, table, chart and bf16-against-fp32 pairing, on rows built by
hand (the runs themselves are `halluc bootstrap` and `halluc probe`, tested with their stages)."""

import json

import pytest

from experiments import ladder


def _row(size, seed, params, greedy, auc):
    probe = {
        "detector": {"within_problem": auc},
        "trivial": {
            "step_mean_logprob": {"within_problem": 0.9},
            "step_index": {"within_problem": 0.5},
        },
    }
    settings = {k: {"per_problem": greedy, "accuracy": sum(greedy) / len(greedy)} for k in
                ladder.SETTINGS}  # fmt: skip
    compute = {
        "parameters": params,
        "loss_tokens": 1000,
        "loss_tokens_per_parameter": 1000 / params,
        "optimizer_steps": 10,
        "epochs": 1.5,
        "train_seconds": 12.0,
    }
    return {"size": size, "seed": seed, "settings": settings, "compute": compute, "probe": probe}


def test_summary_table_chart_and_the_fp32_pairing(tmp_path):
    rows = [
        _row("0.6m", 0, 600_000, [1, 0, 1, 1], 0.6),
        _row("0.6m", 1, 600_000, [1, 1, 1, 1], 0.7),
        _row("2.7m", 0, 2_700_000, [0, 0, 1, 1], 0.8),
        _row("2.7m", 1, 2_700_000, [0, 0, 0, 1], None),  # a probe that had one class only
    ]
    rows[3]["probe"] = None
    summary = ladder.summarize(rows)
    small, big = summary["0.6m"], summary["2.7m"]
    assert small["greedy"]["accuracy"]["mean"] == pytest.approx(7 / 8)
    assert small["greedy"]["per_seed"] == [0.75, 1.0]
    assert small["probe"] == {"mean": pytest.approx(0.65), "per_seed": [0.6, 0.7]}
    assert big["probe"] == {"mean": 0.8, "per_seed": [0.8, None]}
    assert big["loss_tokens_per_parameter"] == pytest.approx(1000 / 2_700_000)
    text = ladder.table(summary, "experiments/ladder.py --x")
    assert "| 0.6m | 0.60M | 10, 1,000 (0.00), 1.5 | 12 · 12 | 87.5%" in text
    assert "0.800 (0.800 · –)" in text  # the missing probe shown as missing, not as 0
    # the probe's AUC 2.7m − 0.6m paired by seed: seed 0 only (seed 1's probe is missing)
    assert "AUC 2.7m − 0.6m, paired by seed: probe 0.200 (+0.200); step mean log-prob 0.000" in text
    diffs = ladder.auc_differences(summary)["2.7m"]["step index"]
    assert diffs["per_seed"] == [0.0] and diffs["ci95"] is None  # one seed: no interval
    # accuracy 2.7m − 0.6m paired by seed: (2 - 3) / 4 and (1 - 4) / 4
    assert big["greedy"]["minus_first"]["per_seed"] == [-0.25, -0.75]
    assert "then problems; 2 seed(s)): greedy -50.0 (" in text
    ladder.chart(summary, tmp_path / "ladder.svg")
    assert (tmp_path / "ladder.svg").read_text().startswith("<?xml")
    for seed, problems in ((0, [1, 0, 0, 1]), (1, [1, 1, 1, 0])):
        boot = tmp_path / "fp32" / f"seed-{seed}" / "bootstrap"
        boot.mkdir(parents=True)
        figs = {
            k: {"per_problem": problems, "accuracy": sum(problems) / 4} for k in ladder.SETTINGS
        }
        (boot / "eval.json").write_text(json.dumps({"settings": figs}))
    paired = ladder.against_fp32(rows, tmp_path / "fp32")
    # bf16 − fp32 per seed: (3 - 2) / 4 and (4 - 3) / 4
    assert "| greedy | 75.0% · 100.0% | 50.0% · 75.0% | +25.0 (" in paired
    assert "| +25.0 · +25.0 |" in paired


def test_each_size_learning_rate_is_chosen_on_validation_problems(tmp_path, monkeypatch):
    from tests.conftest import SMALL

    seen = []

    def fake_eval(out, model, task, problems, cfg, banned=None):
        seen.append((cfg.bootstrap.lr, [p.prompt for p in problems], banned))
        assert (model / "config.json").exists()  # a trained checkpoint, read on validation
        greedy, sampled = {1e-3: (0.5, 0.1), 3e-3: (0.4, 0.6)}[cfg.bootstrap.lr]
        return {"settings": {"greedy": {"accuracy": greedy}, "T=1.0": {"accuracy": sampled}}}

    monkeypatch.setattr(ladder, "evaluate_to", fake_eval)
    sets = [s for s in SMALL if not s.startswith(("bootstrap.n_layer", "bootstrap.n_embd"))]
    best, scores = ladder.choose_lr("arith-tiny", tmp_path, "0.6m", [1e-3, 3e-3], sets, 3)
    # the higher greedy (1e-3) loses to the better sampler: chosen on both settings' mean
    assert best == 3e-3 and scores == pytest.approx({"0.001": 0.3, "0.003": 0.5})
    assert (tmp_path / "0.6m" / "lr-0.001" / "seed-0" / "bootstrap" / "model").is_dir()
    cfg = ladder.config("arith-tiny", tmp_path, "0.6m", 0, sets, 3e-3)
    task = ladder.task_from_config(cfg.task)
    validation = [p.prompt for p in task.problems("validation", 3)]
    test = {p.prompt for p in task.problems("test", 50)}
    assert all(s[1] == validation and not test & set(s[1]) for s in seen)
    # a tie keeps the first learning rate listed; the report names the chosen one per size
    monkeypatch.setattr(
        ladder,
        "evaluate_to",
        lambda *a, **k: {"settings": {"greedy": {"accuracy": 0.5}, "T=1.0": {"accuracy": 0.5}}},
    )
    assert ladder.choose_lr("arith-tiny", tmp_path, "0.6m", [3e-3, 1e-3], sets, 3)[0] == 3e-3
    text = ladder.lr_lines({"2.7m": scores}, 3)
    assert "- 2.7m: **0.003** (0.001 30.0%, 0.003 50.0%)" in text
