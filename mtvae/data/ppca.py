"""Data from a probabilistic PCA model (Tipping & Bishop 1999), where log p(x) is exact.

x = W z + b + eps with z ~ N(0, I_d) and eps ~ N(0, sigma^2 I_D), so
p(x) = N(x; b, W W^T + sigma^2 I). A VAE with an affine Gaussian decoder belongs to the
same family, which gives a known-answer check of the ELBO and the IWAE bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mtvae.data.base import Dataset, Split
from mtvae.errors import MTVAEError


@dataclass(frozen=True)
class PPCAModel:
    """Parameters of a pPCA model: loading ``weight`` [D, d], ``bias`` [D], noise ``sigma``."""

    weight: Tensor
    bias: Tensor
    sigma: float

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        d = self.weight.shape[1]
        z = torch.randn(n, d, generator=generator, dtype=self.weight.dtype)
        eps = torch.randn(n, self.weight.shape[0], generator=generator, dtype=self.weight.dtype)
        return z @ self.weight.T + self.bias + self.sigma * eps

    def log_prob(self, x: Tensor) -> Tensor:
        return linear_gaussian_log_marginal(x, self.weight, self.bias, self.sigma)


def linear_gaussian_log_marginal(x: Tensor, weight: Tensor, bias: Tensor, sigma: float | Tensor
                                 ) -> Tensor:
    """Exact log N(x; bias, W W^T + diag sigma^2) per row of ``x``, computed in float64."""
    x64, w, b = x.double(), weight.double(), bias.double()
    dim = w.shape[0]
    s2 = torch.as_tensor(sigma, dtype=torch.float64).square().expand(dim)
    cov = w @ w.T + torch.diag(s2)
    chol = torch.linalg.cholesky(cov)
    diff = (x64 - b).T
    sol = torch.linalg.solve_triangular(chol, diff, upper=False)
    maha = sol.square().sum(0)
    logdet = 2 * torch.log(torch.diagonal(chol)).sum()
    return (-0.5 * (maha + logdet + dim * math.log(2 * math.pi))).to(x.dtype)


def make_ppca(
    data_dim: int = 20,
    latent_dim: int = 4,
    sigma: float = 0.5,
    n: tuple[int, int, int] = (4000, 500, 500),
    seed: int = 0,
) -> tuple[Dataset, PPCAModel]:
    """A pPCA ground truth and a dataset drawn from it (train/val/test)."""
    if not 0 < latent_dim < data_dim:
        raise MTVAEError(f"need 0 < latent_dim < data_dim, got {latent_dim} and {data_dim}")
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(data_dim, latent_dim, generator=gen) * 1.0
    bias = torch.randn(data_dim, generator=gen)
    model = PPCAModel(weight=weight, bias=bias, sigma=sigma)
    parts = [Split({"x": model.sample(m, gen)}) for m in n]
    ds = Dataset("ppca", *parts, x_shape=(data_dim,),
                 info={"latent_dim": latent_dim, "sigma": sigma, "seed": seed})
    return ds, model
