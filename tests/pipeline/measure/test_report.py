"""The run report from hand-made evals and verdicts (no model): charts with labelled axes and
ticks, per-seed points, a self-contained page, "–" for missing figures, the trace filter."""

import re
import xml.etree.ElementTree as ET

import pytest

from pipeline.config import load_config
from pipeline.layout import RunLayout
from pipeline.measure import report, traces, verdict

N = 40  # held-out problems
TEMPS = {"greedy": 0.0, "T=0.5": 0.5, "T=0.7": 0.7, "T=1.0": 1.0}


def per_problem(acc):
    """N per-problem accuracies (steps of 0.25) whose mean is `acc`, rounded to a multiple of
    1/(4N)."""
    units = round(acc * 4 * N)
    return [min(4, max(0, units - 4 * i)) / 4 for i in range(N)]


def setting(acc, temperature, full=True):
    m = {
        "temperature": temperature,
        "samples_per_problem": 4,
        "samples": 4 * N,
        "accuracy": acc,
        "ci95": [max(0.0, acc - 0.07), min(1.0, acc + 0.07)],
        "backtrack_rate": 0.3,
        "erase_events": 50,
        "erase_precision": 0.6,
        "erased_steps": 40,
        "step_erase_precision": 0.55,
        "chance_precision": 0.2,
        "made_error": 30,
        "recovery": 0.4,
        "tokens_per_solved": 66888.0 / (1 + 10 * acc),
    }
    if full:
        pp = per_problem(acc)
        m |= {"accuracy": sum(pp) / N, "per_problem": pp, "pass_at_k": {"1": acc, "4": acc + 0.1}}
        m |= {"generated_tokens": 12000, "truncation_rate": 0.01}
        m["tokens_per_problem"] = [20.0 + 10 * temperature] * N
    return m


def a_curve(acc):
    """Accuracy against tokens as `pipeline.measure.budget.measure` writes it (without samples)."""
    rows = []
    for i, n in enumerate((1, 2, 4, 8, 16)):
        figures = {"best_of_n": acc + 0.02 * i, "majority": acc + 0.03 * i, "oracle": acc + 0.1 * i}
        rows.append(
            {"n": n, "tokens_per_problem": 25.0 * n}
            | {k: {"accuracy": min(1.0, v)} for k, v in figures.items()}
        )
    return {"setting": "T=1.0", "temperature": 1.0, "curve": rows}


def detector(auc):
    return {
        "n_positions": 900,
        "positives": 90,
        "base_rate": 0.1,
        "roc_auc": auc,
        "pr_auc": 0.4,
        "roc": [[0, 0], [0.1, 0.5], [0.4, 0.8], [1, 1]],
        "pr": [[0, 1], [0.5, 0.5], [1, 0.1]],
        "reliability": [
            {"lo": 0, "hi": 0.5, "mean_p": 0.1, "observed": 0.08, "n": 800},
            {"lo": 0.5, "hi": 1, "mean_p": 0.7, "observed": 0.6, "n": 100},
        ],
        "stratified": {
            "trivial": {"step_mean_logprob": {"pooled": 0.85}},
            "roc": {"step_mean_logprob": [[0, 0], [0.05, 0.6], [1, 1]]},
        },
    }


def an_eval(acc, full=True):
    """One model's eval.json: accuracy `acc` at T=1.0, lower when cooler, 0.1 lower banned."""
    settings = {}
    for name, t in TEMPS.items():
        a = acc - 0.1 * (1 - t)
        settings[name] = setting(a, t, full)
        settings[f"{name}, backspace banned"] = setting(a - 0.1, t, full)
    e = {"model": "m", "mode": "causal", "unit": "token", "n_problems": N, "settings": settings}
    if full:  # the controls as pipeline.measure.evaluation.controls writes them, and a 95% interval
        common = {"temperature": 1.0, "mean_n": 3.5, "generated_tokens": 9000}
        bon, vote = per_problem(acc + 0.05), per_problem(acc)
        e["controls"] = {
            "best_of_n": common | {"accuracy": sum(bon) / N, "per_problem": bon, "n": 4},
            "majority": common | {"accuracy": sum(vote) / N, "per_problem": vote},
        }
        e["controls"]["best_of_n"]["ci95"] = [acc, acc + 0.1]
        e |= {"detector": detector(None if acc < 0.4 else 0.8), "curve": a_curve(acc)}
    return e


