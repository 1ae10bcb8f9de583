"""Defects found by trying the pipeline as a demanding user would, each pinned by a test: stages
refuse directories made with another config, user errors are one line, interrupted writes are
cleaned up, and a run records what makes it reproducible."""

import importlib.metadata
import json
import re
from pathlib import Path

import pytest
import torch

from pipeline import cli
from pipeline.config import ConfigError, load_config
from pipeline.files import TMP, remove_stale, write_json
from pipeline.layout import RunLayout
from pipeline.runtime import set_threads, stage_config
from pipeline.stages import train
from tests.conftest import TINY
from tests.test_search_stage import read_all, run

ROOT = Path(__file__).resolve().parents[1]


def test_search_refuses_a_directory_made_with_another_config(tmp_path, capsys):
    """Before: deleting a batch and rerunning with other settings exited 0 with shards under two
    config hashes, and config.yaml claimed the new config for all of them."""
    assert run(tmp_path) == 0
    search = RunLayout(tmp_path).round(0).search
    saved = (search / "config.yaml").read_text()
    for table in ("traces", "steps", "pairs"):
        (search / table / "batch-00002.parquet").unlink()
    before = read_all(tmp_path)
    assert run(tmp_path, "search.omegaprm.budget=3") == 2
    err = capsys.readouterr().err
    assert "search.omegaprm.budget: 6 there, 3 now" in err and "Traceback" not in err
    assert (search / "config.yaml").read_text() == saved  # written only after the check
    assert read_all(tmp_path) == before  # nothing written under the other config
    assert run(tmp_path) == 0  # the same config resumes


def test_train_refuses_a_directory_made_with_another_config(tmp_path):
    cfg = load_config("arith-tiny", [f"run.out_dir={tmp_path}", *TINY])
    rnd = RunLayout(tmp_path).round(0)
    stage_config(
        load_config("arith-tiny", [f"run.out_dir={tmp_path}", *TINY, "train.lr=1"]), rnd.train
    )
    with pytest.raises(ConfigError, match=r"train.lr: 1.0 there, 0.0003 now"):
        train.train(cfg, Path("unused"), rnd)


def test_interrupted_writes_are_removed_on_the_next_run(tmp_path):
    stats = RunLayout(tmp_path).round(0).search / "stats"
    stats.mkdir(parents=True)
    stale = stats.parent / f".summary.json{TMP}.abc123"
    stale.write_text("{")
    remove_stale(stats.parent)
    assert not stale.exists()
    write_json(stats / "batch-00000.json", {"a": 1})
    assert [p.name for p in stats.iterdir()] == ["batch-00000.json"]  # no temporary left


def test_stats_temporaries_of_a_killed_search_are_removed(tmp_path):
    search = RunLayout(tmp_path).round(0).search
    (search / "stats").mkdir(parents=True)
    stale = search / "stats" / f".batch-00001.json{TMP}.k1ll3d"
    stale.write_text("{")
    assert run(tmp_path) == 0
    assert not stale.exists()


def test_user_errors_are_one_line(tmp_path, capsys):
    def fails(*args):
        assert cli.main(list(args)) == 2
        err = capsys.readouterr().err
        said = [line for line in err.splitlines() if line.startswith("halluc ")]
        assert "Traceback" not in err and len(said) == 1, err  # progress bars aside
        return said[0]

    assert "does not exist; give a JSONL file" in fails(
        "search",
        "--preset",
        "gsm8k",
        "--set",
        "search.policy=fake",
        "--set",
        f"run.out_dir={tmp_path}",
    )
    from tests.models import tiny_checkpoint

    model = tiny_checkpoint(tmp_path / "m")
    (model / "tokenizer.json").unlink()
    err = fails(
        "search",
        "--set",
        f"model.path={model}",
        "--set",
        "search.workers=0",
        "--set",
        f"run.out_dir={tmp_path / 'r'}",
    )
    assert "its tokenizer does not load (it has no tokenizer.json)" in err


def test_threads_come_from_the_config():
    before = torch.get_num_threads()
    try:
        set_threads(load_config("arith-tiny", ["run.threads=1"]))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_run_records_its_environment(tmp_path):
    assert run(tmp_path) == 0  # every stage run on its own records it
    assert json.loads((tmp_path / "environment.json").read_text())[0]["libraries"]["pyarrow"]
    from pipeline.runtime import environment, record_environment

    cfg = load_config("arith-tiny", [f"run.out_dir={tmp_path}"])
    path = tmp_path / "env" / "environment.json"
    record_environment(cfg, path)
    record_environment(cfg, path)  # the same again: not repeated
    [env] = json.loads(path.read_text())
    assert env == environment(cfg)
    assert env["libraries"]["torch"].startswith(torch.__version__.split("+")[0])
    assert env["threads"] == {"stage": 2, "search_workers": cfg.search.workers}
    assert env["cpu"]["flags"] and env["git"] is None or len(env["git"]["commit"]) == 40


def test_the_constraints_file_pins_the_installed_cpu_stack():
    """make demo / make test install with `-c constraints-cpu.txt`: every pin holds here, and the
    libraries a run's numbers depend on are pinned."""
    pins = {}
    for line in (ROOT / "constraints-cpu.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    for lib in ("torch", "transformers", "tokenizers", "datasets", "pyarrow", "numpy", "ray"):
        assert lib in pins, f"{lib} is not pinned"
    wrong = {}
    for name, version in pins.items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a platform-specific dependency
        if re.sub(r"\+.*", "", have) != version:
            wrong[name] = (version, have)
    assert not wrong, f"installed versions differ from constraints-cpu.txt: {wrong}"


def test_readme_shows_a_loopback_head():
    readme = (ROOT / "README.md").read_text()
    assert "ray start --head --node-ip-address=127.0.0.1" in readme
