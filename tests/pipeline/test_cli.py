"""The CLI: every stage it lists dispatches, `halluc select` works on its own, `eval.policy`
reaches the policy factory, and user errors are one line."""

import importlib
import importlib.metadata
import importlib.util
import json
import re
import shutil

import pyarrow.parquet as pq
import pytest

from pipeline import cli
from pipeline.config import load_config
from pipeline.layout import RunLayout
from pipeline.loading import CheckpointMismatch, load_model, task_from_config
from pipeline.stages import BY_NAME, STAGES
from tests.conftest import TINY, one_line


def stage_args(stage, out, *sets):
    args = [stage]
    for s in [f"run.out_dir={out}", *TINY, *sets]:
        args += ["--set", s]
    return args


def test_every_listed_stage_dispatches(tmp_path, monkeypatch, capsys):
    plain = [
        s for s in STAGES if s.name not in cli.SPECIAL
    ]  # grid: tests/pipeline/stages/test_grid.py
    assert {s.name for s in STAGES} - {s.name for s in plain} == set(cli.SPECIAL)
    called = []
    for stage in (s.name for s in plain):
        module = importlib.import_module(BY_NAME[stage].module)
        monkeypatch.setattr(module, "main", lambda cfg, stage=stage: called.append(stage) or {})
        monkeypatch.setattr(module, "describe", lambda result, stage=stage: f"{stage} done", False)
        assert cli.main([stage, "--set", f"run.out_dir={tmp_path}"]) == 0
        assert f"{stage} done" in capsys.readouterr().out
    assert called == [s.name for s in plain]


