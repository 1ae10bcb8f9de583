"""Decoding settings as records (`pipeline.measure.settings`): the sweep names them as
evaluations always did, an evaluation file stores their fields, and a file written before the
fields reads back to the same records through the one function that parses names."""

import pytest

from pipeline.config import load_config
from pipeline.measure.settings import (
    FIELDS,
    Setting,
    SettingError,
    legacy_setting,
    settings_of,
    sweep,
)
from pipeline.measure.verdict import choose

NAMES = [
    "greedy",
    "T=0.5",
    "T=1.0",
    "greedy, backspace banned",
    "T=0.5, backspace banned",
    "T=1.0, backspace banned",
]


def cfg(*sets):
    return load_config("arith-tiny", ["eval.temperatures=[0.5,1]", "eval.samples=3", *sets])


def an_eval(settings, **top):
    """An eval.json as `evaluation.evaluate_model` writes it: each setting's figures (accuracy
    rising with temperature, banned lower) and its fields."""
    figures = {}
    for i, s in enumerate(settings):
        acc = 0.1 * (i % 3) + (0.0 if s.backspace_banned else 0.5)
        figures[s.name] = {"temperature": s.temperature, "accuracy": acc} | s.fields()
    return {"model": "m", "settings": figures} | top


def test_the_sweep_names_settings_as_evaluations_always_did():
    got = sweep(cfg())
    assert [s.name for s in got] == NAMES
    assert [s.samples_per_problem for s in got] == [1, 3, 3] * 2
    assert [s.backspace_banned for s in got] == [False] * 3 + [True] * 3
    assert [s.name for s in sweep(cfg(), banned=False)] == NAMES[:3]
    assert [s.name for s in sweep(cfg("eval.banned=false"))] == NAMES[:3]
    assert {s.bksp_threshold for s in sweep(cfg("eval.bksp_threshold=0.3"))} == {0.3}
    assert [s.name for s in sweep(cfg("eval.temperatures=[1.0,1.0]"), banned=False)] == [
        "greedy",
        "T=1.0",
    ]


def test_a_file_without_fields_reads_back_to_the_same_records():
    settings = sweep(cfg("eval.bksp_threshold=0.3"))
    new = an_eval(settings, bksp_threshold=0.3, bksp_random=0.0, bksp_search=0)
    old = an_eval(settings, bksp_threshold=0.3, bksp_random=0.0, bksp_search=0)
    for figures in old["settings"].values():  # as files were written before the fields
        for f in FIELDS:
            if f not in ("temperature", "samples_per_problem"):
                del figures[f]
    assert settings_of(new) == settings_of(old) == {s.name: s for s in settings}
    assert choose(new) == choose(old) == "T=1.0"
    assert choose(new, sampling=True) == choose(old, sampling=True) == "T=1.0"


def test_names_are_read_only_where_the_fields_are_missing():
    """A record's fields win over its name, and a name is parsed only without them."""
    s = Setting(0.7, 2, backspace_banned=True)
    odd = {"settings": {"custom": {"accuracy": 0.5} | s.fields()}}
    assert settings_of(odd) == {"custom": s}
    assert legacy_setting("T=0.7, backspace banned", {}, {}) == Setting(0.7, 1, True)
    assert legacy_setting("greedy", {}, {"value_drop": 0.2}) == Setting(0.0, value_drop=0.2)
    with pytest.raises(SettingError, match=r"setting 'custom' of m carries no fields"):
        settings_of({"model": "m", "settings": {"custom": {"accuracy": 0.5}}})
    with pytest.raises(SettingError, match=r"'x' is not a temperature"):
        legacy_setting("T=x", {}, {})


def test_choose_never_takes_a_banned_setting_and_greedy_only_without_sampling():
    settings = sweep(cfg())
    e = an_eval(settings)
    accuracy = {"greedy": 0.9, "T=0.5": 0.6, "T=1.0": 0.2}
    for s in settings:
        e["settings"][s.name]["accuracy"] = 0.95 if s.backspace_banned else accuracy[s.name]
    assert choose(e) == "greedy" and choose(e, sampling=True) == "T=0.5"
