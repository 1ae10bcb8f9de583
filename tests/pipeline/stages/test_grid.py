"""`halluc grid`: a grid file is checked row by row before anything runs, each row is one
`halluc run` into its own directory, finished rows are skipped, a killed grid resumes to the same
table, rows with the same task and bootstrap share the bootstrap model, and the command written in
grid.md makes the same table again. `run.main` is replaced by a fake that writes what the real
one writes (verdict.json from `measure.verdict`, the evals and the bootstrap model where the
layout puts them); one case runs the real thing on the tiny config."""

import json
import os
import re
import shlex
import shutil

import pytest

from pipeline import cli
from pipeline.arms import REQUIRED as ARMS
from pipeline.config import ConfigError
from pipeline.files import write_json, write_text
from pipeline.layout import RunLayout
from pipeline.measure import evaluation, report
from pipeline.measure.verdict import verdict
from pipeline.runtime import stage_config
from pipeline.stages import bootstrap, grid, run
from tests.conftest import TINY

LEVERS = """\
- name: defaults
  set: {}
- name: step-end
  set: {trace.backspace_at: step_end}
- name: subtokens
  set: {train.init: subtokens, bootstrap.steps: 500}
- name: token
  set: {trace.bksp_token: "<|erase|>"}
"""


def problems(acc):
    """Per-problem shares on 4 problems with mean `acc` (a multiple of 0.25)."""
    right = round(4 * acc)
    return [1.0] * right + [0.0] * (4 - right)


def fake_eval(acc, rate):
    """An eval.json: greedy at `acc`, T=1.0 a quarter lower with backtrack rate `rate`."""
    return {
        "settings": {
            "greedy": {"temperature": 0.0, "accuracy": acc, "per_problem": problems(acc)}
            | {"backtrack_rate": 0.0, "step_erase_precision": None, "chance_precision": 0.05},
            "T=1.0": {"temperature": 1.0, "accuracy": acc - 0.25}
            | {"per_problem": problems(acc - 0.25), "backtrack_rate": rate}
            | {"step_erase_precision": 0.5, "chance_precision": 0.1},
        },
        "detector": {"roc_auc": 0.75},
    }


def figures(cfg, seed, r):
    """What the fake run measures: the backtrack arm's accuracy moves with the row's trace
    setting and the seed, its backtrack rate at T=1.0 with the row's token init."""
    up = 0.25 * (r > 0) * (1 + (cfg.trace.backspace_at == "step_end") - seed)
    return 0.5 + up, 0.25 if cfg.train.init == "subtokens" else 0.125


class FakeRun:
    """`run.main` that writes a finished run's files (dying after seed `dies` of row `dies_in`
    when told): per seed the bootstrap model (trained here unless there), its eval, each round's
    evals and compute; then verdict.json from `pipeline.measure.verdict` and the report."""

    def __init__(self):
        self.calls, self.trained, self.found = [], [], {}
        self.dies_in, self.dies = None, None

    def __call__(self, cfg):
        self.calls.append(cfg)
        stage_config(cfg, RunLayout.of(cfg).root)
        seeds, runs = cfg.run.seeds, []
        for seed in seeds:
            runs.append(self.seed(run.seed_config(cfg, seed), seed))
            if self.dies_in and cfg.run.out_dir.endswith(self.dies_in) and seed == self.dies:
                raise KeyboardInterrupt
        result = verdict(runs, seeds)
        rounds = range(cfg.run.rounds)
        result["compute"] = [
            {
                arm: [{"loss_tokens": 100 + 2 * s + i, "optimizer_steps": 4} for _ in rounds]
                for i, arm in enumerate(ARMS)
            }
            for s in seeds
        ]
        write_json(RunLayout.of(cfg).root / "verdict.json", result)
        write_text(RunLayout.of(cfg).report_html, "<html></html>")
        return {}

    def seed(self, cfg, seed):
        lay = RunLayout.of(cfg)
        self.found[cfg.run.out_dir] = (
            sorted(os.listdir(lay.bootstrap)) if lay.bootstrap.exists() else []
        )
        stage_config(cfg, lay.bootstrap, only=("task", "bootstrap"))
        if not lay.bootstrap_model.exists():
            self.trained.append(cfg.run.out_dir)
            write_text(lay.bootstrap_model / "weights", f"{cfg.bootstrap.steps} {seed}")
        out = {"controls": [None] * (cfg.run.rounds + 1)}
        for arm in ARMS:
            out[arm] = []
            for r in range(cfg.run.rounds + 1):
                acc, rate = figures(cfg, seed, r) if arm == "backtrack" or r == 0 else (0.5, 0.0)
                e = fake_eval(acc, rate)
                write_json(lay.start_eval if r == 0 else lay.round(r - 1, arm).eval, e)
                write_json(lay.start_tune if r == 0 else lay.round(r - 1, arm).tune, e)
                out[arm].append({"eval": e, "tune": e})
        return out


