"""The probe stage: does the network know it erred? A logistic probe per layer on the hidden state
at each step end of the model's own solutions (`pipeline.measure.probe`).

    halluc probe --preset countdown-tiny --set run.out_dir=runs/countdown-tiny
    halluc probe --preset arith-tiny --set eval.model=runs/arith-tiny/backtrack/round-1/train/model

The model: `eval.model`, else the run's start model. The probe is trained on `probe.n_train`
training problems, its layer chosen on `eval.n_tune` validation problems, its figures read on
`eval.n_problems` test problems, `eval.samples` solutions each. Writes `probe.json` (per layer the
train, validation and test ROC-AUC; for the chosen layer the test AUC pooled, within step index
and within problem beside P(backspace) and the trivial scores) and `probe.safetensors` (the chosen
layer's probe) to `probe.out_dir`, else `run.out_dir/probes/MODEL/`. With `eval.value_model` (a
`halluc value` checkpoint of this model's runs) its value of each step's prefix is a fourth
detector beside them. Done once: rerunning reads the figures back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import Config, ConfigError
from pipeline.files import read_json, write_json
from pipeline.layout import RunLayout
from pipeline.loading import load_model, task_from_config
from pipeline.measure.evaluation import load_value_model
from pipeline.measure.probe import train_probe
from pipeline.measure.stats import num
from pipeline.runtime import set_threads, stage_config
from workers.valuer import check_tokenizer


def main(cfg: Config) -> dict[str, Any]:
    set_threads(cfg)
    layout = RunLayout.of(cfg)
    model = Path(cfg.eval.model) if cfg.eval.model else layout.start_model
    out = Path(cfg.probe.out_dir) if cfg.probe.out_dir else layout.probe(model)
    figures = out / "probe.json"
    if figures.exists():
        return dict(read_json(figures))
    task = task_from_config(cfg.task)
    if not task.has_step_checker:
        raise ConfigError(f"task {task.name} has no exact step checker: a probe needs labels")
    loaded = load_model(cfg, "transformers", model, task)
    stage_config(cfg, out, only=("task", "eval", "probe"))
    splits = {
        "train": task.problems("train", cfg.probe.n_train),
        "validation": task.problems("validation", cfg.eval.n_tune),
        "test": task.problems("test", cfg.eval.n_problems),
    }
    valuer = None
    if cfg.eval.value_model:  # the value model as a fourth detector, on the same test steps
        check_tokenizer(cfg.eval.value_model, model, splits["test"][0].prompt,
                        cfg.model.trust_remote_code)  # fmt: skip
        valuer = load_value_model(cfg)
    result, probe = train_probe(
        loaded,
        task,
        splits,
        cfg.run.seed,
        samples=cfg.eval.samples,
        max_new_tokens=cfg.sampling.stream_length,
        l2=cfg.probe.l2,
        max_batch=cfg.sampling.max_batch,
        valuer=valuer,
    )
    result = {"model": str(model)} | result
    if probe is not None:
        probe.save(out / "probe.safetensors")
    write_json(figures, result)
    return result


def describe(result: dict[str, Any]) -> str:
    lines = [f"probe on {result['model']}: decision points {result['counts']}"]
    if "layers" not in result:
        return "\n".join([*lines, result.get("note", "")])
    lines += ["| layer | train AUC | validation AUC | test AUC |", "|---|---|---|---|"]
    for r in result["layers"]:
        lines.append(
            f"| {r['layer']} | {num(r['train_auc'], 3)} | {num(r['validation_auc'], 3)} | "
            f"{num(r['test_auc'], 3)} |"
        )
    lines.append(f"\nchosen layer (validation): {result['chosen_layer']}; test ROC-AUC within "
                 "problem (pooled):")  # fmt: skip
    rows = {"probe": result["probe"]["detector"]}
    if "p_backspace" in result:
        rows["P(backspace)"] = result["p_backspace"]["detector"]
    if "value_model" in result:
        rows["value model"] = result["value_model"]["detector"]
    rows |= result["probe"]["trivial"]
    for name, m in rows.items():
        lines.append(f"  {name}: {num(m['within_problem'], 3)} ({num(m['pooled'], 3)})")
    return "\n".join(lines)
