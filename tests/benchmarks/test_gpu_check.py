"""benchmarks/gpu_check.py on the CPU: the --tiny run reports every section with ray, vllm and
datasets unimportable (as on the GPU machine); a failing section is reported without losing the
others; its fast Countdown generator agrees with the task's own solver."""

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from search.tasks.countdown import CountdownTask, solvable
from workers.erase import QUERY_BLOCK

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"

# the check run with ray, vllm and datasets blocked: `import ray` raises ImportError, and
# importlib.util.find_spec (how transformers looks for optional packages) finds nothing
BLOCKED = f"""
import runpy, sys
for name in ("ray", "vllm", "datasets"):
    sys.modules[name] = None
runpy.run_path({str(SCRIPT)!r}, run_name="__main__")
"""


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


def test_the_tiny_check_reports_every_section_without_ray_vllm_or_datasets(tmp_path):
    out = tmp_path / "check.json"
    env = os.environ | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    args = ["--tiny", "--device", "cpu", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert all(isinstance(x["t"], float) for x in lines)  # every line carries its time
    done = {x["section"] for x in lines if x["event"] == "done"}
    assert done == {"sampler", "train", "bootstrap", "check"}
    report = json.loads(out.read_text())
    assert report["forbidden_imported"] == []
    shapes = report["environment"]["shapes"]

    sampler = report["sampler"]
    rows_tokens = shapes["rows"] * shapes["new"]
    assert sampler["tokens"] == {  # end-of-sequence banned: every arm samples every token
        "sampler": rows_tokens,
        "batched": rows_tokens,
        "single": shapes["single_prompts"] * shapes["new"],
    }
    assert sampler["sampler_tokens_per_s"] > 0

    train = report["train"]
    for width, _ in shapes["train"]:
        for mode in ("stream", "erase_sdpa", "erase_blocked"):
            assert train["arms"][f"{mode}@{width}"]["tokens_per_s"] > 0
            assert mode == "stream" or train[f"{mode}_over_stream@{width}"] > 0
    assert shapes["train"][0][0] > 2 * QUERY_BLOCK  # parity over several blocks and a part
    for mode in ("erase_flex", "erase_blocked"):  # bf16 autocast, same weights
        assert train[f"{mode}_vs_sdpa_max_logit_diff"] < 0.05

    boot = report["bootstrap"]
    assert boot["steps"] >= 1 and boot["problems"] == boot["steps"] * shapes["boot_batch"]
    assert boot["eval_problems"] == shapes["eval_problems"]
    assert 0 <= boot["accuracy_greedy"] <= 1


def test_a_failing_section_is_reported_and_the_others_still_run(check, tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(check, "sampler_section", broken)
    monkeypatch.setattr(check, "bootstrap_section", lambda *args: {"accuracy_greedy": 0.5})
    out = tmp_path / "r.json"
    argv = ["--tiny", "--device", "cpu", "--only", "sampler", "--only", "bootstrap"]
    assert check.main([*argv, "--out", str(out)]) == 1
    report = json.loads(out.read_text())
    assert report["sampler"]["error"] == "RuntimeError: out of memory, say"
    assert report["bootstrap"]["accuracy_greedy"] == 0.5
    assert "train" not in report


def test_reachable_agrees_with_the_task_solver(check):
    rng = random.Random(0)
    for _ in range(60):
        numbers = [rng.randint(1, 99) for _ in range(rng.choice([2, 3, 4]))]
        reach = check.reachable(numbers)
        for target in range(10, 101):
            assert (target in reach) == solvable(numbers, target), (numbers, target)


def test_fresh_problems_are_solvable_train_problems_of_the_task(check):
    task = CountdownTask()
    problems = check.fresh_problems(task, random.Random(1), 40)
    assert len(problems) == 40
    for p in problems:
        assert p.meta["target"] in task.targets["train"]
        assert len(p.meta["numbers"]) == 4
        assert all(task.min_number <= x <= task.max_number for x in p.meta["numbers"])
        assert task.is_correct(p, task.reference(p))
