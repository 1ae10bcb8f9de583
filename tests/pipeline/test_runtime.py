"""The run guard (a stage refuses a directory made with another config), thread counts and the
recorded environment: `pipeline.runtime`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.config import ConfigError, load_config
from pipeline.layout import RunLayout
from pipeline.runtime import set_threads, stage_config, timed
from pipeline.stages import train
from tests.conftest import TINY
from tests.pipeline.stages.test_search import read_all, run


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


def test_a_second_halluc_on_the_same_directory_fails_at_once(tmp_path, capsys):
    """Before: two `halluc run` on one directory both did all the work, and the config guard
    checked and then wrote without a lock."""
    from pipeline import cli
    from pipeline.runtime import LOCK, run_lock

    with run_lock(tmp_path):  # another halluc holds the directory
        assert run(tmp_path) == 2
        err = capsys.readouterr().err
        assert f"being written by another halluc process (pid {os.getpid()})" in err
        assert not (tmp_path / "round-0").exists()  # nothing was done
    assert (tmp_path / LOCK).exists()  # the file stays; the lock went with its holder
    assert run(tmp_path) == 0
    assert cli.main(["presets"]) == 0  # commands that write no run take no lock


def test_a_lock_left_by_a_dead_process_does_not_block(tmp_path):
    from pipeline.runtime import LOCK, run_lock

    holder = subprocess.run(
        [sys.executable, "-c", HOLD, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert holder.returncode == -9  # killed while it held the lock
    assert (tmp_path / LOCK).read_text().strip().isdigit()
    with run_lock(tmp_path):
        pass


HOLD = """
import os, signal, sys
from pathlib import Path
from pipeline.runtime import run_lock
with run_lock(Path(sys.argv[1])):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_timed_adds_each_block_to_the_file_even_when_it_fails(tmp_path):
    clock = tmp_path / "timing.json"
    with timed(clock, "search", "backtrack", 1):
        pass
    with pytest.raises(RuntimeError), timed(clock, "train", "backtrack", 1):
        raise RuntimeError("killed")
    rows = json.loads(clock.read_text())
    assert [(r["stage"], r["arm"], r["round"]) for r in rows] == [
        ("search", "backtrack", 1),
        ("train", "backtrack", 1),
    ]
    assert all(r["seconds"] >= 0 for r in rows)