def test_select_on_its_own(searched, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(searched / "round-0" / "search", out / "round-0" / "search")
    assert cli.main(stage_args("select", out)) == 0
    rnd = RunLayout(out).round(0)
    backtrack = pq.read_table(rnd.selected).to_pylist()
    assert backtrack and f"-> {rnd.selected}" in capsys.readouterr().out
    assert any(r["kind"] == "correction" for r in backtrack)
    # a selection made with other settings is refused, naming the key
    shutil.copy(rnd.selected, tmp_path / "kept.parquet")
    rnd.selected.unlink()
    assert cli.main(stage_args("select", out, "select.corrections_per_problem=1")) == 2
    assert "select.corrections_per_problem: 2 there, 1 now" in capsys.readouterr().err
    # the baseline on its own: clean only, as many loss-bearing tokens as the backtrack selection
    shutil.rmtree(rnd.select)
    assert cli.main(stage_args("select", out, "select.arm=baseline")) == 0
    baseline = pq.read_table(rnd.selected).to_pylist()
    assert {r["kind"] for r in baseline} == {"clean"}
    tokens = sum(sum(r["loss_mask"]) for r in backtrack)
    longest = max(sum(r["loss_mask"]) for r in baseline)
    assert tokens <= sum(sum(r["loss_mask"]) for r in baseline) < tokens + longest


def test_eval_policy_reaches_the_factory(trained, tmp_path, monkeypatch, capsys):
    from pipeline.measure import evaluation

    seen = []
    real = evaluation.load_model

    def spy(cfg, kind, path, task):
        seen.append(kind)
        return real(cfg, "transformers", path, task)

    monkeypatch.setattr(evaluation, "load_model", spy)
    model = trained[0] / "bootstrap" / "model"
    sets = [f"eval.model={model}", "eval.n_problems=4", "eval.policy=vllm"]
    assert cli.main(stage_args("eval", tmp_path, *sets)) == 0
    assert seen == ["vllm"] and "| greedy |" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_eval_on_vllm_without_vllm_says_what_to_do(trained, tmp_path, capsys):
    model = trained[0] / "bootstrap" / "model"
    sets = [f"eval.model={model}", "eval.n_problems=4", "eval.policy=vllm"]
    assert cli.main(stage_args("eval", tmp_path, *sets)) == 2
    assert "pip install 'halluc[vllm]'" in capsys.readouterr().err


def test_adhoc_eval_never_overwrites_a_stage_figures(trained, tmp_path):
    """`halluc eval --set eval.model=<run>/bootstrap/model` writes under evals/, and the
    bootstrap's own eval.json keeps its figures."""
    run = trained[0]
    before = (run / "bootstrap" / "eval.json").read_bytes()
    model = run / "bootstrap" / "model"
    assert cli.main(stage_args("eval", run, f"eval.model={model}", "eval.n_problems=4")) == 0
    assert (run / "bootstrap" / "eval.json").read_bytes() == before
    [adhoc] = (run / "evals").glob("*.json")
    assert '"n_problems": 4' in adhoc.read_text()
    digest = json.loads(adhoc.read_text())["problems_digest"]  # which problems, in what order
    assert len(digest) == 16 and digest != json.loads(before)["problems_digest"]


def test_user_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: [unclosed\n")
    assert cli.main(["search", "--preset", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "Traceback" not in err
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("search: 3\n")
    assert cli.main(["search", "--preset", str(scalar), "--set", "search.workers=0"]) == 2
    assert "search is 3, not a mapping" in capsys.readouterr().err
    assert cli.main(["search", "--set", "search.temperature=-1"]) == 2
    assert "search.temperature: must be >= 0" in capsys.readouterr().err


@pytest.fixture
def step_trained(trained, tmp_path):
    """The bootstrap model as if trained on step-unit backspaces with `<|bksp|>` (its
    halluc.json as training writes it)."""
    model = tmp_path / "step-model"
    shutil.copytree(trained[0] / "bootstrap" / "model", model)
    meta = {"mode": "stream", "unit": "step", "bksp_token": "<|bksp|>", "backspace": True}
    (model / "halluc.json").write_text(json.dumps(meta))
    return model


@pytest.mark.parametrize(
    ("override", "ours", "theirs"),
    [
        ("trace.unit=token", "trace.unit=token", "unit=step"),
        ("trace.bksp_token=<|del|>", "trace.bksp_token=<|del|>", "bksp_token=<|bksp|>"),
    ],
)
def test_a_config_that_disagrees_with_the_checkpoint_is_refused(
    step_trained, tmp_path, capsys, override, ours, theirs
):
    """`halluc eval` and `halluc search` refuse, in one line naming both values and the
    checkpoint's record, before anything loads or is written; an agreeing config loads."""
    out = tmp_path / "run"
    sets = [f"eval.model={step_trained}", override]
    assert cli.main(stage_args("eval", out, *sets)) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert ours in line and theirs in line and str(step_trained / "halluc.json") in line
    assert cli.main(stage_args("search", out, f"model.path={step_trained}", override)) == 2
    assert theirs in capsys.readouterr().err and not (out / "round-0").exists()
    # the other path: the config the model was trained with loads, with the model's unit
    cfg = load_config("arith-tiny", [f"run.out_dir={out}", *TINY])
    loaded = load_model(cfg, "transformers", step_trained, task_from_config(cfg.task))
    assert (loaded.unit, loaded.trained) == ("step", True)


def test_a_model_without_backspaces_has_nothing_to_disagree_with(step_trained, tmp_path):
    """A clean-only arm's record (backspace False) or none at all (a base model): any unit and
    backspace token load, the record's unit kept where there is one."""
    cfg = load_config("arith-tiny", [*TINY, "trace.unit=token", "trace.bksp_token=<|del|>"])
    task = task_from_config(cfg.task)
    meta = json.loads((step_trained / "halluc.json").read_text())
    (step_trained / "halluc.json").write_text(json.dumps(meta | {"backspace": False}))
    assert load_model(cfg, "transformers", step_trained, task).unit == "step"
    (step_trained / "halluc.json").unlink()
    assert load_model(cfg, "transformers", step_trained, task).unit == "token"
    (step_trained / "halluc.json").write_text(json.dumps(meta))  # trained on backspaces again
    with pytest.raises(CheckpointMismatch, match="trace.unit=token"):
        load_model(cfg, "transformers", step_trained, task)


def test_bad_values_and_files_are_one_line(tmp_path, capsys):
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


def test_a_damaged_weights_file_is_one_line_naming_it(trained, tmp_path, capsys):
    """Before: a truncated model.safetensors gave `SafetensorError ... incomplete metadata` from
    deep inside from_pretrained."""
    run, _ = trained
    model = tmp_path / "model"
    shutil.copytree(run / "bootstrap" / "model", model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = tmp_path / "run"
    args = ["eval", "--set", f"run.out_dir={out}", "--set", f"eval.model={model}"]
    assert cli.main([*args, *(x for s in TINY for x in ("--set", s))]) == 2
    err = capsys.readouterr().err
    assert one_line(err)
    assert f"{weights} is damaged" in err and "incomplete metadata" in err


def test_a_prompt_longer_than_the_context_is_refused_before_any_work(trained, tmp_path, capsys):
    """Before: `IndexError: index out of range in self` from the embedding, mid-search."""
    run, _ = trained
    limit = json.loads((run / "bootstrap" / "model" / "config.json").read_text())["n_positions"]
    data = tmp_path / "long.jsonl"
    rows = [
        {"question": "1+1=?", "answer": "#### 2"},
        {"question": "9" * limit, "answer": "#### 9"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    sets = [
        *TINY,
        f"run.out_dir={out}",
        f"model.path={run / 'bootstrap' / 'model'}",
        "task.name=jsonl",
        f"task.jsonl.path={data}",
        "task.n_train=2",
    ]
    assert cli.main(["search", *(x for s in sets for x in ("--set", s))]) == 2
    err = capsys.readouterr().err
    assert one_line(err)
    said = rf"problem \S+: its prompt is \d+ tokens and the model at .* takes {limit} positions, "
    said += r"too few for \d+ more \(sampling.max_new_tokens\)"
    assert re.search(said, err)
    assert not (out / "round-0" / "search" / "traces").exists()  # refused before any work
