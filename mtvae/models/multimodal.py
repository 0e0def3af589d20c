"""A multimodal VAE over three paired modalities: an MNIST image, an 8x8 digit, the label.

One Gaussian encoder per modality gives an expert q_m(z | x_m); a fusion
(:mod:`mtvae.fusion`) combines the experts of the observed modalities into q(z | X_S); one
decoder per modality maps z back to its likelihood:

* ``mnist`` — 28x28 image, independent Bernoulli pixels (train on dynamically binarised
  images: a proper likelihood, in nats comparable with chapter 1);
* ``digit`` — 8x8 digit whose pixels are counts 0..16 (scikit-learn's 17 grey levels), so
  each pixel is Binomial(16, p): the exact discrete likelihood of the data as stored;
* ``label`` — the class, categorical over 10 digits.

Objectives (negated, per example):

* ``poe`` (Wu & Goodman 2018, MVAE): the joint ELBO with q = PoE(prior, q_mnist, q_digit,
  q_label) **plus** the three unimodal ELBOs, each with q = PoE(prior, q_m) and only x_m
  reconstructed — MVAE's sub-sampled objective restricted to the unimodal subsets, without
  which the unimodal experts are never trained to stand alone and cross-generation fails.
* ``moe`` (Shi et al. 2019, MMVAE) and ``mopoe`` (Sutter et al. 2021): the average over the
  mixture's K components of [sum_m log p(x_m | z_k) - KL(q_k || p)], z_k one stratified
  sample of component k. Because KL is convex, the average KL upper-bounds the mixture's
  KL, so this is a lower bound of the mixture's ELBO (MoPoE's own objective; MMVAE uses the
  exact mixture density instead).

Each modality's reconstruction NLL is one task of :class:`~mtvae.terms.Terms` (what MOO
balances: can it stop the high-dimensional image from dominating the 10-way label?); the
KL is the regulariser; ``shared`` is the stacked latent sample ``[K, B, D]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvae.errors import MTVAEError, check_choice, check_positive
from mtvae.fusion import FUSIONS, Posterior, fuse
from mtvae.nets import mlp
from mtvae.terms import Terms

MODALITIES = ("mnist", "digit", "label")
BATCH_KEYS = {"mnist": "x", "digit": "digit", "label": "y"}
DIGIT_LEVELS = 16  # scikit-learn digits: integer grey levels 0..16
N_CLASSES = 10


def binomial_log_prob(logits: Tensor, counts: Tensor, n: int = DIGIT_LEVELS) -> Tensor:
    """log Binomial(counts; n, sigmoid(logits)) element-wise, in closed form."""
    log_choose = (torch.lgamma(torch.tensor(n + 1.0, device=counts.device))
                  - torch.lgamma(counts + 1) - torch.lgamma(n - counts + 1))
    return log_choose - counts * F.softplus(-logits) - (n - counts) * F.softplus(logits)


class MultimodalVAE(nn.Module):
    """MVAE / MMVAE / MoPoE-VAE on ``{"x": [B,1,28,28], "digit": [B,1,8,8], "y": [B]}``.

    Args:
        latent_dim: size of the shared latent z.
        fusion: ``"poe"``, ``"moe"`` or ``"mopoe"`` (see the module docstring).
        hidden: width of the image encoder/decoder's two hidden layers; the digit networks
            use ``hidden // 2`` and the label networks ``hidden // 4`` (one hidden layer).
        beta: weight on the KL regulariser (1 gives the ELBO).
        poe_unimodal: with ``fusion="poe"``, add the unimodal ELBOs (MVAE); ignored otherwise.
        modality_weights: weight of each modality's reconstruction task (missing ones 1), the
            knob of a tuned plain sum (MVAE trains MNIST with the label weighted 50). The
            ``nelbo`` stat stays unweighted, so runs with different weights compare.
    """

    def __init__(self, latent_dim: int = 20, fusion: str = "poe", hidden: int = 256,
                 beta: float = 1.0, poe_unimodal: bool = True,
                 modality_weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        check_choice("fusion", fusion, FUSIONS)
        for name, value in (("latent_dim", latent_dim), ("hidden", hidden)):
            if not isinstance(value, int) or value < 4:
                raise MTVAEError(f"{name} must be an integer ≥ 4, got {value!r}")
        check_positive("beta", beta, allow_zero=True)
        self.latent_dim, self.fusion, self.beta = latent_dim, fusion, float(beta)
        self.poe_unimodal = bool(poe_unimodal) and fusion == "poe"
        weights = dict(modality_weights or {})
        unknown = sorted(set(weights) - set(MODALITIES))
        if unknown:
            raise MTVAEError(f"modality_weights names unknown modalities {unknown}; the "
                             f"modalities are {', '.join(MODALITIES)}")
        for m, w in weights.items():
            check_positive(f"modality_weights[{m!r}]", w)
        self.modality_weights = {m: float(weights.get(m, 1.0)) for m in MODALITIES}
        d, h = latent_dim, hidden
        sizes = {"mnist": (784, [h, h]), "digit": (64, [h // 2]), "label": (N_CLASSES, [h // 4])}
        self.encoders = nn.ModuleDict(
            {m: mlp(n, widths, 2 * d) for m, (n, widths) in sizes.items()})
        self.decoders = nn.ModuleDict(
            {m: mlp(d, widths[::-1], n) for m, (n, widths) in sizes.items()})

    # -- inputs and experts -------------------------------------------------------------
    def _inputs(self, batch: Mapping[str, Tensor], subset: Sequence[str]) -> dict[str, Tensor]:
        out = {}
        for m in subset:
            check_choice("modality", m, MODALITIES)
            key = BATCH_KEYS[m]
            if key not in batch:
                raise MTVAEError(f"modality {m!r} needs batch[{key!r}]; load the data with "
                                 "mtvae.data.load('paired-digits')")
            t = batch[key]
            out[m] = (F.one_hot(t.long(), N_CLASSES).float() if m == "label"
                      else t.flatten(1).float())
        return out

    def experts(self, batch: Mapping[str, Tensor], subset: Sequence[str] = MODALITIES
                ) -> dict[str, tuple[Tensor, Tensor]]:
        """Unimodal posteriors ``{m: (loc, scale)}``, each ``[B, D]``."""
        out = {}
        for m, x in self._inputs(batch, subset).items():
            loc, raw = self.encoders[m](x).chunk(2, dim=-1)
            out[m] = (loc, F.softplus(raw) + 1e-4)
        return out

    def encode(self, batch: Mapping[str, Tensor], subset: Sequence[str] = MODALITIES
               ) -> Posterior:
        """The fused posterior q(z | X_subset) (K components, ``[K, B, D]``)."""
        subset = tuple(subset)
        return fuse(self.experts(batch, subset), subset, self.fusion, prior_expert=True)

    # -- decoders -----------------------------------------------------------------------
    def decode(self, z: Tensor, modality: str) -> Tensor:
        """Likelihood parameters (logits) of ``modality`` for codes ``[..., D]``."""
        check_choice("modality", modality, MODALITIES)
        return self.decoders[modality](z)

    def log_prob(self, modality: str, params: Tensor, target: Tensor) -> Tensor:
        """log p(x_m | params) per example (summed over pixels), broadcast over leading dims."""
        if modality == "mnist":
            return -F.binary_cross_entropy_with_logits(
                params, target.expand_as(params), reduction="none").sum(-1)
        if modality == "digit":
            counts = (target * DIGIT_LEVELS).round()
            return binomial_log_prob(params, counts.expand_as(params)).sum(-1)
        return -F.cross_entropy(params.movedim(-1, 1), target.long().expand(params.shape[:-1]),
                                reduction="none")

    def mean(self, modality: str, params: Tensor) -> Tensor:
        """Expected data: pixel probabilities (in [0, 1]) or label probabilities."""
        if modality == "label":
            return params.softmax(-1)
        side = 28 if modality == "mnist" else 8
        return torch.sigmoid(params).reshape(*params.shape[:-1], 1, side, side)

    # -- objective ----------------------------------------------------------------------
    def loss_terms(self, batch: Mapping[str, Tensor]) -> Terms:
        """One NLL task per modality, the KL as regulariser, ``shared`` = all z samples."""
        experts = self.experts(batch)
        targets = self._inputs(batch, MODALITIES)
        targets["label"] = batch[BATCH_KEYS["label"]]
        joint = fuse(experts, MODALITIES, self.fusion, prior_expert=True)
        posts = [joint]
        if self.poe_unimodal:
            posts += [fuse(experts, (m,), "poe", prior_expert=True) for m in MODALITIES]
        z = torch.cat([p.rsample() for p in posts])  # [K, B, D]
        kls = [p.kl_components().mean() for p in posts]  # average over components, then sum
        copies = [z.view_as(z) for _ in MODALITIES]
        tasks = {}
        for i, (m, zc) in enumerate(zip(MODALITIES, copies, strict=True)):
            if self.poe_unimodal:  # joint sample and this modality's own unimodal sample
                zc = zc[[0, 1 + i]]
            nll = -self.log_prob(m, self.decode(zc, m), targets[m]).mean(-1)  # per component
            tasks[m] = nll.sum() if self.poe_unimodal else nll.mean()
        kl = torch.stack(kls).sum()
        stats = {"kl": kl.detach(), "nelbo": (sum(tasks.values()) + kl).detach()}
        tasks = {m: t * self.modality_weights[m] if self.modality_weights[m] != 1.0 else t
                 for m, t in tasks.items()}
        return Terms(tasks=tasks, regularizers={"kl": self.beta * kl}, shared=z,
                     stats=stats, task_inputs=copies)

    # -- generation and evaluation ------------------------------------------------------
    @torch.no_grad()
    def cross_generate(self, batch: Mapping[str, Tensor], source: Sequence[str], target: str,
                       generator: torch.Generator | None = None) -> Tensor:
        """Expected ``target`` given one sample z ~ q(z | X_source) per example."""
        z = self.encode(batch, source).sample(generator)
        return self.mean(target, self.decode(z, target))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Expected data of every modality for ``n`` codes z ~ N(0, I)."""
        dev = device or next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=dev)
        return {m: self.mean(m, self.decode(z, m)) for m in MODALITIES}

    @torch.no_grad()
    def modality_log_likelihood(self, batch: Mapping[str, Tensor], samples: int = 10
                                ) -> dict[str, Tensor]:
        """Per example, E_{q(z | all modalities)} log p(x_m | z) for each modality, in nats.

        Estimated with ``samples`` stratified draws of every component of q (for mixtures
        this is the exact mixture expectation's stratified estimate).
        """
        post = self.encode(batch, MODALITIES)
        targets = self._inputs(batch, MODALITIES)
        targets["label"] = batch[BATCH_KEYS["label"]]
        z = torch.cat([post.rsample() for _ in range(samples)])
        return {m: self.log_prob(m, self.decode(z, m), targets[m]).mean(0) for m in MODALITIES}


def log_chance(n_classes: int = N_CLASSES) -> float:
    """log-probability of a uniform guess: the label likelihood of a model that ignores z."""
    return -math.log(n_classes)
