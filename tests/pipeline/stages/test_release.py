"""`halluc release`: a dataset repo folder that `datasets` loads, versions, and an offline push."""

import json
import logging
import shutil

import datasets
import huggingface_hub
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import constants

from pipeline import cli
from pipeline.shards import FEATURES, shard_files
from pipeline.stages.release import ReleaseError, size_category
from pipeline.stages.release import main as release
from tests.conftest import one_line
from tests.pipeline.stages.test_search import SMALL as FAKE


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory shaped like `halluc run`'s: round 0 of both arms is the same search."""
    root = tmp_path_factory.mktemp("run")
    args = ["search", "--set", f"run.out_dir={root / 'backtrack'}"]
    assert cli.main(args + sum((["--set", s] for s in FAKE), [])) == 0
    shutil.copytree(root / "backtrack" / "round-0", root / "baseline" / "round-0")
    (root / "report.md").write_text(
        "# report\n\nTask `arithmetic`, 500 held-out problems.\n\n| round | acc |\n|---|---|\n"
        "| 0 | 60.4% |\n"
    )
    return root


def stage_rows(root, table):
    return pq.read_table(shard_files(root / "backtrack" / "round-0" / "search", table)).num_rows


def front_matter(folder):
    text = (folder / "README.md").read_text()
    return yaml.safe_load(text.split("---\n")[1]), text


def test_every_config_loads_with_its_features(run_dir, tmp_path):
    folder = release(run_dir, "arith", out=tmp_path)
    assert folder == tmp_path / "arith"
    for table in ("traces", "steps", "pairs"):
        # a cache of its own: a shared one may hold an earlier release of the same name
        ds = datasets.load_dataset(
            str(folder), table, split="train", cache_dir=str(tmp_path / "cache")
        )
        assert ds.features == FEATURES[table]
        assert ds.num_rows == stage_rows(run_dir, table) > 0  # both arms' round 0, kept once
    meta, text = front_matter(folder)
    assert meta["license"] == "apache-2.0"
    assert meta["task_categories"] == ["text-generation"]
    assert meta["size_categories"] == [size_category(stage_rows(run_dir, "traces"))]
    assert [c["config_name"] for c in meta["configs"]] == ["traces", "steps", "pairs"]
    hashes = set(pq.read_table(folder / "data", columns=["config_hash"]).column(0).to_pylist())
    assert all(f"`{h}`" in text for h in hashes)
    assert "| 0 | 60.4% |" in text  # the run's evaluation table
    assert json.loads((folder / "release.json").read_text())["version"] == 1


def test_a_release_is_never_silently_overwritten(run_dir, tmp_path):
    first = release(run_dir, "arith", out=tmp_path)
    before = (first / "data" / "traces-00000-of-00001.parquet").read_bytes()
    assert release(run_dir, "arith", out=tmp_path) == first  # same shards: nothing to do
    more = tmp_path / "more"
    shutil.copytree(run_dir, more)
    args = ["search", "--set", f"run.out_dir={more / 'backtrack'}", "--set", "run.round=1"]
    assert cli.main(args + sum((["--set", s] for s in FAKE), [])) == 0
    with pytest.raises(ReleaseError, match="--bump"):
        release(more, "arith", out=tmp_path)
    assert (first / "data" / "traces-00000-of-00001.parquet").read_bytes() == before
    second = release(more, "arith", out=tmp_path, bump=True)
    assert json.loads((second / "release.json").read_text())["version"] == 2
    kept = tmp_path / "arith@v1"
    assert (kept / "data" / "traces-00000-of-00001.parquet").read_bytes() == before
    rounds = set(pq.read_table(second / "data", columns=["round"]).column(0).to_pylist())
    assert rounds == {0, 1}


def test_bad_input_says_what_to_do(run_dir, tmp_path, capsys):
    assert cli.main(["release", str(tmp_path / "nope"), "--name", "x", "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    with pytest.raises(ReleaseError, match="not a Halluc release"):
        release(run_dir, "taken", out=tmp_path)
    with pytest.raises(ReleaseError, match="plain folder name"):
        release(run_dir, "../up", out=tmp_path)
    half = tmp_path / "half"
    shutil.copytree(run_dir, half)
    (half / "baseline" / "round-0" / "search" / "summary.json").unlink()
    with pytest.raises(ReleaseError, match="not finished"):
        release(half, "x", out=tmp_path)
    assert not (tmp_path / "x").exists()


@pytest.fixture
def no_login(monkeypatch, tmp_path):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def test_push_uploads_once_and_never_writes_the_token(
    run_dir, tmp_path, monkeypatch, no_login, capsys, caplog
):
    secret = "hf_test_secret_0123456789"
    monkeypatch.setenv("HF_TOKEN", secret)
    calls = []

    def fake_init(self, token=None, **kw):
        calls.append(("token", token))

    monkeypatch.setattr(huggingface_hub.HfApi, "__init__", fake_init)
    monkeypatch.setattr(
        huggingface_hub.HfApi, "create_repo", lambda self, *a, **kw: calls.append(("create", a, kw))
    )
    monkeypatch.setattr(
        huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw))
    )
    caplog.set_level(logging.DEBUG)
    args = ["release", str(run_dir), "--name", "pushed", "--out", str(tmp_path)]
    assert cli.main([*args, "--push", "me/arith"]) == 0
    uploads = [c for c in calls if c[0] == "upload"]
    assert len(uploads) == 1
    kw = uploads[0][1]
    assert kw["repo_id"] == "me/arith" and kw["repo_type"] == "dataset"
    assert kw["folder_path"] == str(tmp_path / "pushed")
    assert ("token", secret) in calls  # from the environment, to the client only
    out = capsys.readouterr()
    assert secret not in out.out + out.err + caplog.text
    for f in (tmp_path / "pushed").rglob("*"):
        assert not f.is_file() or secret.encode() not in f.read_bytes()


