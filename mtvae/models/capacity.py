"""A VAE held at a target rate: -E_q[log p(x|z)] + gamma |KL - C| (Burgess et al. 2018).

To compare a VAE with a VQ-VAE "at the same latent information", the VAE's rate — its KL,
the bits-back code length of z — is pinned to a capacity C (in nats) instead of being left
to the beta = 1 trade-off. Below C the penalty rewards information, above C it charges
gamma per nat; with gamma > 1 and C above the VAE's natural beta = 1 rate the optimum sits
at KL ≈ C.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from mtvae.errors import MTVAEError, check_positive
from mtvae.models.vae import VAE
from mtvae.terms import Terms


class CapacityVAE(VAE):
    """:class:`~mtvae.models.VAE` whose KL regulariser is ``gamma * |KL - capacity|``."""

    def __init__(self, x_shape: Sequence[int], latent_dim: int, capacity: float,
                 gamma: float = 2.0, **vae_options: object) -> None:
        if "beta" in vae_options:
            raise MTVAEError("CapacityVAE sets the rate through capacity and gamma, not beta")
        super().__init__(x_shape, latent_dim, **vae_options)  # type: ignore[arg-type]
        check_positive("capacity", capacity, allow_zero=True)
        check_positive("gamma", gamma)
        self.capacity, self.gamma = float(capacity), float(gamma)

    def loss_terms(self, batch: dict[str, Tensor]) -> Terms:
        terms = super().loss_terms(batch)  # beta = 1: the regulariser is the live KL
        kl = terms.regularizers["kl"]
        terms.regularizers = {"kl": self.gamma * (kl - self.capacity).abs()}
        terms.stats["rate_gap"] = (kl - self.capacity).detach()
        return terms
