"""Likelihood log-probabilities against torch.distributions, and their input checks."""

import pytest
import torch
from torch import distributions as D

from mtvae.errors import MTVAEError
from mtvae.likelihoods import Bernoulli, Gaussian, make_likelihood

SHAPE = (1, 4, 5)


def test_bernoulli_log_prob_matches_torch():
    params = torch.randn(3, 1, *SHAPE)
    x = torch.bernoulli(torch.full((3, *SHAPE), 0.4))
    lik = Bernoulli()
    expected = D.Independent(D.Bernoulli(logits=params[:, 0]), 3).log_prob(x)
    torch.testing.assert_close(lik.log_prob(params, x), expected)
    torch.testing.assert_close(lik.distribution(params).log_prob(x), expected)
    torch.testing.assert_close(lik.mean(params), torch.sigmoid(params[:, 0]))


@pytest.mark.parametrize("scale", [0.1, 1.3, None])
def test_gaussian_log_prob_matches_torch(scale):
    lik = Gaussian(SHAPE, scale=scale)
    if scale is None:
        with torch.no_grad():
            lik.log_scale.normal_()
    params = torch.randn(3, 1, *SHAPE)
    x = torch.randn(3, *SHAPE)
    sd = lik.scale(params[:, 0])
    expected = D.Independent(D.Normal(params[:, 0], sd), 3).log_prob(x)
    torch.testing.assert_close(lik.log_prob(params, x), expected)
    torch.testing.assert_close(lik.distribution(params).log_prob(x), expected)


def test_learned_scale_is_bounded_and_trainable():
    lik = Gaussian(SHAPE, scale=None, min_scale=0.05)
    with torch.no_grad():
        lik.log_scale.fill_(-50.0)
    assert float(lik.scale(torch.zeros(SHAPE)).min().detach()) >= 0.05
    loss = -lik.log_prob(torch.zeros(2, 1, *SHAPE), torch.ones(2, *SHAPE)).sum()
    loss.backward()
    assert lik.log_scale.grad is not None


def test_bad_likelihood_arguments_give_clear_errors():
    with pytest.raises(MTVAEError, match="valid likelihoods are: bernoulli"):
        make_likelihood("poisson-ish", SHAPE)
    with pytest.raises(MTVAEError, match="scale must be > 0"):
        Gaussian(SHAPE, scale=0.0)
