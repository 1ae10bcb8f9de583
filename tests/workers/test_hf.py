"""`workers.hf.set_precision`: bf16 autocast as forward hooks on a model; `auto` takes it only
where the device multiplies bf16 natively."""

import copy
import logging

import pytest
import torch

import workers.hf
from pipeline.config import BootstrapConfig
from pipeline.stages import bootstrap
from workers.hf import resolve_precision, set_precision


def _model():
    torch.manual_seed(0)
    tok = bootstrap.build_tokenizer(["0123456789+=?\n"])
    b = BootstrapConfig(n_layer=2, n_embd=32, n_head=2, n_positions=32)
    return bootstrap.build_model(b, tok).eval()


def test_bf16_runs_under_autocast_and_fp32_undoes_it():
    model, ids = _model(), torch.randint(3, 10, (2, 12))
    plain = model(input_ids=ids).logits
    set_precision(set_precision(model, "bf16"), "bf16")  # twice: one pair of hooks
    assert len(model._forward_pre_hooks) == 1 and len(model._forward_hooks) == 1
    mixed = model(input_ids=ids).logits
    assert plain.dtype == torch.float32 and mixed.dtype == torch.bfloat16
    assert 0 < (plain - mixed.float()).abs().max() < 0.05  # bf16 products, same model
    assert not torch.is_autocast_enabled("cpu")  # left after the forward
    assert next(model.parameters()).dtype == torch.float32  # master weights untouched
    set_precision(model, "fp32")
    assert torch.equal(model(input_ids=ids).logits, plain)


def test_a_copy_keeps_the_switch_and_is_its_own_model():
    model, ids = set_precision(_model(), "bf16"), torch.randint(3, 10, (2, 12))
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert twin(input_ids=ids).logits.dtype == torch.bfloat16
    assert not torch.equal(twin(input_ids=ids).logits, model(input_ids=ids).logits)


def test_autocast_ends_when_the_forward_raises():
    model = set_precision(_model(), "bf16")
    with pytest.raises(IndexError):
        model(input_ids=torch.full((1, 64), 3))  # past the 32 positions
    assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="fp32, bf16 or auto"):
        set_precision(model, "fp16")  # type: ignore[arg-type]


@pytest.mark.parametrize("native", [True, False])
def test_auto_takes_bf16_only_where_the_device_has_it(monkeypatch, native):
    monkeypatch.setattr(workers.hf, "native_bf16", lambda device: native)
    model, ids = _model(), torch.randint(3, 10, (2, 12))
    plain = model(input_ids=ids).logits
    out = set_precision(model, "auto")(input_ids=ids).logits
    assert out.dtype == (torch.bfloat16 if native else torch.float32)
    assert native or torch.equal(out, plain)
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"


def test_bf16_without_native_support_runs_as_asked_and_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(workers.hf, "native_bf16", lambda device: False)
    model, ids = set_precision(_model(), "bf16"), torch.randint(3, 10, (2, 12))
    with caplog.at_level(logging.WARNING, logger="workers.hf"):
        assert model(input_ids=ids).logits.dtype == torch.bfloat16
        model(input_ids=ids)
    warned = [r for r in caplog.records if "without native bf16" in r.getMessage()]
    assert len(warned) == 1 and "model.precision=auto" in warned[0].getMessage()
