"""`ray job submit --working-dir . -- halluc run ...` on the README's local head, every service of
it on 127.0.0.1 (docs/design.md §10, docs/cluster.md).

Starts a head with `ray start --head`, submits a small run, stops it once its bootstrap is done,
submits it again, and checks the second job resumed (the bootstrap model is not retrained) and
finished with the run's outputs; `ray stop` at the end. Run outputs and releases never travel with
the working directory (`.rayignore`): the job checks that its copy has no file from `runs/` or
`.venv/`.
"""

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import TINY, listening_off_loopback

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
SENTINEL = "upload-check.txt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


AUTH: dict[str, str] = {}  # token authentication for the head and every client call


def ray_cli(*args, check=True, timeout=300):
    env = {**os.environ, **AUTH, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    cmd = [str(BIN / "ray"), *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode:
        pytest.fail(f"ray {' '.join(args[:2])} failed:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A local head bound to 127.0.0.1 with token authentication; yields the job server."""
    token = tmp_path_factory.mktemp("auth") / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    # the README's head: token authentication, and every service on loopback (docs/cluster.md)
    AUTH.update(
        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"
    )
    dash = free_port()
    ray_cli(
        "start",
        "--head",
        f"--port={free_port()}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        "--num-cpus=2",
        "--disable-usage-stats",
    )
    try:
        yield f"http://127.0.0.1:{dash}"
    finally:
        ray_cli("stop", "--force", check=False)


def submit(address, out, job_id, wait=True):
    overrides = [*TINY, "search.workers=1", "run.rounds=1", "eval.n_problems=20"]
    sets = " ".join(f"--set {s}" for s in [*overrides, f"run.out_dir={out}"])
    # the uploaded copy must not carry run outputs or the virtual environment
    cmd = f"test ! -e runs/{SENTINEL} && test ! -e .venv/bin && python -m pipeline.cli run {sets}"
    args = ["job", "submit", "--address", address, "--working-dir", ".", "--submission-id", job_id]
    args += [*([] if wait else ["--no-wait"]), "--", "bash", "-c", cmd]
    deadline = time.monotonic() + 300
    while True:  # a loaded machine starts the head's job agent late: its first answer is a 500
        done = ray_cli(*args, check=False, timeout=600)
        if "No available agent" not in done.stdout + done.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    if done.returncode:
        pytest.fail(f"ray job submit failed:\n{done.stdout}\n{done.stderr}")
    return done


def test_a_submitted_run_stopped_and_submitted_again_resumes(head, tmp_path):
    (ROOT / "runs").mkdir(exist_ok=True)  # an output in the repo, so the exclusion is tested
    (ROOT / "runs" / SENTINEL).write_text("must not be uploaded\n")
    out = tmp_path / "run"
    submit(head, out, "halluc-test-1", wait=False)
    model = out / "bootstrap" / "model" / "model.safetensors"
    eval_json = out / "bootstrap" / "eval.json"
    deadline = time.monotonic() + 900  # a minute or so when idle; much longer under load
    while not eval_json.exists():
        done = ray_cli("job", "status", "--address", head, "halluc-test-1")
        status = done.stdout + done.stderr
        if "failed" in status.lower() or "stopped" in status.lower() or time.monotonic() > deadline:
            logs = ray_cli("job", "logs", "--address", head, "halluc-test-1", check=False)
            pytest.fail(f"the first job did not finish its bootstrap:\n{status}\n{logs.stdout}")
        time.sleep(1)
    ray_cli("job", "stop", "--address", head, "halluc-test-1")
    first = model.stat().st_mtime_ns
    assert not (out / "report.md").exists()  # stopped before the end

    commands = {p.pid: " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])}
    ray_processes = {
        pid
        for pid, cmd in commands.items()
        if "site-packages/ray/" in cmd or cmd.startswith("ray::")
    }
    assert len(ray_processes) > 4  # the control service, raylet, agents, dashboard
    assert listening_off_loopback(ray_processes) == []

    done = submit(head, out, "halluc-test-2")
    assert "succeeded" in done.stdout.lower(), done.stdout + done.stderr
    assert model.stat().st_mtime_ns == first  # resumed: the finished bootstrap was kept
    assert (out / "report.md").exists() and (out / "report.html").exists()
    for arm in ("backtrack", "baseline"):
        assert (out / arm / "round-0" / "eval.json").exists()
        assert (out / arm / "round-0" / "search" / "summary.json").exists()
