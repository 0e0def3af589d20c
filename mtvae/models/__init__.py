"""Models. Each exposes ``loss_terms(batch) -> Terms`` and holds no training-loop code."""

from mtvae.models.hetero import HeteroVAE
from mtvae.models.vae import VAE

__all__ = ["VAE", "HeteroVAE"]
