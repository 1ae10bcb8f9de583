"""The residual-stream probe (`pipeline.measure.probe`, `halluc probe`): the fit on hand-made
features, the hidden states against a plain forward pass, the file, the stage on a tiny model."""

import json

import numpy as np
import pytest
import torch

from pipeline.measure.detector import roc_auc
from pipeline.measure.probe import Probe, fit, hidden_states
from tests.conftest import tiny_cfg


def test_fit_separates_a_direction_and_finds_nothing_in_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    y = (x[:, 3] - 0.5 * x[:, 5] > 0).astype(int).tolist()  # a linear rule
    probe = fit(x[:300], y[:300], l2=1e-4)
    assert roc_auc(list(probe.scores(x[300:])), y[300:]) > 0.97
    noise = rng.integers(0, 2, size=400).tolist()  # labels that no feature carries
    blind = fit(x[:300], noise[:300], l2=1e-2)
    assert abs(roc_auc(list(blind.scores(x[300:])), noise[300:]) - 0.5) < 0.12
    const = np.ones((10, 2))  # a constant feature keeps std 1: no division by zero
    assert np.isfinite(fit(const, [0, 1] * 5).scores(const)).all()


def test_probe_file_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4))
    probe = fit(x, (x[:, 0] > 0).astype(int).tolist(), layer=2)
    probe.save(tmp_path / "probe.safetensors")
    back = Probe.load(tmp_path / "probe.safetensors")
    assert back.layer == 2
    assert np.allclose(back.scores(x), probe.scores(x), atol=1e-5)


def test_hidden_states_are_the_forward_pass_at_the_positions(tmp_path):
    from tests.models import tiny_checkpoint
    from workers.hf import load_checkpoint

    model, _ = load_checkpoint(tiny_checkpoint(tmp_path / "m"), "cpu")
    seqs = [[3, 4, 5, 6, 7], [8, 9, 10], [11, 12]]
    positions = [[1, 4], [], [0, 1]]  # the second is not run
    got = hidden_states(model, seqs, positions, pad_id=0, max_batch=2)
    assert got.shape[0] == 4 and got.shape[1] == model.config.n_layer + 1
    rows = []
    for seq, pos in zip(seqs, positions, strict=True):
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([seq]), output_hidden_states=True)
        rows += [[h[0, p].numpy() for h in out.hidden_states] for p in pos]
    assert np.allclose(got, np.array(rows), atol=1e-5)  # right padding changes nothing


@pytest.mark.slow
def test_probe_stage_on_a_tiny_model(trained, tmp_path):
    from pipeline.stages import probe as stage

    out, _ = trained
    sets = ["probe.n_train=24", "eval.n_tune=12", "eval.n_problems=12", "eval.samples=2"]
    cfg = tiny_cfg(out, *sets, f"probe.out_dir={tmp_path / 'p'}")
    result = stage.main(cfg)
    assert set(result["counts"]) == {"train", "validation", "test"}
    assert all(c["wrong"] for c in result["counts"].values())  # a model right half the time
    assert len(result["layers"]) == cfg.bootstrap.n_layer + 1  # the embeddings, then each block
    assert 0 <= result["chosen_layer"] < len(result["layers"])
    assert (tmp_path / "p" / "probe.safetensors").exists()
    assert "step_mean_logprob" in result["probe"]["trivial"]
    assert "p_backspace" not in result  # the bootstrap model has no backspace row
    assert "chosen layer" in stage.describe(result)
    again = stage.main(cfg)  # done once: read back
    assert again == json.loads((tmp_path / "p" / "probe.json").read_text())


def test_the_value_model_scores_each_test_step_through_its_end(trained, tmp_path, monkeypatch):
    """With eval.value_model, 1 − V(prefix through the step) is a detector beside the probe: a
    value model that knows each test step's label exactly gives AUC 1 (pooled)."""
    from pipeline.measure import probe as measure
    from pipeline.stages import probe as stage

    splits = []
    real = measure._split
    monkeypatch.setattr(
        measure, "_split", lambda *a, **k: splits.append(real(*a, **k)) or splits[-1]
    )

    class Oracle:  # the value of a prefix: 0 after the first wrong step, else 1
        def values(self, prefixes):
            test = splits[-1]
            label = {
                p.ids[: at + 1]: y
                for p in test.points
                for at, y in zip(p.at, p.labels, strict=True)
            }
            return [1.0 - label[tuple(x)] for x in prefixes]

    monkeypatch.setattr(stage, "load_value_model", lambda cfg: Oracle())
    monkeypatch.setattr(stage, "check_tokenizer", lambda *a: None)
    out, _ = trained
    sets = ["probe.n_train=24", "eval.n_tune=12", "eval.n_problems=12", "eval.samples=2"]
    cfg = tiny_cfg(out, *sets, f"probe.out_dir={tmp_path / 'p'}", f"eval.value_model={out}")
    result = stage.main(cfg)
    assert result["value_model"]["detector"]["pooled"] == 1.0
    assert "value model: " in stage.describe(result)
