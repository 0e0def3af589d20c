"""The variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014).

Encoder q(z|x) = N(mu(x), diag sigma(x)^2), prior p(z) = N(0, I), decoder p(x|z) given
by a :mod:`mtvae.likelihoods.images` class. ``loss_terms`` returns the beta-weighted negative
ELBO (Higgins et al. 2017) as one reconstruction task plus a KL regulariser;
``log_weights`` gives the importance weights log p(x, z_k) - log q(z_k | x) from which
the IWAE bound (Burda et al. 2016) is computed in :mod:`mtvae.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvae import rng
from mtvae.divergences import kl_std_normal, log_normal, log_std_normal
from mtvae.errors import MTVAEError, check_choice, check_positive
from mtvae.likelihoods import Likelihood, make_likelihood
from mtvae.nets import ConvDecoder, ConvEncoder, GridDecoder, GridEncoder, mlp
from mtvae.terms import Terms


def importance_log_weights(x: Tensor, loc: Tensor, scale: Tensor, k: int, chunk: int | None,
                           log_lik: Callable[[Tensor, Tensor, int], Tensor]) -> Tensor:
    """log p(x | z) + log p(z) - log q(z | x) for ``k`` samples of ``N(loc, scale)``: ``[k, B]``.

    ``log_lik(z, x, kc)`` gives log p(x | z) for ``kc * B`` flattened samples ``z`` and the
    matching copies of ``x``; ``chunk`` bounds how many samples are decoded at once.
    """
    b = x.shape[0]
    chunk = chunk or k
    out = []
    for start in range(0, k, chunk):
        kc = min(chunk, k - start)
        z = loc + scale * torch.randn(kc, *scale.shape, device=x.device, dtype=x.dtype)
        xr = x.unsqueeze(0).expand(kc, *x.shape).reshape(kc * b, *x.shape[1:])
        log_px = log_lik(z.reshape(kc * b, -1), xr, kc).reshape(kc, b)
        out.append(log_px + log_std_normal(z) - log_normal(z, loc, scale))
    return torch.cat(out, dim=0)


class _SplitFlatten(nn.Module):
    """[B, 2c, H, W] -> [B, 2cHW] laid out as (all locations, all scales) for ``encode``."""

    def forward(self, h: Tensor) -> Tensor:
        loc, raw = h.chunk(2, dim=1)
        return torch.cat([loc.flatten(1), raw.flatten(1)], dim=1)


ARCHS = ("mlp", "conv", "linear", "grid")


class VAE(nn.Module):
    """A VAE on fixed-shape inputs.

    Args:
        x_shape: shape of one example, e.g. ``(1, 28, 28)``.
        latent_dim: number of latent dimensions.
        likelihood: a likelihood name (``bernoulli``, ``gaussian``, ``gaussian-learned``)
            or a :class:`~mtvae.likelihoods.Likelihood` instance.
        arch: ``mlp``, ``conv`` (28x28 images), ``linear`` (MLP encoder, affine decoder:
            the probabilistic-PCA family, whose marginal likelihood is exact) or ``grid``
            (the VQ-VAE's convolutional encoder/decoder with a Gaussian latent at each
            position of the 7x7 grid: ``latent_dim`` must be a multiple of 49).
        hidden: hidden widths of the MLP encoder and (reversed) decoder.
        beta: weight on the KL term (beta-VAE); 1 gives the ELBO.
        gaussian_scale: the fixed scale when ``likelihood="gaussian"``.
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        latent_dim: int,
        likelihood: str | Likelihood = "bernoulli",
        arch: str = "mlp",
        hidden: Sequence[int] = (512, 256),
        beta: float = 1.0,
        gaussian_scale: float = 0.1,
    ) -> None:
        super().__init__()
        check_choice("architecture", arch, ARCHS)
        check_positive("beta", beta, allow_zero=True)
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise MTVAEError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self.x_shape = tuple(int(s) for s in x_shape)
        self.x_dim = math.prod(self.x_shape)
        self.latent_dim = latent_dim
        self.arch = arch
        self.beta = float(beta)
        self.likelihood = (
            likelihood
            if isinstance(likelihood, Likelihood)
            else make_likelihood(likelihood, self.x_shape, scale=gaussian_scale)
        )
        n_out = self.likelihood.n_params * self.x_dim
        if arch == "grid":
            if latent_dim % 49:
                raise MTVAEError(f"arch='grid' puts latent_dim / 49 channels at each of the 7x7 "
                                 f"positions; latent_dim must be a multiple of 49, got "
                                 f"{latent_dim}")
            c = latent_dim // 49
            self.encoder = nn.Sequential(GridEncoder(self.x_shape, 2 * c), _SplitFlatten())
            self.decoder = nn.Sequential(nn.Unflatten(1, (c, 7, 7)),
                                         GridDecoder(c, self.x_shape, self.likelihood.n_params))
        elif arch == "conv":
            self.encoder = ConvEncoder(self.x_shape, 2 * latent_dim)
            self.decoder = ConvDecoder(latent_dim, self.x_shape, self.likelihood.n_params)
        else:
            self.encoder = nn.Sequential(nn.Flatten(), mlp(self.x_dim, hidden, 2 * latent_dim))
            self.decoder = (
                nn.Linear(latent_dim, n_out)
                if arch == "linear"
                else mlp(latent_dim, tuple(reversed(hidden)), n_out)
            )

    # -- the two halves -------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and standard deviation, each ``[B, latent_dim]``."""
        h = self.encoder(x)
        loc, raw = h.chunk(2, dim=-1)
        return loc, F.softplus(raw) + 1e-4

    def decode(self, z: Tensor) -> Tensor:
        """Likelihood parameters ``[B, n_params, *x_shape]`` for latent codes ``[B, L]``."""
        out = self.decoder(z)
        return out.reshape(z.shape[0], self.likelihood.n_params, *self.x_shape)

    def reconstruct(self, x: Tensor) -> Tensor:
        """Mean of p(x | z = E[z | x])."""
        loc, _ = self.encode(x)
        return self.likelihood.mean(self.decode(loc))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Means of p(x | z) for z drawn from the prior (the usual way to show samples)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, device=device, generator=generator)
        return self.likelihood.mean(self.decode(z))

    # -- objectives -----------------------------------------------------------------
    def loss_terms(self, batch: dict[str, Tensor]) -> Terms:
        """beta-weighted negative ELBO, averaged over the batch, as :class:`Terms`.

        The reconstruction is the one task; the KL is a regulariser. The shared
        representation is the latent sample z, where every decoded task meets.
        """
        x = batch["x"]
        loc, scale = self.encode(x)
        z = loc + scale * rng.randn_like(scale)
        params = self.decode(z)
        nll = -self.likelihood.log_prob(params, x).mean()
        kl = kl_std_normal(loc, scale).sum(-1).mean()
        return Terms(
            tasks={"x": nll},
            regularizers={"kl": self.beta * kl},
            shared=z,
            stats={"kl": kl.detach(), "nelbo": (nll + kl).detach()},
        )

    def elbo_parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One-sample log p(x|z) and the analytic KL per example: ``([B], [B])``."""
        loc, scale = self.encode(x)
        z = loc + scale * rng.randn_like(scale)
        return self.likelihood.log_prob(self.decode(z), x), kl_std_normal(loc, scale).sum(-1)

    def log_weights(self, x: Tensor, k: int, chunk: int | None = None) -> Tensor:
        """Importance log-weights log p(x, z) - log q(z | x) for k posterior samples.

        Returns ``[k, B]``. ``chunk`` bounds how many samples are decoded at once.
        """
        loc, scale = self.encode(x)
        return importance_log_weights(
            x, loc, scale, k, chunk,
            lambda z, xr, kc: self.likelihood.log_prob(self.decode(z), xr))
