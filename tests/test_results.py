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
    write_record(path, {"metrics": {"a": 1.5}})
    assert read_record(path) == {"metrics": {"a": 1.5}}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", crash)
    with pytest.raises(OSError):
        write_record(path, {"metrics": {"a": 2.0}})
    monkeypatch.undo()
    assert read_record(path) == {"metrics": {"a": 1.5}}  # the old record is intact


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