def test_push_without_a_token_keeps_the_folder_and_says_what_to_do(
    run_dir, tmp_path, no_login, capsys
):
    args = ["release", str(run_dir), "--name", "local", "--out", str(tmp_path)]
    assert cli.main([*args, "--push", "me/arith"]) == 2
    assert "set HF_TOKEN" in capsys.readouterr().err
    assert (tmp_path / "local" / "README.md").exists()


def test_nothing_is_published_from_a_shard_that_fails_the_check(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    shard = bad / "baseline" / "round-0" / "search" / "traces" / "batch-00001.parquet"
    pq.write_table(pq.read_table(shard).drop_columns(["loss_mask", "visible_text"]), shard)
    args = ["release", str(bad), "--name", "x", "--out", str(tmp_path / "out")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert str(shard) in err and "loss_mask" in err
    assert not (tmp_path / "out" / "x").exists()


def test_the_same_run_by_another_path_is_the_same_release(run_dir, tmp_path, monkeypatch):
    first = release(run_dir, "arith", out=tmp_path)
    monkeypatch.chdir(run_dir.parent)
    assert release(run_dir.name, "arith", out=tmp_path) == first  # relative path: no-op
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(run_dir, moved)
    assert release(moved, "arith", out=tmp_path) == first  # a copy of the run: no-op
    assert json.loads((first / "release.json").read_text())["version"] == 1


def test_the_card_loads_the_folder_it_was_written_to(run_dir, tmp_path):
    folder = release(run_dir, "arith", out=tmp_path / "releases")
    _, text = front_matter(folder)
    assert f'load_dataset("{folder}", "traces"' in text
    assert "datasets/arith" not in text


def test_a_release_removes_what_a_killed_release_left(run_dir, tmp_path):
    stale = tmp_path / ".arith.k1ll3d00.tmp"  # a release killed before its rename
    (stale / "data").mkdir(parents=True)
    other = tmp_path / ".arith.v2.busy0000.tmp"  # another name's temporary
    other.mkdir()
    release(run_dir, "arith", out=tmp_path)
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".arith.v2.busy0000.tmp", "arith"]


@pytest.fixture(scope="module")
def value_model(tmp_path_factory):
    from tests.pipeline.stages.test_value import make_value_model

    return make_value_model(tmp_path_factory.mktemp("value"))


def test_a_release_includes_the_value_model_and_its_label_quality_only_when_asked(
    run_dir, value_model, tmp_path
):
    import numpy as np
    from transformers import AutoModelForTokenClassification

    from pipeline.measure.value_quality import markdown
    from pipeline.stages.value import score

    plain = release(run_dir, "plain", out=tmp_path)
    assert not (plain / "value-model").exists()
    assert "Value model" not in (plain / "README.md").read_text()
    assert json.loads((plain / "release.json").read_text())["value_model"] is None
    args = ["release", str(run_dir), "--name", "prm", "--out", str(tmp_path)]
    assert cli.main([*args, "--value-model", str(value_model)]) == 0
    folder = tmp_path / "prm"
    released = AutoModelForTokenClassification.from_pretrained(folder / "value-model")
    source = AutoModelForTokenClassification.from_pretrained(value_model)
    ids = [[3, 4, 5, 6], [7, 8]]
    assert np.array_equal(score(released, ids), score(source, ids))
    _, text = front_matter(folder)
    quality = json.loads((value_model / "label_quality.json").read_text())
    assert "## Value model" in text and "targets `mc` (the soft Monte Carlo value" in text
    assert "144 `steps` rows of 24 training" in text  # where its labels come from
    assert f'from_pretrained("{folder / "value-model"}")' in text
    assert markdown(quality) in text  # its measured accuracy, as computed beside the model
    auc = quality["mc_vs_exact"]["all"]["roc_auc"]
    assert f"ROC-AUC {auc:.3f} over all {quality['mc_vs_exact']['all']['n']:,} rows" in text
    assert datasets.load_dataset(str(folder), "steps", split="train").num_rows > 0
    # the same run with a model is another release than without it
    with pytest.raises(ReleaseError, match="--bump"):
        release(run_dir, "plain", out=tmp_path, value_model=value_model)
    with pytest.raises(ReleaseError, match="not a value model written by `halluc value`"):
        release(run_dir, "x", out=tmp_path, value_model=run_dir)
    assert not (tmp_path / "x").exists()


def test_a_failed_push_is_one_line_and_keeps_the_folder(
    run_dir, tmp_path, monkeypatch, no_login, capsys
):
    """Before: a push that failed (network, permission) printed a traceback."""
    monkeypatch.setenv("HF_TOKEN", "hf_test_secret_0123456789")
    monkeypatch.setattr(huggingface_hub.HfApi, "__init__", lambda self, token=None, **kw: None)

    def refused(self, *a, **kw):
        raise ConnectionError("Max retries exceeded with url: /api/repos/create\nmore detail")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refused)
    args = ["release", str(run_dir), "--name", "kept", "--out", str(tmp_path)]
    assert cli.main([*args, "--push", "me/arith"]) == 2
    err = capsys.readouterr().err
    assert one_line(err)
    assert "me/arith failed (ConnectionError: Max retries exceeded" in err
    assert "hf_test_secret" not in err
    assert (tmp_path / "kept" / "README.md").exists()
