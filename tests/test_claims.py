"""Claims: a run another live process is executing is not started a second time."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mtvae.experiments import claims, grid_of, plan, register, run_grid
from mtvae.experiments.claims import claim, claim_path, holder, release
from mtvae.experiments.kinds import register_stacked

REPO = Path(__file__).resolve().parents[1]
CLAIMS_PY = REPO / "mtvae" / "experiments" / "claims.py"


def _count(config):
    """Note one execution of the run in its log file (one line per execution)."""
    with open(config["log"], "a") as fh:
        fh.write(f"{config['seed']} {config['x']}\n")


@register("counted")
def counted(config, device):
    """A run that logs each execution; ``fail`` raises, ``interrupt`` stops the grid."""
    _count(config)
    time.sleep(config.get("sleep", 0))
    if config["x"] == config.get("fail"):
        raise ValueError("broken on purpose")
    if config["x"] == config.get("interrupt"):
        raise KeyboardInterrupt
    return {"x": config["x"]}


STACKS: list[int] = []  # members of each stacked job, as the stacked variant saw them


@register_stacked("counted")
def counted_stacked(configs, device):
    STACKS.append(len(configs))
    return [counted(c, device) for c in configs]


def _spec(tmp_path, xs=(0, 1, 2), seeds=(0,), **fixed):
    return grid_of("c", "counted", {"seed": seeds, "x": xs},
                   {"log": str(tmp_path / "log.txt"), **fixed})


def _executions(tmp_path):
    log = tmp_path / "log.txt"
    return sorted(log.read_text().splitlines()) if log.exists() else []


def _record(root, run):
    return Path(root) / "c" / f"{run.id}.json"


def _leftover_claims(root):
    return sorted(Path(root).rglob("*.claim"))


@pytest.fixture
def sleeper():
    """A live process of this host that is not this one (its pid holds foreign claims)."""
    proc = subprocess.Popen(["sleep", "30"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _write_claim(record, pid, host=None):
    claim_path(record).parent.mkdir(parents=True, exist_ok=True)
    claim_path(record).write_text(json.dumps(
        {"pid": pid, "host": host or socket.gethostname(), "started": "2024-01-01T00:00:00"}))


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------- claim, release, holder


def test_a_second_process_cannot_claim_a_held_run_nor_release_it(tmp_path):
    """Another process holds the claim (made by claims.claim, loaded without torch); this
    one is refused while it lives, cannot release it, and takes it over once it is dead."""
    record = tmp_path / "g" / "r.json"
    script = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("claims", {str(CLAIMS_PY)!r})
        claims = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(claims)
        print(claims.claim({str(record)!r}), flush=True)
        sys.stdin.read()  # hold the claim until the test closes stdin
        """)
    other = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "True"
        assert not claim(record)
        info = holder(record)
        assert info["pid"] == other.pid and info["host"] == socket.gethostname()
        assert claims.describe(info) == f"pid {other.pid} on {socket.gethostname()}"
        release(record)  # not ours: it stays
        assert claim_path(record).exists() and holder(record)["pid"] == other.pid
    finally:
        other.stdin.close()
        other.wait(timeout=10)
    assert claim_path(record).exists()  # the other process ended without releasing it
    assert holder(record) is None  # stale: its pid is gone
    assert claim(record) and claim(record)  # taken over; claiming again is a no-op
    assert json.loads(claim_path(record).read_text())["pid"] == os.getpid()
    assert holder(record) is None  # our own claim is nobody else's
    release(record)
    assert not claim_path(record).exists()
    release(record)  # releasing what is not held is harmless


def test_a_dead_pid_or_an_old_unreadable_claim_is_taken_over(tmp_path):
    record = tmp_path / "g" / "r.json"
    _write_claim(record, _dead_pid())
    assert holder(record) is None and claim(record)
    assert json.loads(claim_path(record).read_text())["pid"] == os.getpid()
    release(record)
    claim_path(record).write_text("{")  # a claim being written, or debris of a crash
    assert not claim(record) and holder(record) == {"pid": None, "host": None,
                                                    "started": None}
    old = time.time() - claims.UNREADABLE_GRACE_SECONDS - 1
    os.utime(claim_path(record), (old, old))
    assert holder(record) is None and claim(record)
    release(record)
    assert not claim_path(record).exists()


