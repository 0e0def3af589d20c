"""The estimators, the two kinds of scored cells and the scikit-learn reference imputers."""

import math
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from mtvae.data import load
from mtvae.data.base import Split
from mtvae.data.tabular import from_frame
from mtvae.errors import MTVAEError, SchemaFitWarning
from mtvae.imputation import (
    REFERENCES,
    SETTINGS,
    ReferenceImputer,
    evaluate_imputation,
    reference_imputer,
)
from mtvae.likelihoods import softplus_inverse
from mtvae.models.hetero import HeteroVAE

SMALL = {"knn": {"n_neighbors": 3}, "mice": {"max_iter": 3, "tol": 1e-3},
         "missforest": {"max_iter": 2, "tol": 1e-3, "n_estimators": 5, "max_depth": 6,
                        "min_samples_leaf": 3, "max_features": 0.5}}


@pytest.fixture
def small_settings(monkeypatch):
    """Fewer trees and iterations: the tests check the protocol, not the imputers' quality."""
    for name, value in SMALL.items():
        monkeypatch.setitem(SETTINGS, name, value)


def _table(name, rows=120, seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SchemaFitWarning)
        return load(name, missing_rate=0.3, mask_seed=seed, split_seed=0, max_rows=rows)


def _with_x(data, change):
    """The dataset with ``x`` of each split replaced by ``change(split_name, split)``."""
    splits = {k: Split({**s.tensors, "x": change(k, s)}) for k, s in data.splits().items()}
    return replace(data, **splits)


def _junk_at(which):
    def change(key, split):
        g = torch.Generator().manual_seed(len(key))
        junk = 50.0 * torch.randn(split.x.shape, generator=g)
        return torch.where(split.tensors[which] > 0, junk, split.x)
    return change


# ------------------------------------------------------------------ the estimator, end to end


def _frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"r": rng.normal(10, 2, n), "p": rng.lognormal(1.0, 0.7, n),
                         "n": rng.poisson(4, n), "c": rng.choice(["a", "b", "c"], n)})