def evals_of(seed, rounds=3, full=True):
    return {
        "backtrack": [an_eval(0.35 + 0.1 * r + 0.01 * seed, full) for r in range(rounds)],
        "baseline": [an_eval(0.35 + 0.05 * r - 0.01 * seed, full) for r in range(rounds)],
    }


def a_verdict(seeds=(0, 1, 2), rounds=3):
    runs = {str(s): evals_of(s, rounds) for s in seeds}
    out = []
    for r in range(rounds):
        acc = {arm: [runs[str(s)][arm][r]["settings"]["T=1.0"]["accuracy"] for s in seeds]
               for arm in ("backtrack", "baseline")}  # fmt: skip
        bon = [runs[str(s)]["baseline"][r]["controls"]["best_of_n"]["accuracy"] for s in seeds]
        mean = {k: sum(v) / len(v) for k, v in acc.items()}
        d = mean["backtrack"] - mean["baseline"]
        out.append(
            {
                "round": r,
                "backtrack": {
                    "setting": "T=1.0",
                    "accuracy": mean["backtrack"],
                    "per_seed": acc["backtrack"],
                },  # fmt: skip
                "baseline": {
                    "setting": "T=1.0",
                    "accuracy": mean["baseline"],
                    "per_seed": acc["baseline"],
                },  # fmt: skip
                "difference": {"mean": d, "ci95": [d - 0.03, d + 0.03]},
                "best_of_n": {
                    "accuracy": sum(bon) / len(bon),
                    "per_seed": bon,
                    "difference": {
                        "mean": mean["backtrack"] - sum(bon) / len(bon),
                        "ci95": None,
                    },  # fmt: skip
                },
                "detector_auc": {"backtrack": 0.8 if r else None, "baseline": None},
                "precision": {"step_erase_precision": 0.55, "chance_precision": 0.2},
            }
        )
    sentence = "Backtracking adds +10.0 points (95% CI +7.0 to +13.0) after 2 rounds."
    return {"seeds": list(seeds), "rounds": out, "sentence": sentence, "per_seed_evals": runs}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return load_config("arith-tiny", [f"run.out_dir={tmp_path_factory.mktemp('cfg')}"])


@pytest.fixture(scope="module")
def page(tmp_path_factory, cfg):
    root = tmp_path_factory.mktemp("verdict")
    report.write_verdict(RunLayout(root), cfg, a_verdict())
    return (root / "report.html").read_text(), (root / "report.md").read_text()


def svgs(html):
    """Each chart's <svg> by its data-metric, parsed with the comments matplotlib writes beside
    every text it draws as paths (the text itself)."""
    out = {}
    for m in re.finditer(r"<svg data-metric='(\w+)'.*?</svg>", html, flags=re.S):
        parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
        out[m.group(1)] = ET.fromstring(m.group(0), parser=parser)
    return out


def texts(g):
    return [c.text.strip() for c in g.iter() if c.tag is ET.Comment]


def axes_of(svg):
    """Per axis of every panel: (tick labels, axis label)."""
    out = []
    for axis in svg.iter("g"):
        if not re.search(r"matplotlib\.axis_\d+$", axis.get("id", "")):
            continue
        ticks = [t for g in axis if "tick_" in g.get("id", "") for t in texts(g)]
        label = [t for g in axis if re.search(r"-text_\d+$", g.get("id", "")) for t in texts(g)]
        out.append((ticks, label))
    return out