def test_a_claim_made_on_another_host_is_respected(tmp_path):
    record = tmp_path / "g" / "r.json"
    _write_claim(record, _dead_pid(), host="elsewhere.invalid")  # its pid means nothing here
    assert not claim(record)
    assert claims.describe(holder(record)).endswith(" on elsewhere.invalid")
    release(record)
    assert claim_path(record).exists()


def test_pid_probe_handles_missing_and_foreign_processes():
    assert claims.alive(os.getpid())
    assert claims.alive(1)  # init: exists, signalling it is not permitted (PermissionError)
    assert not claims.alive(_dead_pid())
    assert not claims.alive(0) and not claims.alive(-1)  # process groups, not a pid


# ------------------------------------------------------------------------- run_grid


def test_run_grid_skips_a_run_claimed_by_a_live_process_and_runs_it_once_stale(tmp_path,
                                                                                 sleeper):
    spec = _spec(tmp_path)
    busy = spec.runs()[1]
    _write_claim(_record(tmp_path, busy), sleeper.pid)
    first = run_grid(spec, root=tmp_path, progress="none")
    assert (first.done, first.claimed, first.left, first.skipped) == (2, 1, 0, 0)
    host = socket.gethostname()
    assert (f"1 run is being run by another process (pid {sleeper.pid} on {host}): "
            "not started here") in str(first)
    assert "delete its .claim files" in str(first)
    assert not _record(tmp_path, busy).exists()
    table = plan(spec, tmp_path)
    assert list(table.status) == ["done", "pending", "done"]  # status values unchanged
    assert list(table.claimed_by) == ["", f"pid {sleeper.pid} on {host}", ""]
    sleeper.kill()
    sleeper.wait()
    assert list(plan(spec, tmp_path).claimed_by) == ["", "", ""]
    second = run_grid(spec, root=tmp_path, progress="none")
    assert (second.done, second.claimed, second.skipped) == (1, 0, 2)
    assert _executions(tmp_path) == ["0 0", "0 1", "0 2"]  # each run executed once
    assert _leftover_claims(tmp_path) == []


def test_the_dry_run_marks_claimed_runs_and_keeps_its_summary_line_last(tmp_path, sleeper,
                                                                        capsys):
    from mtvae.__main__ import _print_plan

    spec = _spec(tmp_path)
    _write_claim(_record(tmp_path, spec.runs()[0]), sleeper.pid)
    _print_plan(plan(spec, tmp_path))
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith(f" pending  (being run by pid {sleeper.pid} on "
                             f"{socket.gethostname()})")
    assert lines[2].endswith(" pending") and lines[3].endswith(" pending")
    assert lines[4].startswith("1 of these runs are being run by another process")
    assert "claimed_by" not in lines[0]


def test_a_run_recorded_elsewhere_just_before_our_claim_is_not_run_again(tmp_path,
                                                                          monkeypatch):
    """Another process finished the run (record written, claim released) between this
    call's look at the record and its claim: the claim succeeds, the run is still skipped."""
    from mtvae.experiments import runner

    spec = _spec(tmp_path, xs=(0,))
    real, nested = claims.claim, []

    def finished_meanwhile(path):
        if not nested:
            nested.append(path)
            run_grid(spec, root=tmp_path, progress="none")  # the "other process"
        return real(path)

    monkeypatch.setattr(runner.claims, "claim", finished_meanwhile)
    summary = run_grid(spec, root=tmp_path, progress="none")
    assert (summary.done, summary.skipped, summary.claimed) == (0, 1, 0)
    assert _executions(tmp_path) == ["0 0"] and _leftover_claims(tmp_path) == []


