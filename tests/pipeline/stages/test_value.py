"""`halluc value`: a value model trained on a hand-made `steps` table moves toward its
targets; the saved checkpoint reloads with the Auto class (GPT-2 and Llama, on the CPU) and gives
the same scores, batched or one at a time; the shared head leaves the policy's backbone as it was
and the policy's own hidden state gives the same value; label-quality figures on a hand-computed
case; a finished model is not retrained; bad input says what to do."""

import json
import random
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

from pipeline import cli
from pipeline.config import BootstrapConfig, ConfigError, load_config
from pipeline.curves import Curves
from pipeline.measure.value_quality import best_accuracy, ece, label_quality
from pipeline.shards import SCHEMA_VERSION, write_shard
from pipeline.stages import value
from pipeline.stages.bootstrap import build_model, build_tokenizer
from pipeline.value_data import Rows, ValueModelError, load_rows, split, targets
from tests.conftest import CURVES, read_curves
from tests.models import tiny_checkpoint


def handmade_rows(tok, n_problems=24, seed=0, round_=0, **overrides):
    """Steps of problems whose wrong steps end in the digit 7 (mc 0, exact label False); right
    steps have mc 0.25, 0.75 or 1 and extend the prefix."""
    rng = random.Random(seed)
    rows = []
    for p in range(n_problems):
        prefix = tok.encode(f"{rng.randint(10, 99)}+{rng.randint(10, 99)}=?\n")
        for k in range(6):
            wrong = rng.random() < 0.4
            text = f"{rng.randint(0, 9)}{'7' if wrong else rng.choice('012345689')}"
            step = tok.encode(text + "\n")
            mc = 0.0 if wrong else rng.choice([0.25, 0.75, 1.0])
            rows.append(
                {
                    "problem_id": f"p{p}",
                    "task": "arithmetic",
                    "round": round_,
                    "model_id": "tiny",
                    "config_hash": "handmade",
                    "seed": 0,
                    "schema_version": SCHEMA_VERSION,
                    "prefix_ids": prefix,
                    "step_ids": step,
                    "step_index": k,
                    "step_text": text,
                    "mc": mc,
                    "n_rollouts": 4,
                    "n_correct": int(mc * 4),
                    "terminal": False,
                    "exact_label": not wrong,
                }
                | overrides
            )
            if not wrong:
                prefix = prefix + step
    return rows


def write_stage(stage, rows, finished=True):
    write_shard(stage, "steps", 0, rows)
    if finished:
        (stage / "summary.json").write_text("{}")


def make_run(root, arch="gpt2"):
    """A run directory holding one finished search stage of hand-made steps, and the tiny
    checkpoint (with the same tokenizer) the value model starts from."""
    init = tiny_checkpoint(root / "init", arch)
    tok = AutoTokenizer.from_pretrained(init)
    write_stage(root / "round-0" / "search", handmade_rows(tok))
    return init


def value_cfg(root, init, *extra):
    sets = ["value.lr=3e-3", "value.epochs=10", "value.batch_size=16", "value.val_share=0.25"]
    sets += ["run.threads=1", f"run.out_dir={root}", f"value.init={init}"]
    return load_config("arith-tiny", [*sets, *extra])


def make_value_model(root):
    """A trained value model directory (for the release tests)."""
    init = make_run(root)
    value.main(value_cfg(root, init, "value.epochs=2"))
    return root / "value" / "model"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("value")
    init = make_run(root)
    return root, init, value.main(value_cfg(root, init))


def test_training_moves_the_value_toward_its_targets(made):
    _, _, result = made
    fit = result["fit"]
    assert fit["val_loss_after"] < 0.7 * fit["val_loss_before"]  # held-out problems
    assert fit["val_pearson"] > 0.7  # predictions follow the MC targets
    meta = json.loads((made[0] / "value" / "model" / "value.json").read_text())
    assert meta["fit"]["curve"][-1] < 0.7 * meta["fit"]["curve"][0]  # the training loss fell
    assert result["quality"]["model_vs_exact"]["roc_auc"] > 0.9  # it tells the 7s apart


def test_the_curves_are_written_and_change_nothing(made, monkeypatch, tmp_path):
    root, init, _ = made
    curves = read_curves(root / "value")
    assert curves.keys() == CURVES
    steps = [s for s, _ in curves["train/loss"]]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > 10
    monkeypatch.setattr(value, "Curves", lambda out: Curves(None))
    value.main(value_cfg(root, init, f"value.out_dir={tmp_path}"))
    weights = "model/model.safetensors"
    assert (tmp_path / weights).read_bytes() == (root / "value" / weights).read_bytes()
    assert not (tmp_path / "tb").exists()


def val_sequences(root):
    rows = load_rows([root])
    held = split(rows.problems, 0.25)
    return rows, held, [s for s, h in zip(rows.sequences, held, strict=True) if h]


