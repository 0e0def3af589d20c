"""Run records: atomic writes, stable ids, train-or-load."""

import json

import pytest

from mtvae.errors import MTVAEError
from mtvae.results import cached_run, load_records, read_record, run_id, write_record


def test_run_id_is_stable_and_order_independent():
    assert run_id("a", {"x": 1, "y": [1, 2]}) == run_id("a", {"y": [1, 2], "x": 1})
    assert run_id("a", {"x": 1}) != run_id("a", {"x": 2})


def test_write_record_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "g" / "r.json"
    write_record(path, {"id": "r", "config": {}, "metrics": {"a": 1.5}})
    assert read_record(path) == {"id": "r", "config": {}, "metrics": {"a": 1.5}}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", crash)
    with pytest.raises(OSError):
        write_record(path, {"metrics": {"a": 2.0}})
    monkeypatch.undo()
    assert read_record(path)["metrics"] == {"a": 1.5}  # the old record is intact


def test_cached_run_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"score": 0.5}

    first = cached_run("grid", "run", {"seed": 3}, compute, root=tmp_path)
    second = cached_run("grid", "run", {"seed": 3}, compute, root=tmp_path)
    assert calls == [1] and first == second
    assert first["seed"] == 3 and first["metrics"] == {"score": 0.5}
    assert {"mtvae", "torch", "python"} <= set(first["env"])
    cached_run("grid", "run", {"seed": 4}, compute, root=tmp_path)
    df = load_records(tmp_path / "grid")
    assert sorted(df["config.seed"]) == [3, 4] and "metrics.score" in df


def test_broken_or_missing_records_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MTVAEError, match="delete it to rerun"):
        read_record(bad)
    with pytest.raises(MTVAEError, match="no run records"):
        load_records(tmp_path / "empty")


# ------------------------------------------- issue 15: wrong-shape records, repo root


@pytest.mark.parametrize(("content", "problem"), [
    ("[1, 2]", "a JSON list, not an object"),
    ('{"id": 3}', "no string 'id'"),
    ('{"id": "r", "config": {}}', "no 'metrics' object and no 'status': 'failed'"),
])
def test_valid_json_of_the_wrong_shape_is_malformed_not_done(tmp_path, content, problem):
    path = tmp_path / "grid" / "run-0123456789.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(MTVAEError, match=rf"run record {path} is malformed \({problem}\); "
                                         "delete it to rerun"):
        read_record(path)  # before: a list gave AttributeError, {"id": 3} counted as done
    with pytest.raises(MTVAEError, match="is malformed"):
        load_records(tmp_path / "grid")
    from mtvae.experiments.runner import record_status

    with pytest.raises(MTVAEError, match="is malformed"):
        record_status(path)  # a grid stops with this one error instead of skipping the run


def test_a_failed_record_is_well_formed(tmp_path):
    path = write_record(tmp_path / "r.json", {"id": "r", "config": {}, "status": "failed",
                                              "error": {"type": "X"}})
    assert read_record(path)["status"] == "failed"


def test_results_and_cache_resolve_to_the_repo_root_from_any_directory(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    code = ("from mtvae.results import results_dir, cache_dir, logs_dir; "
            "print(results_dir(), cache_dir(), logs_dir())")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MTVAE_RESULTS", "MTVAE_CACHE", "MTVAE_LOGS")}
    env["PYTHONPATH"] = str(repo)
    out = subprocess.run([sys.executable, "-c", code], cwd=repo / "notebooks", env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    # before: notebooks/results and notebooks/.cache when Jupyter runs from notebooks/
    assert out == [str(repo / "results"), str(repo / ".cache/mtvae"), str(repo / ".cache/logs")]
    env |= {"MTVAE_RESULTS": str(tmp_path / "r"), "MTVAE_CACHE": str(tmp_path / "c")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == [str(tmp_path / "r"), str(tmp_path / "c")]


def test_outputs_under_moves_every_output_and_restores_the_environment(tmp_path, monkeypatch):
    from mtvae.results import cache_dir, logs_dir, outputs_under, results_dir

    monkeypatch.delenv("MTVAE_RESULTS", raising=False)
    monkeypatch.delenv("MTVAE_LOGS", raising=False)
    monkeypatch.setenv("MTVAE_CACHE", str(tmp_path / "shared-cache"))  # explicit: kept
    before = results_dir()
    with outputs_under(tmp_path / "out"):
        assert results_dir() == tmp_path / "out" / "results"
        assert logs_dir() == tmp_path / "out" / "logs"
        assert cache_dir() == tmp_path / "shared-cache"
    assert results_dir() == before