def test_stacked_jobs_run_only_their_unclaimed_members(tmp_path, sleeper):
    spec = _spec(tmp_path, xs=(0,), seeds=(0, 1, 2))
    runs = spec.runs()
    for run in runs[1:]:
        _write_claim(_record(tmp_path, run), sleeper.pid)
    STACKS.clear()
    one = run_grid(spec, root=tmp_path, progress="none", stack=3)
    assert (one.done, one.claimed) == (1, 2) and STACKS == [1]  # still the stacked engine
    for run in runs[:1]:
        _write_claim(_record(tmp_path, run), sleeper.pid)
    _record(tmp_path, runs[0]).unlink()
    none = run_grid(spec, root=tmp_path, progress="none", stack=3)
    assert (none.done, none.claimed, none.left) == (0, 3, 0) and STACKS == [1]  # dropped
    for run in runs:
        claim_path(_record(tmp_path, run)).unlink()
    rest = run_grid(spec, root=tmp_path, progress="none", stack=3)
    assert rest.done == 3 and STACKS == [1, 3] and _leftover_claims(tmp_path) == []


def test_no_claim_is_left_after_failures_interruptions_and_the_time_limit(tmp_path):
    failing = run_grid(_spec(tmp_path / "a", fail=1), root=tmp_path / "a", progress="none")
    assert (failing.done, failing.failed) == (2, 1)
    assert _leftover_claims(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        run_grid(_spec(tmp_path / "b", interrupt=1), root=tmp_path / "b", progress="none")
    assert _leftover_claims(tmp_path) == []

    def power_cut(outcome):
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        run_grid(_spec(tmp_path / "c"), root=tmp_path / "c", progress="none",
                 on_result=power_cut)
    assert _leftover_claims(tmp_path) == []
    spec = _spec(tmp_path / "d", xs=tuple(range(6)), sleep=0.05)
    timed = run_grid(spec, root=tmp_path / "d", progress="none", max_minutes=1e-3)
    assert timed.left > 0 and timed.claimed == 0 and _leftover_claims(tmp_path) == []
    rest = run_grid(spec, root=tmp_path / "d", progress="none")
    assert rest.done == timed.left and len(_executions(tmp_path / "d")) == 6


def test_a_staged_call_returns_when_every_run_is_claimed_elsewhere(tmp_path, sleeper):
    from mtvae.experiments.runner import run_staged

    spec = _spec(tmp_path)
    for run in spec.runs():
        _write_claim(_record(tmp_path, run), sleeper.pid)
    total = run_staged(lambda: spec, root=tmp_path, progress="none")
    assert (total.done, total.claimed, total.left) == (0, 3, 0)
    assert "3 runs are being run by another process" in str(total)


CONCURRENT = """
import json, sys, time
from pathlib import Path

from mtvae.experiments import grid_of, register, run_grid

root = Path(sys.argv[1])


@register("counted")
def counted(config, device):
    with open(root / "log.txt", "a") as fh:
        fh.write(f"{config['x']}\\n")
    time.sleep(0.05)
    return {"x": config["x"]}


(root / f"ready-{sys.argv[2]}").touch()
while not (root / "go").exists():
    time.sleep(0.005)
spec = grid_of("c", "counted", {"x": tuple(range(16))}, {"seed": 0})
print(json.dumps(run_grid(spec, root=root, progress="none", device="cpu").as_dict()))
"""


@pytest.mark.slow  # two fresh interpreters import torch (~5 s each)
def test_two_processes_on_one_grid_run_every_run_exactly_once(tmp_path):
    script = tmp_path / "grid.py"
    script.write_text(CONCURRENT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (1, 2)]
    try:
        deadline = time.time() + 120
        while not all((tmp_path / f"ready-{i}").exists() for i in (1, 2)):
            assert time.time() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.01)
        (tmp_path / "go").touch()  # both start claiming at the same moment
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    summaries = [json.loads(out.splitlines()[-1]) for out, _ in outs]
    assert sum(s["done"] for s in summaries) == 16 and sum(s["failed"] for s in summaries) == 0
    assert sorted((tmp_path / "log.txt").read_text().split()) == sorted(
        str(x) for x in range(16))  # every run executed exactly once
    assert len(list((tmp_path / "c").glob("*.json"))) == 16
    assert _leftover_claims(tmp_path) == []