def test_hetero_vae_mean_estimator_in_original_units_hand_example():
    """Heads with known parameters (zero weights, hand-set biases) on every row: the mean
    estimator gives exp(mu + sigma^2/2) for pos and the rate for count in ORIGINAL units; the
    mode estimator the old exp(mu - sigma^2) and floor(rate)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SchemaFitWarning)
        data = from_frame(_frame(), {"r": "real", "p": "pos", "n": "count", "c": "cat(3)"},
                          missing_rate=0.3)
    scaler = data.info["scaler"]
    model = HeteroVAE(data.info["schema"], scaler=scaler, hidden=8, depth=1)
    loc, s, rate = 0.3, 0.8, 2.6
    with torch.no_grad():
        for head in model.heads:
            head.weight.zero_()
        model.heads[0].bias.copy_(torch.tensor([-0.5, softplus_inverse(0.4 - 1e-3)]))
        model.heads[1].bias.copy_(torch.tensor([loc, softplus_inverse(s - 1e-3)]))
        model.heads[2].bias.copy_(torch.tensor([math.log(rate - 1e-6)]))  # the log link
        model.heads[3].bias.copy_(torch.tensor([0.0, 2.0, 1.0]))
    shift, scale = float(scaler.shift[1]), float(scaler.scale[1])
    mu, sigma = shift + scale * loc, scale * s
    expected = {
        "mean": [float(scaler.shift[0]) - 0.5 * float(scaler.scale[0]),
                 math.exp(mu + sigma**2 / 2), rate, 1.0],
        "mode": [float(scaler.shift[0]) - 0.5 * float(scaler.scale[0]),
                 math.exp(mu - sigma**2), math.floor(rate), 1.0],
    }
    test = data.test.tensors
    hidden = test["mask"] == 0
    for estimator, want in expected.items():
        imp = model.impute(data.test, estimator=estimator)
        orig = scaler.inverse(imp.double())
        target = torch.tensor(want, dtype=torch.float64).expand_as(orig)
        torch.testing.assert_close(orig[hidden], target[hidden], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(imp[~hidden], test["x"][~hidden])  # observed kept
        full = scaler.inverse(model.impute(data.test, estimator=estimator,
                                           reconstruct=True).double())
        torch.testing.assert_close(full, target, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.impute(data.test), model.impute(data.test,
                                                                     estimator="mean"))
    # evaluate_imputation passes the estimator on and does not round the count mean
    got = evaluate_imputation(model, data, estimator="mean")["errors"]["n"]
    cells = test["score"][:, 2] > 0
    true = test["x"][cells, 2].double()
    rmse = float((true - rate).square().mean().sqrt())
    assert got == pytest.approx(rmse / float(data.info["ranges"][2]), rel=1e-5)
    with pytest.raises(MTVAEError, match="unknown estimator 'median'"):
        model.impute(data.test, estimator="median")
    with pytest.raises(MTVAEError, match="unknown estimator 'median'"):
        evaluate_imputation(model, data, estimator="median")


# ----------------------------------------------------------------- two kinds of scored cells


def test_cells_observed_scores_the_mask_cells_hand_example():
    from test_imputation import _hand_dataset

    data = _hand_dataset()
    # test rows (original units) [4, 4, 3, 1, 2] and [2, 8, 0, 0, 1]; observed: p=4, c=2 in
    # row 0 and r=2, n=0 in row 1. The baseline reconstructs every cell with its fill
    # (r 3, p 4, n 5/3, b 0, c 2): r |2 - 3| / 10, p 0, n (5/3) / 7, b no cell, c 0.
    result = evaluate_imputation("mean", data, split="test", cells="observed")
    errors = result["errors"]
    assert errors["r"] == pytest.approx(0.1, rel=1e-5)
    assert errors["p"] == pytest.approx(0.0, abs=1e-6)
    assert errors["n"] == pytest.approx(5 / 21, rel=1e-5)
    assert math.isnan(errors["b"]) and errors["c"] == 0.0
    assert (result["n_scored"], result["cells"]) == (4, "observed")
    with pytest.raises(MTVAEError, match="unknown cells 'held'; valid cellss are"):
        evaluate_imputation("mean", data, cells="held")


def test_cells_observed_ignores_the_missing_cells():
    data = _table("labour")
    torch.manual_seed(0)
    model = HeteroVAE(data.info["schema"], scaler=data.info["scaler"], hidden=8, depth=1)
    base = evaluate_imputation(model, data, "val", cells="observed")
    assert base["n_scored"] == int(data.val.tensors["mask"].sum())
    # junk at the missing cells: neither read by the model nor scored
    other = evaluate_imputation(model, _with_x(data, _junk_at("score")), "val",
                                cells="observed")
    pd.testing.assert_series_equal(base["errors"], other["errors"])
    # the default scores the missing cells, which the junk does change
    missing = evaluate_imputation(model, data, "val")
    assert missing["n_scored"] == int(data.val.tensors["score"].sum())
    changed = evaluate_imputation(model, _with_x(data, _junk_at("score")), "val")
    assert not np.allclose(missing["errors"], changed["errors"])


# ------------------------------------------------------------------------- the references


@pytest.mark.parametrize("table", ["wine", "labour"])
@pytest.mark.parametrize("name", REFERENCES)
def test_references_score_under_the_same_masks_without_leaks(small_settings, table, name):
    data = _table(table)
    imputer = reference_imputer(name, data, seed=1)
    test = data.test.tensors
    imp = imputer.impute(data.test)
    observed = test["mask"] > 0
    assert imp.shape == test["x"].shape and torch.isfinite(imp).all()
    torch.testing.assert_close(imp[observed], test["x"][observed])  # observed kept
    for j, f in enumerate(data.info["schema"]):
        if not f.numerical:
            assert set(imp[:, j].tolist()) <= set(map(float, range(f.k))), f.name
        if f.type == "count":
            assert (imp[:, j] >= 0).all()
    result = evaluate_imputation(imputer, data, "test")
    assert result["n_scored"] == int(test["score"].sum())
    assert all(math.isfinite(v) for v in result["errors"])
    # no leak: junk in the true values of the missing cells of every split changes nothing
    leaked = _with_x(data, _junk_at("score"))
    again = reference_imputer(name, leaked, seed=1)
    for key, split in data.splits().items():
        torch.testing.assert_close(again.impute(leaked.splits()[key]), imputer.impute(split),
                                   rtol=0, atol=0, msg=f"{name}: the {key} split changed")


@pytest.mark.parametrize("name", REFERENCES)
def test_references_are_fitted_on_the_train_split_only(small_settings, name):
    data = _table("wine")
    imputer = reference_imputer(name, data, seed=0)

    def scramble(key, split):  # every cell of val and test, observed ones included
        return split.x if key == "train" else split.x.flip(0) * 3.0 + 1.0

    other = reference_imputer(name, _with_x(data, scramble), seed=0)
    torch.testing.assert_close(other.impute(data.train), imputer.impute(data.train),
                               rtol=0, atol=0)
    torch.testing.assert_close(other.impute(data.test), imputer.impute(data.test),
                               rtol=0, atol=0)
    if isinstance(imputer, ReferenceImputer):
        np.testing.assert_array_equal(other.layout.mean, imputer.layout.mean)
        np.testing.assert_array_equal(other.layout.std, imputer.layout.std)


def test_chained_imputers_never_predict_a_one_hot_column_from_its_siblings(small_settings):
    data = _table("wine")
    imputer = reference_imputer("mice", data, seed=0)
    siblings = imputer.layout.siblings()
    assert len(siblings) == 3  # wine's target is cat(3)
    for triplet in imputer.imputer.imputation_sequence_:
        same = siblings.get(int(triplet.feat_idx))
        if same is not None:
            assert not set(same.tolist()) & set(triplet.neighbor_feat_idx.tolist())


def test_reference_estimator_mode_rounds_counts_and_bad_input(small_settings):
    data = _table("labour")
    imputer = reference_imputer("knn", data)
    hidden = data.test.tensors["mask"][:, 1] == 0  # labour: the count column
    mean, mode = imputer.impute(data.test), imputer.impute(data.test, estimator="mode")
    torch.testing.assert_close(mode[hidden, 1], mean[hidden, 1].round())
    assert not torch.equal(mean[hidden, 1], mean[hidden, 1].round())
    torch.testing.assert_close(mode[:, [0, 2, 3]], mean[:, [0, 2, 3]])
    with pytest.raises(MTVAEError, match="unknown reference imputer 'forest'; valid reference "
                                         "imputers are: knn, mean, mice, missforest"):
        reference_imputer("forest", data)
    with pytest.raises(MTVAEError, match="unknown baseline 'median'"):
        evaluate_imputation("median", data)
    with pytest.raises(MTVAEError, match="cannot reconstruct observed cells"):
        evaluate_imputation(imputer, data, "val", cells="observed")
    with pytest.raises(MTVAEError, match="seed must be an integer"):
        reference_imputer("mice", data, seed=-1)
    with pytest.raises(MTVAEError, match=r"fitted on 4 columns"):
        imputer.impute({"x": torch.zeros(3, 2), "mask": torch.ones(3, 2)})


def test_references_are_deterministic_given_the_seed(small_settings):
    data = _table("labour")
    a = reference_imputer("missforest", data, seed=3).impute(data.test)
    b = reference_imputer("missforest", data, seed=3).impute(data.test)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert isinstance(evaluate_imputation("knn", data)["mean"], float)
