"""The conditional VAE: its ELBO, its use of the label, its label checks, stacked training."""

import math

import pytest
import torch

from mtvae import rng
from mtvae.data import load
from mtvae.errors import MTVAEError
from mtvae.models import ConditionalVAE
from mtvae.stack import fit_stacked
from mtvae.stack.forward import StackedForward
from mtvae.stack.members import Stack
from mtvae.train import fit


@pytest.fixture(scope="module")
def digits():
    return load("digits", binarize="dynamic", train_size=200)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return ConditionalVAE((1, 8, 8), 3, n_classes=10, hidden=(32,), **kw)


def test_shapes():
    m = _model()
    x, y = torch.rand(5, 1, 8, 8).bernoulli(), torch.tensor([0, 3, 9, 1, 1])
    loc, scale = m.encode(x, y)
    assert loc.shape == scale.shape == (5, 3) and bool((scale > 0).all())
    assert m.decode(loc, y).shape == (5, 1, 1, 8, 8)
    assert m.reconstruct(x, y).shape == (5, 1, 8, 8)
    assert m.sample([2, 7], n=4).shape == (8, 1, 8, 8)
    assert m.sample(4, n=3).shape == (3, 1, 8, 8)
    terms = m.loss_terms({"x": x, "y": y})
    assert set(terms.tasks) == {"x"} and set(terms.regularizers) == {"kl"}
    assert terms.shared is not None and terms.shared.shape == (5, 3)
    assert m.log_weights(x, y, k=6, chunk=4).shape == (6, 5)
    # one-hot labels are accepted as they are
    onehot = torch.eye(10)[y]
    assert torch.equal(m.encode(x, onehot)[0], loc)


def test_sample_orders_images_label_major():
    m = _model()
    gen = torch.Generator().manual_seed(3)
    images = m.sample([1, 5], n=2, generator=gen)
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(4, 3, generator=gen)
    expect = m.likelihood.mean(m.decode(z, torch.tensor([1, 1, 5, 5])))
    assert torch.allclose(images, expect)


def test_elbo_matches_a_monte_carlo_estimate():
    """ELBO with the analytic KL = mean of sampled log p(x, z | y) - log q(z | x, y)."""
    m = _model(1).eval()
    x, y = torch.rand(4, 1, 8, 8).bernoulli(), torch.tensor([0, 4, 4, 8])
    torch.manual_seed(0)
    n = 20_000
    with torch.no_grad():
        log_px, kl = zip(*(m.elbo_parts(x, y) for _ in range(200)), strict=True)
        analytic = torch.stack(log_px) - torch.stack(kl)  # [200, B]: one sample each
        lw = m.log_weights(x, y, k=n, chunk=5000)  # [n, B]
        nelbo = torch.stack([m.loss_terms({"x": x, "y": y}).stats["nelbo"]
                             for _ in range(200)])
    se = (analytic.var(0) / len(analytic) + lw.var(0) / n).sqrt()
    gap = (analytic.mean(0) - lw.mean(0)).abs()
    assert bool((gap < 4 * se + 1e-3).all()), (gap, se)
    assert float(se.max()) < 1.0  # the test has the power to see a wrong KL of a few nats
    # the training objective's nelbo is the negative of the same ELBO, batch-averaged
    assert math.isclose(float(nelbo.mean()), float(-lw.mean()), abs_tol=4 * float(
        nelbo.std() / math.sqrt(len(nelbo)) + lw.mean(1).std() / math.sqrt(n)) + 1e-3)


def test_decoder_depends_on_the_label(digits):
    torch.manual_seed(0)
    m = _model(0)
    z = torch.randn(6, 3)
    a, b = m.decode(z, torch.zeros(6, dtype=torch.long)), m.decode(z, torch.ones(6).long())
    assert not torch.allclose(a, b)
    fit(m, digits, epochs=12, batch_size=50, lr=1e-2, seed=0, device="cpu", progress="none")
    x, y = digits.test.x, digits.test.y
    with torch.no_grad():
        loc, _ = m.encode(x, y)
        right = m.likelihood.log_prob(m.decode(loc, y), x)
        wrong = m.likelihood.log_prob(m.decode(loc, (y + 1) % 10), x)
    # trained: for a fixed code, the true label explains the image better than another one
    assert float((right - wrong).mean()) > 1.0
    assert float((right > wrong).float().mean()) > 0.7


