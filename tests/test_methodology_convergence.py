"""mtvae.studies.methodology.convergence_table: how the trained runs of each results folder
stopped."""

from __future__ import annotations

import math

from mtvae.results import write_record
from mtvae.studies import methodology as D


def _run(folder, name, **metrics):
    write_record(folder / f"{name}.json", {"id": name, "config": {}, "metrics": metrics})


def test_convergence_table_counts_patience_stops_and_best_share(tmp_path):
    grid = tmp_path / "tables-full"
    _run(grid, "a", stopped_early=True, best_step=100, step_cap=1000)
    _run(grid, "b", stopped_early=True, best_step=300, step_cap=1000)
    _run(grid, "c", stopped_early=False, best_step=1000, step_cap=1000)
    # a run a raised cap replaced: no run of the study, not counted
    _run(grid / "superseded", "old-cap", stopped_early=False, best_step=500, step_cap=500)
    _run(grid, "reference", test={"mean_error": 0.2})  # not trained: left out
    write_record(grid / "failed.json", {"id": "f", "config": {}, "status": "failed"})
    chapter = tmp_path / "ch01-full"  # the old protocol: a best epoch, no cap, no flag
    _run(chapter, "old", best_epoch=12)
    _run(chapter / "nested", "new", stopped_early=True, best_epoch=5, epoch_cap=20)
    _run(tmp_path / "ch02-smoke", "other", stopped_early=True, best_step=1, step_cap=2)
    (tmp_path / "notes-full").mkdir()  # a folder without records: no row

    table = D.convergence_table(tmp_path, "full")
    assert list(table.columns) == D.CONVERGENCE_COLUMNS
    assert list(table.index) == ["ch01-full", "tables-full"]
    row = table.loc["tables-full"]
    assert (row["trained runs"], row["convergence recorded"], row["not recorded"]) == (3, 3, 0)
    assert math.isclose(row["stopped by patience"], 2 / 3)
    assert math.isclose(row["median best / cap"], 0.3)
    ch = table.loc["ch01-full"]
    assert (ch["trained runs"], ch["convergence recorded"], ch["not recorded"]) == (2, 1, 1)
    assert ch["stopped by patience"] == 1.0
    assert math.isclose(ch["median best / cap"], 0.25)


def test_convergence_table_of_old_records_only_and_of_nothing(tmp_path):
    _run(tmp_path / "hetero-full", "old", best_epoch=40, epochs_run=40)
    table = D.convergence_table(tmp_path, "full")
    assert table.loc["hetero-full", "not recorded"] == 1
    assert math.isnan(table.loc["hetero-full", "stopped by patience"])
    assert math.isnan(table.loc["hetero-full", "median best / cap"])
    empty = D.convergence_table(tmp_path / "nothing", "full")
    assert empty.empty and list(empty.columns) == D.CONVERGENCE_COLUMNS


def test_convergence_sentence_names_the_folders_and_the_rule(tmp_path):
    grid = tmp_path / "tables-full"
    for i in range(10):  # 9 of 10 stopped by patience: exactly the 90 % rule
        _run(grid, f"r{i}", stopped_early=i > 0, best_step=100 * (i + 1), step_cap=1000)
    _run(tmp_path / "ch01-full", "old", best_epoch=12)
    text = D.convergence_sentence(D.convergence_table(tmp_path, "full"), "full")
    assert "Of the 2 results folders" in text and "1 record how their runs stopped" in text
    assert "1 of them meet the rule that at least 90 %" in text
    assert "(the lowest share: 90.0 %, in `tables-full`)" in text
    assert "55 % of the cap in `tables-full`" in text  # median of 0.1, 0.2, ..., 1.0
    assert "The 1 trained run of `ch01-full` predates these fields" in text
    assert "No trained run" in D.convergence_sentence(
        D.convergence_table(tmp_path / "nothing", "full"), "full")
