"""Ray actors that each own one policy backend, and a pool that feeds them jobs
(docs/design.md §10).

    state = make_state(*args)      # once per actor (and again after a restart): load the model
    result = fn(state, *job)       # per job, e.g. search one batch and write its shards

The pool keeps every actor busy with one job at a time and hands out the next as soon as one ends.
An actor whose process dies is restarted by Ray (`max_restarts`) and the job it was running is
retried on it (`max_task_retries`): jobs must be idempotent, which batch-named shards are.

`init_ray(address)` starts a private local cluster when no address is given, every service of it
listening on 127.0.0.1 only and the dashboard off (or joins RAY_ADDRESS / `address`); a
`host:port` that does not answer fails at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

from search.errors import HallucError

log = logging.getLogger(__name__)


class ClusterError(HallucError, RuntimeError):
    """A Ray cluster that cannot be reached or used."""


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" or another form ray.init understands itself
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise ClusterError(
            f"cannot reach a Ray cluster at {address} ({err}); start one with "
            "`ray start --head`, fix --address / RAY_ADDRESS, or leave both empty to run a "
            "local cluster"
        ) from None


def init_ray(address: str = "", num_cpus: int | None = None) -> None:
    """Connect to `address` (or RAY_ADDRESS), or start a local cluster when both are empty."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address:
        _check_reachable(address)
        ray.init(address=address, log_to_driver=True)
        return
    with private_cluster():
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            dashboard_host="127.0.0.1",
            log_to_driver=True,
            logging_level=logging.WARNING,
        )


# Ray's single-machine mode (its default on macOS and Windows): the node's address is 127.0.0.1,
# and every service of the cluster (control service, raylet, object manager, workers, agents,
# log monitor) listens on loopback only. Ray 2.60 has no other setting for it: ray.init's
# _node_ip_address=127.0.0.1 is turned back into the machine's external address.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def private_cluster() -> Iterator[None]:
    """While a private local cluster starts: every service of it listening on 127.0.0.1 only
    (the processes Ray starts inherit the setting; this process's environment is restored after,
    so a later `ray start` it runs is not affected), and Ray's token file owner-only
    (`private_token`). docs/cluster.md gives what listens where."""
    from ray._private import ray_constants

    saved, was = os.environ.get(LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False  # read from the environment when ray was imported
    private_token()
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = was
        if saved is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = saved


def private_token(path: Path | None = None) -> None:
    """Ray 2.60 turns token authentication on for a local cluster and, when ~/.ray/auth_token is
    missing, writes a new token there with the umask's permissions (readable by every user, with
    the usual 022). Write it first, owner-only; a token file others can read is made owner-only,
    with a log line. Nothing is done where the user chose the token (RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH) or turned authentication off."""
    if {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(os.environ):
        return
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return
    path = path or Path.home() / ".ray" / "auth_token"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    elif path.stat().st_mode & 0o077:
        log.warning("%s (Ray's cluster token) was readable by others: made owner-only", path)
        path.chmod(0o600)


@ray.remote
class PolicyActor:
    """Holds the state `make_state(*args)` builds (a policy and what goes with it)."""

    def __init__(self, make_state: Callable[..., Any], args: Sequence[Any], threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.state = make_state(*args)

    def run(self, fn: Callable[..., Any], job: Sequence[Any]) -> Any:
        return fn(self.state, *job)

    def pid(self) -> int:
        return os.getpid()


def run_pool(
    make_state: Callable[..., Any],
    state_args: Sequence[Any],
    fn: Callable[..., Any],
    jobs: Iterable[Sequence[Any]],
    n_workers: int,
    on_result: Callable[[Any], None] | None = None,
    retries: int = 3,
    num_gpus: int = 0,
    threads: int | None = None,
) -> list[Any]:
    """Run `fn(state, *job)` for every job on `n_workers` actors (each with `num_gpus` GPUs and
    `threads` math threads: default, its share of the cluster's CPUs); results in completion
    order."""
    cpus = int(ray.available_resources().get("CPU", 1))
    per_actor = max(1, cpus // n_workers)
    if num_gpus:
        have = ray.cluster_resources().get("GPU", 0)
        if have < num_gpus * n_workers:
            raise ClusterError(
                f"{n_workers} workers with {num_gpus} GPU each need {num_gpus * n_workers} GPUs "
                f"and the Ray cluster has {have:g}; lower search.workers, add GPU nodes, or use "
                "search.policy=transformers"
            )
        per_actor = max(1, min(per_actor, 4))  # vLLM works on the GPU; leave CPUs to others
    actors = [
        PolicyActor.options(  # type: ignore[attr-defined]
            num_cpus=per_actor,
            num_gpus=num_gpus,
            max_restarts=retries,
            max_task_retries=retries,
        ).remote(make_state, state_args, threads or per_actor)
        for _ in range(n_workers)
    ]
    pending = list(jobs)[::-1]
    running: dict[Any, Any] = {}
    results = []
    for actor in actors:
        if pending:
            running[actor.run.remote(fn, pending.pop())] = actor
    while running:
        [ref], _ = ray.wait(list(running), num_returns=1)
        actor = running.pop(ref)
        result = ray.get(ref)
        results.append(result)
        if on_result is not None:
            on_result(result)
        if pending:
            running[actor.run.remote(fn, pending.pop())] = actor
    for actor in actors:
        ray.kill(actor)
    return results
