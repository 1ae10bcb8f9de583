"""The GSM8K path end to end on a tokenizer like users' (slow tier): generated GSM8K-format data
(`search.tasks.gsm8k_synth`), a Qwen2-config model with a Qwen2-style byte-level BPE trained from
scratch (`bootstrap.tokenizer=qwen2-bpe`), and `halluc run --preset gsm8k` with CPU overrides: the
search finds failing branches whose erased steps end at real step ends (merged `.\\n` tokens),
training adds the backspace, the evaluation runs, and a release loads with `datasets`."""

import json

import pyarrow.parquet as pq
import pytest

from pipeline import cli
from search.tasks.gsm8k_synth import write_jsonl
from workers.hf import SearchTokenizer, load_tokenizer

pytestmark = pytest.mark.slow

CPU = [
    "task.n_train=48",
    "model.device=cpu",
    "model.dtype=float32",
    "bootstrap.tokenizer=qwen2-bpe",
    "bootstrap.arch=qwen2",
    "bootstrap.vocab_size=400",
    "bootstrap.n_layer=2",
    "bootstrap.n_embd=64",
    "bootstrap.n_head=4",
    "bootstrap.steps=400",
    "bootstrap.n_problems=1200",
    "bootstrap.batch_size=32",
    "bootstrap.warmup=20",
    "search.policy=transformers",
    "search.workers=0",
    "search.batch_size=16",
    "search.omegaprm.n_screen=8",
    "search.omegaprm.n_mc=4",
    "search.omegaprm.budget=8",
    "search.omegaprm.length_scale=60",
    "sampling.max_batch=64",
    "sampling.max_new_tokens=48",
    "train.lr=1e-3",
    "train.batch_size=8",
    "train.max_steps=10",
    "train.token_warmup=5",
    "eval.n_problems=40",
    "eval.temperatures=[1.0]",
    "eval.samples=1",
    "eval.n_tune=8",
    "run.rounds=1",
]


def test_the_gsm8k_preset_runs_on_a_qwen2_bpe_model(tmp_path):
    data = write_jsonl(tmp_path / "gsm8k.jsonl", 1500, seed=0)
    out = tmp_path / "run"
    sets = [*CPU, f"task.jsonl.path={data}", f"run.out_dir={out}"]
    assert cli.main(["run", "--preset", "gsm8k", *(x for s in sets for x in ("--set", s))]) == 0

    hf = load_tokenizer(out / "bootstrap" / "model")
    tok = SearchTokenizer.wrap(hf, "\n", "<|bksp|>")
    merged = [i for i in tok.step_ends if tok.decode([i]) != "\n"]
    assert merged  # steps end in merged tokens such as `.\n`

    search = out / "backtrack" / "round-0" / "search"
    summary = json.loads((search / "summary.json").read_text())
    assert summary["failing_branches"] > 0, summary
    rows = pq.read_table(search / "traces").to_pylist()
    corrections = [r for r in rows if r["kind"] == "correction"]
    assert corrections
    at_merged = 0
    for row in corrections:
        for start, end in row["erase_spans"]:
            erased = row["input_ids"][start:end]
            # one step: no step end inside it; it ends at its end token, or (the final "#### N"
            # line, or a step the budget cut) where the rollout stopped
            assert not any(t in tok.step_ends for t in erased[:-1]), tok.decode(erased)
            at_merged += erased[-1] in merged
    assert at_merged > 0  # steps erased back to a merged `.\n`, not to a bare `\n`

    trained = load_tokenizer(out / "backtrack" / "round-0" / "train" / "model")
    assert "<|bksp|>" in trained.get_vocab()
    for arm in ("backtrack", "baseline"):
        assert (out / arm / "round-0" / "eval.json").exists()
    assert (out / "report.md").exists()

    from datasets import load_dataset

    assert cli.main(["release", str(out), "--name", "gsm8k-bpe", "--out", str(tmp_path)]) == 0
    released = load_dataset(str(tmp_path / "gsm8k-bpe"), "traces", split="train")
    assert len(released) > 0 and set(released["input_ids"][0]) <= set(range(len(trained)))