def test_every_chart_has_labelled_axes_with_ticks(page):
    charts = svgs(page[0])
    assert list(charts) == ["accuracy", "temperature", "precision", "detector", "tokens", "budget"]
    for name, svg in charts.items():
        axes = axes_of(svg)
        assert len(axes) >= 2, name
        for ticks, label in axes:
            assert len(ticks) >= 2 and len(label) == 1 and label[0], (name, ticks, label)
    (acc_x, _), (acc_y, acc_label), *_ = axes_of(charts["accuracy"])
    assert acc_x == ["0", "1", "2"] and acc_label == ["accuracy (pass@1)"]
    assert acc_y == ["0%", "20%", "40%", "60%", "80%", "100%"]
    (t_x, _), _ = axes_of(charts["temperature"])
    assert t_x == ["greedy", "0.5", "0.7", "1"]
    (_, _), (tok_y, tok_label) = axes_of(charts["tokens"])
    assert tok_label == ["generated tokens per solved sample"]
    assert all(re.fullmatch(r"[\d,]+", t) for t in tok_y) and "%" not in "".join(tok_y)
    legend = texts(charts["accuracy"])
    assert "best-of-N control" in legend and "backtrack − baseline (paired 95% CI)" in legend
    (b_x, b_xlabel), (_, b_ylabel), *_ = axes_of(charts["budget"])
    assert b_xlabel == ["generated tokens per problem"] and b_ylabel == ["accuracy"]
    assert "32" in b_x and "256" in b_x  # a log2 axis from 25 to 400 tokens


def test_budget_chart_draws_every_arm_selector_and_decoding(page):
    chart = svgs(page[0])["budget"]
    ids = {g.get("id", "") for g in chart.iter("g")}
    for arm in ("backtrack", "baseline"):
        for name in ("best_of_n", "majority", "oracle", "greedy", "T=0.7"):
            assert any(i.endswith(f"{name}-{arm}") for i in ids), (name, arm)
    assert any(i.endswith("oracle-start") for i in ids)  # round 0: the start model, once
    assert not any(i.endswith("value_best_of_n-backtrack") for i in ids)  # no value model
    assert not any("backspace banned" in i for i in ids)  # banned decodings are not placed
    legend = texts(chart)
    assert "oracle pass@N" in legend and "majority vote" in legend and "start" in legend


def markers(svg, gid):
    (group,) = [g for g in svg.iter("g") if g.get("id", "").endswith(gid)]
    return len([u for u in group.iter("use")])


def test_per_seed_points_one_per_seed_and_round(page):
    charts = svgs(page[0])
    for arm in ("backtrack", "baseline", "best_of_n"):
        assert markers(charts["accuracy"], f"seeds-{arm}") == 3 * 3
    assert markers(charts["temperature"], "seeds-backtrack") == 3 * len(TEMPS)
    assert markers(charts["tokens"], "seeds-baseline") == 3 * 3
    # the same per-seed values in the comparison table, beside the mean
    row = a_verdict()["rounds"][2]["backtrack"]
    cells = " · ".join(f"{100 * a:.1f}%" for a in row["per_seed"])
    assert f"{100 * row['accuracy']:.1f}% [{cells}] T=1.0" in page[0]


def test_detector_curves_one_per_seed_and_arm(page):
    svg = svgs(page[0])["detector"]
    ids = [g.get("id", "") for g in svg.iter("g")]
    for arm in ("backtrack", "baseline"):
        for curve in ("roc", "pr", "reliability"):
            assert sum(i.startswith(f"detector-{curve}-{arm}-") for i in ids) == 3
    assert "backtrack (ROC AUC 0.800)" in texts(svg)
    # the trivial scores on the same chart, once (the backtrack arm's first seed)
    assert sum(i.startswith("detector-roc-trivial-step_mean_logprob") for i in ids) == 1
    assert "step mean log-prob (0.850)" in texts(svg)


def test_page_is_self_contained_with_unique_ids(page):
    html, md = page
    assert "<script" not in html and "http" not in html and "src=" not in html
    assert "@import" not in html and "url(" not in re.sub(r"url\(#[\w.-]+\)", "", html)
    ids = re.findall(r'\bid=["\']([^"\']+)', html)
    assert len(ids) == len(set(ids))
    refs = set(re.findall(r'href="#([^"]+)"', html))
    assert refs and refs <= set(ids)  # every glyph and marker reference resolves in the page
    assert html.index("class='verdict'") < html.index("<svg")
    assert a_verdict()["sentence"] in md and "| 2 |" in md and "pts" in md


