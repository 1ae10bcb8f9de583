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
    sets = ["search.omegaprm.n_mc=4", "search.omegaprm.alpha=1", "trace.unit=step"]
    cfg = load_config("arith-tiny", sets)
    assert cfg.search.omegaprm.n_mc == 4 and cfg.search.omegaprm.alpha == 1.0
    assert cfg.trace.unit == "step"
    assert cfg.hash != load_config("arith-tiny").hash


def test_nested_sections_reach_the_algorithms_and_tasks_unchanged():
    from search.mcts import MctsParams
    from search.omegaprm import OmegaParams

    cfg = load_config(
        "arith-tiny",
        ["search.mcts.width=2", "search.fake.trap_rate=0.25", "task.countdown.n_numbers=3"],
    )
    assert cfg.search.mcts == MctsParams(width=2)  # the search's own dataclass, no mapping
    assert isinstance(cfg.search.omegaprm, OmegaParams) and cfg.search.omegaprm.budget == 8
    assert cfg.search.fake.trap_rate == 0.25 and cfg.task.countdown.n_numbers == 3


def test_every_task_option_reaches_the_task():
    from pipeline.loading import task_from_config

    sets = ["task.name=countdown", "task.countdown.n_numbers=3", "task.countdown.max_number=20"]
    sets += ["task.countdown.min_target=10", "task.countdown.max_target=50", "task.seed=3"]
    task = task_from_config(load_config("arith-tiny", sets).task)
    problems = task.problems("train", 5)
    assert all(len(p.meta["numbers"]) == 3 and max(p.meta["numbers"]) <= 20 for p in problems)
    assert all(10 <= p.meta["target"] <= 50 for p in problems)
    held = load_config("arith-tiny", [*sets, "task.countdown.heldout_targets=[11, 12]"]).task
    assert {p.meta["target"] for p in task_from_config(held).problems("test", 6)} <= {11, 12}
    with pytest.raises(ConfigError, match=r"heldout_targets\[1\]: expected int, got 'x'"):
        load_config("arith-tiny", ["task.countdown.heldout_targets=[3, x]"])
    arith = task_from_config(load_config("arith-tiny", ["task.arithmetic.op=mul"]).task)
    assert "*" in arith.problems("train", 1)[0].prompt


@pytest.mark.parametrize(
    "old, new",
    [
        ("search.n_mc", "search.omegaprm.n_mc"),
        ("search.mcts_c_puct", "search.mcts.c_puct"),
        ("search.fake_error_rate", "search.fake.error_rate"),
        ("task.digits", "task.arithmetic.digits"),
        ("task.path", "task.jsonl.path"),
    ],
)
def test_old_flat_keys_name_their_new_place(old, new):
    with pytest.raises(ConfigError, match=f"{old} has moved: use {new}"):
        load_config("arith-tiny", [f"{old}=1"])
    with pytest.raises(ConfigError, match="train.base was removed: training starts from"):
        load_config("arith-tiny", ["train.base=/x"])


def test_out_dir_does_not_change_the_hash():
    assert load_config("arith-tiny", ["run.out_dir=/x"]).hash == load_config("arith-tiny").hash


