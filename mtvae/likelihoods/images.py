"""Observation models p(x | z) for images: one small class per likelihood type.

A decoder emits ``n_params`` numbers per data dimension; the likelihood turns them into a
distribution, scores data (summed over all dimensions of one example, in nats) and gives
the mean used for reconstructions. Closed-form log-densities are used for speed; the tests
check them against :mod:`torch.distributions`.

Bernoulli suits (binarised) pixels; a Gaussian with fixed or learned variance suits grey
values. Note that a Bernoulli log-*probability* and a Gaussian log-*density* are not on a
comparable scale (Kingma & Welling 2014; Loaiza-Ganem & Cunningham 2019).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch import distributions as D

from mtvae.errors import MTVAEError, check_choice

LOG_2PI = math.log(2 * math.pi)


class Likelihood(nn.Module):
    """Base class: ``params`` has shape ``[B, n_params, *event_shape]``."""

    n_params: int = 1

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """log p(x | params), summed over the event dimensions: shape ``[B]``."""
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        """E[x | params], shaped like the data."""
        raise NotImplementedError

    def distribution(self, params: Tensor) -> D.Distribution:
        """The same model as a :mod:`torch.distributions` object (events = one example)."""
        raise NotImplementedError

    def sample(self, params: Tensor) -> Tensor:
        return self.distribution(params).sample()


def _sum_event(t: Tensor) -> Tensor:
    return t.flatten(1).sum(dim=1)


class Bernoulli(Likelihood):
    """Independent Bernoulli pixels parameterised by logits."""

    n_params = 1

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logits = params[:, 0]
        return -_sum_event(F.binary_cross_entropy_with_logits(logits, x, reduction="none"))

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params[:, 0])

    def distribution(self, params: Tensor) -> D.Distribution:
        event_dims = params[:, 0].dim() - 1
        return D.Independent(D.Bernoulli(logits=params[:, 0]), event_dims)


class Gaussian(Likelihood):
    """Independent Normal pixels with mean from the decoder.

    Args:
        event_shape: shape of one example (needed for a learned per-dimension scale).
        scale: a fixed standard deviation, or ``None`` to learn one log-scale per data
            dimension (shared across examples), bounded below by ``min_scale`` so that the
            density cannot run off to infinity on constant pixels.
    """

    n_params = 1

    def __init__(
        self, event_shape: tuple[int, ...], scale: float | None = None, min_scale: float = 1e-2
    ) -> None:
        super().__init__()
        if scale is not None and not scale > 0:
            raise MTVAEError(f"Gaussian scale must be > 0 (or None to learn it), got {scale!r}")
        self.fixed_scale = scale
        self.min_scale = min_scale
        self.log_scale = None if scale is not None else nn.Parameter(torch.zeros(event_shape))

    def scale(self, like: Tensor) -> Tensor:
        if self.log_scale is None:
            return torch.full_like(like, float(self.fixed_scale))
        return self.min_scale + F.softplus(self.log_scale).expand_as(like)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        loc = params[:, 0]
        scale = self.scale(loc)
        z = (x - loc) / scale
        return _sum_event(-0.5 * z.square() - scale.log() - 0.5 * LOG_2PI)

    def mean(self, params: Tensor) -> Tensor:
        return params[:, 0]

    def distribution(self, params: Tensor) -> D.Distribution:
        loc = params[:, 0]
        return D.Independent(D.Normal(loc, self.scale(loc)), loc.dim() - 1)


LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-learned")


def make_likelihood(name: str, event_shape: tuple[int, ...], scale: float = 0.1) -> Likelihood:
    """Build a likelihood by name: ``bernoulli``, ``gaussian`` (fixed ``scale``) or
    ``gaussian-learned``."""
    check_choice("likelihood", name, LIKELIHOODS)
    if name == "bernoulli":
        return Bernoulli()
    if name == "gaussian":
        return Gaussian(event_shape, scale=scale)
    return Gaussian(event_shape, scale=None)