@pytest.fixture
def fake(monkeypatch):
    f = FakeRun()
    monkeypatch.setattr(run, "main", f)
    return f


def levers(tmp_path, text=LEVERS):
    path = tmp_path / "levers.yaml"
    path.write_text(text)
    return path


def make(path, out, seeds=(0, 1), *sets):
    return grid.main(path, "arith-tiny", [f"run.out_dir={out}", "run.rounds=1", *sets], [*seeds])


def test_each_row_runs_once_into_its_directory_and_the_table_reads_its_verdict(tmp_path, fake):
    out = tmp_path / "grid"
    result = make(levers(tmp_path), out)
    assert [c.run.out_dir for c in fake.calls] == [
        str(out / n) for n in ("defaults", "step-end", "subtokens", "token")
    ]
    assert [c.trace.backspace_at for c in fake.calls] == ["any", "step_end", "any", "any"]
    assert [c.run.seeds for c in fake.calls] == [[0, 1]] * 4
    records = json.loads((out / "grid.json").read_text())["rows"]
    assert [r["name"] for r in records] == ["defaults", "step-end", "subtokens", "token"]
    assert records[1]["overrides"] == {"trace.backspace_at": "step_end"}
    for rec in records:  # the verdict's own figures, round by round
        saved = json.loads((out / rec["name"] / "verdict.json").read_text())["rounds"]
        assert [{k: r[k] for k in saved[0]} for r in rec["rounds"]] == saved
        assert rec["last"] == rec["rounds"][-1]
    # step-end: seed 0 at 100%, seed 1 at 75% after round 1; the baseline at 50%
    assert records[1]["last"]["backtrack"]["accuracy"] == 0.875
    assert records[2]["last"]["at_t1"]["backtrack_rate"] == 0.25
    assert records[0]["last"]["compute"]["baseline"] == {
        "loss_tokens": 102.0,
        "optimizer_steps": 4.0,
    }
    assert records[0]["rounds"][0]["compute"] is None
    lines = [line for line in result["table"].splitlines() if line.startswith("| step-end")]
    assert lines[0] == (
        "| step-end | 0 | 50.0% [50.0% · 50.0%] greedy | 50.0% [50.0% · 50.0%] greedy | +0.0 pts "
        "(+0.0 to +0.0) | – | – | – | 0.750 / 0.750 | – | 12.5% | 50.0% (10.0%) | 50.0% / 50.0% | "
        "– / – | – / – |"
    )
    # round 1 in the verdict's own words (report.summary_rows), then T=1.0 and the compute
    summary = report.summary_rows(json.loads((out / "step-end" / "verdict.json").read_text()))
    assert summary[2][1] == "87.5% [100.0% · 75.0%] greedy" and "+37.5 pts (" in summary[2][3]
    rest = ["12.5%", "50.0% (10.0%)", "87.5% / 50.0%", "101 / 102", "4 / 4"]
    cells = ["step-end", *summary[2][:7], summary[2][10], summary[2][11], *rest]
    assert lines[1] == "| " + " | ".join(cells) + " |"
    md = (out / "grid.md").read_text()
    assert result["table"] in md and "`trace.backspace_at=step_end`" in md


def test_finished_rows_are_skipped(tmp_path, fake):
    out, path = tmp_path / "grid", levers(tmp_path)
    first = make(path, out)
    fake.calls.clear()
    assert make(path, out) == first and fake.calls == []
    # one more round: no row is finished (`halluc run` extends each)
    make(path, out, (0, 1), "run.rounds=2")
    assert [c.run.rounds for c in fake.calls] == [2, 2, 2, 2]
    # one more seed: every row runs again over the three, the grid's table over the three
    fake.calls.clear()
    more = make(path, out, (0, 1, 2), "run.rounds=2")
    assert [c.run.seeds for c in fake.calls] == [[0, 1, 2]] * 4
    assert json.loads((out / "grid.json").read_text())["seeds"] == [0, 1, 2]
    assert "Seeds 0, 1, 2" in (out / "grid.md").read_text() and more["table"]


def test_a_killed_grid_resumes_where_it_stopped_to_the_same_table(tmp_path, fake):
    path = levers(tmp_path)
    make(path, tmp_path / "whole")
    fake.calls.clear()
    out = tmp_path / "killed"
    fake.dies_in, fake.dies = "step-end", 0  # killed in row 2, after its seed 0
    with pytest.raises(KeyboardInterrupt):
        make(path, out)
    assert (out / "defaults" / "verdict.json").exists() and not (out / "grid.json").exists()
    killed = fake.calls[-1]
    fake.dies_in, fake.calls = None, []
    make(path, out)
    # row 1 skipped; row 2 resumed with the config it was killed with (so `halluc run` resumes)
    assert [c.run.out_dir for c in fake.calls] == [
        killed.run.out_dir,
        *(str(out / n) for n in ("subtokens", "token")),
    ]
    assert fake.calls[0] == killed
    got = (out / "grid.json").read_text().replace(str(out), "OUT")
    assert got == (tmp_path / "whole" / "grid.json").read_text().replace(
        str(tmp_path / "whole"), "OUT"
    )


