"""Raising a grid's cap: a run patience stopped is the same run under a larger cap, so its
record carries over; what the cap stopped (or what is no longer planned) is superseded."""

import dataclasses

import pytest
import torch

from mtvae.data import Dataset, Split
from mtvae.errors import MTVAEError
from mtvae.experiments.carry import SUPERSEDED, carries, raise_cap
from mtvae.experiments.runner import plan
from mtvae.experiments.setting_grids import vqhead_grid
from mtvae.experiments.spec import Block, GridSpec
from mtvae.models import VAE
from mtvae.profiles import get_profile
from mtvae.results import new_record, read_record, write_record
from mtvae.train import fit


def _toy() -> Dataset:
    gen = torch.Generator().manual_seed(0)

    def split(n):
        return Split({"x": torch.bernoulli(torch.full((n, 12), 0.3), generator=gen)})

    return Dataset(name="toy", train=split(48), val=split(16), test=split(16), x_shape=(12,))


def _fit(epochs):
    torch.manual_seed(0)
    model = VAE((12,), 2, likelihood="bernoulli", arch="mlp", hidden=(16,))
    res = fit(model, _toy(), epochs=epochs, batch_size=16, lr=0.05, patience=2, seed=0,
              device="cpu", progress="none")
    return res, {k: v.clone() for k, v in model.state_dict().items()}


def test_a_run_patience_stopped_is_the_same_run_under_a_larger_cap():
    short, w_short = _fit(60)
    assert short.stopped_early and short.epochs_run < 60  # the premise of carrying over
    long, w_long = _fit(500)
    assert long.stopped_early and long.epochs_run == short.epochs_run
    assert long.best_epoch == short.best_epoch and long.best_val == short.best_val
    assert [h["val_loss"] for h in long.history] == [h["val_loss"] for h in short.history]
    assert all(torch.equal(w_short[k], w_long[k]) for k in w_short)


def _spec(cap, seeds=(0, 1, 2, 3)):
    return GridSpec("toy-grid", (Block("aux-plain", {"seed": seeds},
                                       {"dataset": "mnist5k", "epochs": cap}),))


def _write(root, spec, seed, **metrics):
    run = next(r for r in spec.runs() if r.config["seed"] == seed)
    body = {"status": metrics.pop("status", "ok"), "metrics": metrics}
    write_record(root / spec.name / f"{run.id}.json",
                 new_record(spec.name, run.kind, dict(run.config), body, seconds=1.0,
                            device="cpu"))
    return run.id


def test_raising_a_cap_carries_the_stopped_records_and_supersedes_the_rest(tmp_path):
    old = _spec(10)
    stopped = _write(tmp_path, old, 0, stopped_early=True, epochs_run=6, epoch_cap=10, acc=0.7)
    capped = _write(tmp_path, old, 1, stopped_early=False, epochs_run=10, epoch_cap=10)
    _write(tmp_path, old, 2, status="failed")
    orphan = _write(tmp_path, _spec(10, seeds=(9,)), 9, stopped_early=True, epochs_run=3,
                    epoch_cap=10)  # a run the raised grid no longer plans
    new = _spec(20)
    out = raise_cap(lambda: new, tmp_path)
    assert out.cap == 20 and len(out.carried) == 1 and len(out.superseded) == 3
    status = plan(new, tmp_path).set_index("id").status
    assert status[out.carried[0]] == "done" and (status == "done").sum() == 1
    rec = read_record(tmp_path / new.name / f"{out.carried[0]}.json")
    assert rec["config"]["epochs"] == 20 and rec["metrics"]["epoch_cap"] == 20
    assert rec["metrics"]["acc"] == 0.7 and rec["metrics"]["epochs_run"] == 6
    assert rec["carried_from"] == {"id": stopped, "epoch_cap": 10}
    from mtvae.experiments import load_results

    loaded = load_results(new, tmp_path)
    assert loaded.set_index("id").carried_from_cap[out.carried[0]] == 10
    moved = {p.stem for p in (tmp_path / new.name / SUPERSEDED).glob("*.json")}
    assert {capped, orphan} <= moved and stopped not in moved
    assert not (tmp_path / new.name / f"{stopped}.json").exists()
    again = raise_cap(lambda: new, tmp_path)  # nothing left to do: idempotent
    assert not again.carried and not again.superseded
    with pytest.raises(MTVAEError, match="lowering a cap"):
        raise_cap(lambda: _spec(5), tmp_path)


