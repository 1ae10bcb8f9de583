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