def one_at_a_time(model, sequences):
    with torch.no_grad():
        return np.array(
            [torch.sigmoid(model(input_ids=torch.tensor([s])).logits[0, -1, 0]) for s in sequences]
        )


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_the_saved_model_reloads_with_the_auto_class_and_scores_the_same(arch, made, tmp_path):
    if arch == "gpt2":
        root = made[0]
    else:
        root = tmp_path
        value.main(value_cfg(root, make_run(root, arch), "value.epochs=1"))
    folder = root / "value" / "model"
    meta = json.loads((folder / "value.json").read_text())
    assert meta["kind"] == "halluc-value-model" and meta["targets"] == "mc"
    model = AutoModelForTokenClassification.from_pretrained(folder).eval()  # CPU, plain HF
    assert model.config.num_labels == 1
    rows, held, sequences = val_sequences(root)
    assert meta["labels"]["rows"] == len(rows.mc) and meta["split"]["val_rows"] == len(sequences)
    batched = value.score(model, sequences, batch_size=7)  # right padding, ragged rows
    assert np.allclose(batched, one_at_a_time(model, sequences), atol=1e-5)
    # the figures the stage computed before saving come back from the reloaded model
    saved = json.loads((folder / "label_quality.json").read_text())
    again = label_quality(rows.mc, rows.exact, held, batched.tolist())
    assert again["model_vs_exact"]["roc_auc"] == pytest.approx(saved["model_vs_exact"]["roc_auc"])
    assert again["calibration"] == pytest.approx(saved["calibration"], abs=1e-5)
    assert "| value model, held-out rows |" in (folder / "label_quality.md").read_text()


def test_the_shared_head_keeps_the_policy_backbone_and_reads_its_hidden_state(made, tmp_path):
    root, init, _ = made
    result = value.main(value_cfg(root, init, "value.head=shared", f"value.out_dir={tmp_path}"))
    assert result["fit"]["val_loss_after"] < result["fit"]["val_loss_before"]
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "model").eval()
    policy = AutoModelForCausalLM.from_pretrained(init).eval()
    base = policy.transformer.state_dict()
    for name, tensor in model.transformer.state_dict().items():
        assert torch.equal(tensor, base[name]), name  # the backbone did not move
    ids = torch.tensor([load_rows([root]).sequences[5]])
    with torch.no_grad():
        hidden = policy(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        assert torch.allclose(model.classifier(hidden), model(input_ids=ids).logits, atol=1e-6)


def test_a_finished_value_model_is_not_retrained(made, monkeypatch, tmp_path):
    root, init, result = made
    weights = root / "value" / "model" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    monkeypatch.setattr(value, "fit", lambda *a: pytest.fail("retrained"))
    assert value.main(value_cfg(root, init))["quality"] == result["quality"]
    assert weights.stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match=r"value.lr: 0.003 there, 0.001 now"):
        value.main(value_cfg(root, init, "value.lr=1e-3"))
    # more rows (another round searched) with the same config: trained again
    more = tmp_path / "more"
    shutil.copytree(root, more)
    tok = AutoTokenizer.from_pretrained(init)
    write_stage(more / "round-1" / "search", handmade_rows(tok, seed=1, round_=1))
    monkeypatch.setattr(value, "fit", lambda *a: [0.0])
    again = value.main(value_cfg(more, init, f"value.out_dir={more / 'value'}"))
    assert again["rows"] == 2 * result["rows"]


def test_targets_and_the_split():
    rows = Rows(
        [[1]] * 3, [0.0, 0.25, 1.0], [None, False, True], ["a", "b", "c"], [], [], [], "", ([], "")
    )
    assert targets(rows, "mc").tolist() == [0.0, 0.25, 1.0]
    assert targets(rows, "hard").tolist() == [0.0, 1.0, 1.0]
    assert targets(rows, "exact").tolist() == [0.0, 0.0, 1.0]  # no label: its MC value
    unlabelled = Rows([[1]], [0.5], [None], ["a"], [], [], [], "", ([], ""))
    with pytest.raises(ValueModelError, match="no row has an exact step label"):
        targets(unlabelled, "exact")
    problems = [f"p{i % 40}" for i in range(400)]
    held = split(problems, 0.25)
    sides = {}
    for p, h in zip(problems, held, strict=True):
        assert sides.setdefault(p, h) == h  # a problem is on one side only
    assert 0 < sum(sides.values()) < 40
    assert split(problems[::-1], 0.25) == held[::-1]  # by problem id, not by order
    with pytest.raises(ValueModelError, match="puts 0 of the 2 problems in validation"):
        split(["a", "b"], 1e-9)


