"""Closed-form Gaussian quantities against torch.distributions and Monte Carlo."""

import torch
from torch import distributions as D

from mtvae.divergences import kl_std_normal, log_normal, log_std_normal


def test_analytic_kl_matches_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    loc = torch.randn(4, 3, generator=gen)
    scale = torch.rand(4, 3, generator=gen) + 0.3
    analytic = kl_std_normal(loc, scale).sum(-1)
    z = loc + scale * torch.randn(200_000, 4, 3, generator=gen)
    mc = (log_normal(z, loc, scale) - log_std_normal(z)).mean(0)
    torch.testing.assert_close(mc, analytic, atol=0.02, rtol=0.01)


def test_analytic_kl_matches_torch_distributions():
    loc, scale = torch.randn(5, 7), torch.rand(5, 7) + 0.1
    expected = D.kl_divergence(D.Normal(loc, scale), D.Normal(0.0, 1.0))
    torch.testing.assert_close(kl_std_normal(loc, scale), expected)


def test_kl_is_zero_only_at_the_prior():
    assert float(kl_std_normal(torch.zeros(3), torch.ones(3)).abs().max()) == 0.0
    assert bool((kl_std_normal(torch.randn(100), torch.rand(100) + 0.5) >= 0).all())


def test_log_normal_matches_torch_distributions():
    x, loc, scale = torch.randn(6, 4), torch.randn(6, 4), torch.rand(6, 4) + 0.2
    expected = D.Independent(D.Normal(loc, scale), 1).log_prob(x)
    torch.testing.assert_close(log_normal(x, loc, scale), expected)
    torch.testing.assert_close(log_std_normal(x), D.Normal(0.0, 1.0).log_prob(x).sum(-1))
