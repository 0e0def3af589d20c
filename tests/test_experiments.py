"""The experiment grid: spec expansion, resumability, atomic records, failures, executors."""

import json
import os
from pathlib import Path

import pytest
import torch

from mtvae.errors import MTVAEError
from mtvae.experiments import (
    Block,
    GridSpec,
    LocalExecutor,
    SlurmExecutor,
    get_executor,
    get_grid,
    get_kind,
    grid_of,
    load_results,
    plan,
    register,
    run_grid,
)
from mtvae.profiles import get_profile
from mtvae.results import read_record, run_id, write_record

REPO = Path(__file__).resolve().parents[1]


@register("fake")
def fake(config, device):
    """A run of a millisecond: a tiny seeded least-squares fit."""
    if config.get("x") == 2 and os.environ.get("MTVAE_TEST_FAIL") == "1":
        raise ValueError(f"run x={config['x']} is broken on purpose")
    if config.get("x") == config.get("interrupt_at"):
        raise KeyboardInterrupt
    if config.get("unserialisable"):
        return {"score": object()}
    torch.manual_seed(config["seed"])
    a, b = torch.randn(64, 4), torch.randn(64)
    w = torch.zeros(4)
    for _ in range(20):  # gradient descent on a least-squares loss
        w -= 0.05 * 2 * a.T @ (a @ w - b) / len(b)
    return {"score": float(((a @ w - b) ** 2).mean()), "x2": config["x"] * 2, "device": device}


