"""Fusing unimodal Gaussian posteriors into one joint posterior: PoE, MoE, MoPoE.

A multimodal VAE has one encoder per modality, each giving a diagonal Gaussian "expert"
q_m(z | x_m). Three ways to combine the experts of a subset S of observed modalities:

* **PoE** (Wu & Goodman 2018, MVAE): the normalised product of the experts and, optionally,
  of the prior expert N(0, I). A product of Gaussians is Gaussian with precision
  T = sum_m T_m (T_m = 1 / sigma_m^2) and mean sum_m T_m mu_m / T — the closed form
  implemented by :func:`product_of_experts`.
* **MoE** (Shi et al. 2019, MMVAE): the uniform mixture of the unimodal posteriors.
* **MoPoE** (Sutter et al. 2021): the uniform mixture, over every non-empty subset T of S,
  of the PoE of T's experts (:func:`nonempty_subsets`: 2^|S| - 1 components).

Every fused posterior is a :class:`Posterior`: K equally weighted Gaussian components (K = 1
for PoE), sampled *stratified* (one reparameterised sample per component) for training and
by picking a component per example for generation.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mtvae import rng
from mtvae.divergences import kl_std_normal
from mtvae.errors import MTVAEError

FUSIONS = ("poe", "moe", "mopoe")


def _stack(values: Tensor | Sequence[Tensor], what: str) -> Tensor:
    t = values if isinstance(values, Tensor) else torch.stack(list(values))
    if t.dim() < 2 or len(t) == 0:
        raise MTVAEError(f"{what} must stack to [n_experts, ..., latent_dim] with at least one "
                         f"expert, got shape {tuple(t.shape)}")
    return t


def product_of_experts(locs: Tensor | Sequence[Tensor], scales: Tensor | Sequence[Tensor],
                       prior_expert: bool = False, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """The normalised product of diagonal Gaussian experts (precision-weighted closed form).

    Args:
        locs, scales: experts' means and standard deviations, ``[M, ..., D]`` (or a sequence
            of M tensors ``[..., D]``).
        prior_expert: also multiply by the prior expert N(0, I) (MVAE's choice, which keeps
            the product proper when all other experts are very broad).

    Returns:
        ``(loc, scale)`` of the product, ``[..., D]``: precision T = sum_m 1/sigma_m^2
        (+1 for the prior), loc = sum_m mu_m / sigma_m^2 / T, scale = T^{-1/2}.
    """
    loc_t, scale_t = _stack(locs, "locs"), _stack(scales, "scales")
    if loc_t.shape != scale_t.shape:
        raise MTVAEError(f"locs {tuple(loc_t.shape)} and scales {tuple(scale_t.shape)} must "
                         "have the same shape")
    precision = scale_t.square().clamp_min(eps).reciprocal()
    total = precision.sum(0)
    weighted = (precision * loc_t).sum(0)
    if prior_expert:
        total = total + 1.0  # N(0, 1): precision 1, mean 0 adds nothing to ``weighted``
    return weighted / total, total.rsqrt()


def nonempty_subsets(items: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``items`` (2^n - 1), by size then in the given order."""
    items = tuple(items)
    return [c for r in range(1, len(items) + 1) for c in itertools.combinations(items, r)]


@dataclass
class Posterior:
    """A uniform mixture of K diagonal Gaussians: ``loc`` and ``scale`` are ``[K, B, D]``."""

    loc: Tensor
    scale: Tensor

    @property
    def n_components(self) -> int:
        return self.loc.shape[0]

    def rsample(self) -> Tensor:
        """Stratified reparameterised samples, one per component: ``[K, B, D]``.

        The noise comes from :mod:`mtvae.rng` (``torch.randn_like`` outside a stacked run).
        """
        return self.loc + self.scale * rng.randn_like(self.scale)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """One sample of the mixture per example (a uniformly drawn component): ``[B, D]``."""
        k, b, _ = self.loc.shape
        dev = self.loc.device
        which = torch.randint(k, (b,), generator=generator, device=dev)
        rows = torch.arange(b, device=dev)
        eps = torch.randn(self.loc.shape[1:], generator=generator, device=dev,
                          dtype=self.loc.dtype)
        return self.loc[which, rows] + self.scale[which, rows] * eps

    def kl_components(self) -> Tensor:
        """KL(q_k || N(0, I)) of each component and example: ``[K, B]``.

        Their average over k upper-bounds KL(mixture || prior) (KL is convex), so the
        ELBO computed with it is a lower bound of the mixture's ELBO.
        """
        return kl_std_normal(self.loc, self.scale).sum(-1)


def fuse(experts: dict[str, tuple[Tensor, Tensor]], subset: Sequence[str], fusion: str,
         prior_expert: bool = True) -> Posterior:
    """The posterior of ``subset`` under ``fusion`` from unimodal ``experts[m] = (loc, scale)``.

    ``prior_expert`` applies to PoE only. MoPoE's subset products follow Sutter et al.'s
    definition without a prior expert, so that its one-modality components equal MoE's.
    """
    if fusion not in FUSIONS:
        raise MTVAEError(f"unknown fusion {fusion!r}; valid fusions are: {', '.join(FUSIONS)}")
    missing = [m for m in subset if m not in experts]
    if not subset or missing:
        raise MTVAEError(f"cannot fuse subset {tuple(subset)}: choose a non-empty subset of the "
                         f"encoded modalities {tuple(experts)}")
    if fusion == "poe":
        loc, scale = product_of_experts([experts[m][0] for m in subset],
                                        [experts[m][1] for m in subset], prior_expert)
        return Posterior(loc[None], scale[None])
    if fusion == "moe":
        parts = [experts[m] for m in subset]
    else:
        parts = [product_of_experts([experts[m][0] for m in t], [experts[m][1] for m in t])
                 for t in nonempty_subsets(subset)]
    return Posterior(torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts]))
