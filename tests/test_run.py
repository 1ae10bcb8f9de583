"""`halluc run`: both arms, resumable after kills in search and training, and a report that a
headless browser renders with its plots and traces."""

import json
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest

from pipeline import run, search_stage, train
from pipeline.config import load_config
from tests.conftest import TINY

SETS = [*TINY, "run.rounds=1"]


def cfg_at(out):
    return load_config("arith-tiny", [f"run.out_dir={out}", *SETS])


def outputs(root):
    """Everything a run decides: selections, evaluations, the report table."""
    got = {}
    for arm in run.ARMS:
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
    for arm in run.ARMS:
        assert (whole / arm / "round-0" / "train" / "model" / "halluc.json").exists()
    md = (whole / "report.md").read_text()
    assert "| 0 |" in md and "| 1 |" in md and "pts" in md
    html = (whole / "report.html").read_text()
    assert html.count("<svg") == 5 and "class='trace'" in html and "<del>" in html


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

    def dies_in_baseline_training(config):
        if "baseline" in config["round"]:
            raise KeyboardInterrupt
        return real_train(config)

    monkeypatch.setattr(train, "train_worker", dies_in_baseline_training)
    with pytest.raises(KeyboardInterrupt):
        run.main(cfg_at(out))
    assert (out / "backtrack" / "round-0" / "eval.json").exists()
    assert not (out / "baseline" / "round-0" / "train" / "model").exists()
    monkeypatch.setattr(train, "train_worker", real_train)
    run.main(cfg_at(out))
    assert outputs(out) == outputs(whole)


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
    assert dom.count("<svg") == 5 and 'data-metric="accuracy"' in dom
    assert 'id="accuracy-mean-backtrack"' in dom and 'class="trace"' in dom and "⌫" in dom
    assert 'id="comparison"' in dom