def test_one_seed_page_shows_missing_figures_as_dashes(tmp_path, cfg):
    old = evals_of(0, rounds=2, full=False)  # eval.json files from before the new keys
    md = report.write(RunLayout(tmp_path), cfg, old)
    html = (tmp_path / "report.html").read_text()
    header = re.search(r"<table id='figures'><tr>(.*?)</tr>", html).group(1)
    columns = re.findall(r"<th>(.*?)</th>", header)
    row = re.findall(r"<td>(.*?)</td>", html.split("<table id='figures'>")[1].split("</tr>")[1])
    for key in ("pass_at_k", "generated_tokens", "truncation_rate", "per_problem"):
        assert row[columns.index(key)] == "–"
    assert "No detector figures" in html and "no detector figures" in texts(svgs(html)["detector"])
    assert "control:" not in html and "| –" in md  # no best-of-N, no paired interval
    assert "(" not in md.splitlines()[2].split("|")[4]  # difference without an interval


def test_one_seed_verdict_reads_baseline_at_best_setting_with_paired_interval(cfg):
    evals = evals_of(0, rounds=1)
    evals["baseline"][0]["settings"]["T=0.7"]["accuracy"] = 0.9  # its best setting
    v = verdict.one_seed_verdict(cfg.run.seed, evals)
    (r,) = v["rounds"]
    assert r["baseline"]["setting"] == "T=0.7" and r["backtrack"]["setting"] == "T=1.0"
    b, a = evals["backtrack"][0]["settings"]["T=1.0"], evals["baseline"][0]["settings"]["T=0.7"]
    d = [x - y for x, y in zip(b["per_problem"], a["per_problem"], strict=True)]
    mean = sum(d) / N
    half = 1.96 * (sum((x - mean) ** 2 for x in d) / (N - 1)) ** 0.5 / N**0.5
    assert r["difference"]["mean"] == pytest.approx(mean)
    assert r["difference"]["ci95"] == pytest.approx([mean - half, mean + half])
    # per-problem mean and the reported accuracy agree for the arms (the fixture's invariant)
    assert mean == pytest.approx(b["accuracy"] - sum(a["per_problem"]) / N)


def test_rendering_twice_gives_the_same_bytes(tmp_path, cfg):
    for d in ("a", "b"):
        report.write_verdict(RunLayout(tmp_path / d), cfg, a_verdict(seeds=(0, 1), rounds=2))
    assert (tmp_path / "a" / "report.html").read_bytes() == (
        tmp_path / "b" / "report.html"
    ).read_bytes()


def row(kind, mc=None, exact=None):
    return {"kind": kind, "mc_error_step": mc, "exact_error_step": exact}


def test_trace_classes():
    assert traces.trace_class(row("correction", 2, 2), True) == "precise"
    assert traces.trace_class(row("correction", 2, None), True) == "right-step"
    assert traces.trace_class(row("correction", 2, 1), True) == "missed"
    assert traces.trace_class(row("self_correction"), True) == "unlabelled"
    assert traces.trace_class(row("correction", 2, None), False) == "unlabelled"


def test_trace_viewer_filters_with_css_only():
    r = {
        "prompt_text": "1+2=",
        "prompt_len": 2,
        "input_ids": [7, 7, 52, 9, 51],
        "erase_spans": [[2, 3]],
    }
    pre = traces.trace_html(r, lambda t: chr(t), bksp=9)
    assert pre == "<span class='prompt'>1+2=</span><del>4</del><span class='bksp'>⌫</span>3"
    items = [("precise", "correction", pre), ("missed", "correction", pre)]
    viewer = traces.trace_viewer(items)
    assert viewer.count("class='trace'") == 2 and "<script" not in viewer
    assert "precise erases (1)" in viewer and "erases of right steps (0)" in viewer
    assert "all (2)" in viewer and "missed errors (1)" in viewer
    rule = "#tf-precise:checked~.traces .trace:not([data-class='precise']){display:none}"
    assert rule in report._CSS
    assert traces.trace_viewer([]) == "<p>No traces.</p>"


