"""`halluc run`: both arms, resumable after kills in search and training, and a report that a
headless browser renders with its plots and traces."""

import json
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest
import torch

from pipeline.arms import REQUIRED as ARMS
from pipeline.config import ConfigError, load_config
from pipeline.layout import RunLayout
from pipeline.measure import report
from pipeline.stages import run, train
from pipeline.stages import search as search_stage
from pipeline.tables import arms
from pipeline.tables.common import held_dir
from pipeline.trainers import rl
from search.pairs import pair_loss_tokens
from tests.conftest import TINY
from workers.hf import load_checkpoint

SETS = [*TINY, "run.rounds=1"]


def cfg_at(out, *extra):
    return load_config("arith-tiny", [f"run.out_dir={out}", *SETS, *extra])


def outputs(root):
    """Everything a run decides: selections, evaluations, the report table."""
    got = {}
    for arm in ARMS:
        d = root / arm / "round-0"
        got[arm] = (
            json.loads((d / "eval.json").read_text())["settings"],
            [
                {k: v for k, v in r.items() if k != "model_id"}
                for r in pq.read_table(d / "select" / "selected.parquet").to_pylist()
            ],
        )
    got["report"] = (root / "report.md").read_text().replace(str(root), "")
    return got


@pytest.fixture(scope="module")
def whole(tmp_path_factory, trained):
    out = tmp_path_factory.mktemp("whole")
    shutil.copytree(trained[0] / "bootstrap", out / "bootstrap")
    run.main(cfg_at(out))
    return out


def test_both_arms_and_the_report(whole):
    for arm in ARMS:
        assert (whole / arm / "round-0" / "train" / "model" / "halluc.json").exists()
    md = (whole / "report.md").read_text()
    assert "| 0 |" in md and "| 1 |" in md and "pts" in md
    html = (whole / "report.html").read_text()
    assert html.count("<svg") == 6 and "class='trace'" in html and "<del>" in html
    assert "data-metric='budget'" in html and "Accuracy against generated tokens" in md


def test_the_baseline_copies_round_0s_search_and_the_copy_is_its_own_search(whole, tmp_path):
    """Both arms search the start model in round 0 under one config hash: the run searched once
    and copied (the shards keep the backtrack arm's write times), and the baseline's own search
    writes the same bytes."""
    bt, base = (whole / arm / "round-0" / "search" for arm in ("backtrack", "baseline"))
    shards = sorted(p.relative_to(bt) for p in bt.rglob("*.parquet"))
    assert shards and shards == sorted(p.relative_to(base) for p in base.rglob("*.parquet"))
    assert all((bt / p).stat().st_mtime_ns == (base / p).stat().st_mtime_ns for p in shards)
    cfg = run.arm_config(cfg_at(whole), "baseline", 0)
    own = tmp_path / "own"
    search_stage.search(cfg, RunLayout.of(cfg).model(0, "baseline"), own)
    files = sorted(p.relative_to(base) for p in base.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(own) for p in own.rglob("*") if p.is_file())
    assert [(base / p).read_bytes() for p in files] == [(own / p).read_bytes() for p in files]


