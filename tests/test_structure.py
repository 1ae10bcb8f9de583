"""The layout rules of docs/design.md §2."""

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

from pipeline.stages import STAGES

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


STAGE_NAMES = [s.name for s in STAGES]
TRAINERS = sorted(
    p.stem for p in (ROOT / "pipeline" / "trainers").glob("*.py") if p.stem != "__init__"
)


def _pipeline_imports(path: Path) -> set[str]:
    """The `pipeline.*` modules the file at `path` imports, at any depth of its code, as dotted
    names under `pipeline` (`stages.train`, `layout`, ...)."""
    import ast

    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("pipeline"):
                base = node.module.removeprefix("pipeline").lstrip(".")
                found |= {f"{base}.{a.name}".lstrip(".") for a in node.names}
                found.add(base)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("pipeline.") for a in node.names if "pipeline." in a.name}
    return found - {""}


def _stages_imported(path: Path) -> set[str]:
    return {name for name in STAGE_NAMES if f"stages.{name}" in _pipeline_imports(path)}


def test_the_stage_list_is_the_stage_folder():
    on_disk = {p.stem for p in (ROOT / "pipeline" / "stages").glob("*.py")} - {"__init__"}
    assert on_disk == set(STAGE_NAMES)


def test_stages_are_siblings():
    """A stage never imports another stage, except the loop stages (run, grid) importing the ones
    they compose: what several stages share lives in library modules of its own."""
    for stage in STAGES:
        found = _stages_imported(ROOT / "pipeline" / "stages" / f"{stage.name}.py")
        others = found - {stage.name} - set(stage.composes)
        assert not others, f"pipeline/stages/{stage.name}.py imports the stage(s) {sorted(others)}"


def test_trainers_and_library_modules_import_no_stage():
    library = [p for p in (ROOT / "pipeline").rglob("*.py") if "stages" not in p.parts]
    assert any("trainers" in p.parts for p in library) and TRAINERS
    for path in library:
        if path.name == "cli.py":
            continue  # the CLI dispatches to the stages
        found = _stages_imported(path)
        assert not found, f"{path.relative_to(ROOT)} imports the stage(s) {sorted(found)}"


def test_the_sibling_check_sees_imports(tmp_path):
    assert {"layout", "measure.evaluation"} <= _pipeline_imports(
        ROOT / "pipeline" / "stages" / "bootstrap.py"
    )
    assert {"bootstrap", "search", "select", "train"} <= _stages_imported(
        ROOT / "pipeline" / "stages" / "run.py"
    )
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from pipeline.stages import select\n")
    assert _stages_imported(bad) == {"select"}


def test_the_fake_policy_path_imports_no_model_or_cluster_library():
    """Config, layout and a search with the fake policy stay light (no torch, ray, transformers)."""
    code = (
        "import sys, tempfile\n"
        "from pipeline.config import load_config\n"
        "from pipeline import cli\nfrom pipeline.stages import search as search_stage, select\n"
        "d = tempfile.mkdtemp()\n"
        "cfg = load_config('arith-tiny', ['search.policy=fake', 'search.workers=0',\n"
        "    'task.n_train=4', 'search.batch_size=4', f'run.out_dir={d}'])\n"
        "import logging; logging.disable(logging.CRITICAL)\n"
        "search_stage.main(cfg)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def _text_files() -> list[Path]:
    tracked = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.yaml", "Makefile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in tracked if (ROOT / name).is_file()]


def test_nothing_points_outside_the_repository():
    """The design is docs/design.md: no file cites notes that live outside the repository."""
    outside = re.compile(r"\.\./shared|(DESIGN|STYLE) §")
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in _text_files()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if outside.search(line)
    ]
    assert not found, found


def test_design_citations_name_sections_that_exist():
    """`docs/design.md §N` in a docstring names a section of that file (the numbers are stable)."""
    design = (ROOT / "docs" / "design.md").read_text()
    sections = set(re.findall(r"^## (\d+)\. ", design, flags=re.M))
    cited = re.compile(r"docs/design\.md (§\d+(?:, §\d+)*)")
    missing = [
        f"{path.relative_to(ROOT)}: {number}"
        for path in _text_files()
        for match in cited.finditer(path.read_text())
        for number in re.findall(r"§(\d+)", match.group(1))
        if number not in sections
    ]
    assert not missing, missing


def _sizes(path: Path) -> tuple[int, list[tuple[str, int]]]:
    """A module's line count and its functions (name, lines) over 60 lines."""
    import ast

    src = path.read_text()
    long = [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(src))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > 60
    ]
    return src.count("\n"), long


def test_modules_and_functions_stay_readable():
    """No module in search/, workers/, pipeline/ over 400 lines, no function over 60."""
    for path in sorted(
        p for d in ("search", "workers", "pipeline") for p in (ROOT / d).rglob("*.py")
    ):
        lines, long = _sizes(path)
        where = path.relative_to(ROOT)
        assert lines <= 400, f"{where} has {lines} lines; split it"
        assert not long, f"{where}: functions over 60 lines: {long}"


def test_the_size_check_sees_a_long_function(tmp_path):
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * 61)
    assert _sizes(long) == (62, [("f", 62)])


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
    assert (
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray start --head --dashboard-host=127.0.0.1" in readme
    )
    assert "umask 077" in readme  # the token file owner-only
