"""The layout rules of DESIGN §2."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "transformers", "ray", "vllm"]


def test_search_imports_no_model_or_cluster_library():
    code = (
        "import sys, pkgutil, importlib, search\n"
        "for m in pkgutil.walk_packages(search.__path__, 'search.'):\n"
        "    importlib.import_module(m.name)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_datasets_folder_holds_no_python():
    folder = ROOT / "datasets"
    assert folder.is_dir()
    assert not list(folder.rglob("*.py")) and not (folder / "__init__.py").exists()


def test_hugging_face_datasets_is_not_shadowed():
    out = subprocess.run(
        [sys.executable, "-c", "import datasets; print(datasets.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "site-packages" in out.stdout


def test_top_level_layout():
    for name in [
        "search",
        "pipeline",
        "workers",
        "datasets",
        "tests",
        "docker",
        "pyproject.toml",
        "README.md",
        ".ci/run",
    ]:
        assert (ROOT / name).exists(), name


def test_the_cpu_path_never_imports_vllm():
    """Every pipeline and worker module imports without vLLM being loaded (it is a GPU extra)."""
    code = (
        "import sys, pkgutil, importlib, pipeline, workers\n"
        "for pkg in (pipeline, workers):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "print('vllm' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout
