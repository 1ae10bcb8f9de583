"""Search on Ray actors: the same shards as in-process, and exactly once when an actor dies."""

import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
from ray import cloudpickle

from pipeline import cli
from pipeline.config import load_config
from pipeline.layout import RunLayout
from pipeline.shards import FEATURES, shard_files
from pipeline.stages.search import build_state, search_batch
from workers.actors import LOOPBACK_ENV, ClusterError, init_ray, private_token, run_pool

pytestmark = pytest.mark.ray
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the dying job below runs in actors

FAKE = [
    "search.policy=fake",
    "task.n_train=40",
    "search.batch_size=8",
    "search.omegaprm.budget=6",
    "search.omegaprm.n_screen=8",
]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def run(out, *extra):
    args = ["search"]
    for s in [*FAKE, f"run.out_dir={out}", *extra]:
        args += ["--set", s]
    assert cli.main(args) == 0
    return stage_dir(load_config("arith-tiny", [*FAKE, f"run.out_dir={out}"]))


def stage_dir(cfg):
    return RunLayout.of(cfg).round(cfg.run.round).search


def tables(root):
    return {t: sorted(map(str, pq.read_table(shard_files(root, t)).to_pylist())) for t in FEATURES}


def test_two_workers_write_what_one_process_writes(tmp_path):
    inproc = run(tmp_path / "inproc", "search.workers=0")
    two = run(tmp_path / "two", "search.workers=2")
    assert tables(two) == tables(inproc)
    assert [Path(p).name for p in shard_files(two, "traces")] == [
        f"batch-{b:05d}.parquet" for b in range(5)
    ]


def dies_once(state, cfg, problems, out, batch, marker_dir):
    """Kill this actor's process once in batch 1 before writing, once in batch 2 after."""
    marker = Path(marker_dir) / f"died-{batch}"
    if batch == 1 and not marker.exists():
        marker.touch()
        os._exit(1)
    stats = search_batch(state, cfg, problems, out, batch)
    if batch == 2 and not marker.exists():
        marker.touch()
        os._exit(1)  # the batch's files are complete: the retry must rewrite, not duplicate
    return stats


def test_dead_actor_is_restarted_and_its_batch_retried(tmp_path):
    cfg = load_config("arith-tiny", [*FAKE, f"run.out_dir={tmp_path / 'killed'}"])
    task_problems = build_state(cfg, Path(), []).task.problems("train", cfg.task.n_train)
    out = stage_dir(cfg)
    batches = [task_problems[i : i + 8] for i in range(0, 40, 8)]
    jobs = [(cfg, b, out, i, str(tmp_path)) for i, b in enumerate(batches)]
    results = run_pool(build_state, (cfg, Path(), task_problems), dies_once, jobs, n_workers=2)
    assert (tmp_path / "died-1").exists() and (tmp_path / "died-2").exists()
    assert sorted(r["batch"] for r in results) == list(range(5))
    reference = run(tmp_path / "ref", "search.workers=0")
    assert tables(out) == tables(reference)
    ids = pq.read_table(shard_files(out, "steps"), columns=["problem_id"]).column(0).to_pylist()
    assert set(ids) == {p.id for p in task_problems}
    assert not list(out.rglob("*.tmp*"))


def test_unreachable_address_fails_fast():
    with pytest.raises(ClusterError, match="cannot reach a Ray cluster at 127.0.0.1:9"):
        from workers.actors import _check_reachable

        _check_reachable("127.0.0.1:9", timeout=2)


def test_vllm_workers_need_gpus_in_the_cluster(tmp_path, capsys):
    from tests.models import tiny_checkpoint

    model = tiny_checkpoint(tmp_path / "m")
    args = ["search", "--set", f"run.out_dir={tmp_path}", "--set", f"model.path={model}"]
    assert cli.main([*args, "--set", "search.policy=vllm", "--set", "search.workers=2"]) == 2
    assert "need 2 GPUs and the Ray cluster has 0" in capsys.readouterr().err


def test_the_private_cluster_listens_on_loopback_only(tmp_path):
    """Every listening socket of the private cluster (control service, raylet, agents, monitor,
    driver, workers) is on 127.0.0.1: measured while a search's actors are alive."""
    import psutil
    import ray

    from tests.conftest import listening_off_loopback

    ray.shutdown()  # a cluster of this test's own, started the way halluc starts it
    init_ray()

    @ray.remote
    class Alive:
        def pid(self):
            return os.getpid()

    actor = Alive.remote()
    worker = ray.get(actor.pid.remote())
    me = psutil.Process()
    pids = {me.pid, worker, *(p.pid for p in me.children(recursive=True))}
    assert len(pids) > 4  # the control service, raylet, agents and the worker are there
    assert listening_off_loopback(pids) == []
    assert os.environ.get(LOOPBACK_ENV) is None  # this process's environment is as it was
    ray.shutdown()


def test_the_token_file_ray_would_write_is_owner_only(tmp_path, monkeypatch, caplog):
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(key, raising=False)
    token = tmp_path / "ray" / "auth_token"
    private_token(token)
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text()) == 64
    token.chmod(0o644)  # as Ray writes it with the usual umask
    private_token(token)
    assert token.stat().st_mode & 0o777 == 0o600 and "made owner-only" in caplog.text
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "mine"))
    private_token(tmp_path / "other")  # the user's own choice: nothing written
    assert not (tmp_path / "other").exists()
