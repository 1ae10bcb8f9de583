"""`halluc search` end to end on the scripted policy: shards, summary, resume after a kill."""

import importlib.util
import json

import datasets
import pyarrow.parquet as pq
import pytest

from pipeline import cli, shards
from pipeline.config import load_config
from pipeline.layout import RunLayout
from pipeline.shards import FEATURES, shard_files

SMALL = [
    "search.policy=fake",
    "search.workers=0",
    "task.n_train=24",
    "search.batch_size=8",
    "search.omegaprm.budget=6",
    "search.omegaprm.n_screen=8",
]


def run(out, *extra):
    return cli.main(
        [
            "search",
            "--set",
            f"run.out_dir={out}",
            *sum((["--set", s] for s in [*SMALL, *extra]), []),
        ]
    )


def read_all(out):
    root = out / "round-0" / "search"
    return {t: pq.read_table(shard_files(root, t)).to_pylist() for t in FEATURES}


def test_search_writes_loadable_shards_and_a_summary(tmp_path):
    assert run(tmp_path) == 0
    root = tmp_path / "round-0" / "search"
    summary = json.loads((root / "summary.json").read_text())
    assert summary["problems"] == 24 and summary["batches"] == 3
    assert summary["failing_branches"] > 0 and summary["traces_by_kind"]["correction"] > 0
    assert 0.8 <= summary["mc_vs_exact_first_error_agreement"] <= 1.0
    assert (root / "config.yaml").exists()
    ds = datasets.load_dataset("parquet", data_files=shard_files(root, "traces"), split="train")
    assert ds.features == FEATURES["traces"]
    assert len(set(ds["problem_id"])) == 24


def test_killed_search_resumes_to_the_same_outputs(tmp_path, monkeypatch):
    run(tmp_path / "whole")
    real = shards.write_shard

    def dies_writing_batch_1(root, table, batch, rows):
        if (table, batch) == ("traces", 1):  # steps and pairs of batch 1 are on disk already
            raise KeyboardInterrupt  # as if the process were killed
        return real(root, table, batch, rows)

    monkeypatch.setattr(shards, "write_shard", dies_writing_batch_1)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed")
    root = tmp_path / "killed" / "round-0" / "search"
    assert [p.rsplit("/", 1)[1] for p in shard_files(root, "traces")] == ["batch-00000.parquet"]
    assert len(shard_files(root, "steps")) == 2  # batch 1 half written: not done
    first_mtime = (root / "traces" / "batch-00000.parquet").stat().st_mtime_ns
    monkeypatch.setattr(shards, "write_shard", real)
    assert run(tmp_path / "killed") == 0
    assert (root / "traces" / "batch-00000.parquet").stat().st_mtime_ns == first_mtime  # skipped
    assert read_all(tmp_path / "killed") == read_all(tmp_path / "whole")


def test_same_seed_same_rows_other_seed_other_rows(tmp_path):
    run(tmp_path / "a")
    run(tmp_path / "b")
    run(tmp_path / "c", "run.seed=1")
    a, b, c = (read_all(tmp_path / x)["steps"] for x in "abc")
    assert a == b
    assert a != c


def test_step_unit_and_mcts_run(tmp_path):
    assert run(tmp_path / "s", "trace.unit=step", "search.algorithm=mcts") == 0
    rows = read_all(tmp_path / "s")["traces"]
    corr = [r for r in rows if r["kind"] == "correction"]
    assert corr and all(r["n_backspaces"] == 1 for r in corr)  # one backspace erases one step


def test_bad_input_fails_with_the_key(tmp_path, capsys):
    assert cli.main(["search", "--set", "search.algoritm=mcts"]) == 2
    assert "unknown key 'algoritm'" in capsys.readouterr().err


