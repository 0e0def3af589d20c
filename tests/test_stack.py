"""The stacked engine: members are independent runs that follow the single-run rules."""

import math

import pytest
import torch
from torch import nn

from mtvae.data import load
from mtvae.data.base import Dataset, Split
from mtvae.errors import MTVAEError, TrainingDivergedError
from mtvae.models import VAE, HeteroVAE
from mtvae.stack import fit_stacked
from mtvae.terms import Terms
from mtvae.train import fit


def _tables(seeds):
    return [load("hi", missing_rate=0.3, mask_seed=s, split_seed=0, max_rows=300)
            for s in seeds]


def _hetero(seed, data):
    torch.manual_seed(seed)
    return HeteroVAE(data.info["schema"], hidden=16, depth=1, scaler=data.info["scaler"])


KW = {"epochs": 3, "batch_size": 64, "patience": 2, "device": "cpu", "progress": "none"}


def _run(seeds, datas, combiner="sum", **kw):
    models = [_hetero(s, d) for s, d in zip(seeds, datas, strict=True)]
    res = fit_stacked(models, datas, seeds=seeds, combiner=combiner, **(KW | kw))
    return models, res


def _traj(result):
    """The history without wall times."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in result.history]


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("combiner", ["sum", "pcgrad", "imtl-g@parameter-rescaled"])
def test_changing_one_member_leaves_the_others_bit_identical(combiner):
    d = _tables([0, 1, 2, 7])
    m1, r1 = _run([0, 1, 2], d[:3], combiner)
    m2, r2 = _run([0, 7, 2], [d[0], d[3], d[2]], combiner)  # member 1: other seed and mask
    for i in (0, 2):
        assert _traj(r1[i]) == _traj(r2[i]) and _same(m1[i], m2[i])
    assert _traj(r1[1]) != _traj(r2[1])


def test_a_members_trajectory_does_not_depend_on_the_stack_size():
    d = _tables([0, 1, 2])
    m_alone, r_alone = _run([0], d[:1])
    m_stack, r_stack = _run([0, 1, 2], d)
    for a, b in zip(r_alone[0].history, r_stack[0].history, strict=True):
        assert a.keys() == b.keys()
        assert all(math.isclose(a[k], b[k], rel_tol=1e-5, abs_tol=1e-6)
                   for k in a if k != "seconds")
    for k, v in m_alone[0].state_dict().items():
        assert torch.allclose(v.float(), m_stack[0].state_dict()[k].float(), atol=1e-5)


def test_stacked_parameter_space_mean_rescaled_follows_the_plain_sum():
    """The mean of a member's Jacobian rows rescaled to the plain norm IS its plain summed
    gradient: a stacked ``mean@parameter-rescaled`` run follows the stacked sum (same noise),
    which holds only if every member's Jacobian slice, its heads' gradients and its
    regularisers land in its own slice of the stacked parameters."""
    d = _tables([0, 1, 2])
    m_sum, r_sum = _run([0, 1, 2], d, "sum")
    m_mean, r_mean = _run([0, 1, 2], d, "mean@parameter-rescaled")
    for a_res, b_res, a, b in zip(r_sum, r_mean, m_sum, m_mean, strict=True):
        for x, y in zip(a_res.history, b_res.history, strict=True):
            assert all(math.isclose(x[k], y[k], rel_tol=1e-4, abs_tol=1e-5)
                       for k in x if k != "seconds")
        for k, v in a.state_dict().items():
            assert torch.allclose(v.float(), b.state_dict()[k].float(), atol=1e-4)
    _, r_raw = _run([0, 1, 2], d, "mean@parameter")  # the raw mean: 1/T of the step
    assert _traj(r_raw[0]) != _traj(r_mean[0])


def test_members_with_the_same_seed_stay_identical():
    d = _tables([3])[0]
    # identical members at different stack positions: vectorised CPU kernels may round the
    # last elements of a stacked tensor differently (scalar tail), so they agree to float
    # precision, not always to the bit (the bit-exact guarantee is test 1: a member's own
    # position and data fix its trajectory)
    models, res = _run([3, 3, 3], [d, d, d], "sum")
    assert _traj(res[0]) == _traj(res[1])
    for m in models[1:]:
        for k, v in models[0].state_dict().items():
            assert torch.allclose(v.float(), m.state_dict()[k].float(), rtol=1e-4, atol=1e-5)
    models, res = _run([3, 3, 3], [d, d, d], "imtl-g", epochs=2, patience=None)
    for r in res[1:]:
        for a, b in zip(_traj(res[0]), _traj(r), strict=True):
            assert all(math.isclose(a[k], b[k], rel_tol=1e-4) for k in a)


class _Quadratic(nn.Module):
    """Deterministic: training pulls w towards mean(x); validation prefers w = target."""

    def __init__(self, w0: float, target: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w0]))
        self.register_buffer("target", torch.tensor([target]))

    def loss_terms(self, batch):
        x = batch["x"].reshape(len(batch["x"]), -1)[:, 0]
        train = ((self.w - x) ** 2).mean() if self.training else (self.w - self.target) ** 2
        return Terms(tasks={"x": train.reshape(())}, regularizers={})


def _const(value: float, n: int = 40) -> Dataset:
    split = Split({"x": torch.full((n, 1), value)})
    return Dataset("const", split, split, split, (1,))


def test_early_stopping_and_best_state_follow_the_single_run_rules():
    kw = {"epochs": 60, "batch_size": 10, "patience": 4, "lr": 0.05, "device": "cpu",
          "progress": "none"}
    singles, stacked = [], [_Quadratic(0.0, 0.5), _Quadratic(0.0, 0.8)]
    for target in (0.5, 0.8):
        m = _Quadratic(0.0, target)
        singles.append((m, fit(m, _const(1.0), **kw)))
    results = fit_stacked(stacked, [_const(1.0), _const(1.0)], seeds=[0, 1], **kw)
    for (m, ref), m2, res in zip(singles, stacked, results, strict=True):
        assert res.stopped_early and ref.stopped_early
        assert (res.best_epoch, res.epochs_run) == (ref.best_epoch, ref.epochs_run)
        assert res.epochs_run == res.best_epoch + kw["patience"]
        # the best state, restored
        assert math.isclose(float(m2.w.detach()), float(m.w.detach()), rel_tol=1e-5)
    assert results[0].best_epoch != results[1].best_epoch  # each member stopped on its own


def test_a_diverging_member_is_named_and_the_others_finish():
    datas = [_const(1.0), _const(1e30), _const(1.0)]  # member 1's loss overflows to inf
    models = [_Quadratic(0.0, 0.5) for _ in datas]
    res = fit_stacked(models, datas, seeds=[0, 1, 2], epochs=5, batch_size=10, device="cpu",
                      progress="none", check_every=2)
    assert isinstance(res[1], TrainingDivergedError)
    assert "member 1 (seed 1)" in str(res[1]) and "epoch 1 by step 1" in str(res[1])
    assert res[0].epochs_run == res[2].epochs_run == 5


def test_killed_stacked_job_resumes_to_the_uninterrupted_result(tmp_path):
    d = _tables([0, 1])
    kw = {"epochs": 4, "patience": None}
    ref_models, ref = _run([0, 1], d, "upgrad", **kw)

    class Interrupt(Exception):
        pass

    models = [_hetero(s, x) for s, x in zip([0, 1], d, strict=True)]
    ckpts = [tmp_path / "a.pt", tmp_path / "b.pt"]
    calls = {"n": 0}
    original = HeteroVAE.loss_terms

    def flaky(self, batch):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] > 2 * 4 + 1:  # 4 steps per epoch: dies inside epoch 3
                raise Interrupt
        return original(self, batch)

    HeteroVAE.loss_terms = flaky
    try:
        with pytest.raises(Interrupt):
            fit_stacked(models, d, seeds=[0, 1], checkpoints=ckpts, combiner="upgrad",
                        **(KW | kw))
    finally:
        HeteroVAE.loss_terms = original
    models = [_hetero(s, x) for s, x in zip([0, 1], d, strict=True)]
    res = fit_stacked(models, d, seeds=[0, 1], checkpoints=ckpts, combiner="upgrad",
                      **(KW | kw))
    for a, b, ma, mb in zip(ref, res, ref_models, models, strict=True):
        assert b.resumed_from == 2
        assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
        assert _same(ma, mb)


def test_image_vaes_stack_and_parameter_space_needs_tasks_to_balance():
    data = load("digits", binarize="dynamic", train_size=200)
    models = []
    for s in (0, 1):
        torch.manual_seed(s)
        models.append(VAE((1, 8, 8), 4, hidden=(16,)))
    res = fit_stacked(models, [data, data], seeds=[0, 1], epochs=2, device="cpu",
                      progress="none")
    assert all(r.epochs_run == 2 for r in res)
    assert _traj(res[0]) != _traj(res[1])
    with pytest.raises(MTVAEError, match="at least two tasks"):
        fit_stacked(models, [data, data], seeds=[0, 1], epochs=1, device="cpu",
                    progress="none", combiner="mgda@parameter")


@pytest.mark.parametrize("combiner", ["sum", "pcgrad"])
def test_monitor_every_counts_steps_over_the_whole_run_single_and_stacked(combiner):
    """A table with one step per epoch is observed every monitor_every steps, not every step;
    observing changes no number of the training."""
    data = _tables([0])[0]
    kw = KW | {"epochs": 6, "batch_size": 512, "patience": None}  # one step per epoch
    assert math.ceil(len(data.train) / kw["batch_size"]) == 1
    _, res = _run([0], [data], combiner=combiner, monitor_every=3, **kw)
    single = fit(_hetero(0, data), data, seed=0, combiner=combiner, monitor_every=3, **kw)
    quiet = fit(_hetero(0, data), data, seed=0, combiner=combiner, monitor_every=None, **kw)
    assert res[0].diagnostics["steps_observed"] == 2  # steps 0 and 3 of 0..5
    assert single.diagnostics["steps_observed"] == 2
    _, res_quiet = _run([0], [data], combiner=combiner, monitor_every=None, **kw)
    assert _traj(single) == _traj(quiet) and _traj(res[0]) == _traj(res_quiet[0])
