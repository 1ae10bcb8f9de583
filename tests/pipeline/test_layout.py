"""`pipeline.layout` finds what it places: the directories it names are the ones its look-ups
(search stages, seeds, rounds) return, whatever depth a run, a seed or a grid puts them at."""

from pathlib import Path

from pipeline.layout import GridLayout, RunLayout, compute_of, search_dirs, search_summary


def test_what_the_layout_places_its_lookups_find(tmp_path):
    grid = GridLayout(tmp_path)
    run = RunLayout(grid.row("defaults"))
    seeds = [RunLayout(run.seed(s)) for s in (0, 1)]
    placed = []
    for seed in seeds:
        for arm, r in (("backtrack", 0), ("backtrack", 1), ("baseline", 0)):
            rnd = seed.round(r, arm)
            rnd.search.mkdir(parents=True)
            placed.append(rnd.search)
            if r == 0:
                rnd.summary.parent.mkdir(parents=True, exist_ok=True)
                rnd.summary.write_text("{}")
    alone = RunLayout(tmp_path / "alone").round(3)  # a stage run on its own
    alone.search.mkdir(parents=True)
    placed.append(alone.search)
    assert search_dirs(tmp_path) == sorted(placed)
    assert search_dirs(run.root) == sorted(placed[:-1])
    finished = [p for p in search_dirs(tmp_path) if search_summary(p).exists()]
    assert finished == sorted(
        s.round(0, a).search for s in seeds for a in ("backtrack", "baseline")
    )
    assert run.seed_dirs() == [s.root for s in seeds]
    assert seeds[0].rounds("backtrack") == [0, 1] and seeds[0].rounds("baseline") == [0]
    assert RunLayout(tmp_path / "alone").rounds() == [3]


def test_compute_sits_beside_every_trained_model():
    run = RunLayout(Path("/runs/x"))
    assert run.round(2, "dpo").compute == compute_of(run.round(2, "dpo").model)
    assert compute_of(run.bootstrap_model) == run.bootstrap / "compute.json"
    assert run.start_eval == run.bootstrap_eval
    assert RunLayout(Path("/runs/x"), given_model="/m").start_eval != run.bootstrap_eval