def test_killed_in_search_and_in_training_resumes_to_the_same_outputs(
    whole, tmp_path, monkeypatch, trained
):
    out = tmp_path / "killed"
    shutil.copytree(trained[0] / "bootstrap", out / "bootstrap")
    real_batch, real_train = search_stage.search_batch, train.train_worker

    def dies_in_search(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(search_stage, "search_batch", dies_in_search)
    with pytest.raises(KeyboardInterrupt):
        run.main(cfg_at(out))
    monkeypatch.setattr(search_stage, "search_batch", real_batch)

    def dies_in_baseline_training(job):
        if "baseline" in str(job.rnd.root):
            raise KeyboardInterrupt
        return real_train(job)

    monkeypatch.setattr(train, "train_worker", dies_in_baseline_training)
    with pytest.raises(KeyboardInterrupt):
        run.main(cfg_at(out))
    assert (out / "backtrack" / "round-0" / "eval.json").exists()
    assert not (out / "baseline" / "round-0" / "train" / "model").exists()
    monkeypatch.setattr(train, "train_worker", real_train)
    run.main(cfg_at(out))
    assert outputs(out) == outputs(whole)


def test_a_dpo_arm_added_to_a_finished_run_runs_alone_at_the_backtrack_arms_budget(whole, tmp_path):
    out = tmp_path / "more"
    shutil.copytree(whole, out)
    before = outputs(out)
    run.main(cfg_at(out, "run.arms=[baseline,backtrack,dpo]"))
    after = outputs(out)
    assert {arm: after[arm] for arm in ARMS} == {arm: before[arm] for arm in ARMS}
    d = out / "dpo" / "round-0"
    assert (d / "train" / "model" / "halluc.json").exists() and (d / "eval.json").exists()
    bt = json.loads((out / "backtrack" / "round-0" / "train" / "compute.json").read_text())
    dpo = json.loads((d / "train" / "compute.json").read_text())
    assert dpo["objective"] == "dpo" and dpo["optimizer_steps"] == bt["optimizer_steps"]
    assert dpo["batch_size"] == bt["batch_size"]  # sequences per step: half as many pairs
    pairs = pq.read_table(d / "select" / "pairs.parquet").to_pylist()
    drawn = sum(map(pair_loss_tokens, pairs))
    assert bt["loss_tokens"] <= drawn < bt["loss_tokens"] + max(map(pair_loss_tokens, pairs))
    assert dpo["loss_tokens"] == drawn  # no right-step pairs by default
    verdict = json.loads((out / "verdict.json").read_text())
    assert set(verdict["rounds"][1]["arms"]) == {"dpo"} and "dpo" in verdict["compute"][0]
    assert "the dpo arm" in verdict["sentence"]
    assert "| 1 | dpo |" in (out / "report.md").read_text()


def test_an_rl_arm_trains_for_the_backtrack_arms_steps_and_is_judged_like_the_others(
    whole, tmp_path
):
    out = tmp_path / "rl"
    shutil.copytree(whole, out)
    before = outputs(out)
    run.main(cfg_at(out, "run.arms=[baseline,backtrack,rl]"))
    after = outputs(out)
    assert {arm: after[arm] for arm in ARMS} == {arm: before[arm] for arm in ARMS}
    d = out / "rl" / "round-0"
    assert (d / "search" / "summary.json").exists() and not (d / "select").exists()
    assert json.loads((d / "train" / "model" / "halluc.json").read_text())["mode"] == "erase"
    bt = json.loads((out / "backtrack" / "round-0" / "train" / "compute.json").read_text())
    rl = json.loads((d / "train" / "compute.json").read_text())
    assert rl["objective"] == "rl" and rl["optimizer_steps"] == bt["optimizer_steps"]
    assert rl["batch_size"] == bt["batch_size"] // rl["group"] * rl["group"]  # streams per step
    assert rl["rows"] == rl["optimizer_steps"] * rl["batch_size"]
    assert rl["token_warmup_batches"] == 5 and len(rl["history"]) == rl["optimizer_steps"]
    assert 0 < rl["generated_tokens"] < rl["loss_tokens"]
    verdict = json.loads((out / "verdict.json").read_text())
    assert set(verdict["rounds"][1]["arms"]) == {"rl"}
    assert verdict["compute"][0]["rl"][0]["generated_tokens"] == rl["generated_tokens"]
    assert "history" not in verdict["compute"][0]["rl"][0]
    assert "the rl arm" in verdict["sentence"]
    assert "| 1 | rl |" in (out / "report.md").read_text()


def test_an_sft_rl_arm_trains_the_backtrack_arms_model_further_without_searching(
    whole, tmp_path, monkeypatch
):
    out = tmp_path / "sft_rl"
    shutil.copytree(whole, out)
    before = outputs(out)
    started = {}
    real = rl.fit

    def record(model, *a, **kw):
        started["weights"] = {k: v.clone() for k, v in model.state_dict().items()}
        return real(model, *a, **kw)

    monkeypatch.setattr(rl, "fit", record)
    run.main(cfg_at(out, "run.arms=[baseline,backtrack,sft_rl]"))
    after = outputs(out)
    assert {arm: after[arm] for arm in ARMS} == {arm: before[arm] for arm in ARMS}
    d = out / "sft_rl" / "round-0"
    assert not (d / "search").exists() and not (d / "select").exists()
    backtrack = load_checkpoint(out / "backtrack" / "round-0" / "train" / "model", "cpu")[0]
    assert all(torch.equal(v, started["weights"][k]) for k, v in backtrack.state_dict().items())
    bt = json.loads((out / "backtrack" / "round-0" / "train" / "compute.json").read_text())
    got = json.loads((d / "train" / "compute.json").read_text())
    assert got["objective"] == "rl" and got["optimizer_steps"] == bt["optimizer_steps"]
    assert got["token_warmup_batches"] == 0
    verdict = json.loads((out / "verdict.json").read_text())
    assert set(verdict["rounds"][1]["arms"]) == {"sft_rl"}
    assert "after" in verdict["compute"][0]["sft_rl"][0]
    rows = {row.split(" | ")[1]: row for row in arms.render(arms.compute(out)).splitlines()[4:]}
    assert {"backtrack", "baseline", "sft_rl"} <= set(rows)
    assert f"| {got['optimizer_steps']} | {got['loss_tokens']:,} |" in rows["sft_rl"]
    with pytest.raises(ConfigError, match="sft_rl"):
        run.main(cfg_at(out, "run.arms=[baseline,backtrack,sft_rl]", "train.rl.credit=tree"))


def test_report_renders_in_a_headless_browser(whole):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={whole / 'chrome'}",
            "--dump-dom",
            (whole / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert dom.count("<svg") == 6 and 'data-metric="accuracy"' in dom
    assert 'data-metric="budget"' in dom
    assert 'id="accuracy-mean-backtrack"' in dom and 'class="trace"' in dom and "⌫" in dom
    assert 'id="comparison"' in dom


def _measured(greedy, t1, banned=0.0):
    """A measurement as `run._measure` returns it: held-out and validation figures."""
    settings = {
        "greedy": {"accuracy": greedy, "temperature": 0.0},
        "T=1.0": {"accuracy": t1, "temperature": 1.0, "samples_per_problem": 4},
        "T=1.0 banned": {"accuracy": banned, "temperature": 1.0, "backspace_banned": True},
    }
    for s in settings.values():
        s.setdefault("samples_per_problem", 1)
        s.setdefault("backspace_banned", False)
        s.update(bksp_threshold=0.0, bksp_random=0.0, bksp_search=0, value_drop=0.0)
    return {"eval": {"settings": settings, "n_problems": 9}, "tune": {"settings": settings}}


def test_the_keep_best_gate_keeps_the_previous_model_when_validation_drops(tmp_path):
    layout = RunLayout.of(cfg_at(tmp_path, "train.keep_best=true"))
    start = _measured(0.40, 0.30, banned=0.9)  # a banned setting is never the one compared
    first = run.gate(layout.round(0, "backtrack"), start, _measured(0.35, 0.42))
    assert first["gate"] == {"kept": True, "validation": 0.42, "held_validation": 0.40}
    assert first["eval"]["settings"]["T=1.0"]["accuracy"] == 0.42
    second = run.gate(layout.round(1, "backtrack"), first, _measured(0.41, 0.20))
    assert second["gate"] == {"kept": False, "validation": 0.41, "held_validation": 0.42}
    assert second["eval"] == first["eval"]  # the kept model's figures stand for the round
    third = run.gate(layout.round(2, "backtrack"), second, _measured(0.42, 0.1))  # equal: kept
    assert third["gate"]["kept"] and third["eval"]["settings"]["greedy"]["accuracy"] == 0.42
    # the round after a rejected one searches with and trains from the model kept before it
    r0, r1, r2 = (layout.round(r, "backtrack").model for r in range(3))
    assert [layout.model(r, "backtrack") for r in range(4)] == [layout.start_model, r0, r0, r2]
    assert train.base_of(cfg_at(tmp_path), layout, 2, "backtrack") == r0
    assert layout.kept(1, "baseline") == layout.round(1, "baseline")  # no gate there: kept
    assert held_dir(tmp_path, "backtrack/round-1") == layout.round(0, "backtrack").root
    assert held_dir(tmp_path, "backtrack/round-2") == layout.round(2, "backtrack").root
    # read back on resume, whatever the figures say now
    again = run.gate(layout.round(1, "backtrack"), first, _measured(0.9, 0.9))
    assert again["gate"]["kept"] is False and again["eval"] == first["eval"]
    gated = {"baseline": [start], "backtrack": [start, first, second, third], "controls": []}
    decisions = run.gates([gated], [7])
    assert [(g["seed"], g["round"], g["kept"]) for g in decisions] == [
        (7, 1, True),
        (7, 2, False),
        (7, 3, True),
    ]
    note = report.gate_note(decisions)
    assert "of 3 rounds" in note and "seed 7, backtrack round 2 (41.0% against 42.0%)" in note