def test_label_quality_hand_case():
    mc = [0.0, 0.5, 0.25, 1.0, 0.0, 0.75]
    exact = [False, True, False, True, None, True]
    held_out = [True, True, True, True, True, False]
    preds = [0.1, 0.35, 0.4, 0.8, 0.9]  # the five held-out rows
    q = label_quality(mc, exact, held_out, preds)
    assert q["rows"] == {"all": 6, "held_out": 5, "exact_all": 5, "exact_held_out": 4}
    held = q["mc_vs_exact"]["held_out"]
    assert (held["roc_auc"], held["accuracy"], held["threshold"]) == (1.0, 1.0, 0.5)
    assert held["hard_accuracy"] == 0.75  # mc > 0 calls the wrong 0.25 step right
    assert q["mc_vs_exact"]["all"]["n"] == 5 and q["mc_vs_exact"]["all"]["roc_auc"] == 1.0
    model = q["model_vs_exact"]
    assert model["roc_auc"] == 0.75  # 0.35 loses to the wrong 0.4 only
    assert (model["accuracy"], model["threshold"]) == (0.75, 0.35)  # the lowest of two bests
    # |0.1-0|, |0.35-0.5|, |0.4-0.25|, |0.8-1|, |0.9-0| in five bins of one row each
    assert q["calibration"]["model_vs_mc"] == pytest.approx(1.5 / 5)
    assert q["calibration"]["model_vs_exact"] == pytest.approx((0.1 + 0.65 + 0.4 + 0.2) / 4)
    assert ece([0.1, 0.1, 0.9, 0.9], [0, 0, 1, 1]) == pytest.approx(0.1)
    assert ece([0.12, 0.18], [0.0, 0.3]) == pytest.approx(0.0)  # one bin: means agree


def test_best_accuracy_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.integers(0, 6, size=30) / 5
        y = (rng.random(30) < s).astype(int)
        brute = max(
            [(float(np.mean((s >= t) == y)), -t) for t in sorted(set(s))]
            + [(float(np.mean(y == 0)), -np.inf)]
        )
        acc, threshold = best_accuracy(s, y)
        assert (acc, threshold) == (brute[0], -brute[1])
    assert best_accuracy([0.2, 0.3], [0, 0]) == (1.0, float("inf"))


def test_bad_input_says_what_to_do(made, tmp_path, capsys):
    root, init, _ = made
    (tmp_path / "empty").mkdir()
    args = ["value", "--set", f"run.out_dir={tmp_path / 'empty'}", "--set", f"value.init={init}"]
    assert cli.main(args) == 2
    assert "no `steps` rows with a value" in capsys.readouterr().err
    assert cli.main([*args, "--set", f"value.runs=[{tmp_path / 'nope'}]"]) == 2
    assert "value.runs:" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"value.val_share: must be in \(0, 1\)"):
        value_cfg(root, init, "value.val_share=0")
    with pytest.raises(ConfigError, match=r"value.targets: 'soft' is not allowed"):
        value_cfg(root, init, "value.targets=soft")
    running = tmp_path / "running"  # a search still running: skipped, so no rows
    write_stage(running / "round-0" / "search", [], finished=False)
    with pytest.raises(ValueModelError, match="0 finished search stages"):
        value.main(value_cfg(running, init))
    other = tmp_path / "other"  # a checkpoint with another tokenizer
    tok = build_tokenizer(["xyz"])
    build_model(BootstrapConfig(n_layer=1, n_embd=16, n_head=2), tok).save_pretrained(other)
    tok.save_pretrained(other)
    out = f"value.out_dir={tmp_path / 'v'}"
    with pytest.raises(ValueModelError, match="searched with another tokenizer"):
        value.main(value_cfg(root, other, out))
    with pytest.raises(ValueModelError, match="value.init: checkpoint directory"):
        value.main(value_cfg(root, tmp_path / "missing", out))
    unlabelled = tmp_path / "unlabelled"
    write_stage(
        unlabelled / "round-0" / "search",
        handmade_rows(AutoTokenizer.from_pretrained(init), exact_label=None),
    )
    with pytest.raises(ValueModelError, match="value.targets=exact: no row has an exact"):
        value.main(value_cfg(unlabelled, init, "value.targets=exact"))


def test_halluc_value_on_a_real_search(searched, tmp_path, capsys):
    """The CLI on a bootstrap model's own search (token ids of its tokenizer, exact labels)."""
    from tests.conftest import TINY

    sets = [f"run.out_dir={searched}", *TINY, f"value.out_dir={tmp_path}", "value.epochs=1"]
    assert cli.main(["value", *sum((["--set", s] for s in sets), [])]) == 2 - 2
    assert "| value model, held-out rows |" in capsys.readouterr().out
    meta = json.loads((tmp_path / "model" / "value.json").read_text())
    assert meta["init"] == str(searched / "bootstrap" / "model")  # the run's start model
    assert meta["labels"]["with_exact_label"] == meta["labels"]["rows"] > 0
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "model")
    sequences = load_rows([searched]).sequences[:4]
    assert np.allclose(value.score(model, sequences), one_at_a_time(model, sequences), atol=1e-5)
