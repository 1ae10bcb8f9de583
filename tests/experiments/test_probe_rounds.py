"""experiments/probe_rounds.py's summary and table, on probe figures built by hand (the probe
itself is `halluc probe`, tested with its stage)."""

import pytest

from experiments import probe_rounds


def _figures(probe, logprob, p_bksp=None):
    def auc(x):
        return {"pooled": x + 0.1, "within_problem": x}

    trivial = {"step_mean_logprob": auc(logprob), "step_index": auc(0.5)}
    out = {"probe": {"detector": auc(probe), "trivial": trivial}}
    out["p_backspace"] = {"detector": auc(p_bksp)} if p_bksp is not None else None
    return out


def test_summary_pairs_the_probe_with_the_likelihood_per_seed():
    rows = [
        {"seed": 0, "model": "round 0", "figures": _figures(0.6, 0.7)},
        {"seed": 1, "model": "round 0", "figures": _figures(0.8, 0.7)},
        {"seed": 0, "model": "round 2", "figures": _figures(0.6, 0.9, 0.55)},
        {"seed": 1, "model": "round 2", "figures": _figures(0.7, 0.9, 0.65)},
    ]
    got = probe_rounds.summarize(rows)
    assert got["round 0"]["probe"]["within_problem"] == pytest.approx(0.7)
    assert got["round 0"]["P(backspace)"]["within_problem"] is None  # no backspace yet
    assert got["round 2"]["P(backspace)"]["per_seed"] == [0.55, 0.65]
    d = got["round 2"]["probe_minus_logprob"]
    assert d["per_seed"] == pytest.approx([-0.3, -0.2]) and d["mean"] == pytest.approx(-0.25)
    assert d["ci95"][0] == pytest.approx(-0.3) and d["ci95"][1] == pytest.approx(-0.2)
    text = probe_rounds.table(got, "CMD")
    assert "| round 2 | 0.650 (0.750) | 0.600 (0.700) | 0.900 (1.000) |" in text
    assert "-0.250 (-0.300 to -0.200)" in text.replace("−", "-")