def test_rows_carry_provenance(tmp_path):
    run(tmp_path)
    cfg = load_config("arith-tiny", [*SMALL, f"run.out_dir={tmp_path}"])
    for table, rows in read_all(tmp_path).items():
        assert rows, table
        assert {r["config_hash"] for r in rows} == {cfg.hash}
        assert {r["schema_version"] for r in rows} == {1}
    assert RunLayout.of(cfg).round(0).search == tmp_path / "round-0" / "search"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_policy_without_vllm_says_what_to_do(tmp_path, capsys):
    from tests.models import tiny_checkpoint

    model = tiny_checkpoint(tmp_path / "m")
    args = ["search", "--set", f"run.out_dir={tmp_path}", "--set", f"model.path={model}"]
    args += ["--set", "search.policy=vllm"]
    assert cli.main([*args, "--set", "search.workers=0"]) == 2
    assert "pip install 'halluc[vllm]'" in capsys.readouterr().err


def test_placement_reaches_the_traces_and_a_changed_one_is_refused(tmp_path, capsys):
    assert run(tmp_path / "e", "trace.unit=step") == 0
    assert run(tmp_path / "d", "trace.unit=step", "trace.placement=at_detection") == 0
    at_error, at_detection = (read_all(tmp_path / x)["traces"] for x in "ed")
    assert [r["kind"] for r in at_error] == [r["kind"] for r in at_detection]
    pairs = [
        (e, d) for e, d in zip(at_error, at_detection, strict=True) if e["kind"] == "correction"
    ]
    assert pairs and all(e["visible_text"] == d["visible_text"] for e, d in pairs)
    # arithmetic shows a failure at the end only: erase the wrong step and all that followed it
    assert all(e["n_backspaces"] == 1 for e, _ in pairs)
    assert any(d["n_backspaces"] > 1 for _, d in pairs)
    assert all(d["raw_text"].split("<|bksp|>")[0].count("ans ") == 1 for _, d in pairs)
    capsys.readouterr()
    assert run(tmp_path / "e", "trace.unit=step", "trace.placement=at_token") == 2
    assert "trace.placement: 'at_error' there, 'at_token' now" in capsys.readouterr().err


def test_summary_has_the_model_step_error_rate_and_select_can_match_it(tmp_path, caplog):
    from pipeline.stages import select
    from pipeline.stages.select import read_selected

    def rate(name, *extra):
        assert run(tmp_path / name, *extra) == 0
        summary = json.loads((tmp_path / name / "round-0" / "search" / "summary.json").read_text())
        return summary["step_error_rate"]

    assert rate("never", "search.fake.error_rate=0", "search.fake.trap_rate=0") == 0.0
    low, high = rate("low"), rate("high", "search.fake.error_rate=0.2")
    assert 0 < low < high < 1
    caplog.set_level("INFO", logger="pipeline.stages.select")
    cfg = load_config(
        "arith-tiny", [*SMALL, f"run.out_dir={tmp_path / 'low'}", "select.bksp_share=-1"]
    )
    result = select.main(cfg)
    assert f"(target {low:.4f})" in caplog.text
    rows = read_selected(result["path"])
    runs = sum(r["erase_events"] for r in rows)
    assert abs(runs / sum(r["steps_written"] for r in rows) - low) < 0.01
    stats = tmp_path / "low" / "round-0" / "search" / "stats" / "batch-00000.json"
    older = {k: v for k, v in json.loads(stats.read_text()).items() if "screen_" not in k}
    stats.write_text(json.dumps(older))  # a batch searched before the counts were recorded
    (tmp_path / "low" / "round-0" / "search" / "summary.json").unlink()
    assert rate("low") is None


def test_fresh_problems_search_new_training_problems_each_round(tmp_path):
    """`halluc search` of round 1 with `search.fresh_problems` searches 24 problems that round 0
    did not; without it, the same 24."""

    def searched(out, r, *extra):
        assert run(out, f"run.round={r}", *extra) == 0
        rows = pq.read_table(shard_files(out / f"round-{r}" / "search", "traces")).to_pylist()
        return {row["problem_id"] for row in rows}

    first = searched(tmp_path / "fresh", 0, "search.fresh_problems=true")
    second = searched(tmp_path / "fresh", 1, "search.fresh_problems=true")
    assert len(first) == len(second) == 24 and not first & second
    assert searched(tmp_path / "same", 1) == first