def spec(n=6, name="g", **fixed):
    return grid_of(name, "fake", {"seed": (0, 1), "x": tuple(range(n // 2))}, fixed)


def records(root, name="g"):
    return {p.stem: read_record(p) for p in sorted((Path(root) / name).glob("*.json"))}


def test_spec_expands_the_product_in_axis_order():
    runs = spec(6, lr=0.1).runs()
    assert [(r.config["seed"], r.config["x"]) for r in runs] == [
        (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert all(r.config["lr"] == 0.1 and r.kind == "fake" for r in runs)
    assert runs[0].id == run_id("fake", {"seed": 0, "x": 0, "lr": 0.1})
    assert runs[4].label == "fake seed=1 x=1"
    twice = GridSpec("g", (Block("fake", {"x": (0, 1)}), Block("fake", {"x": (1, 2)})))
    assert [r.config["x"] for r in twice.runs()] == [0, 1, 2]  # duplicates run once


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Block("fake", {}), "has no axes"),
    (lambda: Block("fake", {"x": ()}), "has no values"),
    (lambda: Block("fake", {"x": "abc"}), "must be a list or tuple"),
    (lambda: Block("fake", {"x": (1, 1)}), "repeats a value"),
    (lambda: Block("fake", {"x": (1,)}, {"x": 2}), "both axes and fixed"),
    (lambda: grid_of("a/b", "fake", {"x": (1,)}), "must be a folder name"),
])
def test_bad_specs_are_clear_errors(make, message):
    with pytest.raises(MTVAEError, match=message):
        make()


def test_interrupted_grid_keeps_its_records_and_resumes(tmp_path):
    seen = []

    def stop_after_three(outcome):
        seen.append(outcome.id)
        if len(seen) == 3:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        run_grid(spec(), root=tmp_path, progress="none", on_result=stop_after_three)
    assert sorted(records(tmp_path)) == sorted(seen)
    rest = run_grid(spec(), root=tmp_path, progress="none")
    assert (rest.done, rest.skipped, rest.failed) == (3, 3, 0)
    assert len(records(tmp_path)) == 6
    again = run_grid(spec(), root=tmp_path, progress="none")
    assert (again.done, again.skipped) == (0, 6)


def test_keyboard_interrupt_inside_a_run_stops_the_grid(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_grid(spec(interrupt_at=1), root=tmp_path, progress="none")
    assert len(records(tmp_path)) == 1  # (seed 0, x 0) finished before the interruption
    assert all(r["status"] == "ok" for r in records(tmp_path).values())


def test_a_record_is_never_half_written(tmp_path, monkeypatch):
    path = tmp_path / "g" / "r.json"

    def crash(obj, fh, **kwargs):
        fh.write('{"metrics": {"a": ')  # a partial record reaches the temporary file
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", crash)
    with pytest.raises(OSError, match="disk full"):
        write_record(path, {"metrics": {"a": 1.0}})
    assert not path.exists() and list(path.parent.iterdir()) == []  # no debris either


def test_unserialisable_metrics_become_a_failure_record(tmp_path):
    summary = run_grid(grid_of("g", "fake", {"x": (0,)}, {"seed": 0, "unserialisable": True}),
                       root=tmp_path, progress="none")
    assert summary.failed == 1
    (rec,) = records(tmp_path).values()
    assert rec["status"] == "failed" and rec["error"]["type"] == "TypeError"
    assert [p.name for p in (tmp_path / "g").iterdir()] == [f"{rec['id']}.json"]


def test_failed_run_is_recorded_the_grid_goes_on_and_retry_reruns_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MTVAE_TEST_FAIL", "1")
    first = run_grid(spec(), root=tmp_path, progress="none")
    assert (first.done, first.failed) == (4, 2)  # x=2 fails for both seeds
    failed = [r for r in records(tmp_path).values() if r["status"] == "failed"]
    assert {r["config"]["x"] for r in failed} == {2} and len(failed) == 2
    err = failed[0]["error"]
    assert err["type"] == "ValueError" and "broken on purpose" in err["message"]
    assert "test_experiments.py" in err["traceback"] and "metrics" not in failed[0]
    assert "broken on purpose" in str(first)
    kept = run_grid(spec(), root=tmp_path, progress="none")
    assert (kept.done, kept.skipped, kept.kept_failed) == (0, 4, 2)
    assert "--retry-failed" in str(kept)
    assert list(plan(spec(), tmp_path).status) == ["done", "done", "failed"] * 2
    monkeypatch.delenv("MTVAE_TEST_FAIL")
    retry = run_grid(spec(), root=tmp_path, progress="none", retry_failed=True)
    assert (retry.done, retry.skipped, retry.failed) == (2, 4, 0)
    assert all(r["status"] == "ok" for r in records(tmp_path).values())
    assert len(load_results("g", tmp_path)) == 6


@pytest.mark.slow  # starting worker processes that import torch takes a few seconds
def test_pool_of_two_workers_writes_the_same_records_as_one(tmp_path):
    one = run_grid(spec(8), root=tmp_path / "one", progress="none",
                   executor=LocalExecutor(1), device="cpu")
    two = run_grid(spec(8), root=tmp_path / "two", progress="none",
                   executor=LocalExecutor(2), device="cpu")
    assert one.done == two.done == 8 and two.failed == 0
    a, b = records(tmp_path / "one"), records(tmp_path / "two")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key]["metrics"] == b[key]["metrics"]
        assert a[key]["threads"] == b[key]["threads"] == 1  # CPU: one thread per worker
    assert len({r["env"]["python"] for r in b.values()}) == 1


@pytest.mark.slow
def test_submitit_local_executor_runs_a_tiny_grid(tmp_path, monkeypatch):
    # the job processes import this module to find the 'fake' kind
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), str(REPO)]))
    executor = SlurmExecutor(folder=tmp_path / "submitit", cluster="local", runs_per_job=2,
                             gpus_per_node=0, cpus_per_task=1, timeout_min=5,
                             poll_seconds=0.2)
    summary = run_grid(spec(4), executor=executor, device="cpu", root=tmp_path,
                       progress="none")
    assert (summary.done, summary.failed) == (4, 0), str(summary)
    assert len(list((tmp_path / "submitit").glob("*_result.pkl"))) == 2  # two array tasks
    assert sorted(load_results("g", tmp_path).x2) == [0, 0, 2, 2]


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(MTVAEError, match=r"valid run kinds are: .*baseline.*hetero"):
        get_kind("nope")
    with pytest.raises(MTVAEError, match="valid executors are: local, slurm"):
        get_executor("kubernetes")
    with pytest.raises(MTVAEError,
                       match="valid grids are: aux, beta, cvae, hetero, hier, multimodal, tables"):
        get_grid("nope")
    with pytest.raises(MTVAEError, match="valid profiles are: full, smoke"):
        get_grid("hetero", "medium")
    with pytest.raises(MTVAEError, match="workers must be a positive integer"):
        LocalExecutor(0)
    with pytest.raises(MTVAEError, match="already registered"):
        register("fake")(lambda config, device: {})
    with pytest.raises(MTVAEError, match="valid run kinds"):
        run_grid(grid_of("g", "nope", {"x": (1,)}), root="/nonexistent", progress="none")


