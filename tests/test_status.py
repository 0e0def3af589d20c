"""``python -m mtvae status``: where each grid stands, read from its records."""

import json
import math
import re

import pytest

from mtvae.__main__ import main
from mtvae.experiments import get_grid
from mtvae.experiments.status import estimate_seconds, grid_status, run_cost, status_table
from mtvae.results import new_record, write_record


def _record(tmp_path, spec, run, seconds, *, stopped=True, stack=None, failed=False):
    body = ({"status": "failed", "error": "boom"} if failed else
            {"status": "ok", "metrics": {"stopped_early": stopped, "best_epoch": 3,
                                         "epoch_cap": 10}})
    rec = new_record(spec.name, run.kind, run.config, body, seconds=seconds, device="cpu")
    if stack:
        rec["engine"] = {"name": "stacked", "stack": stack}
    write_record(tmp_path / spec.name / f"{run.id}.json", rec)


def test_a_stacked_record_costs_its_share_of_the_job():
    assert run_cost({"timings": {"seconds": 120.0}}) == 120.0
    assert run_cost({"timings": {"seconds": 120.0},
                     "engine": {"name": "stacked", "stack": 4}}) == 30.0


def test_a_pending_run_is_costed_like_the_recorded_runs_nearest_its_config():
    recorded = [("k", {"dataset": "a", "seed": 0, "w": 1}, 10.0),
                ("k", {"dataset": "a", "seed": 1, "w": 1}, 30.0),
                ("k", {"dataset": "b", "seed": 0, "w": 1}, 500.0),
                ("other", {"dataset": "a", "seed": 2, "w": 1}, 9999.0)]
    assert estimate_seconds({"dataset": "a", "seed": 2, "w": 1}, "k", recorded) == 20.0
    assert estimate_seconds({"dataset": "b", "seed": 5, "w": 1}, "k", recorded) == 500.0
    assert math.isnan(estimate_seconds({"dataset": "a"}, "none", recorded))


def test_the_status_counts_the_records_and_costs_what_is_pending(tmp_path):
    spec = get_grid("hier", "smoke", tmp_path)
    runs = spec.runs()
    assert grid_status("hier", "smoke", tmp_path)["done"] == 0
    done, failed = runs[:3], runs[3]
    _record(tmp_path, spec, done[0], 100.0, stopped=True)
    _record(tmp_path, spec, done[1], 200.0, stopped=False)
    _record(tmp_path, spec, done[2], 400.0, stopped=True, stack=2)  # a run of 200 s
    _record(tmp_path, spec, failed, 50.0, failed=True)
    row = grid_status("hier", "smoke", tmp_path)
    assert (row["planned"], row["done"], row["failed"]) == (len(runs), 3, 1)
    assert row["pending"] == len(runs) - 4 and row["claimed"] == 0
    assert row["stopped_by_patience"] == pytest.approx(2 / 3)
    assert row["compute_h"] == pytest.approx((100 + 200 + 400 + 50) / 3600)
    assert 100 / 3600 * row["pending"] <= row["left_h"] <= 200 / 3600 * row["pending"]
    assert row["staged"] is False


def test_the_status_command_prints_a_table_or_json_and_refuses_an_unknown_grid(tmp_path,
                                                                              capsys):
    assert main(["status", "--profile", "smoke", "--results", str(tmp_path),
                 "--grids", "hier", "aux", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["grid"] for r in rows] == ["hier-smoke", "aux-smoke"]
    assert all(r["done"] == 0 and r["pending"] == r["planned"] > 0 for r in rows)
    assert [r["staged"] for r in rows] == [False, True]
    assert [r["read_by"] for r in rows] == ["03_4, 05", "03_2, 05"]
    assert main(["status", "--profile", "smoke", "--results", str(tmp_path),
                 "--grids", "hier"]) == 0
    out = capsys.readouterr().out
    assert "hier-smoke" in out and "unknown" in out and "pending" in out
    assert main(["status", "--profile", "smoke", "--grids", "nosuchgrid"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtvae: error:") and "nosuchgrid" in err and "Traceback" not in err
    assert len(status_table("smoke", tmp_path)) >= 8  # every named grid, one row each


def test_every_grid_names_the_chapters_that_read_it_and_those_chapters_name_it():
    from pathlib import Path

    from mtvae.experiments.grids import GRIDS, READ_BY

    assert set(READ_BY) == set(GRIDS)
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    for grid, chapters in READ_BY.items():
        for nn in chapters:
            (source,) = notebooks.glob(f"{nn}_*.md")
            text = source.read_text()  # a reader names its grid, in code or in its command
            assert re.search(rf'"{grid}"|mtvae grid {grid}\b', text), (grid, source.name)


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path, monkeypatch, capsys):
    class ClosedPipe:  # what `python -m mtvae status | head -1` leaves stdout as
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert main(["status", "--profile", "smoke", "--results", str(tmp_path),
                 "--grids", "hier"]) == 0
    assert capsys.readouterr().err == ""
