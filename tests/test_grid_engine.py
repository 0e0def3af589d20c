"""The grid on the stacked engine: grouping, time-boxed chunks, shards, engine in records."""

import json

import pytest

from mtvae.errors import MTVAEError, TimeLimitReached, check_deadline
from mtvae.experiments import grid_of, load_results, run_grid
from mtvae.experiments.runner import make_jobs, parse_shard

FIXED = {"max_rows": 300, "hidden": 16, "depth": 1, "batch_size": 128, "lr": 1e-3,
         "steps": 20, "patience_steps": 1000, "monitor_every": 10, "missing_rate": 0.3}


def _spec(seeds=(0, 1, 2), methods=("sum", "pcgrad@parameter")):
    return grid_of("eng", "hetero", {"seed": seeds, "dataset": ("wine",), "method": methods},
                   FIXED)


def test_runs_differing_only_in_seed_form_stacked_jobs():
    runs = _spec(seeds=(0, 1, 2, 3, 4)).runs()
    jobs = make_jobs(runs, stack=2)
    stacked = [j for j in jobs if len(j) > 1]
    assert all(len({r.config["method"] for r in j}) == 1 for j in stacked)
    for method in ("sum", "pcgrad@parameter"):  # parameter space stacks too
        assert sorted(len(j) for j in jobs if j[0].config["method"] == method) == [1, 2, 2]
    assert sorted(r.id for j in jobs for r in j) == sorted(r.id for r in runs)
    assert all(len(j) == 1 for j in make_jobs(runs, stack=1))


def test_records_name_their_engine_and_agree_with_unstacked_runs(tmp_path):
    spec = _spec(methods=("sum",))
    run_grid(spec, device="cpu", root=tmp_path / "a", stack=3, progress="none")
    run_grid(spec, device="cpu", root=tmp_path / "b", stack=1, progress="none")
    a = load_results("eng", tmp_path / "a").set_index("id").sort_index()
    b = load_results("eng", tmp_path / "b").set_index("id").sort_index()
    assert list(a.index) == list(b.index)  # the engine is not part of the run id
    assert set(a.engine) == {"stacked"} and set(a["stack"]) == {3}
    assert set(b.engine) == {"single"} and set(b["stack"]) == {1}
    assert a.stopped_early.notna().all() and (a.epoch_cap > 0).all()
    # other noise streams: the errors agree as seeds do, within 25 % on this short run
    rel = ((a.mean_error - b.mean_error).abs() / b.mean_error).max()
    assert rel < 0.25, rel


def test_max_minutes_stops_at_a_job_boundary_and_the_next_call_finishes(tmp_path):
    spec = _spec()
    first = run_grid(spec, device="cpu", root=tmp_path, stack=3, progress="none",
                     max_minutes=1e-4)
    # no job starts after the limit; jobs are whole stacks (3 sum runs) or single runs
    assert first.left > 0 and first.done + first.left == 6 and first.done in (0, 3, 4)
    assert "run the same command again" in str(first)
    second = run_grid(spec, device="cpu", root=tmp_path, stack=3, progress="none")
    assert (second.done, second.skipped, second.left) == (first.left, first.done, 0)
    ids = [json.loads(p.read_text())["id"] for p in (tmp_path / "eng").glob("*.json")]
    assert len(ids) == len(set(ids)) == 6


def test_a_staged_grid_stopped_between_passes_reports_consistent_counts(tmp_path, monkeypatch):
    """When the time limit falls between two passes of a staged grid, the summary still
    counts the grid as a whole: what this call ran, what was recorded before, what is left
    (it once printed '3739 runs: 632 done, -632 skipped')."""
    from mtvae.experiments import runner

    stages = [_spec(seeds=(0,), methods=("sum",)), _spec(seeds=(0, 1), methods=("sum",))]
    calls = iter(stages + [stages[-1]] * 5)
    now, real = [0.0], runner.run_grid

    def first_pass_takes_two_minutes(*args, **kwargs):
        out = real(*args, **kwargs)
        now[0] += 120.0
        return out

    monkeypatch.setattr(runner.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(runner, "run_grid", first_pass_takes_two_minutes)
    total = runner.run_staged(lambda: next(calls), max_minutes=1.0, device="cpu", root=tmp_path,
                              progress="none")
    assert (total.total, total.done, total.skipped, total.left) == (2, 1, 0, 1)
    assert "runs left" in str(total) and "-" not in str(total).split("skipped")[0]


def test_shards_are_disjoint_and_cover_the_grid(tmp_path):
    spec = _spec(seeds=(0, 1, 2, 3))
    s1 = run_grid(spec, device="cpu", root=tmp_path, stack=2, progress="none", shard=(1, 2))
    s2 = run_grid(spec, device="cpu", root=tmp_path, stack=2, progress="none", shard=(2, 2))
    assert s1.skipped == s2.skipped == 0 and s1.done + s2.done == len(spec.runs())
    with pytest.raises(MTVAEError, match="i/n"):
        parse_shard("3/2")
    with pytest.raises(MTVAEError, match="stack must be"):
        run_grid(spec, device="cpu", root=tmp_path, stack=0)


def test_the_deadline_check_raises_a_clear_error(monkeypatch):
    monkeypatch.setenv("MTVAE_DEADLINE", "1")
    with pytest.raises(TimeLimitReached, match="run the same command again"):
        check_deadline("run x")
    monkeypatch.setenv("MTVAE_DEADLINE", "99999999999")
    check_deadline("run x")
