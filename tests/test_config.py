"""Config: presets load, overrides apply, bad keys and values name themselves."""

import pytest

from pipeline.config import Config, ConfigError, load_config, presets


@pytest.mark.parametrize("name", presets())
def test_every_shipped_preset_loads(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    assert cfg.hash == load_config(name).hash


def test_presets_are_shipped():
    assert {"arith-tiny", "countdown-small"} <= set(presets())


def test_overrides_apply_with_types():
    cfg = load_config("arith-tiny", ["search.n_mc=4", "search.alpha=1", "trace.unit=step"])
    assert cfg.search.n_mc == 4 and cfg.search.alpha == 1.0 and cfg.trace.unit == "step"
    assert cfg.hash != load_config("arith-tiny").hash


def test_out_dir_does_not_change_the_hash():
    assert load_config("arith-tiny", ["run.out_dir=/x"]).hash == load_config("arith-tiny").hash


@pytest.mark.parametrize(
    "override, message",
    [
        (["search.n_mcc=4"], r"unknown key 'n_mcc'; allowed keys: algorithm, policy"),
        (["serch.n_mc=4"], r"unknown key 'serch'; allowed keys: task, model, bootstrap, search"),
        (
            ["trace.unit=word"],
            r"trace.unit: 'word' is not allowed; choose one of \['token', 'step'\]",
        ),
        (["search.n_mc=many"], r"search.n_mc: expected int, got 'many'"),
        (["search.n_mc=0"], r"search.n_mc: must be at least 1"),
        (["search.alpha=1.5"], r"search.alpha: must be in \[0, 1\]"),
        (["search.n_mc"], r"must look like section.key=value"),
        (["task.name=jsonl"], r"task.path"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("arith-tiny", override)


def test_bad_preset_file_names_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("search:\n  budgett: 3\n")
    with pytest.raises(ConfigError, match=r"mine.yaml.*unknown key 'budgett'"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="unknown preset 'nope'; shipped presets: arith-tiny"):
        load_config("nope")


def test_a_run_directory_refuses_another_config(tmp_path):
    from pipeline.config import ConfigError, check_resumable, save_config

    cfg = load_config("arith-tiny", [f"run.out_dir={tmp_path}"])
    save_config(cfg, tmp_path / "config.yaml")
    check_resumable(cfg, tmp_path / "config.yaml")  # the same run resumes
    more = load_config("arith-tiny", [f"run.out_dir={tmp_path}", "run.rounds=3"])
    check_resumable(more, tmp_path / "config.yaml")  # extending a run is fine
    other = load_config("arith-tiny", [f"run.out_dir={tmp_path}", "train.error_weight=1.0"])
    with pytest.raises(ConfigError, match=r"train.error_weight: 0.2 there, 1.0 now"):
        check_resumable(other, tmp_path / "config.yaml")
