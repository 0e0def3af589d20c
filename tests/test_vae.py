"""The VAE: the loss_terms contract, the IWAE bound's properties, and the pPCA known answer."""

import itertools
import math

import pytest
import torch

from mtvae.data import Split, linear_gaussian_log_marginal, make_ppca
from mtvae.divergences import kl_std_normal
from mtvae.errors import MTVAEError
from mtvae.metrics import iwae_bound
from mtvae.models import VAE
from mtvae.terms import Terms


def _images(n=8):
    return torch.bernoulli(torch.full((n, 1, 28, 28), 0.3, dtype=torch.float32))


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_loss_terms_contract(arch):
    torch.manual_seed(0)
    model = VAE((1, 28, 28), 5, arch=arch, hidden=(32,), beta=2.0)
    x = _images()
    terms = model.loss_terms({"x": x})
    assert isinstance(terms, Terms)
    assert set(terms.tasks) == {"x"} and set(terms.regularizers) == {"kl"}
    assert terms.shared is not None and terms.shared.shape == (8, 5)
    torch.testing.assert_close(terms.regularizers["kl"], 2.0 * terms.stats["kl"])
    torch.testing.assert_close(terms.total(), terms.tasks["x"] + terms.regularizers["kl"])
    terms.total().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.reconstruct(x).shape == x.shape
    assert model.sample(3).shape == (3, 1, 28, 28)


def test_bad_model_arguments():
    with pytest.raises(MTVAEError, match="valid architectures are"):
        VAE((1, 28, 28), 4, arch="transformer")
    with pytest.raises(MTVAEError, match="expects 28x28"):
        VAE((1, 8, 8), 4, arch="conv")
    with pytest.raises(MTVAEError, match="beta must be"):
        VAE((1, 8, 8), 4, beta=-1.0)
    with pytest.raises(MTVAEError, match="latent_dim"):
        VAE((1, 8, 8), 0)


def test_iwae_is_above_elbo_and_nondecreasing_in_k_on_average():
    torch.manual_seed(1)
    model = VAE((1, 8, 8), 3, hidden=(32, 32))
    split = Split({"x": torch.bernoulli(torch.full((200, 1, 8, 8), 0.4))})
    torch.manual_seed(2)
    bounds = {k: float(iwae_bound(model, split, k).mean()) for k in (1, 5, 50, 500)}
    values = list(bounds.values())
    # Monte-Carlo noise is far smaller than these gaps for an untrained model.
    assert all(b > a for a, b in itertools.pairwise(values)), bounds
    with torch.no_grad():
        parts = [model.elbo_parts(split.x) for _ in range(20)]
        elbo = torch.stack([log_px - kl for log_px, kl in parts]).mean()
    assert bounds[500] > float(elbo)


def test_log_weights_average_to_the_closed_form_elbo():
    """For an affine Gaussian decoder E_q[log p(x|z)] has a closed form, so the ELBO is exact."""
    torch.manual_seed(3)
    sigma = 0.7
    model = VAE((6,), 2, likelihood="gaussian", arch="linear", hidden=(16,), gaussian_scale=sigma)
    x = torch.randn(50, 6)
    with torch.no_grad():
        loc, scale = model.encode(x)
        w, b = model.decoder.weight, model.decoder.bias
        mean = loc @ w.T + b
        expected_ll = (-0.5 * ((x - mean) / sigma).square() - math.log(sigma)
                       - 0.5 * math.log(2 * math.pi)).sum(-1)
        expected_ll = expected_ll - 0.5 * (scale.square() @ w.square().T).sum(-1) / sigma**2
        kl = kl_std_normal(loc, scale).sum(-1)
        lw = model.log_weights(x, 20_000, chunk=5_000).mean(0)
    torch.testing.assert_close(lw, expected_ll - kl, atol=0.1, rtol=0.0)


def test_bounds_never_exceed_exact_log_likelihood_on_ppca():
    """For an affine Gaussian decoder log p(x) is exact; every bound must stay below it."""
    data, _ = make_ppca(data_dim=8, latent_dim=2, sigma=0.5, n=(200, 50, 100), seed=0)
    torch.manual_seed(0)
    model = VAE((8,), 2, likelihood="gaussian", arch="linear", hidden=(32,), gaussian_scale=0.5)
    with torch.no_grad():
        exact = linear_gaussian_log_marginal(data.test.x, model.decoder.weight,
                                             model.decoder.bias, 0.5)
    gaps = []
    for k in (1, 10, 100, 2000):
        bound = iwae_bound(model, data.test, k)
        gaps.append(float((exact - bound).mean()))
        assert float((exact - bound).mean()) > 0
    assert gaps == sorted(gaps, reverse=True), gaps


def test_exact_marginal_matches_torch_multivariate_normal():
    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(5, 2, generator=gen), torch.randn(5, generator=gen)
    x = torch.randn(7, 5, generator=gen)
    mvn = torch.distributions.MultivariateNormal(b.double(), w.double() @ w.double().T
                                                 + 0.09 * torch.eye(5, dtype=torch.float64))
    torch.testing.assert_close(linear_gaussian_log_marginal(x, w, b, 0.3),
                               mvn.log_prob(x.double()).float())
    assert math.isfinite(float(linear_gaussian_log_marginal(x, w, b, 0.3).sum()))