def test_rows_runs_only_the_named_rows_and_shares_the_bootstrap_of_one_it_skips(tmp_path, fake):
    out, path = tmp_path / "grid", levers(tmp_path)
    grid.main(path, "arith-tiny", [f"run.out_dir={out}", "run.rounds=1"], [0], ["defaults"])
    fake.calls.clear()
    fake.trained.clear()
    result = grid.main(
        path, "arith-tiny", [f"run.out_dir={out}", "run.rounds=1"], [0], ["token", "step-end"]
    )
    # file order, not the option's; step-end copies defaults' model though defaults did not run
    assert [c.run.out_dir for c in fake.calls] == [str(out / "step-end"), str(out / "token")]
    assert fake.trained == [str(out / "token" / "seed-0")]
    records = json.loads((out / "grid.json").read_text())
    assert [r["name"] for r in records["rows"]] == ["step-end", "token"]
    assert "--rows token,step-end" in records["command"] and "subtokens" not in result["table"]
    with pytest.raises(ConfigError, match=r"no row named 'nope' \(rows: \['defaults'"):
        grid.main(path, "arith-tiny", [f"run.out_dir={out}", "run.rounds=1"], [0], ["nope"])


def test_rows_with_the_same_task_and_bootstrap_share_the_model_and_nothing_else(tmp_path, fake):
    out = tmp_path / "grid"
    make(levers(tmp_path), out)
    # defaults trains; step-end (another trace.backspace_at) copies; subtokens (another
    # bootstrap.steps) and token (another backspace token) train
    assert fake.trained == [
        str(out / r / f"seed-{s}") for r in ("defaults", "subtokens", "token") for s in (0, 1)
    ]
    for s in (0, 1):
        copied = out / "step-end" / f"seed-{s}" / "bootstrap"
        assert fake.found[str(copied.parent)] == ["model"]  # no eval.json, tune.json, config.yaml
        weights = (copied / "model" / "weights").read_text()
        assert (
            weights
            == (out / "defaults" / f"seed-{s}" / "bootstrap" / "model" / "weights").read_text()
        )
    assert (out / "defaults" / "seed-0" / "bootstrap" / "model" / "weights").exists()