def test_only_a_run_stopped_before_its_own_cap_carries():
    def rec(**m):
        return {"status": "ok", "config": {"epochs": 10}, "metrics": m}

    assert carries(rec(stopped_early=True, epochs_run=9), 20)
    assert not carries(rec(stopped_early=True, epochs_run=10), 20)  # stopped at the cap
    assert not carries(rec(stopped_early=False, epochs_run=10), 20)
    assert not carries(rec(stopped_early=True, epochs_run=9), 10)  # not a larger cap


def test_a_staged_grid_carries_its_evaluation_runs_once_its_tuning_has(tmp_path):
    smoke = get_profile("smoke")
    raised = dataclasses.replace(smoke, vq_grid=dataclasses.replace(smoke.vq_grid, epochs=5))
    best_w = max(smoke.vq_grid.label_weights)
    while True:  # the smoke grid at its own cap, every run stopped by patience
        spec = vqhead_grid(smoke, tmp_path)
        todo = [r for r in spec.runs() if not (tmp_path / spec.name / f"{r.id}.json").exists()]
        if not todo:
            break
        for run in todo:
            c = dict(run.config)
            best = c["method"] == "sum" and c["label_weight"] == best_w
            m = {"stopped_early": True, "epochs_run": 0, "best_epoch": 0, "epoch_cap": 1,
                 "val_accuracy": 0.9 if best else 0.5, "test_accuracy": 0.8}
            write_record(tmp_path / spec.name / f"{run.id}.json",
                         new_record(spec.name, run.kind, c, {"status": "ok", "metrics": m},
                                    seconds=0.0, device="cpu"))
    n = len(vqhead_grid(smoke, tmp_path).runs())
    out = raise_cap(lambda: vqhead_grid(raised, tmp_path), tmp_path)
    assert len(out.carried) == n and not out.superseded
    status = plan(vqhead_grid(raised, tmp_path), tmp_path).status
    assert len(status) == n and (status == "done").all()


def test_the_cli_raises_a_cap_and_names_what_it_did(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mtvae", "grid", "vqhead", "--profile", "smoke",
                          "--results", str(tmp_path), "--raise-cap"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "grid vqhead-smoke: cap 1 epochs: 0 records stopped by patience carried over" in (
        out.stdout)


def test_the_runner_carries_a_superseded_run_back_when_its_run_is_planned_again(tmp_path):
    from mtvae.experiments.runner import run_grid

    old = _spec(10, seeds=(0,))
    stopped = _write(tmp_path, old, 0, stopped_early=True, epochs_run=4, epoch_cap=10, acc=0.6)
    assert not raise_cap(lambda: _spec(20, seeds=(1,)), tmp_path).carried  # seed 0 unplanned
    assert (tmp_path / old.name / SUPERSEDED / f"{stopped}.json").exists()
    again = _spec(20, seeds=(0,))  # the raised grid plans the run again (e.g. chosen again)

    class NoExecutor:  # nothing may train: the superseded record is the same run
        def check(self, device):
            pass

        def map(self, jobs, deadline=None):
            assert not jobs, jobs
            return iter(())

    summary = run_grid(again, executor=NoExecutor(), root=tmp_path, progress="none", stack=1)
    assert summary.carried == 1 and "1 carried over from a lower cap" in str(summary)
    rec = read_record(tmp_path / again.name / f"{again.runs()[0].id}.json")
    assert rec["carried_from"]["id"] == stopped and rec["metrics"]["acc"] == 0.6
    assert not (tmp_path / old.name / SUPERSEDED / f"{stopped}.json").exists()
    assert (plan(again, tmp_path).status == "done").all()
