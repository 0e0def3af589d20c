"""A two-layer hierarchical VAE whose two rates are weighted separately.

After Xiao & Bamler (ICLR 2023, "Trading information between latents in hierarchical
variational autoencoders"), with top-down inference as in the ladder VAE (Sønderby et al.
2016). Generative model: p(z2) = N(0, I), p(z1 | z2) = N(mu_p(z2), diag sigma_p(z2)^2), and
p(x | z1) from a :mod:`mtvae.likelihoods.images` class. Inference: deterministic features d(x),
then q(z2 | x) = N(., .)(d(x)) and q(z1 | z2, x) = N(., .)(z2, d(x)). The loss is

    -log p(x | z1) + beta1 KL[q(z1 | z2, x) || p(z1 | z2)] + beta2 KL[q(z2 | x) || p(z2)],

with z2 ~ q(z2 | x), z1 ~ q(z1 | z2, x) reparameterised and both KLs analytic between
diagonal Gaussians given the sampled z2. The two KLs are the per-layer *rates* R1 and R2;
their sum is the total rate of the rate-distortion view (Alemi et al. 2018). With
``rate_tasks=True`` the two weighted rates become tasks next to the distortion, meeting at
the deterministic features d(x), so that a MOO combiner can balance the three.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvae import rng
from mtvae.divergences import kl_std_normal
from mtvae.errors import MTVAEError, check_positive
from mtvae.likelihoods import Likelihood, make_likelihood
from mtvae.nets import mlp
from mtvae.terms import Terms

MIN_SCALE = 1e-4


class Codes(NamedTuple):
    """Posterior means of both layers: ``z1`` ``[B, z1_dim]`` and ``z2`` ``[B, z2_dim]``."""

    z1: Tensor
    z2: Tensor


class Parts(NamedTuple):
    """Per-example pieces of the negative ELBO (one posterior sample), each ``[B]``."""

    distortion: Tensor
    kl1: Tensor
    kl2: Tensor


def kl_normal(loc_q: Tensor, scale_q: Tensor, loc_p: Tensor, scale_p: Tensor) -> Tensor:
    """KL[N(loc_q, scale_q^2) || N(loc_p, scale_p^2)] element-wise (closed form)."""
    ratio = (scale_q / scale_p).square()
    return 0.5 * (ratio + ((loc_q - loc_p) / scale_p).square() - 1.0 - ratio.log())


def _gaussian(params: Tensor) -> tuple[Tensor, Tensor]:
    loc, raw = params.chunk(2, dim=-1)
    return loc, F.softplus(raw) + MIN_SCALE


class HierarchicalVAE(nn.Module):
    """A VAE with latent layers z1 (near the data) and z2 (top), top-down inference.

    Args:
        x_shape: shape of one example, e.g. ``(1, 28, 28)``.
        z1_dim, z2_dim: sizes of the lower and the top latent layer.
        hidden: hidden widths of the feature network d(x) and (reversed) of the decoder;
            the conditional networks of z1 use one hidden layer of width ``hidden[-1]``.
        beta1, beta2: weights on the rate of z1 and of z2 (1 and 1 give the ELBO).
        likelihood: a likelihood name (``bernoulli``, ``gaussian``, ``gaussian-learned``)
            or a :class:`~mtvae.likelihoods.Likelihood` instance.
        rate_tasks: make the weighted rates MOO tasks (``kl1``, ``kl2``) next to ``x``
            instead of regularisers outside MOO.
        gaussian_scale: the fixed scale when ``likelihood="gaussian"``.
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        z1_dim: int,
        z2_dim: int,
        hidden: Sequence[int] = (512, 256),
        beta1: float = 1.0,
        beta2: float = 1.0,
        likelihood: str | Likelihood = "bernoulli",
        rate_tasks: bool = False,
        gaussian_scale: float = 0.1,
    ) -> None:
        super().__init__()
        for name, value in (("z1_dim", z1_dim), ("z2_dim", z2_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MTVAEError(f"{name} must be a positive integer, got {value!r}")
        hidden = tuple(hidden)
        if not hidden or not all(isinstance(h, int) and h >= 1 for h in hidden):
            raise MTVAEError(f"hidden must be a non-empty sequence of positive integers, got "
                             f"{hidden!r}; e.g. hidden=(512, 256)")
        check_positive("beta1", beta1, allow_zero=True)
        check_positive("beta2", beta2, allow_zero=True)
        self.x_shape = tuple(int(s) for s in x_shape)
        if not self.x_shape or min(self.x_shape) < 1:
            raise MTVAEError(f"x_shape must be a non-empty shape of positive sizes, got "
                             f"{x_shape!r}; e.g. (1, 28, 28)")
        self.x_dim = math.prod(self.x_shape)
        self.z1_dim, self.z2_dim = z1_dim, z2_dim
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.rate_tasks = bool(rate_tasks)
        self.likelihood = (
            likelihood
            if isinstance(likelihood, Likelihood)
            else make_likelihood(likelihood, self.x_shape, scale=gaussian_scale)
        )
        width = hidden[-1]
        self.features = nn.Sequential(nn.Flatten(), mlp(self.x_dim, hidden))
        self.q2 = nn.Linear(width, 2 * z2_dim)
        self.q1 = mlp(width + z2_dim, (width,), 2 * z1_dim)
        self.p1 = mlp(z2_dim, (width,), 2 * z1_dim)
        self.decoder = mlp(z1_dim, tuple(reversed(hidden)), self.likelihood.n_params * self.x_dim)

    # -- the pieces ------------------------------------------------------------------
    def _check(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.x_shape:
            raise MTVAEError(f"inputs have shape {tuple(x.shape)} but the model was built for "
                             f"examples of shape {self.x_shape}; pass [B, *{self.x_shape}]")

    def posterior_z2(self, d: Tensor) -> tuple[Tensor, Tensor]:
        """q(z2 | x) from the features d(x): mean and standard deviation."""
        return _gaussian(self.q2(d))

    def posterior_z1(self, z2: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """q(z1 | z2, x): mean and standard deviation."""
        return _gaussian(self.q1(torch.cat([d, z2], dim=-1)))

    def prior_z1(self, z2: Tensor) -> tuple[Tensor, Tensor]:
        """p(z1 | z2): mean and standard deviation."""
        return _gaussian(self.p1(z2))

    def decode(self, z1: Tensor) -> Tensor:
        """Likelihood parameters ``[B, n_params, *x_shape]`` for codes ``[B, z1_dim]``."""
        return self.decoder(z1).reshape(z1.shape[0], self.likelihood.n_params, *self.x_shape)

    def _rates(self, d: Tensor, eps2: Tensor, eps1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Sample z1 given the noise; per-example KL of each layer: ``(z1, kl1, kl2)``."""
        loc2, scale2 = self.posterior_z2(d)
        z2 = loc2 + scale2 * eps2
        loc1, scale1 = self.posterior_z1(z2, d)
        z1 = loc1 + scale1 * eps1
        kl1 = kl_normal(loc1, scale1, *self.prior_z1(z2)).sum(-1)
        kl2 = kl_std_normal(loc2, scale2).sum(-1)
        return z1, kl1, kl2

    def _noise(self, d: Tensor) -> tuple[Tensor, Tensor]:
        b = d.shape[0]
        return rng.randn(b, self.z2_dim, like=d), rng.randn(b, self.z1_dim, like=d)

    # -- objectives ------------------------------------------------------------------
    def elbo_parts(self, x: Tensor) -> Parts:
        """One-sample distortion -log p(x|z1) and the two analytic rates, per example."""
        self._check(x)
        d = self.features(x)
        z1, kl1, kl2 = self._rates(d, *self._noise(d))
        return Parts(-self.likelihood.log_prob(self.decode(z1), x), kl1, kl2)

    def loss_terms(self, batch: dict[str, Tensor]) -> Terms:
        """beta1/beta2-weighted negative ELBO, averaged over the batch, as :class:`Terms`.

        Without ``rate_tasks`` the distortion is the one task ``x`` and the weighted rates
        are the regularisers ``kl1`` and ``kl2``. With it, all three are tasks; each reads
        the shared features d(x) through its own alias (``task_inputs``) and the same noise,
        so the values are identical and only the gradient paths are separate.
        """
        x = batch["x"]
        self._check(x)
        d = self.features(x)
        eps = self._noise(d)
        if self.rate_tasks:
            inputs = [d.view_as(d) for _ in range(3)]
            z1, _, _ = self._rates(inputs[0], *eps)
            _, kl1, _ = self._rates(inputs[1], *eps)
            _, _, kl2 = self._rates(inputs[2], *eps)
        else:
            inputs = None
            z1, kl1, kl2 = self._rates(d, *eps)
        nll = -self.likelihood.log_prob(self.decode(z1), x).mean()
        kl1, kl2 = kl1.mean(), kl2.mean()
        weighted = {"kl1": self.beta1 * kl1, "kl2": self.beta2 * kl2}
        rate = (kl1 + kl2).detach()
        stats = {"kl1": kl1.detach(), "kl2": kl2.detach(), "rate": rate,
                 "distortion": nll.detach(), "nelbo": nll.detach() + rate}
        if self.rate_tasks:
            return Terms(tasks={"x": nll, **weighted}, shared=d, stats=stats,
                         task_inputs=inputs)
        return Terms(tasks={"x": nll}, regularizers=weighted, shared=d, stats=stats)

    # -- using the model -------------------------------------------------------------
    def encode(self, x: Tensor) -> Codes:
        """Posterior means: mu2 of q(z2|x), then mu1 of q(z1 | z2 = mu2, x)."""
        self._check(x)
        d = self.features(x)
        mu2, _ = self.posterior_z2(d)
        mu1, _ = self.posterior_z1(mu2, d)
        return Codes(mu1, mu2)

    def reconstruct(self, x: Tensor) -> Tensor:
        """Mean of p(x | z1 = mu1) with mu1 the posterior mean given z2 = mu2."""
        return self.likelihood.mean(self.decode(self.encode(x).z1))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Means of p(x | z1) for z2 ~ p(z2), z1 ~ p(z1 | z2) (ancestral sampling)."""
        device = next(self.parameters()).device
        z2 = torch.randn(n, self.z2_dim, device=device, generator=generator)
        loc, scale = self.prior_z1(z2)
        z1 = loc + scale * torch.randn(n, self.z1_dim, device=device, generator=generator)
        return self.likelihood.mean(self.decode(z1))