def test_the_verdict_of_pipeline_verdict_renders(tmp_path, cfg):
    """The producer's own verdict (`pipeline.measure.verdict`, controls kept beside the evals as
    `pipeline.stages.run` keeps them) renders, its differences in the comparison table."""
    from pipeline.measure.verdict import verdict

    runs = {str(s): evals_of(s) for s in (0, 1)}
    seeds = []
    for evals in runs.values():
        arms = {arm: [{"eval": e, "tune": e} for e in es] for arm, es in evals.items()}
        controls = [e.pop("controls") for e in evals["baseline"]]
        for e in evals["backtrack"]:
            del e["controls"]
        seeds.append(arms | {"controls": [None, *controls[1:]]})
    v = verdict(seeds, [0, 1]) | {"per_seed_evals": runs}
    md = report.write_verdict(RunLayout(tmp_path), cfg, v)
    html = (tmp_path / "report.html").read_text()
    assert v["sentence"] in html
    last = md.split("\n\nAccuracy against")[0].splitlines()[-1].split(" | ")
    d, bon = v["rounds"][-1]["difference"], v["rounds"][-1]["best_of_n"]["difference"]
    assert (
        last[3]
        == f"{100 * d['mean']:+.1f} pts ({100 * d['ci95'][0]:+.1f} to {100 * d['ci95'][1]:+.1f})"
    )
    assert last[5].startswith(f"{100 * bon['mean']:+.1f} pts")
    strongest = v["rounds"][-1]["strongest"]["difference"]
    assert last[6].startswith(f"{100 * strongest['mean']:+.1f} pts")
    assert markers(svgs(html)["accuracy"], "seeds-best_of_n") == 2 * 2  # rounds 1 and 2
    assert "id='arms'" not in html  # two arms: no table of the others


def test_a_dpo_arm_gets_its_table_and_its_figures(tmp_path, cfg):
    from pipeline.measure.verdict import verdict

    runs = {str(s): evals_of(s) for s in (0, 1)}
    seeds = []
    for evals in runs.values():
        evals["dpo"] = [an_eval(0.4 + 0.02 * r) for r in range(3)]
        seeds.append({arm: [{"eval": e, "tune": e} for e in es] for arm, es in evals.items()})
    v = verdict(seeds, [0, 1]) | {"per_seed_evals": runs}
    md = report.write_verdict(RunLayout(tmp_path), cfg, v)
    html = (tmp_path / "report.html").read_text()
    dpo = v["rounds"][-1]["arms"]["dpo"]
    d = dpo["difference"]
    last = md.split("\n\nAccuracy against")[0].splitlines()[-1].split(" | ")
    assert last[:2] == ["| 2", "dpo"]
    assert last[3] == (
        f"{100 * d['mean']:+.1f} pts ({100 * d['ci95'][0]:+.1f} to {100 * d['ci95'][1]:+.1f})"
    )
    assert "id='arms'" in html
    figures = report.figure_rows(runs)
    assert sum(r[1] == "dpo" for r in figures) == sum(r[1] == "baseline" for r in figures) > 0
    with pytest.raises(KeyError, match="per_seed_evals"):
        report.write_verdict(RunLayout(tmp_path), cfg, {k: v[k] for k in ("seeds", "rounds")})


def test_report_tables_accuracy_against_tokens(page):
    _, md = page
    assert "Accuracy against generated tokens, last round:" in md
    table = md.split("Accuracy against generated tokens, last round:")[1]
    assert "| arm | setting | selector | N=1 | N=2 | N=4 | N=8 | N=16 |" in table
    # the start model, then each arm; the last round's backtrack best-of-N at N=1 is the mean of
    # the seeds' 0.55, 0.56, 0.57 (+0.02 per step of N): 56.0% at 25 tokens per problem
    assert "| start | T=1.0 | best-of-N | 36.0% (25 tok) |" in table
    assert "| backtrack | T=1.0 | best-of-N | 56.0% (25 tok) | 58.0% (50 tok) |" in table
    assert "oracle pass@N" in table and "value best-of-N" not in table
    assert "Accuracy by target" not in md  # arithmetic evaluations hold no per-target figures


def test_report_tables_accuracy_by_target():
    v = a_verdict(seeds=(0, 1))
    for i, evals in enumerate(v["per_seed_evals"].values()):
        for arm, es in evals.items():
            es[-1]["settings"]["T=1.0"]["by_target"] = {
                "12": {"accuracy": 0.5 + 0.1 * i, "n": 20},
                "7": {"accuracy": 0.2 if arm == "backtrack" else 0.1, "n": 20},
            }
    rows = report.target_rows(v)
    assert rows[0] == ["target", "backtrack", "baseline"]
    assert rows[1:] == [["7", "20.0%", "10.0%"], ["12", "55.0%", "55.0%"]]  # in target order
