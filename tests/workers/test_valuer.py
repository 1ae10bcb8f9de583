"""The value model at work: `workers.valuer` scores like the value stage
reads it, one prefix at a time or batched in any order; `halluc search` with `search.value=model`
on a bootstrap model's own search spends fewer rollouts; value best-of-N in the controls picks by
the least step value (scripted valuers: one that knows the exact checker, one that inverts it)."""

import json

import numpy as np
import pytest

from pipeline.config import ConfigError, load_config
from pipeline.loading import task_from_config
from pipeline.measure.budget import controls
from pipeline.measure.settings import Setting
from pipeline.stages import search as search_stage
from pipeline.stages import value
from search.tree import Judge, split_steps
from tests.conftest import tiny_cfg
from tests.models import tiny_checkpoint
from workers.hf import SearchTokenizer, load_tokenizer
from workers.valuer import ValuerError, check_tokenizer, load_valuer, score


@pytest.fixture(scope="module")
def value_dir(tmp_path_factory):
    """A value model with a fresh head on a tiny random checkpoint (nothing trained)."""
    root = tmp_path_factory.mktemp("valuer")
    init = tiny_checkpoint(root / "init")
    model, tok = value.build(init, "separate", "float32", False)
    model.save_pretrained(root / "model", safe_serialization=True)
    tok.save_pretrained(root / "model")
    return root


def test_batched_values_in_any_order_are_the_one_at_a_time_values(value_dir):
    valuer = load_valuer(value_dir / "model", device="cpu", batch_size=3)
    rng = np.random.default_rng(0)
    prefixes = [tuple(rng.integers(3, 20, size=n).tolist()) for n in (9, 2, 14, 5, 5, 11, 1)]
    got = valuer.values(prefixes)
    alone = [float(score(valuer.model, [list(p)])[0]) for p in prefixes]
    assert np.allclose(got, alone, atol=1e-5)
    assert len(set(np.round(got, 6))) > 1  # the head reads the prefixes, not a constant
    assert valuer.values([]) == []
    with pytest.raises(ValuerError, match="cannot read"):
        valuer.values([(1, 2, 10_000)])


def test_a_causal_lm_or_another_tokenizer_is_refused(value_dir, tmp_path):
    with pytest.raises(ValuerError, match="not a value model"):
        load_valuer(value_dir / "init", device="cpu")
    other = tiny_checkpoint(tmp_path / "other")
    check_tokenizer(value_dir / "model", other, "12+34=?\n")  # the same alphabet: accepted
    from pipeline.stages.bootstrap import build_tokenizer

    build_tokenizer(["xyz\n"]).save_pretrained(other)
    with pytest.raises(ValuerError, match="tokenizer"):
        check_tokenizer(value_dir / "model", other, "12+34=?\n")
    with pytest.raises(ConfigError, match="search.value_model"):
        load_config("arith-tiny", ["search.value=model"])
    with pytest.raises(ConfigError, match="scripted policy"):
        load_config(
            "arith-tiny", ["search.value=mix", "search.value_model=v", "search.policy=fake"]
        )


def test_the_search_value_keys_enter_the_hash_only_when_used():
    base = load_config("arith-tiny")
    idle = load_config("arith-tiny", ["search.value_model=v", "search.value_threshold=0.2"])
    assert idle.hash == base.hash  # mc: they shape nothing
    used = load_config("arith-tiny", ["search.value=model", "search.value_model=v"])
    assert used.hash != base.hash
    other = load_config(
        "arith-tiny", ["search.value=model", "search.value_model=v", "search.value_threshold=0.2"]
    )
    assert other.hash != used.hash


@pytest.fixture(scope="module")
def trained_value(searched, tmp_path_factory):
    """A value model trained (one epoch) on the bootstrap model's own search."""
    out = tmp_path_factory.mktemp("value-model")
    cfg = tiny_cfg(searched, f"value.out_dir={out}", "value.epochs=1")
    value.main(cfg)
    return out / "model"


def test_search_with_model_values_spends_fewer_rollouts(searched, trained_value, tmp_path):
    mc = json.loads((searched / "round-0" / "search" / "summary.json").read_text())
    sets = ["search.value=model", f"search.value_model={trained_value}"]
    cfg = tiny_cfg(searched, *sets, "search.value_threshold=0.3")
    summary = search_stage.search(cfg, searched / "bootstrap" / "model", tmp_path / "search")
    assert summary["problems"] == mc["problems"]
    assert summary["values"] > 0 and "values" not in mc
    assert summary["rollouts"] < mc["rollouts"]
    # the screening is the same K rollouts with the same seeds: the same problems screened out
    assert summary["screened_out"] == mc["screened_out"]


def oracle(task, problems, tok, invert=False):
    """A valuer that knows the exact step checker: 1 for a prefix with no wrong step, else 0
    (`invert`: the other way round)."""
    prompts = [tuple(tok.encode(p.prompt)) for p in problems]
    judges = {k: Judge(task, p, tok, k) for k, p in zip(prompts, problems, strict=True)}

    class Oracle:
        calls = 0

        def values(self, prefixes):
            Oracle.calls += 1
            out = []
            for prefix in prefixes:
                prompt = next(k for k in judges if prefix[: len(k)] == k)
                steps = split_steps(prefix[len(prompt) :], tok.delim_id)
                right = judges[prompt].first_error(steps) is None
                out.append(float(right != invert))
            return out

    return Oracle()


