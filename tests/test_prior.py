"""The learned code prior: causality, normalisation, sampling and its bad inputs."""

import itertools

import pytest
import torch

from mtvae.errors import MTVAEError
from mtvae.models import CodePrior


def test_prior_is_causal():
    """The output at position i depends only on codes at positions < i (raster order)."""
    torch.manual_seed(0)
    prior = CodePrior(8, grid=(3, 3), d_model=16, n_layers=2, n_heads=2).eval()
    codes = torch.randint(0, 8, (4, 3, 3))
    base = prior.logits(codes)
    for i in range(9):
        changed = codes.clone().reshape(4, 9)
        changed[:, i:] = torch.randint(0, 8, (4, 9 - i))
        out = prior.logits(changed.reshape(4, 3, 3))
        torch.testing.assert_close(out[:, : i + 1], base[:, : i + 1])
        if i < 8:  # and the positions after i do see the change
            assert not torch.allclose(out[:, i + 1:], base[:, i + 1:])


def test_prior_is_a_normalised_distribution_over_grids():
    torch.manual_seed(1)
    prior = CodePrior(3, grid=(1, 3), d_model=8, n_layers=1, n_heads=2).eval()
    grids = torch.tensor(list(itertools.product(range(3), repeat=3))).reshape(-1, 1, 3)
    with torch.no_grad():
        total = prior.log_prob(grids).exp().sum()
    assert float(total) == pytest.approx(1.0, abs=1e-5)


def test_prior_learns_and_samples_a_deterministic_pattern():
    torch.manual_seed(2)
    prior = CodePrior(4, grid=(2, 2), d_model=16, n_layers=1, n_heads=2, dropout=0.0)
    pattern = torch.tensor([[[1, 3], [0, 2]]]).repeat(32, 1, 1)
    opt = torch.optim.Adam(prior.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        prior.loss_terms({"x": pattern}).total().backward()
        opt.step()
    bits = float(prior.loss_terms({"x": pattern}).stats["bits"])
    assert bits < 0.05
    samples = prior.sample(20, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (20, 2, 2) and (samples == pattern[:1]).all()
    assert prior.training, "sampling restores the training flag"


def test_prior_rejects_bad_inputs():
    prior = CodePrior(4, grid=(2, 2), d_model=8, n_heads=2)
    with pytest.raises(MTVAEError, match="shape"):
        prior.log_prob(torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(MTVAEError, match="dtype long"):
        prior.log_prob(torch.zeros(2, 2, 2))
    with pytest.raises(MTVAEError, match="divisible"):
        CodePrior(4, d_model=10, n_heads=4)
    with pytest.raises(MTVAEError, match="temperature"):
        prior.sample(2, temperature=0.0)
