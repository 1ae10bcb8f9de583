"""Where everything in a run directory lives: the one owner of its layout. Every stage asks it.

    run.out_dir/
      config.yaml               the resolved config of the run (each stage directory has its own)
      environment.json          library versions, threads, CPU flags, git commit
      bootstrap/model/          the model trained from scratch (unless model.path is given)
      bootstrap/compute.json    what it cost
      bootstrap/eval.json       its figures: round 0 (start-eval.json when model.path is given)
      bootstrap/tb/             its training curves (TensorBoard event files; every training
                                stage has a tb/ of its own: `tensorboard --logdir` the run)
      seed-S/                   with run.seeds: seed S's sub-run, laid out like run.out_dir
      verdict.json              the arms compared over the seeds (`halluc run`)
      timing.json               wall seconds per stage, arm and round (`halluc run`)
      ARM/round-R/              one arm's round R (ARM: each of run.arms; a stage run on its
                                own uses round-R/)
        search/                 traces/ steps/ pairs/ shards, stats/, config.yaml, summary.json
        select/                 selected.parquet (what the arm trains on; the dpo arm:
                                pairs.parquet), config.yaml
        train/model/            the trained model (halluc.json: how decoding must treat it)
        train/compute.json      what training cost (rows, loss-bearing tokens, steps)
        train/done.json         written last: the model and compute.json are whole (also in
                                bootstrap/)
        train/tb/               the training curves (loss, learning rate, gradient norm; rl:
                                reward, KL, backtrack rate)
        train/reference.json    (dpo) the reference model's log-probabilities of the pairs
        train/rl-checkpoints/   (rl, while training) the newest checkpoint, and
        train/rl-reference.pt   the frozen reference model; both removed once trained
        eval.json  tune.json    that model's figures, held out and on validation problems
        curve.json              accuracy against generated tokens: best-of-N curves and the
                                samples they were read from (`measure.budget`)
        controls.json           (baseline) best-of-N and majority vote at equal tokens
        gate.json               (train.keep_best) whether the round's model was kept
      evals/NAME.json           ad-hoc evaluations (`halluc eval --set eval.model=...`)
      probes/MODEL/             a residual-stream probe of MODEL (`halluc probe`)
      value/model/              the value model (`halluc value`; value.out_dir moves it)
      value/tb/                 its training curves
      report.md  report.html

Round R searches with the model of round R-1 (round 0 with the start model; with the keep-best
gate, the latest model it kept) and trains from it (an arm that starts from another arm's model,
sft_rl: that arm's model of round R; `pipeline.arms`).
A grid (`halluc grid`, `GridLayout`) holds a run directory per row and grid.json, grid.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.arms import arm as arm_named
from pipeline.config import Config
from pipeline.files import read_json


def curves(stage_dir: Path) -> Path:
    """Where the training stage whose directory is `stage_dir` writes its TensorBoard event
    files; under the run directory, so TensorBoard names each by its path (arm and round)."""
    return stage_dir / "tb"


@dataclass(frozen=True)
class RoundLayout:
    """One round of one arm."""

    root: Path

    @property
    def search(self) -> Path:
        return self.root / "search"

    @property
    def select(self) -> Path:
        return self.root / "select"

    @property
    def selected(self) -> Path:
        return self.root / "select" / "selected.parquet"

    @property
    def selected_pairs(self) -> Path:
        """The dpo arm's selection: rows of the `pairs` table."""
        return self.root / "select" / "pairs.parquet"

    @property
    def summary(self) -> Path:
        return search_summary(self.search)

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def model(self) -> Path:
        return self.root / "train" / "model"

    @property
    def compute(self) -> Path:
        """What training cost (rows, loss-bearing tokens, optimizer steps)."""
        return compute_of(self.model)

    @property
    def eval(self) -> Path:
        return self.root / "eval.json"

    @property
    def tune(self) -> Path:
        return self.root / "tune.json"

    @property
    def curve(self) -> Path:
        """That model's accuracy against generated tokens (`pipeline.measure.budget`)."""
        return self.root / "curve.json"

    @property
    def controls(self) -> Path:
        """(the baseline arm) best-of-N and majority vote at the backtrack arm's tokens."""
        return self.root / "controls.json"

    @property
    def gate(self) -> Path:
        """`train.keep_best`: whether the round's model replaced the one it trained to replace
        (its validation accuracy beside that model's)."""
        return self.root / "gate.json"

    @property
    def rejected(self) -> bool:
        """Whether the keep-best gate turned the round's model down."""
        return self.gate.exists() and not read_json(self.gate)["kept"]


@dataclass(frozen=True)
class GridLayout:
    """A grid (`halluc grid`): a run directory per row, and the table over them.

    out_dir/NAME/   row NAME's run (a `RunLayout`)
    out_dir/grid.json  grid.md
    """

    root: Path

    def row(self, name: str) -> Path:
        return self.root / name

    @property
    def json(self) -> Path:
        return self.root / "grid.json"

    @property
    def md(self) -> Path:
        return self.root / "grid.md"