def test_value_best_of_n_picks_by_the_least_step_value(trained):
    out, _ = trained
    cfg = tiny_cfg(out)
    task = task_from_config(cfg.task)
    problems = task.problems("test", 8)
    model = out / "bootstrap" / "model"
    tok = SearchTokenizer.wrap(load_tokenizer(model), "\n", "<|bksp|>")
    setting = Setting(1.0, 2)
    assert "value_best_of_n" not in controls(model, task, problems, cfg, setting, [1.0] * 8)
    one = controls(model, task, problems, cfg, setting, [1.0] * 8, oracle(task, problems, tok))
    assert one["value_best_of_n"]["per_problem"] == one["best_of_n"]["per_problem"]  # N = 1
    budget = [80.0] * 8
    right = controls(model, task, problems, cfg, setting, budget, oracle(task, problems, tok))
    wrong = controls(model, task, problems, cfg, setting, budget, oracle(task, problems, tok, True))
    assert right["value_best_of_n"]["mean_n"] > 1
    assert right["value_best_of_n"]["accuracy"] > wrong["value_best_of_n"]["accuracy"]
    assert right["value_best_of_n"]["accuracy"] >= right["best_of_n"]["accuracy"]
    assert right["best_of_n"] == wrong["best_of_n"]  # the same samples, whatever the valuer


def test_the_benchmark_runs_on_a_tiny_run(searched, trained_value, tmp_path):
    """experiments/value_search.py end to end: the run's model and the value model trained on its
    search, on the training problems the value model held out."""
    from experiments.value_search import main
    from pipeline.config import save_config
    from pipeline.value_data import split

    small = ["omegaprm.budget=2", "omegaprm.n_mc=2", "mcts.simulations=2", "mcts.n_mc=2"]
    cfg = tiny_cfg(searched, *(f"search.{s}" for s in small), "search.mcts.n_screen=16")
    save_config(cfg, tmp_path / "config.yaml")
    args = ["--run", str(tmp_path), "--value-model", str(trained_value), "--thresholds", "0.3"]
    result = main(args)
    problems = task_from_config(cfg.task).problems("train", cfg.task.n_train)
    share = json.loads((trained_value / "value.json").read_text())["split"]["val_share"]
    assert result["problems"] == sum(split([p.id for p in problems], share))
    rows = result["methods"]
    assert rows["omegaprm model@0.3"]["rollouts"] == 0 < rows["omegaprm model@0.3"]["values"]
    assert rows["omegaprm exhaustive mc"]["rollouts"] >= rows["omegaprm binary mc"]["rollouts"]
    saved = json.loads((tmp_path / "value_search.json").read_text())
    assert saved["methods"] == rows and "experiments/value_search.py --run" in saved["command"]
    assert "| omegaprm binary mc |" in (tmp_path / "value_search.md").read_text()


def test_the_inference_table_runs_on_a_tiny_run(trained, trained_value, tmp_path, capsys):
    """`halluc table value-inference` end to end on a run whose round-0 models are the bootstrap
    model (the backtrack arm's with the backspace token and halluc.json, as training leaves it)."""
    from pipeline import cli
    from pipeline.config import save_config
    from workers.hf import load_checkpoint
    from workers.tokens import add_backspace_token

    boot = trained[0] / "bootstrap" / "model"
    run = tmp_path / "run"
    for arm in ("backtrack", "baseline"):
        model, hf = load_checkpoint(boot, "cpu")
        if arm == "backtrack":
            add_backspace_token(model, hf, "<|bksp|>")
        where = run / arm / "round-0" / "train" / "model"
        model.save_pretrained(where, safe_serialization=True)
        hf.save_pretrained(where)
    meta = {"mode": "erase", "unit": "step", "bksp_token": "<|bksp|>", "backspace": True}
    (run / "backtrack" / "round-0" / "train" / "model" / "halluc.json").write_text(json.dumps(meta))
    save_config(tiny_cfg(run, "eval.n_problems=6", "trace.unit=step"), run / "config.yaml")
    args = ["--run", str(run), "--value-model", str(trained_value), "--round", "0"]
    argv = ["table", "value-inference", *args, "--m", "2", "--drops", "0.05"]
    assert cli.main(argv) == 0
    result = json.loads((run / "value_inference.json").read_text())
    assert result["command"] == "halluc " + " ".join(argv) and result["m"] == 2
    guided = result["guided"]
    assert set(guided) == {"own", "value 0.05"}
    assert guided["value 0.05"]["value_drop"] == 0.05 and "value_drop" not in guided["own"]
    controls = result["controls"]
    assert {"best_of_n", "majority", "value_best_of_n"} <= set(controls)
    assert controls["value_best_of_n"]["mean_n"] == controls["best_of_n"]["mean_n"]
    assert "| T=1.0 | value 0.05 |" in (run / "value_inference.md").read_text()
    assert capsys.readouterr().out == (run / "value_inference.md").read_text() + "\n"