@pytest.mark.parametrize(("labels", "match"), [
    (torch.tensor([0, 10]), r"0\.\.9 .* got values in 0\.\.10"),
    (torch.tensor([-1, 2]), r"0\.\.9"),
    (torch.eye(5)[[0, 1]], r"5 columns but the model has 10 classes"),
    (torch.tensor([0.5, 1.0]), r"whole numbers"),
    (torch.zeros(2, 1, 1).long(), r"shape \(2, 1, 1\)"),
    (torch.tensor([[1.0] * 10, [0.0] * 10]), r"exactly one 1 per row"),
])
def test_bad_labels_give_one_clear_error(labels, match):
    m = _model()
    with pytest.raises(MTVAEError, match=match):
        m.loss_terms({"x": torch.zeros(2, 1, 8, 8), "y": labels})


def test_other_bad_inputs():
    m = _model()
    with pytest.raises(MTVAEError, match="lacks"):
        m.loss_terms({"x": torch.zeros(2, 1, 8, 8)})
    with pytest.raises(MTVAEError, match="unlabelled"):
        m.loss_terms({"x": torch.zeros(2, 1, 8, 8), "y": torch.tensor([1, 2]),
                      "labelled": torch.tensor([1.0, 0.0])})
    with pytest.raises(MTVAEError, match=r"0\.\.9"):
        m.sample([3, 12])
    with pytest.raises(MTVAEError, match="positive integer"):
        m.sample(3, n=0)
    with pytest.raises(MTVAEError, match="n_classes"):
        ConditionalVAE((1, 8, 8), 3, n_classes=1)


def test_a_stacked_member_is_the_single_model_on_the_same_noise(digits):
    """Stacked forward of each member = that model's own loss_terms given its noise."""
    models = [_model(0), _model(1)]
    stack = Stack(models, torch.device("cpu"))
    fwd = StackedForward(stack)
    batch = {k: torch.stack([v[:20], v[20:40]]) for k, v in digits.train.tensors.items()}
    lay = fwd.layout(batch, training=True)
    assert lay.n_normal == 20 * 3 and lay.n_uniform == 0  # z's noise only
    normals, uniforms = torch.randn(2, lay.n_normal), torch.rand(2, lay.n_uniform)
    packed = fwd(batch, normals, uniforms, training=True)
    for i, m in enumerate(models):
        with rng.using(rng.NoiseBank(normals[i], uniforms[i])):
            terms = m.train().loss_terms({k: v[i] for k, v in batch.items()})
        assert torch.allclose(packed.tasks[i], torch.stack(list(terms.tasks.values())),
                              rtol=1e-5)
        assert torch.allclose(packed.regularizers[i],
                              torch.stack(list(terms.regularizers.values())), rtol=1e-5)
        assert torch.allclose(packed.shared[i], terms.shared, atol=1e-6)


def test_fit_stacked_trains_two_members_like_single_runs(digits):
    kw = {"epochs": 3, "batch_size": 50, "lr": 3e-3, "patience": 2, "device": "cpu",
          "progress": "none"}
    stacked = [_model(0), _model(1)]
    results = fit_stacked(stacked, [digits, digits], seeds=[0, 1], **kw)
    for seed, model, res in zip((0, 1), stacked, results, strict=True):
        assert not isinstance(res, BaseException)
        single = _model(seed)
        ref = fit(single, digits, seed=seed, **kw)
        assert res.epochs_run == ref.epochs_run == 3
        assert res.history[0].keys() == ref.history[0].keys()
        # training helped, as much as in the single run (the noise streams differ, so the
        # losses agree to a few per cent, not to the bit)
        assert res.history[-1]["val_loss"] < res.history[0]["val_loss"]
        for a, b in zip(res.history, ref.history, strict=True):
            assert math.isclose(a["val_loss"], b["val_loss"], rel_tol=0.03)
        # the member's restored best state scores what its record says, as a single model
        assert model.training is False
    assert results[0].history != results[1].history


def test_marginal_bound_sits_between_the_label_elbos():
    """log (1/C) sum_y exp ELBO(x, y) lies in [ELBO(x, y) - log C, max_y ELBO(x, y)]."""
    m = _model(2).eval()
    x = torch.rand(3, 1, 8, 8).bernoulli()
    rng_state = torch.get_rng_state()
    per_label = torch.stack([m.elbo(x, c, samples=4) for c in range(10)])
    torch.set_rng_state(rng_state)  # the same draws, label by label
    marginal = m.marginal_elbo(x, samples=4)
    assert torch.allclose(marginal, torch.logsumexp(per_label, 0) - math.log(10))
    assert bool((marginal <= per_label.max(0).values + 1e-5).all())
    assert bool((marginal >= per_label - math.log(10) - 1e-5).all())
    # elbo with one label for the whole batch = elbo with that label per row
    torch.set_rng_state(rng_state)
    one = m.elbo(x, 0, samples=4)
    assert torch.allclose(one, per_label[0])
