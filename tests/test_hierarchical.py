"""The hierarchical VAE: per-layer rates, their weights, the MOO option, and the analysis."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import distributions as D

from mtvae.data import Dataset, Split
from mtvae.errors import MTVAEError
from mtvae.models import HierarchicalVAE
from mtvae.models.hierarchical import kl_normal
from mtvae.studies.hierarchical import (
    SUM_AT_ONE,
    SUM_CHOSEN,
    add_probe_means,
    chosen_cell,
    grid_frame,
    layer_accuracy,
    layer_factors,
    rates_as_tasks,
    variance_explained,
)
from mtvae.terms import Terms
from mtvae.train import fit

SHAPE = (1, 8, 8)


def _images(n=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, *SHAPE), 0.3), generator=gen)


def _model(**kw):
    torch.manual_seed(0)
    return HierarchicalVAE(SHAPE, kw.pop("z1_dim", 4), kw.pop("z2_dim", 3), hidden=(32, 16), **kw)


def _dataset():
    return Dataset(name="toy", train=Split({"x": _images(64, 1)}), val=Split({"x": _images(32, 2)}),
                   test=Split({"x": _images(32, 3)}), x_shape=SHAPE)


def test_per_layer_kls_are_nonnegative_and_sum_to_the_rate():
    model = _model(beta1=1.0, beta2=1.0)
    x = _images()
    torch.manual_seed(1)
    parts = model.elbo_parts(x)
    assert all(p.shape == (16,) for p in parts)
    assert (parts.kl1 >= 0).all() and (parts.kl2 >= 0).all()
    terms = model.loss_terms({"x": x})
    st = terms.stats
    assert st["kl1"] >= 0 and st["kl2"] >= 0
    torch.testing.assert_close(st["rate"], st["kl1"] + st["kl2"])
    torch.testing.assert_close(st["nelbo"], st["distortion"] + st["rate"])
    torch.testing.assert_close(terms.total(), st["nelbo"])  # beta1 = beta2 = 1: the ELBO


def test_kl_formula_matches_torch_and_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    loc_q, loc_p = torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    scale_q = torch.rand(5, generator=gen) + 0.3
    scale_p = torch.rand(5, generator=gen) + 0.3
    ours = kl_normal(loc_q, scale_q, loc_p, scale_p)
    ref = D.kl_divergence(D.Normal(loc_q, scale_q), D.Normal(loc_p, scale_p))
    torch.testing.assert_close(ours, ref)
    q, p = D.Normal(loc_q.double(), scale_q.double()), D.Normal(loc_p.double(), scale_p.double())
    z = q.sample((400_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    torch.testing.assert_close(ours.double(), mc, atol=0.03, rtol=0.02)


def test_model_rates_are_the_kls_of_its_own_distributions():
    model = _model()
    x = _images()
    torch.manual_seed(3)
    parts = model.elbo_parts(x)
    torch.manual_seed(3)  # same noise, drawn in the same order (z2 first, then z1)
    with torch.no_grad():
        d = model.features(x)
        eps2, eps1 = torch.randn(16, 3), torch.randn(16, 4)
        loc2, scale2 = model.posterior_z2(d)
        z2 = loc2 + scale2 * eps2
        q1, p1 = D.Normal(*model.posterior_z1(z2, d)), D.Normal(*model.prior_z1(z2))
        kl1 = D.kl_divergence(q1, p1).sum(-1)
        kl2 = D.kl_divergence(D.Normal(loc2, scale2), D.Normal(0.0, 1.0)).sum(-1)
        z1 = q1.mean + q1.stddev * eps1
        nll = -D.Independent(D.Bernoulli(logits=model.decode(z1)[:, 0]), 3).log_prob(x)
    torch.testing.assert_close(parts.kl1, kl1)
    torch.testing.assert_close(parts.kl2, kl2)
    torch.testing.assert_close(parts.distortion, nll)


def test_betas_weight_the_right_terms():
    model = _model(beta1=2.0, beta2=3.0)
    torch.manual_seed(0)
    terms = model.loss_terms({"x": _images()})
    assert isinstance(terms, Terms)
    assert set(terms.tasks) == {"x"} and set(terms.regularizers) == {"kl1", "kl2"}
    torch.testing.assert_close(terms.regularizers["kl1"], 2.0 * terms.stats["kl1"])
    torch.testing.assert_close(terms.regularizers["kl2"], 3.0 * terms.stats["kl2"])
    torch.testing.assert_close(terms.tasks["x"], terms.stats["distortion"])
    # p(z1|z2) enters only the z1 rate: with beta1 = 0 it gets no gradient at all
    for beta1, expect_grad in ((0.0, False), (1.0, True)):
        m = _model(beta1=beta1)
        m.loss_terms({"x": _images()}).total().backward()
        got = any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.p1.parameters())
        assert got == expect_grad


def test_rate_tasks_give_three_tasks_meeting_at_the_features():
    plain, moo = _model(beta1=2.0, beta2=0.5), _model(beta1=2.0, beta2=0.5, rate_tasks=True)
    x = _images()
    torch.manual_seed(5)
    t_plain = plain.loss_terms({"x": x})
    torch.manual_seed(5)
    t_moo = moo.loss_terms({"x": x})
    assert list(t_moo.tasks) == ["x", "kl1", "kl2"] and not t_moo.regularizers
    torch.testing.assert_close(t_moo.total(), t_plain.total())  # same objective, same noise
    assert len(t_moo.task_inputs) == 3
    assert t_moo.shared.shape == (16, 16)  # d(x): the last hidden width
    # task i reads the shared features only through task_inputs[i]
    for i, loss in enumerate(t_moo.tasks.values()):
        grads = torch.autograd.grad(loss, t_moo.task_inputs, retain_graph=True,
                                    allow_unused=True)
        for j, g in enumerate(grads):
            assert (g is not None and g.abs().sum() > 0) == (i == j), (i, j)


@pytest.mark.parametrize(("combiner", "rate_tasks"), [("sum", False), ("sum", True),
                                                      ("pcgrad", True)])
def test_trains_without_nan(combiner, rate_tasks):
    model = _model(rate_tasks=rate_tasks)
    res = fit(model, _dataset(), epochs=2, batch_size=16, seed=0, device="cpu",
              progress="none", combiner=combiner, monitor_every=1 if rate_tasks else None)
    assert all(math.isfinite(h["loss"]) and math.isfinite(h["val_loss"]) for h in res.history)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_same_seed_gives_same_training_on_cpu():
    runs = [fit(_model(), _dataset(), epochs=2, batch_size=16, seed=4, device="cpu",
                progress="none").history for _ in range(2)]
    assert [h["val_loss"] for h in runs[0]] == [h["val_loss"] for h in runs[1]]


def test_encode_reconstruct_sample():
    model = _model().eval()
    x = _images(5)
    codes = model.encode(x)
    assert codes.z1.shape == (5, 4) and codes.z2.shape == (5, 3)
    torch.testing.assert_close(model.encode(x).z1, codes.z1)  # posterior means: deterministic
    assert model.reconstruct(x).shape == x.shape
    out = model.sample(7, generator=torch.Generator().manual_seed(0))
    assert out.shape == (7, *SHAPE) and ((out >= 0) & (out <= 1)).all()


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(MTVAEError, match=r"z1_dim must be a positive integer"):
        HierarchicalVAE(SHAPE, 0, 3)
    with pytest.raises(MTVAEError, match=r"z2_dim must be a positive integer"):
        HierarchicalVAE(SHAPE, 4, 2.5)
    with pytest.raises(MTVAEError, match=r"beta1 must be a number ≥ 0"):
        HierarchicalVAE(SHAPE, 4, 3, beta1=-1.0)
    with pytest.raises(MTVAEError, match=r"beta2 must be a number ≥ 0"):
        HierarchicalVAE(SHAPE, 4, 3, beta2=float("nan"))
    with pytest.raises(MTVAEError, match=r"hidden must be a non-empty"):
        HierarchicalVAE(SHAPE, 4, 3, hidden=())
    with pytest.raises(MTVAEError, match=r"valid likelihoods are"):
        HierarchicalVAE(SHAPE, 4, 3, likelihood="poisson")
    with pytest.raises(MTVAEError, match=r"built for examples of shape"):
        _model().loss_terms({"x": torch.zeros(2, 1, 28, 28)})


def test_variance_explained_finds_the_features_that_drive_a_score():
    rng = np.random.default_rng(0)
    rows = []
    for b1 in (0.25, 1.0, 4.0):
        for b2 in (0.25, 1.0, 4.0):
            for seed in range(3):
                kl1, kl2 = 10 / b1 + rng.normal(), 5 / b2 + rng.normal()
                rows.append({"dataset": "toy", "method": "sum", "beta1": b1, "beta2": b2,
                             "seed": seed, "kl1": kl1, "kl2": kl2,
                             "score": 0.5 + 0.01 * kl1 + 0.02 * kl2})
    out = variance_explained(pd.DataFrame(rows), "score").set_index("features")
    assert out.loc["rates", "r2"] == pytest.approx(1.0)
    assert out.loc["rates", "cv_r2"] == pytest.approx(1.0)
    assert out.loc["betas", "r2"] < 0.99  # the seed noise in the rates is not in the betas
    assert (out.n_runs == 27).all()
    few = variance_explained(pd.DataFrame(rows[:3]), "score")
    assert few.r2.isna().all()  # three runs of one cell: nothing to fit


def test_run_table_helpers_keep_each_dataset_to_its_own_targets():
    def record(ds, probes):
        parts = {"distortion": 90.0, "kl1": 5.0, "kl2": 2.0, "rate": 7.0, "nelbo": 97.0}
        return {"status": "ok", "dataset": ds, "beta1": 1.0, "beta2": 1.0, "seed": 0,
                "method": "sum", **{f"test_{k}": v for k, v in parts.items()},
                "val_nelbo": 98.0, "active_z1": 3, "active_z2": 1, "epochs_run": 2,
                "best_epoch": 2, "stopped_early": True, "epoch_cap": 9,
                "probe": {layer: probes for layer in ("z1", "z2", "both")}}

    runs = grid_frame(pd.DataFrame([record("mnist5k", {"digit": 0.8}),
                                    record("shapes", {"shape": 0.5, "x": 0.9})]))
    runs = add_probe_means(runs)
    assert runs.probe_z1.tolist() == [0.8, pytest.approx(0.7)]
    lf = layer_factors(runs, "shapes")
    assert set(lf.target) == {"shape", "x"} and set(lf.layer) == {"z1", "z2", "both"}
    assert len(lf) == 6
    acc = layer_accuracy(runs, {"shape": 0.4, "x": 0.2}, 1.0, 1.0)
    assert list(acc.columns) == ["z1", "z2", "both", "chance"]
    assert acc.loc["x", "z2"] == 0.9 and acc.loc["shape", "chance"] == 0.4


def test_the_hier_grid_reads_as_the_section_frames_only_once_complete(tmp_path, monkeypatch):
    from mtvae.profiles import get_profile
    from mtvae.studies.hierarchical import grid_runs

    monkeypatch.setenv("MTVAE_CACHE", str(tmp_path / "cache"))
    smoke = get_profile("smoke")
    s = smoke.hier_grid
    with pytest.raises(MTVAEError, match=r"not complete \(0 of .*grid hier --profile smoke"):
        grid_runs(smoke, tmp_path)
    betas, moo = grid_runs(smoke, tmp_path, run=True, device="cpu")
    cells = len(s.datasets) * len(s.betas1) * len(s.betas2) * len(s.seeds)
    assert len(betas) == cells and set(betas.method) == {"sum"}
    assert set(moo.method) == {"sum", *s.moo_methods}
    assert ((moo.beta1 == 1.0) & (moo.beta2 == 1.0)).all()
    # the names the section reads, with the parts adding up and the probes per layer
    for col in ("distortion", "kl1", "kl2", "rate", "nelbo", "active_z1", "acc_z1_digit",
                "acc_z2_digit", "acc_both_digit", "stopped_early", "epoch_cap", "val_nelbo"):
        assert col in betas, col
    assert np.allclose(betas.rate, betas.kl1 + betas.kl2)
    assert np.allclose(betas.nelbo, betas.distortion + betas.rate)
    assert (betas.epoch_cap == s.epochs).all()


def _hier_runs(seed_noise=0.1):
    """A fake hier grid: two cells per dataset for the sum (cell (1, 4) best on validation
    but not on test), and beta = 1 runs of the sum and of ``pcgrad`` (1 nat worse)."""
    rows = []
    for ds in ("mnist5k", "shapes"):
        for seed in range(6):
            for b2, val, test in ((1.0, 100.0, 100.0), (4.0, 99.0, 101.0)):
                rows.append({"dataset": ds, "beta1": 1.0, "beta2": b2, "seed": seed,
                             "method": "sum", "val_nelbo": val + seed_noise * seed,
                             "nelbo": test + seed_noise * seed, "kl1": 5.0, "kl2": b2,
                             "distortion": test - 5.0 - b2})
            rows.append({"dataset": ds, "beta1": 1.0, "beta2": 1.0, "seed": seed,
                         "method": "pcgrad", "val_nelbo": 101.0, "nelbo": 101.0 + 0.01 * seed,
                         "kl1": 4.0, "kl2": 0.5, "distortion": 96.5})
    runs = pd.DataFrame(rows)
    betas = runs[runs.method == "sum"]
    at_one = runs[(runs.beta1 == 1.0) & (runs.beta2 == 1.0)]
    return betas, at_one


def test_the_sums_beta_cell_is_chosen_on_validation_not_on_test():
    betas, _ = _hier_runs()
    chosen = chosen_cell(betas)
    assert set(chosen.dataset) == {"mnist5k", "shapes"}
    assert (chosen.beta2 == 4.0).all()  # best validation, although worse on test
    flipped = betas.assign(nelbo=betas.val_nelbo, val_nelbo=betas.nelbo)
    assert (chosen_cell(flipped).beta2 == 1.0).all()


def test_rates_as_tasks_pairs_by_seed_and_holm_adjusts_the_primary_family_only():
    from mtvae.stats import holm_adjust

    betas, at_one = _hier_runs()
    out = rates_as_tasks(betas, at_one, ("pcgrad",))
    g = out["gains"]
    prim = g[(g.reference == SUM_AT_ONE) & (g.arm == "pcgrad")]
    assert len(prim) == 2 and (prim.n == 6).all()
    assert np.allclose(prim.gain, -np.mean([1.0 + 0.01 * s - 0.1 * s for s in range(6)]))
    assert g[g.p_holm.notna()].index.equals(prim.index)
    assert np.allclose(prim.p_holm, holm_adjust(dict(enumerate(prim.p_value))).p_holm)
    # against the sum tuned on validation (beta2 = 4: 1 nat worse on test than the ELBO)
    vs_tuned = g[(g.reference == SUM_CHOSEN) & (g.arm == "pcgrad")]
    assert np.allclose(vs_tuned.gain, np.mean([0.09 * s for s in range(6)]))
    tuned = g[(g.arm == SUM_CHOSEN) & (g.reference == SUM_AT_ONE)]
    assert np.allclose(tuned.gain, -1.0)
    assert out["rates"].set_index(["dataset", "arm"]).loc[("shapes", "pcgrad"), "kl2"] == 0.5


def test_the_rates_primaries_join_the_books_family_under_their_own_metric():
    from mtvae.studies.evidence import book_primary
    from mtvae.studies.hierarchical import primary_rows

    betas, at_one = _hier_runs()
    rows = primary_rows(rates_as_tasks(betas, at_one, ("pcgrad",))["gains"])
    assert list(rows["where"]) == ["hierarchical, MNIST-5k", "hierarchical, shapes"]
    book = book_primary({"hier": rows})
    assert set(book.metric) == {"test_nelbo"} and set(book.grid) == {"hier"}
    assert np.allclose(book.p_holm, rows.p_holm)  # the same family: the same adjustment
