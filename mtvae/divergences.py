"""Diagonal-Gaussian densities and divergences used by every VAE in the library.

``kl_std_normal`` is the closed-form KL[N(mu, diag sigma^2) || N(0, I)] of
Kingma & Welling (2014, appendix B), kept per latent dimension so that callers can
report the rate of each dimension (posterior collapse diagnostics).
"""

from __future__ import annotations

import math

from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def kl_std_normal(loc: Tensor, scale: Tensor) -> Tensor:
    """KL[N(loc, scale^2) || N(0, 1)] element-wise (sum over the last dim for a vector)."""
    return 0.5 * (loc.square() + scale.square() - 1.0) - scale.log()


def log_normal(x: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """log N(x; loc, diag scale^2) summed over the last dimension."""
    z = (x - loc) / scale
    return (-0.5 * z.square() - scale.log() - 0.5 * LOG_2PI).sum(-1)


def log_std_normal(x: Tensor) -> Tensor:
    """log N(x; 0, I) summed over the last dimension."""
    return (-0.5 * x.square() - 0.5 * LOG_2PI).sum(-1)