def test_hetero_grid_from_the_profiles():
    full, smoke = get_grid("hetero", "full"), get_grid("hetero", "smoke")
    assert full.name == "hetero-full" and smoke.name == "hetero-smoke"
    runs = full.runs()
    assert len(runs) >= 100
    kinds = {k: sum(r.kind == k for r in runs) for k in ("baseline", "hetero")}
    n_methods = len(get_profile("full").grid.methods)
    assert kinds["hetero"] == n_methods * kinds["baseline"]  # every method per baseline
    assert len({r.config["seed"] for r in runs}) >= 5
    assert {r.config["missing_rate"] for r in runs} == {0.1, 0.3, 0.5}
    assert "sum" in {r.config.get("method") for r in runs}
    assert len(smoke.runs()) <= 16


def test_hetero_and_baseline_kinds_write_compact_records(tmp_path):
    smoke = get_grid("hetero", "smoke")
    one = GridSpec("one", tuple(Block(b.kind, {**b.axes, "seed": (0,), "missing_rate": (0.5,),
                                               "dataset": ("labour",)}, b.fixed)
                                for b in smoke.blocks))
    summary = run_grid(one, root=tmp_path, device="cpu", progress="none")
    assert (summary.done, summary.failed) == (3, 0), str(summary)
    df = load_results("one", tmp_path)
    assert set(df.method) == {"mean imputation", "sum", "pcgrad"}
    net = df[df.kind == "hetero"].iloc[0]
    assert set(net.errors) == {"capital", "labour", "output", "wage"}
    assert {"mean_abs_cosine", "norm_ratio", "overlooked_share", "conflicting_pairs",
            "overlooked"} <= set(net.conflict)
    assert net.conflict["norm_ratio"] >= 1 and 0 <= net.conflict["overlooked_share"] <= 1
    assert "diagnostics" not in df.columns  # no per-epoch series in grid records
    assert (df.device == "cpu").all() and (df.missing_rate == 0.5).all()


def test_named_grid_checks_its_tables_and_methods():
    import dataclasses

    from mtvae.experiments.grids import hetero_grid
    from mtvae.profiles import get_profile

    smoke = get_profile("smoke")
    bad_table = dataclasses.replace(smoke, grid=dataclasses.replace(smoke.grid,
                                                                    datasets=("wine", "iris")))
    with pytest.raises(MTVAEError, match="unknown table 'iris'"):
        hetero_grid(bad_table)
    bad_method = dataclasses.replace(smoke, grid=dataclasses.replace(smoke.grid,
                                                                     methods=("sum", "pcgard")))
    with pytest.raises(MTVAEError, match="pcgard"):
        hetero_grid(bad_method)


# ------------------------------------------- issue 15: workers die with their parent


@pytest.mark.slow
def test_sigkill_of_the_grid_leaves_no_worker_and_a_rerun_completes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import psutil

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "mtvae", "grid", "hetero", "--workers", "2", "--device", "cpu",
           "--results", str(tmp_path)]
    folder = tmp_path / "hetero-smoke"
    with open(tmp_path / "log.txt", "w") as log:
        parent = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=log)
        proc = psutil.Process(parent.pid)
        deadline = time.time() + 300
        while time.time() < deadline and not list(folder.glob("*.json")):
            assert parent.poll() is None, (tmp_path / "log.txt").read_text()
            time.sleep(0.2)
        workers = proc.children(recursive=True)
        assert len(workers) >= 2 and list(folder.glob("*.json"))
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    # before issue 15 the workers finished their runs, then sat idle until killed by hand
    _gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"workers still running after the parent's SIGKILL: {alive}"
    kept = {p.name for p in folder.glob("*.json")}
    assert len(kept) < 12  # killed mid-grid
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    assert (f"grid hetero-smoke: 12 runs: {12 - len(kept)} done, {len(kept)} skipped "
            "(recorded), 0 failed") in again.stdout
    recs = records(tmp_path, "hetero-smoke")
    assert len(recs) == 12 and all(r["id"] == stem and r["status"] == "ok"
                                   for stem, r in recs.items())  # none lost, none twice