def config_of(directory: Path) -> Path:
    """The resolved config saved in a run's or a stage's `directory` (`runtime.stage_config`)."""
    return directory / "config.yaml"


def done_of(directory: Path) -> Path:
    """A stage directory's completion marker, written after every output it vouches for
    (`runtime.finished`)."""
    return directory / "done.json"


def compute_of(model: Path) -> Path:
    """What training the model at `model` cost: `compute.json` beside it (the bootstrap's and
    every round's)."""
    return model.parent / "compute.json"


def search_summary(search: Path) -> Path:
    """The figures of the search stage in `search`, written last: a stage without them has not
    finished."""
    return search / "summary.json"


def search_dirs(root: Path) -> list[Path]:
    """Every search stage's directory (ROUND/search) at any depth under `root` (a run, a seed's
    sub-run, a grid), in path order, finished or not."""
    return sorted(p for p in root.glob("**/round-*/search") if p.is_dir())


@dataclass(frozen=True)
class RunLayout:
    root: Path
    given_model: str = ""  # model.path: the start model instead of the bootstrap's

    @classmethod
    def of(cls, cfg: Config) -> RunLayout:
        return cls(Path(cfg.run.out_dir), cfg.model.path)

    @property
    def config(self) -> Path:
        return config_of(self.root)

    @property
    def environment(self) -> Path:
        return self.root / "environment.json"

    @property
    def bootstrap(self) -> Path:
        return self.root / "bootstrap"

    @property
    def bootstrap_model(self) -> Path:
        return self.root / "bootstrap" / "model"

    @property
    def bootstrap_config(self) -> Path:
        return config_of(self.bootstrap)

    @property
    def bootstrap_eval(self) -> Path:
        return self.bootstrap / "eval.json"

    @property
    def timing(self) -> Path:
        """Where `halluc run` adds the wall seconds of each stage (`runtime.timed`)."""
        return self.root / "timing.json"

    @property
    def verdict(self) -> Path:
        """The comparison of the arms over the seeds (`halluc run`)."""
        return self.root / "verdict.json"

    def seed(self, seed: int) -> Path:
        """Seed `seed`'s sub-run of a run over `run.seeds`: a run directory of its own."""
        return self.root / f"seed-{seed}"

    def seed_dirs(self) -> list[Path]:
        """The seed sub-runs there are, in path order (none for a run without `run.seeds`)."""
        return sorted(self.root.glob("seed-*"))

    def rounds(self, arm: str = "") -> list[int]:
        """The rounds of `arm` (empty: outside the arms) that have a directory, in order."""
        base = self.root / arm if arm else self.root
        return sorted(int(p.name.removeprefix("round-")) for p in base.glob("round-*"))

    @property
    def start_model(self) -> Path:
        """The model round 0 searches with: `model.path`, else the bootstrap model."""
        return Path(self.given_model) if self.given_model else self.bootstrap_model

    @property
    def start_tune(self) -> Path:
        """The start model's figures on validation problems (where settings are chosen)."""
        return self.start_eval.with_name(self.start_eval.stem.replace("eval", "tune") + ".json")

    @property
    def start_curve(self) -> Path:
        """The start model's accuracy against generated tokens."""
        return self.start_eval.with_name(self.start_eval.stem.replace("eval", "curve") + ".json")

    @property
    def start_eval(self) -> Path:
        """Round 0's figures: the start model's evaluation."""
        if self.given_model:
            return self.root / "start-eval.json"
        return self.bootstrap_eval

    def round(self, r: int, arm: str = "") -> RoundLayout:
        """Round `r` of `arm` (empty: a stage run on its own, outside the arms)."""
        base = self.root / arm if arm else self.root
        return RoundLayout(base / f"round-{r}")

    def model(self, r: int, arm: str = "") -> Path:
        """The model round `r` of `arm` searches with and trains from: the arm's model after the
        round before (`kept`; round 0: the start model), or for an arm that starts from another
        (sft_rl) that arm's model of round `r`, which it trains further."""
        if arm and (start := arm_named(arm).starts_from):
            return self.round(r, start).model
        held = self.kept(r - 1, arm)
        return held.model if held else self.start_model

    def kept(self, r: int, arm: str = "") -> RoundLayout | None:
        """The round whose model `arm` holds after round `r`: round `r`, or where the keep-best
        gate rejected it the latest earlier round it kept; None: the start model."""
        for q in range(r, -1, -1):
            if not self.round(q, arm).rejected:
                return self.round(q, arm)
        return None

    def adhoc_eval(self, model: str | Path, config_hash: str) -> Path:
        """Where an ad-hoc evaluation of `model` goes: never over a stage's figures."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(model)).strip("_")[-80:] or "model"
        return self.root / "evals" / f"{slug}-{config_hash}.json"

    def probe(self, model: str | Path) -> Path:
        """Where `halluc probe` writes the probe of `model`: never beside a user's model."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(model)).strip("_")[-80:] or "model"
        return self.root / "probes" / slug

    @property
    def value(self) -> Path:
        """Where `halluc value` writes unless `value.out_dir` says otherwise."""
        return self.root / "value"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"
