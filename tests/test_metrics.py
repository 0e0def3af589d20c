"""Metrics with known answers."""

import numpy as np
import pytest
import torch
from torch import nn

from mtvae import metrics as M
from mtvae.data import Split
from mtvae.errors import MTVAEError


def test_auroc_known_answers():
    assert M.auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert M.auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert M.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    with pytest.raises(MTVAEError, match="both anomalous and normal"):
        M.auroc([0.1, 0.2], [1, 1])
    with pytest.raises(MTVAEError, match="NaN"):
        M.auroc([np.nan, 0.2], [0, 1])
    with pytest.raises(MTVAEError, match="same shape"):
        M.auroc([0.1, 0.2, 0.3], [0, 1])


class _FixedEncoder(nn.Module):
    """Posterior mean = (x_0, 0.05 x_1, 0), scale 1: exactly one active unit by Burda's 0.01."""

    def encode(self, x):
        loc = torch.stack([x[:, 0], 0.05 * x[:, 1], torch.zeros_like(x[:, 0])], dim=1)
        return loc, torch.ones_like(loc)


def test_active_units_and_kl_per_dim_known_answer():
    gen = torch.Generator().manual_seed(0)
    split = Split({"x": torch.randn(4000, 2, generator=gen)})
    n_active, activity = M.active_units(_FixedEncoder(), split)
    assert n_active == 1
    assert activity[0] == pytest.approx(1.0, abs=0.08)
    assert activity[1] == pytest.approx(0.0025, abs=0.001)
    kl = M.kl_per_dim(_FixedEncoder(), split)
    # KL[N(m, 1) || N(0, 1)] = m^2 / 2, averaged over x ~ N(0, 1): 0.5, 0.00125, 0.
    torch.testing.assert_close(kl, torch.tensor([0.5, 0.00125, 0.0]), atol=0.04, rtol=0.1)


def test_mean_std():
    assert M.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert M.mean_std([4.0]) == (4.0, 0.0)


def test_iwae_rejects_bad_k():
    with pytest.raises(MTVAEError, match="k must be"):
        M.iwae_bound(_FixedEncoder(), Split({"x": torch.zeros(2, 2)}), 0)