@pytest.mark.parametrize(
    "override, message",
    [
        (["search.n_mcc=4"], r"search: unknown key 'n_mcc'; allowed keys: algorithm, policy"),
        (["search.omegaprm.k=4"], r"search.omegaprm: unknown key 'k'; allowed keys: n_screen"),
        (["serch.n_mc=4"], r"unknown key 'serch'; allowed keys: task, model, bootstrap, search"),
        (
            ["trace.unit=word"],
            r"trace.unit: 'word' is not allowed; choose one of \['token', 'step'\]",
        ),
        (
            ["trace.placement=at_end"],
            r"trace.placement: 'at_end' is not allowed; choose one of \['at_error', 'at_detection'",
        ),
        (
            ["trace.placement=at_token", "trace.backspace_at=step_end", "trace.unit=step"],
            r"trace.placement: at_token puts each backspace inside a step, but "
            r"trace.backspace_at=step_end with trace.unit=step",
        ),
        (["search.omegaprm.n_mc=many"], r"search.omegaprm.n_mc: expected int, got 'many'"),
        (["search.omegaprm.n_mc=0"], r"search.omegaprm.n_mc: must be at least 1"),
        (["search.omegaprm.alpha=1.5"], r"search.omegaprm.alpha: must be in \[0, 1\]"),
        (["search.temperature=-1"], r"search.temperature: must be >= 0"),
        (["eval.temperature=0.5"], r"eval.temperature has moved: use eval.temperatures"),
        (["eval.temperatures=[0.7, 0]"], r"eval.temperatures: each must be > 0"),
        (["eval.temperatures=0.7"], r"eval.temperatures: expected a list"),
        (["search.omegaprm"], r"must look like section.key=value"),
        (["task.name=jsonl"], r"task.jsonl.path"),
        (["select.bksp_share=1"], r"select.bksp_share: must be in \[0, 1\) \(0: off\) or -1"),
        (["select.bksp_share=-0.5"], r"select.bksp_share: must be in \[0, 1\)"),
        (["select.bksp_share=auto"], r"select.bksp_share: expected float, got 'auto'"),
        (
            ["train.objective=ppo"],
            r"train.objective: 'ppo' is not allowed; choose one of \['sft', 'dpo', 'rl'\]",
        ),
        (["train.dpo.beta=0"], r"train.dpo.beta must be > 0, sft_weight >= 0"),
        (["train.dpo.lr=-1"], r"train.dpo.beta must be > 0.*lr=-1.0"),
        (["train.dpo.sft_weight=-1"], r"train.dpo.beta must be > 0.*sft_weight=-1.0"),
        (["train.dpo.right_pairs=maybe"], r"train.dpo.right_pairs: expected bool, got 'maybe'"),
        (["train.dpo_beta=0"], r"train.dpo.beta must be > 0"),  # the old name, read as the new
        (["sampling.max_batch=0"], r"sampling.max_batch: must be at least 1"),
        (["sampling.stream_tokens=-1"], r"sampling.stream_tokens .* must be >= 0"),
        (
            ["run.arms=[baseline,backtrack,ppo]"],
            r"run.arms\[2\]: 'ppo' is not allowed; choose one of \['backtrack', 'baseline', 'dpo', "
            r"'rl', 'sft_rl'\]",
        ),
        (["run.arms=[baseline,rl]"], r"run.arms: each arm once, baseline and backtrack always"),
        (["run.arms=[baseline,dpo]"], r"run.arms: each arm once, baseline and backtrack always"),
        (["run.arms=[baseline,backtrack,backtrack]"], r"run.arms: each arm once"),
        (["run.arms=dpo"], r"run.arms: expected a list"),
        (["select.arm=rl"], r"select.arm: 'rl' is not allowed"),
        (["train.report_to=[all]"], r"train.report_to=\['all'\]: name the reporters"),
        (["train.report_to=wandb"], r"train.report_to: expected a list"),
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
    with pytest.raises(ConfigError, match="unknown preset 'nope'; shipped presets: arith-headroom"):
        load_config("nope")


def test_a_run_directory_refuses_another_config(tmp_path):
    from pipeline.config import ConfigError, check_resumable, save_config

    cfg = load_config("arith-tiny", [f"run.out_dir={tmp_path}"])
    save_config(cfg, tmp_path / "config.yaml")
    check_resumable(cfg, tmp_path / "config.yaml")  # the same run resumes
    more = load_config("arith-tiny", [f"run.out_dir={tmp_path}", "run.rounds=3"])
    check_resumable(more, tmp_path / "config.yaml")  # extending a run is fine
    seeds = load_config("arith-tiny", [f"run.out_dir={tmp_path}", "run.seeds=[0,1,2,3,4]"])
    check_resumable(seeds, tmp_path / "config.yaml")  # so is adding seeds (each a sub-run)
    other = load_config("arith-tiny", [f"run.out_dir={tmp_path}", "train.error_weight=1.0"])
    with pytest.raises(ConfigError, match=r"train.error_weight: 0.2 there, 1.0 now"):
        check_resumable(other, tmp_path / "config.yaml")


def test_where_the_curves_go_keys_nothing_and_a_run_resumes_with_others(tmp_path):
    from pipeline.config import check_resumable, save_config

    cfg = load_config("arith-tiny", [f"run.out_dir={tmp_path}"])
    assert cfg.train.report_to == ["tensorboard"]
    save_config(cfg, tmp_path / "config.yaml")
    other = load_config("arith-tiny", [f"run.out_dir={tmp_path}", "train.report_to=[]"])
    assert other.hash == cfg.hash
    check_resumable(other, tmp_path / "config.yaml")


@pytest.mark.parametrize(
    "option",
    ["select.agree=true", "select.precise_only=true", "select.bksp_share=-1", "train.untie=true"],
)
def test_cleaner_selection_options_key_a_run_and_older_configs_resume(tmp_path, option):
    import yaml

    from pipeline.config import check_resumable

    cfg = load_config("arith-tiny", [f"run.out_dir={tmp_path}"])
    raw = cfg.to_dict()
    del raw["select"]["agree"], raw["select"]["precise_only"], raw["select"]["bksp_share"]
    del raw["train"]["untie"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))  # saved before the options
    check_resumable(cfg, tmp_path / "config.yaml")  # off is the config it was
    other = load_config("arith-tiny", [f"run.out_dir={tmp_path}", option])
    assert other.hash != cfg.hash
    with pytest.raises(ConfigError, match=rf"{option.split('=')[0]}: .* there, .* now"):
        check_resumable(other, tmp_path / "config.yaml")


def test_arms_default_to_todays_two_and_adding_one_resumes_a_run(tmp_path):
    from pipeline.arms import in_order
    from pipeline.config import check_resumable, save_config

    def arms(cfg):
        return tuple(a.name for a in in_order(cfg.run.arms))

    cfg = load_config("arith-tiny", [f"run.out_dir={tmp_path}"])
    assert cfg.run.arms == ["baseline", "backtrack"] and arms(cfg) == ("backtrack", "baseline")
    assert cfg.train.objective == "sft"
    save_config(cfg, tmp_path / "config.yaml")
    more = load_config(
        "arith-tiny", [f"run.out_dir={tmp_path}", "run.arms=[dpo,baseline,backtrack]"]
    )
    assert arms(more) == ("backtrack", "baseline", "dpo")  # backtrack first: it sets the budget
    assert more.hash == cfg.hash  # which arms run shapes no arm's rows
    check_resumable(more, tmp_path / "config.yaml")


def test_halluc_run_sets_each_arms_objective_itself(tmp_path):
    from pipeline.config import ConfigError
    from pipeline.stages import run

    cfg = load_config("arith-tiny", [f"run.out_dir={tmp_path}", "train.objective=dpo"])
    with pytest.raises(ConfigError, match=r"run.arms=\[baseline,backtrack,dpo\]"):
        run.main(cfg)
    assert not (tmp_path / "config.yaml").exists()
    rl = load_config("arith-tiny", [f"run.out_dir={tmp_path}", "train.objective=rl"])
    with pytest.raises(ConfigError, match=r"run.arms=\[baseline,backtrack,rl\]"):
        run.main(rl)
    base = load_config("arith-tiny", ["run.arms=[rl,baseline,backtrack,dpo]"])
    arms = ("backtrack", "baseline", "dpo", "rl")
    assert [run.arm_config(base, a, 1).train.objective for a in arms] == ["sft", "sft", "dpo", "rl"]
    assert run.arm_config(base, "dpo", 1).run.round == 1
    assert tuple(a.name for a in run.in_order(base.run.arms)) == arms  # backtrack first
    ray = load_config("arith-tiny", ["run.arms=[baseline,backtrack,rl]", "train.workers=2"])
    assert run.arm_config(ray, "backtrack", 0).train.workers == 2
    assert run.arm_config(ray, "rl", 0).train.workers == 2  # rl under Ray Train too


def test_placement_shapes_the_traces_not_the_evaluation():
    from pipeline.config import eval_key

    base = load_config("arith-tiny")
    assert base.trace.placement == "at_error"
    placed = load_config("arith-tiny", ["trace.placement=at_detection"])
    assert placed.hash != base.hash
    assert eval_key(placed, 40) == eval_key(base, 40)
    assert eval_key(load_config("arith-tiny", ["trace.unit=token"]), 40) != eval_key(base, 40)
    token = ["trace.unit=token", "trace.backspace_at=step_end", "trace.placement=at_token"]
    assert load_config("arith-tiny", token).trace.placement == "at_token"  # step_end is moot


def test_the_dpo_learning_rate_is_dpo_lr_else_lr(tmp_path):
    from pipeline.layout import RunLayout
    from pipeline.trainers.dpo import batch_and_lr
    from pipeline.trainers.job import Job
    from pipeline.trainers.sft import training_arguments

    cfg = load_config("arith-tiny", ["train.lr=3e-4", "train.batch_size=8"])
    assert batch_and_lr(cfg.train) == (4, 3e-4)  # half as many pairs as sft rows a step
    cfg = load_config("arith-tiny", ["train.lr=3e-4", "train.dpo.lr=3e-5"])
    assert batch_and_lr(cfg.train)[1] == 3e-5
    args = training_arguments(Job(cfg, tmp_path, RunLayout(tmp_path).round(0)), 4, 3e-5)
    assert (args.learning_rate, args.per_device_train_batch_size) == (3e-5, 4)


def test_an_evaluation_cached_before_a_late_task_key_existed_still_matches(tmp_path):
    from pathlib import Path

    from pipeline.config import eval_key, eval_keys
    from pipeline.files import write_json
    from pipeline.loading import task_from_config
    from pipeline.measure.evaluation import evaluate_to

    base = load_config("arith-tiny")
    old = eval_key(base, 40, late=False)  # as keyed before task.countdown.heldout_sos_seed
    assert old != eval_key(base, 40) and {eval_key(base, 40), old} <= eval_keys(base, 40)
    assert len(eval_keys(base, 40)) == 2 * 3  # each also under the retired task.n_test's values
    seeded = load_config("countdown-tiny", ["task.countdown.heldout_sos_seed=1"])
    assert eval_key(seeded, 40, late=False) not in eval_keys(seeded, 40)  # not the default
    assert eval_key(seeded, 40) in eval_keys(seeded, 40) and len(eval_keys(seeded, 40)) == 3
    path = tmp_path / "eval.json"
    write_json(path, {"eval_key": old, "settings": {}})
    task = task_from_config(base.task)
    problems = task.problems("test", 40)
    assert evaluate_to(path, Path("no-model"), task, problems, base)["settings"] == {}
    write_json(path, {"eval_key": eval_key(seeded, 40), "settings": {}})
    with pytest.raises(ConfigError, match="other task, eval or decoding settings"):
        evaluate_to(path, Path("no-model"), task, problems, base)


def test_an_evaluation_told_banned_is_keyed_without_the_configs_eval_banned():
    from pipeline.config import eval_key, eval_keys
    from pipeline.config.keys import _eval_key

    on, off = load_config("arith-tiny"), load_config("arith-tiny", ["eval.banned=false"])
    assert eval_key(on, 40, banned=False) == eval_key(off, 40, banned=False)  # validation
    assert eval_key(on, 40) != eval_key(off, 40)  # the held-out one follows the config
    # a validation file keyed the old way (with eval.banned) still resumes, and only its own
    old = _eval_key(off, 40, False, True, config_banned=True)
    assert old != eval_key(off, 40, banned=False) and old in eval_keys(off, 40, banned=False)
    assert old not in eval_keys(on, 40, banned=False)


def test_deliberate_backspaces_key_the_evaluation_and_refuse_bad_combinations():
    from pipeline.config import eval_key

    base = load_config("arith-tiny")
    assert (base.eval.bksp_threshold, base.eval.bksp_random) == (0.0, 0.0)
    keys = {
        eval_key(load_config("arith-tiny", sets), 40)
        for sets in (
            [],
            ["eval.bksp_threshold=0.3"],
            ["eval.bksp_threshold=0.4"],
            ["eval.bksp_random=0.3"],
        )
    }
    assert len(keys) == 4  # no cached evaluation is reused across values
    assert eval_key(load_config("arith-tiny", ["eval.bksp_threshold=0"]), 40) == eval_key(base, 40)
    with pytest.raises(ConfigError, match=r"eval\.bksp_threshold \(0.3\) and bksp_random"):
        load_config("arith-tiny", ["eval.bksp_threshold=0.3", "eval.bksp_random=0.1"])
    with pytest.raises(ConfigError, match=r"eval\.bksp_random: must be in \[0, 1\]"):
        load_config("arith-tiny", ["eval.bksp_random=2"])
    with pytest.raises(ConfigError, match="vLLM policy does not implement deliberate"):
        load_config("arith-tiny", ["eval.policy=vllm", "eval.bksp_threshold=0.3"])


def test_evaluation_decodes_with_the_configured_threshold():
    from pipeline.measure.evaluation import decoding as _decoding

    cfg = load_config("arith-tiny", ["eval.bksp_threshold=0.25"])
    d = _decoding(cfg, 0.7, ban=False)
    assert (d.bksp_threshold, d.bksp_random, d.temperature) == (0.25, 0.0, 0.7)
    d = _decoding(load_config("arith-tiny", ["eval.bksp_random=0.1"]), 0.0, ban=True)
    assert (d.bksp_threshold, d.bksp_random, d.ban_backspace) == (0.0, 0.1, True)


def test_the_value_section_shapes_only_the_value_model(tmp_path):
    from pipeline.config import ConfigError, check_resumable, save_config

    cfg = load_config("arith-tiny", [f"run.out_dir={tmp_path}"])
    other = load_config("arith-tiny", [f"run.out_dir={tmp_path}", "value.targets=hard"])
    assert other.hash == cfg.hash  # no row the search writes depends on it
    save_config(cfg, tmp_path / "config.yaml")
    check_resumable(other, tmp_path / "config.yaml")  # a run resumes whatever value.* says
    with pytest.raises(ConfigError, match=r"value.targets: 'mc' there, 'hard' now"):
        check_resumable(other, tmp_path / "config.yaml", only=("value",))  # the value stage
    assert load_config("arith-tiny", ["value.runs=[a, b]"]).value.runs == ["a", "b"]


# what `pipeline.config.history.RENAMED` renamed, each with a value its type takes
RENAMED_SETS = [
    ("train.dpo_beta", "train.dpo.beta", "0.3"),
    ("train.dpo_sft_weight", "train.dpo.sft_weight", "0.5"),
    ("train.dpo_right_pairs", "train.dpo.right_pairs", "true"),
    ("train.dpo_lr", "train.dpo.lr", "3e-5"),
    ("train.rl_group", "train.rl.group", "4"),
    ("train.rl_kl", "train.rl.kl", "0.1"),
    ("train.rl_token_cost", "train.rl.token_cost", "0.01"),
    ("train.rl_credit", "train.rl.credit", "tree"),
    ("train.rl_lr", "train.rl.lr", "1e-4"),
    ("search.max_batch", "sampling.max_batch", "32"),
    ("search.max_new_tokens", "sampling.max_new_tokens", "40"),
    ("eval.max_new_tokens", "sampling.stream_tokens", "90"),
    ("eval.max_backspaces", "sampling.stream_backspaces", "4"),
    ("search.address", "run.address", "10.0.0.5:6379"),
    ("select.curriculum", "train.curriculum", "true"),
]


def test_the_renames_are_the_ones_tested():
    from pipeline.config.history import RENAMED

    assert {old: new for old, new, _ in RENAMED_SETS} == RENAMED


@pytest.mark.parametrize("old, new, value", RENAMED_SETS)
def test_a_renamed_key_is_read_at_its_new_place(old, new, value, tmp_path, caplog):
    from pipeline.config.history import _warned

    _warned.discard(old)
    by_new = load_config("arith-tiny", [f"{new}={value}"])
    assert by_new != load_config("arith-tiny")  # the value is not the preset's
    assert load_config("arith-tiny", [f"{old}={value}"]) == by_new  # an old --set
    assert f"{old} is now {new}" in caplog.text
    section, key = old.split(".")
    preset = tmp_path / "old.yaml"
    preset.write_text(f"{section}:\n  {key}: {value}\n")  # an old preset
    assert load_config(str(preset)) == load_config(str(preset), [f"{new}={value}"])
    assert caplog.text.count(f"{old} is now") == 1  # once per key


def test_a_key_given_under_both_names_fails(tmp_path):
    preset = tmp_path / "both.yaml"
    preset.write_text("search:\n  max_batch: 32\nsampling:\n  max_batch: 64\n")
    with pytest.raises(ConfigError, match="search.max_batch and sampling.max_batch are both"):
        load_config(str(preset))
    preset.write_text("train:\n  dpo_beta: 0.2\n  dpo:\n    beta: 0.3\n")
    with pytest.raises(ConfigError, match="train.dpo_beta and train.dpo.beta are both given"):
        load_config(str(preset))


def test_an_old_set_replaces_the_presets_value_under_the_new_name():
    cfg = load_config("arith-tiny", ["search.max_new_tokens=40"])  # the preset sets sampling's
    assert load_config("arith-tiny").sampling.max_new_tokens == 64
    assert cfg.sampling.max_new_tokens == 40 and cfg.sampling.stream_length == 80


def test_retired_keys_are_dropped_with_a_reason(caplog):
    from pipeline.config.history import _warned

    _warned.clear()
    base = load_config("arith-tiny")
    assert load_config("arith-tiny", ["task.n_test=77"]) == base
    assert "task.n_test was removed and is ignored" in caplog.text
    assert load_config("arith-tiny", ["bootstrap.retry_source=synthetic"]) == base
    with pytest.raises(ConfigError, match=r"bootstrap.retry_source was removed .* 'model'"):
        load_config("arith-tiny", ["bootstrap.retry_source=model"])


def test_shipped_presets_keep_the_hashes_they_had_before_the_renames():
    """Each row carries the config hash: the same config keeps it (values from commit 88654bc).
    countdown-gpu and gsm8k set the retired task.n_test to 1000 and 1319, now hashed as 500;
    countdown-tiny changed on purpose (10 test and 10 validation targets where it had 5: its hash
    at 88654bc was 8d441ad61e25)."""
    before = {"arith-tiny": "1db31368326a", "countdown-small": "5707da6815b8"}
    assert {name: load_config(name).hash for name in before} == before
    assert load_config("countdown-tiny").hash != "8d441ad61e25"


def test_a_run_made_before_the_renames_resumes_and_keeps_its_keys(tmp_path):
    from pathlib import Path

    from pipeline.config import check_resumable, eval_key, eval_keys

    saved = (
        Path(__file__).resolve().parents[1] / "data" / "config-88654bc.yaml"
    )  # old names, task.n_test
    sets = ["train.dpo.beta=0.2", "train.dpo.lr=3e-5", "train.rl.group=4", "train.rl.lr=1e-4"]
    sets += ["train.rl.credit=tree", "sampling.max_batch=64", "sampling.max_new_tokens=48"]
    sets += ["sampling.stream_tokens=80", "sampling.stream_backspaces=8", "train.curriculum=true"]
    cfg = load_config("arith-tiny", [*sets, f"run.out_dir={tmp_path}"])
    check_resumable(cfg, saved)  # the same config under today's names
    assert cfg.hash == "08a3a3a62953"  # as then: the run resumes
    # its evaluations are made again: protocol 3 tunes on validation problems and adds figures,
    # so an evaluation cached under protocol 2 (key f4e4eae6ca29) is not reused
    assert eval_key(cfg, 40) == "9bab87349196" != "f4e4eae6ca29"
    assert load_config(str(saved)).run.address == "10.0.0.5:6379"
    other = load_config("arith-tiny", [*sets, f"run.out_dir={tmp_path}", "sampling.max_batch=32"])
    with pytest.raises(ConfigError, match=r"sampling.max_batch: 64 there, 32 now"):
        check_resumable(other, saved)
    # gsm8k set task.n_test=1319: its hash changed; the keys its evaluations may carry include
    # the one without the retired key (pinned here under protocol 3; 01dc2c7c707b under 2)
    gsm8k = load_config("gsm8k")
    assert gsm8k.hash != "51a5f155b65e" and len(eval_keys(gsm8k, 40)) > 1
    assert "01dc2c7c707b" not in eval_keys(gsm8k, 40)


def test_the_eval_key_counts_the_streams_length_and_backspaces_but_not_the_batch():
    """How long a stream runs and how many backspaces it may emit shape an evaluation's figures
    (its key holds them at their old places, eval.max_new_tokens and eval.max_backspaces); the
    rows per forward pass only shape its speed."""
    from pipeline.config import eval_key

    base = eval_key(load_config("arith-tiny"), 40)
    for item in ("sampling.stream_tokens=80", "sampling.stream_backspaces=4"):
        assert eval_key(load_config("arith-tiny", [item]), 40) != base, item
    assert eval_key(load_config("arith-tiny", ["sampling.max_batch=8"]), 40) == base


@pytest.mark.parametrize(
    "override, message",
    [
        ("run.seeds=[0,-1]", r"run.seeds\[1\]=-1: must be a seed, >= 0"),
        ("run.seed=-1", r"run.seed=-1: must be a seed"),
        ("train.seed=-2", r"train.seed=-2: must be a seed"),
        ("train.epochs=0", r"train.epochs=0.0: must be > 0"),
        ("train.max_steps=0", r"train.max_steps=0: must be >= 1, or -1"),
        ("train.lr=0", r"train.lr=0.0: must be a learning rate, > 0"),
        ("bootstrap.lr=-0.1", r"bootstrap.lr=-0.1: must be a learning rate"),
        ("train.dropout=1", r"train.dropout=1.0: must be in \[0, 1\)"),
        ("select.clean_per_problem=-1", r"select.clean_per_problem=-1: must be >= 0"),
        ("task.countdown.min_target=500", r"min_target=500 is above task.countdown.max_target"),
    ],
)
def test_values_outside_their_domain_are_refused_when_the_config_loads(override, message):
    """Before: run.seeds=[-1] ran for 131 s and then failed with a numpy traceback, and
    train.epochs=0 saved the untrained model as trained."""
    with pytest.raises(ConfigError, match=message):
        load_config("arith-tiny", [override])


def test_every_preset_is_inside_the_domains():
    from pipeline.config import presets

    for name in presets():
        load_config(name)
