"""Bootstrap: a model trained from scratch, saved as a checkpoint any HF loader opens."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline import cli
from pipeline.curves import Curves
from pipeline.stages import bootstrap
from search.errors import HallucError
from tests.conftest import CURVES, read_curves, tiny_cfg


def test_checkpoint_loads_with_auto_classes(trained):
    out, figures = trained
    path = out / "bootstrap" / "model"
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    prompt = "347+589=?\n"
    assert tok.decode(tok.encode(prompt)) == prompt
    assert "<|bksp|>" not in tok.get_vocab() and tok.eos_token == "<|endoftext|>"
    assert model.config.vocab_size == len(tok)
    settings = figures["settings"]
    assert {"greedy", "T=1.0", "greedy, backspace banned"} <= settings.keys()
    for m in settings.values():
        lo, hi = m["ci95"]
        assert 0 <= lo <= m["accuracy"] <= hi <= 1 and m["samples"] == 40 * m["samples_per_problem"]
        assert len(m["per_problem"]) == 40 and m["truncation_rate"] == 0
        assert m["backtrack_rate"] == 0  # the bootstrap model has no backspace token
    assert settings["greedy"]["accuracy"] == settings["greedy, backspace banned"]["accuracy"]
    assert json.loads((out / "bootstrap" / "eval.json").read_text()) == figures


def test_rerun_reuses_the_model(trained):
    out, figures = trained
    weights = out / "bootstrap" / "model" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert bootstrap.main(tiny_cfg(out)) == figures
    assert weights.stat().st_mtime_ns == before


def test_same_seed_same_weights_with_curves_or_without(tmp_path, monkeypatch):
    def weights(name, *extra):
        bootstrap.main(tiny_cfg(tmp_path / name, "bootstrap.steps=5", *extra))
        return (tmp_path / name / "bootstrap" / "model" / "model.safetensors").read_bytes()

    curves = weights("a")
    got = read_curves(tmp_path / "a" / "bootstrap")
    assert got.keys() == CURVES and [s for s, _ in got["train/loss"]] == [1, 2, 3, 4, 5]
    monkeypatch.setattr(bootstrap, "Curves", lambda stage_dir: Curves(None))
    assert weights("b") == curves  # writing the curves changes nothing
    assert not (tmp_path / "b" / "bootstrap" / "tb").exists()
    assert curves != weights("c", "bootstrap.seed=1")


def test_llama_bootstrap_and_too_short_positions(tmp_path):
    bootstrap.main(tiny_cfg(tmp_path / "l", "bootstrap.arch=llama", "bootstrap.steps=5"))
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "l" / "bootstrap" / "model")
    with pytest.raises(HallucError, match="n_positions"):
        bootstrap.main(tiny_cfg(tmp_path / "s", "bootstrap.n_positions=8"))
    assert not (tmp_path / "s" / "bootstrap" / "model").exists()


def test_search_on_the_bootstrap_model_finds_its_own_mistakes(searched):
    summary = json.loads((searched / "round-0" / "search" / "summary.json").read_text())
    assert summary["problems"] == 16 and summary["rollouts"] > 16 * 16
    assert summary["failing_branches"] > 0  # from the model's own mistakes
    assert summary["mc_vs_exact_first_error_agreement"] > 0.5


def test_search_bad_input_says_what_to_do(tmp_path, capsys):
    def fails(*sets, address=None):
        args = ["search", "--set", f"run.out_dir={tmp_path}"]
        for s in sets:
            args += ["--set", s]
        if address:
            args += ["--address", address]
        assert cli.main(args) == 2
        return capsys.readouterr().err

    assert "run `halluc bootstrap` first" in fails("search.workers=0")
    assert "'nope' is not allowed; choose one of ['arithmetic', 'countdown', 'jsonl']" in fails(
        "task.name=nope"
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    jsonl = ("task.name=jsonl", f"task.jsonl.path={empty}", "search.policy=fake")
    assert "empty.jsonl" in fails(*jsonl)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert "no *.safetensors weights" in fails(f"model.path={tmp_path / 'm'}")
    assert "cannot reach a Ray cluster at 127.0.0.1:9" in fails(
        "search.policy=fake", "task.n_train=4", address="127.0.0.1:9"
    )


def test_bf16_bootstrap_trains_mixed_precision_and_records_its_compute(tmp_path):
    """bf16 autocast over float32 weights: the saved model is float32, trained to about the loss
    fp32 reaches, and compute.json says the precision, parameters and tokens per parameter."""
    cfg = tiny_cfg(tmp_path, "model.precision=bf16", "bootstrap.steps=60", "eval.n_problems=4")
    bootstrap.main(cfg)
    compute = json.loads((tmp_path / "bootstrap" / "compute.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "bootstrap" / "model")
    assert str(next(model.parameters()).dtype) == "torch.float32"
    assert compute["precision"] == "bf16" and compute["parameters"] == model.num_parameters()
    assert compute["loss_tokens_per_parameter"] == compute["loss_tokens"] / compute["parameters"]
    assert compute["epochs"] == 60 * 32 / 2000 and compute["train_seconds"] > 0
    losses = [v for _, v in read_curves(tmp_path / "bootstrap")["train/loss"]]
    assert losses[-1] < 0.6 * losses[0]  # it learns under autocast
    with pytest.raises(HallucError, match="another config"):  # same directory, other precision
        bootstrap.main(tiny_cfg(tmp_path, "bootstrap.steps=60", "eval.n_problems=4"))
    # how many problems the loop searches does not shape the bootstrap: the model is reused
    from pipeline.loading import task_from_config

    weights = tmp_path / "bootstrap" / "model" / "model.safetensors"
    made = weights.stat().st_mtime_ns
    more = tiny_cfg(tmp_path, "model.precision=bf16", "bootstrap.steps=60", "task.n_train=999")
    assert bootstrap.trained_model(more, task_from_config(more.task)) == weights.parent
    assert weights.stat().st_mtime_ns == made
    other = tiny_cfg(tmp_path, "model.precision=bf16", "bootstrap.steps=60", "task.seed=5")
    with pytest.raises(HallucError, match="task.seed"):  # another task is another bootstrap
        bootstrap.trained_model(other, task_from_config(other.task))


def test_bootstrap_trains_on_the_model_device(tmp_path, monkeypatch):
    asked = []

    def device(name):
        asked.append(name)
        return torch.device("cpu")

    monkeypatch.setattr(bootstrap, "pick_device", device)
    bootstrap.main(tiny_cfg(tmp_path, "model.device=cpu", "bootstrap.steps=2", "eval.n_problems=2"))
    assert asked == ["cpu"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bootstrap_on_a_gpu_learns_and_saves_a_model_the_cpu_loads(tmp_path):
    cfg = tiny_cfg(tmp_path, "model.device=cuda", "bootstrap.steps=60", "eval.n_problems=4")
    bootstrap.main(cfg)
    losses = [v for _, v in read_curves(tmp_path / "bootstrap")["train/loss"]]
    assert losses[-1] < 0.6 * losses[0]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "bootstrap" / "model")
    assert next(model.parameters()).device.type == "cpu"


def test_size_sets_the_shape(tmp_path):
    from pipeline.config import SIZES, ConfigError, config_hash, load_config

    cfg = load_config("countdown-tiny", ["bootstrap.size=2.7m"])
    assert cfg.bootstrap.shape() == SIZES["2.7m"] == (6, 192, 3)
    tok = bootstrap.build_tokenizer(["0123456789+-*/=,\n "])
    model = bootstrap.build_model(cfg.bootstrap, tok)
    assert model.config.n_layer == 6 and model.config.n_embd == 192
    assert 2.6e6 < model.num_parameters() < 2.8e6
    plain = load_config("countdown-tiny")
    assert config_hash(cfg) != config_hash(plain)
    with pytest.raises(ConfigError, match="give one or the other"):
        load_config("countdown-tiny", ["bootstrap.size=10m", "bootstrap.n_embd=256"])