BAD = {
    "a bad value": (
        "  set: {train.init: nonsense}",
        "row 2 (line 3, 'b'): train.init: 'nonsense' is not allowed",
    ),
    "an unknown key": ("  set: {train.nope: 1}", "row 2 (line 3, 'b'): train: unknown key 'nope'"),
    "a moved key": (
        "  set: {search.n_mc: 4}",
        "row 2 (line 3, 'b'): search.n_mc has moved: use search.omegaprm.n_mc",
    ),
    "a section as key": (
        "  set: {train: {init: mean}}",
        "row 2 (line 3, 'b'): set key 'train' must look like section.key",
    ),
    "a row key": ("  sets: {}", "row 2 (line 3): unknown key 'sets'; a row has name, set"),
    "a grid key": ("  set: {run.out_dir: x}", "run.out_dir belongs to the whole grid"),
    "a set that is a list": ("  set: [train.init=mean]", "set must be a mapping"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_row_stops_the_grid_before_anything_runs(tmp_path, fake, case):
    line, message = BAD[case]
    path = levers(tmp_path, f"- name: a\n  set: {{}}\n- name: b\n{line}\n")
    with pytest.raises(ConfigError) as err:
        make(path, tmp_path / "grid")
    assert str(err.value).startswith(f"{path}, row") and message in str(err.value)
    assert fake.calls == [] and not (tmp_path / "grid").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("- name: a\n- name: a\n", "row 2 (line 2, 'a'): the name 'a' is already row 1's"),
        ("- name: ../up\n", "row 1 (line 1): name must be a directory name"),
        ("- set: {}\n", "row 1 (line 1): name must be a directory name"),
        ("name: a\nset: {}\n", "a grid file is a list of rows"),
        ("", "a grid file is a list of rows"),
        ("- name: [a\n", "not valid YAML"),
    ],
)
def test_a_bad_grid_file_says_where(tmp_path, fake, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make(levers(tmp_path, text), tmp_path / "grid")
    assert fake.calls == []


def test_a_row_changed_after_it_ran_is_refused_before_anything_runs(tmp_path, fake):
    out = tmp_path / "grid"
    make(levers(tmp_path), out)
    fake.calls.clear()
    changed = LEVERS.replace("step_end", "any").replace("subtokens}", "words}")
    with pytest.raises(ConfigError) as err:
        make(levers(tmp_path, changed), out)
    assert "row 2 (line 3, 'step-end')" in str(err.value)
    assert "trace.backspace_at: 'step_end' there, 'any' now" in str(err.value)
    assert fake.calls == []


def test_a_run_directory_is_not_a_grid(tmp_path, fake):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("run: {}\n")
    with pytest.raises(ConfigError, match="not a grid"):
        make(levers(tmp_path), tmp_path / "run")


def test_the_cli_command_in_grid_md_makes_the_same_table(tmp_path, fake, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    levers(tmp_path)
    args = ["grid", "--grid", "levers.yaml", "--seeds", "0,1", "--set", "run.out_dir=out"]
    assert cli.main([*args, "--set", "run.rounds=1", "--rows", "subtokens,token"]) == 0
    md = (tmp_path / "out" / "grid.md").read_text()
    assert "| subtokens | 1 |" in capsys.readouterr().out and "| defaults |" not in md
    [command] = re.findall(r"```bash\n(.*)\n```", md)
    shutil.rmtree(tmp_path / "out")
    fake.calls.clear()
    argv = shlex.split(command)
    assert argv[:2] == ["halluc", "grid"]
    assert cli.main(argv[1:]) == 0 and len(fake.calls) == 2
    assert (tmp_path / "out" / "grid.md").read_text() == md


def test_cli_errors_are_one_line(tmp_path, fake, capsys):
    path = levers(tmp_path, "- name: a\n  set: {train.init: nonsense}\n")
    assert cli.main(["grid", "--grid", str(path), "--set", f"run.out_dir={tmp_path}/g"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"halluc grid: {path}, row 1") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        cli.main(["grid", "--grid", str(path), "--seeds", "0,x"])
    assert "give seeds as 0,1,2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["grid", "--grid", str(path), "--rows", "a,a"])
    assert "give row names as a,b, each once" in capsys.readouterr().err


def test_real_runs_share_the_bootstrap_and_the_table_reads_their_evals(
    tmp_path, trained, monkeypatch
):
    """Three rows over seed 0, round 0 only: the first starts from the session's bootstrap model,
    the others from a copy of it (bootstrap training would fail here); step-end (another trace
    setting) evaluates it itself, lr (a training setting only) takes the first row's evaluations."""
    out = tmp_path / "grid"
    shutil.copytree(
        trained[0] / "bootstrap" / "model", out / "defaults" / "seed-0" / "bootstrap" / "model"
    )

    def no_training(*a, **kw):
        raise AssertionError("the bootstrap model should have been shared")

    evaluated = []
    real = evaluation.evaluate_model
    monkeypatch.setattr(bootstrap, "train", no_training)
    monkeypatch.setattr(
        evaluation,
        "evaluate_model",
        lambda path, *a, **kw: evaluated.append(path) or real(path, *a, **kw),
    )
    path = levers(
        tmp_path,
        "- name: defaults\n- name: step-end\n  set: {trace.backspace_at: step_end}\n"
        "- name: lr\n  set: {train.lr: 0.001}\n",
    )
    grid.main(
        path, "arith-tiny", [f"run.out_dir={out}", *TINY, "eval.n_problems=8", "run.rounds=0"], [0]
    )
    rows = [p.parents[2].name for p in evaluated]
    assert rows == ["defaults", "defaults", "step-end", "step-end"]  # held-out, validation
    for name in ("eval.json", "tune.json", "curve.json"):  # as the row would write them
        own = (out / "defaults" / "seed-0" / "bootstrap" / name).read_text()
        copied = (out / "lr" / "seed-0" / "bootstrap" / name).read_text()
        assert copied == own.replace(f"{out}/defaults/", f"{out}/lr/")
    records = json.loads((out / "grid.json").read_text())["rows"]
    for rec in records:
        seed0 = out / rec["name"] / "seed-0" / "bootstrap"
        assert (seed0 / "eval.json").exists() and (out / rec["name"] / "report.html").exists()
        t1 = json.loads((seed0 / "eval.json").read_text())["settings"]["T=1.0"]
        assert rec["last"]["at_t1"]["backtrack_rate"] == t1["backtrack_rate"]
        assert rec["last"]["at_t1"]["chance_precision"] == t1["chance_precision"]
    model = out / "step-end" / "seed-0" / "bootstrap" / "model"
    for f in (trained[0] / "bootstrap" / "model").iterdir():
        assert (model / f.name).read_bytes() == f.read_bytes()
    table = [line for line in (out / "grid.md").read_text().splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[:2] for line in table[1:]] == [
        ["| defaults", "0"],
        ["| step-end", "0"],
        ["| lr", "0"],
    ]
