"""Atomic writes and what a killed writer leaves behind: `pipeline.files`."""

from pipeline.files import TMP, remove_stale, write_json
from pipeline.layout import RunLayout
from tests.pipeline.stages.test_search import run


def test_interrupted_writes_are_removed_on_the_next_run(tmp_path):
    stats = RunLayout(tmp_path).round(0).search / "stats"
    stats.mkdir(parents=True)
    stale = stats.parent / f".summary.json{TMP}.abc123"
    stale.write_text("{")
    remove_stale(stats.parent)
    assert not stale.exists()
    write_json(stats / "batch-00000.json", {"a": 1})
    assert [p.name for p in stats.iterdir()] == ["batch-00000.json"]  # no temporary left


def test_stats_temporaries_of_a_killed_search_are_removed(tmp_path):
    search = RunLayout(tmp_path).round(0).search
    (search / "stats").mkdir(parents=True)
    stale = search / "stats" / f".batch-00001.json{TMP}.k1ll3d"
    stale.write_text("{")
    assert run(tmp_path) == 0
    assert not stale.exists()
