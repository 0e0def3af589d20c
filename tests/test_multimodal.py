"""Multimodal VAEs: product of experts, subset mixtures, paired digits, training, scoring."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import distributions as D

from mtvae.data import Dataset, load
from mtvae.divergences import log_normal
from mtvae.errors import MTVAEError
from mtvae.fusion import FUSIONS, Posterior, fuse, nonempty_subsets, product_of_experts
from mtvae.models import Classifier, MultimodalVAE
from mtvae.models.multimodal import MODALITIES, binomial_log_prob
from mtvae.studies.multimodal import evaluate
from mtvae.train import fit


# -- product of experts ------------------------------------------------------------------------
def test_poe_matches_hand_computed_1d() -> None:
    # N(1, 1^2) x N(3, 2^2): precision 1 + 1/4 = 5/4, mean (1 + 3/4) / (5/4) = 1.4
    loc, scale = product_of_experts(torch.tensor([[1.0], [3.0]]), torch.tensor([[1.0], [2.0]]))
    assert loc.item() == pytest.approx(1.4)
    assert scale.item() == pytest.approx(math.sqrt(0.8))
    # with the prior expert N(0, 1): precision 9/4, mean (7/4) / (9/4) = 7/9
    loc, scale = product_of_experts(torch.tensor([[1.0], [3.0]]), torch.tensor([[1.0], [2.0]]),
                                    prior_expert=True)
    assert loc.item() == pytest.approx(7 / 9)
    assert scale.item() == pytest.approx(2 / 3)


def test_poe_matches_hand_computed_2d() -> None:
    locs = [torch.tensor([0.0, 2.0]), torch.tensor([4.0, -2.0])]
    scales = [torch.tensor([1.0, 0.5]), torch.tensor([1.0, 1.0])]
    loc, scale = product_of_experts(locs, scales)
    # dim 0: precisions 1, 1 -> mean 2, var 1/2; dim 1: precisions 4, 1 -> mean 6/5, var 1/5
    torch.testing.assert_close(loc, torch.tensor([2.0, 1.2]))
    torch.testing.assert_close(scale, torch.tensor([math.sqrt(0.5), math.sqrt(0.2)]))


@pytest.mark.parametrize("prior_expert", [False, True])
def test_poe_is_the_normalised_product_density(prior_expert: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    locs = torch.randn(3, 1, 1, generator=gen, dtype=torch.float64)
    scales = 0.5 + torch.rand(3, 1, 1, generator=gen, dtype=torch.float64)
    loc, scale = product_of_experts(locs, scales, prior_expert=prior_expert)
    grid = torch.linspace(-4, 4, 201, dtype=torch.float64)[:, None]
    log_product = sum(log_normal(grid, locs[m], scales[m]) for m in range(3))
    if prior_expert:
        log_product = log_product + log_normal(grid, torch.zeros(1, dtype=torch.float64),
                                               torch.ones(1, dtype=torch.float64))
    # the unnormalised product and the closed form differ by a constant on the whole grid
    gap = log_product - log_normal(grid, loc[0], scale[0])
    assert float(gap.std()) < 1e-9


def test_poe_rejects_mismatched_shapes() -> None:
    with pytest.raises(MTVAEError, match=r"same shape"):
        product_of_experts(torch.zeros(2, 3), torch.ones(2, 4))


# -- subsets and fusions -----------------------------------------------------------------------
def test_mopoe_enumerates_seven_subsets() -> None:
    subsets = nonempty_subsets(MODALITIES)
    assert len(subsets) == 7 == len(set(subsets))
    assert all(len(s) >= 1 for s in subsets)
    assert subsets[-1] == MODALITIES
    experts = {m: (torch.randn(5, 4), torch.rand(5, 4) + 0.1) for m in MODALITIES}
    counts = {f: fuse(experts, MODALITIES, f).n_components for f in FUSIONS}
    assert counts == {"poe": 1, "moe": 3, "mopoe": 7}
    assert fuse(experts, ("mnist", "label"), "mopoe").n_components == 3


def test_mopoe_single_subsets_are_the_unimodal_experts() -> None:
    experts = {m: (torch.randn(5, 4), torch.rand(5, 4) + 0.1) for m in MODALITIES}
    post = fuse(experts, MODALITIES, "mopoe")
    for k, m in enumerate(MODALITIES):
        torch.testing.assert_close(post.loc[k], experts[m][0])
        torch.testing.assert_close(post.scale[k], experts[m][1])


def test_posterior_samples_shapes_and_kl() -> None:
    post = Posterior(torch.zeros(3, 5, 4), torch.ones(3, 5, 4))
    assert post.rsample().shape == (3, 5, 4)
    assert post.sample(torch.Generator().manual_seed(0)).shape == (5, 4)
    torch.testing.assert_close(post.kl_components(), torch.zeros(3, 5))


def test_bad_fusion_lists_the_valid_ones() -> None:
    with pytest.raises(MTVAEError,
                       match=r"unknown fusion 'sum'; valid fusions are: moe, mopoe, poe"):
        MultimodalVAE(8, fusion="sum")
    with pytest.raises(MTVAEError, match=r"valid fusions are"):
        fuse({"mnist": (torch.zeros(1, 2), torch.ones(1, 2))}, ("mnist",), "mixture")


# -- likelihoods -------------------------------------------------------------------------------
def test_binomial_log_prob_matches_torch() -> None:
    logits = torch.randn(4, 64)
    counts = torch.randint(0, 17, (4, 64)).float()
    expected = D.Binomial(16, logits=logits).log_prob(counts)
    torch.testing.assert_close(binomial_log_prob(logits, counts), expected, atol=1e-4, rtol=1e-5)


# -- paired digits -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paired() -> Dataset:
    return load("paired-digits", binarize="dynamic")


def test_pairs_share_labels_and_splits_do_not_leak(paired: Dataset) -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ids = {}
    for name, split in paired.splits().items():
        t = split.tensors
        assert t["x"].shape[1:] == (1, 28, 28) and t["digit"].shape[1:] == (1, 8, 8)
        rows = t["digit_id"].numpy()
        np.testing.assert_array_equal(bunch.target[rows], t["y"].numpy())
        np.testing.assert_allclose(t["digit"].reshape(-1, 64).numpy(), bunch.data[rows] / 16.0)
        ids[name] = set(rows.tolist())
    assert not ids["train"] & ids["test"]
    assert not ids["train"] & ids["val"]
    assert not ids["val"] & ids["test"]
    # each split's digits come from the same split of the registry's "digits" dataset
    digits = load("digits")
    for name, split in paired.splits().items():
        pool = {r.tobytes() for r in digits.splits()[name].x.reshape(-1, 64).numpy()}
        assert {r.tobytes() for r in split.tensors["digit"].reshape(-1, 64).numpy()} <= pool


def test_pairing_is_seeded() -> None:
    a = load("paired-digits", pair_seed=0).test.tensors["digit_id"]
    b = load("paired-digits", pair_seed=0).test.tensors["digit_id"]
    c = load("paired-digits", pair_seed=1).test.tensors["digit_id"]
    assert torch.equal(a, b) and not torch.equal(a, c)


# -- the model ---------------------------------------------------------------------------------
def _small(data: Dataset) -> Dataset:
    return Dataset("paired-small", data.train.subset(torch.arange(200)),
                   data.val.subset(torch.arange(100)), data.test.subset(torch.arange(100)),
                   x_shape=data.x_shape, n_classes=10)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_loss_terms_contract(paired: Dataset, fusion: str) -> None:
    torch.manual_seed(0)
    model = MultimodalVAE(6, fusion, hidden=32)
    batch = next(paired.train.batches(8))
    terms = model.loss_terms(batch)
    assert list(terms.tasks) == list(MODALITIES)
    k = {"poe": 4, "moe": 3, "mopoe": 7}[fusion]
    assert terms.shared is not None and terms.shared.shape == (k, 8, 6)
    assert terms.task_inputs is not None and len(terms.task_inputs) == 3
    # task "label" reads the shared z only through its own alias
    grads = torch.autograd.grad(terms.tasks["label"], terms.task_inputs, allow_unused=True,
                                retain_graph=True)
    assert grads[0] is None and grads[1] is None and grads[2] is not None
    assert all(torch.isfinite(t) for t in terms.tasks.values())
    assert set(terms.regularizers) == {"kl"}


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("method", ["sum", "imtl-g"])
def test_trains_without_nan(paired: Dataset, fusion: str, method: str) -> None:
    torch.manual_seed(0)
    model = MultimodalVAE(6, fusion, hidden=32)
    res = fit(model, _small(paired), epochs=1, batch_size=50, combiner=method, progress="none",
              monitor_every=2)
    row = res.history[-1]
    assert all(math.isfinite(row[k]) for k in ("loss", "val_loss", "task/label"))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_generation_shapes(paired: Dataset) -> None:
    model = MultimodalVAE(6, "mopoe", hidden=32)
    batch = next(paired.test.batches(5))
    gen = torch.Generator().manual_seed(0)
    assert model.cross_generate(batch, ("label",), "mnist", gen).shape == (5, 1, 28, 28)
    assert model.cross_generate(batch, ("mnist", "label"), "digit", gen).shape == (5, 1, 8, 8)
    probs = model.cross_generate(batch, ("digit",), "label", gen)
    torch.testing.assert_close(probs.sum(1), torch.ones(5))
    samples = model.sample(7, gen)
    assert {m: tuple(v.shape) for m, v in samples.items()} == {
        "mnist": (7, 1, 28, 28), "digit": (7, 1, 8, 8), "label": (7, 10)}
    assert model.encode(batch, ("digit",)).n_components == 1
    with pytest.raises(MTVAEError, match=r"unknown modality"):
        model.encode(batch, ("svhn",))


def test_evaluate_reports_every_pair(paired: Dataset) -> None:
    model = MultimodalVAE(6, "moe", hidden=32)
    test = paired.test.subset(torch.arange(50)).tensors
    zero = {m: (lambda x: torch.zeros(len(x), dtype=torch.long)) for m in MODALITIES}
    out = evaluate(model, test, zero, n_samples=20, loglik_samples=2,
                   generator=torch.Generator().manual_seed(0))
    assert len(out["cross"]) == 9  # 6 single sources + 3 pairs of sources
    assert out["joint_coherence"] == 1.0  # every modality "predicted" as class 0
    assert set(out["loglik"]) == set(MODALITIES)
    assert all(v < 0 for v in out["loglik"].values())


# -- classifier --------------------------------------------------------------------------------
def test_classifier_accepts_8x8_and_keeps_the_28x28_network() -> None:
    assert Classifier((1, 8, 8))(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert sum(p.numel() for p in Classifier().parameters()) == 206_922
    with pytest.raises(MTVAEError, match=r"28x28 or 8x8"):
        Classifier((1, 16, 16))


def test_the_grid_arms_read_as_the_section_runs():
    from mtvae.studies.multimodal import directional, gradient_norms, grid_frame

    cross = {"mnist->digit": 0.9, "mnist->label": 0.8, "digit->mnist": 0.7,
             "digit->label": 0.6, "label->mnist": 0.2, "label->digit": 0.3,
             "mnist+digit->label": 0.95}
    arms = pd.DataFrame([{"fusion": "poe", "arm": "sum (tuned)", "seed": s, "cross": cross,
                          "loglik": {"mnist": -90.0, "digit": -150.0, "label": -0.1},
                          "conflict": {"norm": {"mnist": 2.0, "digit": 1.0, "label": 0.05}}}
                         for s in (0, 1)])
    runs = grid_frame(arms)
    assert set(runs.method) == {"sum (tuned)"} and runs["label->mnist"].tolist() == [0.2, 0.2]
    assert runs.from_label.iloc[0] == pytest.approx(directional(cross)["from_label"])
    assert runs.ll_label.iloc[0] == -0.1
    norms = gradient_norms(runs)
    assert len(norms) == 6 and set(norms.modality) == {"mnist", "digit", "label"}
    assert norms[norms.modality == "mnist"].norm.eq(2.0).all()
