"""Evaluation metrics for VAEs.

* negative ELBO per example, and its split into distortion D = -E_q[log p(x|z)] and
  rate R = KL[q(z|x) || p(z)] (Alemi et al. 2018);
* the IWAE bound log (1/k) sum_i p(x, z_i) / q(z_i | x) (Burda et al. 2016), whose
  negation estimates the NLL -log p(x) from above and tightens as k grows;
* KL per latent dimension and active units: dimension d is active when
  Var_x(E_q[z_d | x]) > 0.01 (Burda et al. 2016);
* AUROC of an anomaly score;
* codebook usage of a VQ-VAE over an epoch, and classifier-based scores of generated
  images (confidence and class-entropy diversity).

Everything is evaluated in mini-batches under ``torch.no_grad`` and returned as CPU
tensors or plain floats.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from mtvae.data.base import Split
from mtvae.divergences import kl_std_normal
from mtvae.errors import MTVAEError


def _eval_mode(model: nn.Module) -> nn.Module:
    model.eval()
    return model


@torch.no_grad()
def elbo_parts(model: nn.Module, split: Split, batch_size: int = 500,
               n_samples: int = 1) -> tuple[Tensor, Tensor]:
    """Per-example distortion ``D`` and rate ``R`` (each averaged over ``n_samples``)."""
    _eval_mode(model)
    dist, rate = [], []
    for batch in split.batches(batch_size):
        x = batch["x"]
        d = torch.stack([-model.elbo_parts(x)[0] for _ in range(n_samples)]).mean(0)
        loc, scale = model.encode(x)
        dist.append(d.cpu())
        rate.append(kl_std_normal(loc, scale).sum(-1).cpu())
    return torch.cat(dist), torch.cat(rate)


def negative_elbo(model: nn.Module, split: Split, batch_size: int = 500,
                  n_samples: int = 1) -> Tensor:
    """Per-example -ELBO = D + R (beta = 1 whatever the training beta)."""
    d, r = elbo_parts(model, split, batch_size, n_samples)
    return d + r


@torch.no_grad()
def iwae_bound(model: nn.Module, split: Split, k: int, batch_size: int = 100,
               max_decode: int = 50_000) -> Tensor:
    """Per-example IWAE-k lower bound on log p(x); ``k = 1`` is a one-sample ELBO.

    ``max_decode`` caps how many (sample, example) pairs are decoded at once.
    """
    if not isinstance(k, int) or k < 1:
        raise MTVAEError(f"the number of importance samples k must be ≥ 1, got {k!r}")
    _eval_mode(model)
    out = []
    for batch in split.batches(batch_size):
        x = batch["x"]
        chunk = max(1, max_decode // len(x))
        lw = model.log_weights(x, k, chunk=chunk)
        out.append((torch.logsumexp(lw, 0) - math.log(k)).cpu())
    return torch.cat(out)


def iwae_nll(model: nn.Module, split: Split, k: int, batch_size: int = 100) -> Tensor:
    """Per-example NLL estimate -IWAE-k (an upper bound on -log p(x))."""
    return -iwae_bound(model, split, k, batch_size)


@torch.no_grad()
def posterior_stats(model: nn.Module, split: Split, batch_size: int = 500
                    ) -> tuple[Tensor, Tensor]:
    """Posterior means and standard deviations for every example: ``([N, L], [N, L])``."""
    _eval_mode(model)
    locs, scales = [], []
    for batch in split.batches(batch_size):
        loc, scale = model.encode(batch["x"])
        locs.append(loc.cpu())
        scales.append(scale.cpu())
    return torch.cat(locs), torch.cat(scales)


def kl_per_dim(model: nn.Module, split: Split, batch_size: int = 500) -> Tensor:
    """Average KL[q(z_d|x) || p(z_d)] of each latent dimension ``[L]``, in nats."""
    loc, scale = posterior_stats(model, split, batch_size)
    return kl_std_normal(loc, scale).mean(0)


def active_units(model: nn.Module, split: Split, threshold: float = 0.01,
                 batch_size: int = 500) -> tuple[int, Tensor]:
    """Number of active units and the activity Var_x(E[z_d | x]) of each dimension."""
    loc, _ = posterior_stats(model, split, batch_size)
    activity = loc.var(0, unbiased=True)
    return int((activity > threshold).sum()), activity


def auroc(scores: Tensor | np.ndarray, is_anomaly: Tensor | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (higher = more anomalous)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_anomaly).astype(bool)
    if s.shape != y.shape:
        raise MTVAEError(f"scores and labels must have the same shape, got {s.shape}, {y.shape}")
    if not np.isfinite(s).all():
        raise MTVAEError("anomaly scores contain NaN or infinite values")
    if y.all() or not y.any():
        raise MTVAEError("AUROC needs both anomalous and normal examples")
    return float(roc_auc_score(y, s))


def mean_std(values: list[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) as plain floats."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


# -- discrete latents and generated images (Chapter 2) ------------------------------------
@torch.no_grad()
def codebook_usage(model: nn.Module, split: Split, num_codes: int, batch_size: int = 500,
                   seed: int = 0, transform: bool = True) -> dict[str, float | list[int]]:
    """How a VQ-VAE uses its codes over one pass through ``split`` (eval mode).

    With ``transform`` the split's training transform (dynamic binarisation) is applied, so
    a pass over the training split is exactly one epoch as training sees it. Returns the
    fraction of codes used at least once, their number, the perplexity exp(H) of the code
    frequencies over the whole pass, and the counts.
    """
    _eval_mode(model)
    gen = torch.Generator(device=split.x.device).manual_seed(seed)
    counts = torch.zeros(num_codes, dtype=torch.long)
    for batch in split.batches(batch_size, train=transform, generator=gen):
        idx = model.codes(batch["x"]).reshape(-1).cpu()
        counts += torch.bincount(idx, minlength=num_codes)
    p = counts.double() / counts.sum()
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    used = int((counts > 0).sum())
    return {"fraction_used": used / num_codes, "codes_used": used,
            "perplexity": math.exp(entropy), "counts": counts.tolist()}


def class_scores(probs: Tensor) -> dict[str, float | list[float]]:
    """Classifier verdicts on a set of images (rows of class probabilities ``[N, C]``).

    ``confidence``: mean top-class probability (recognisability); ``class_entropy_bits``:
    entropy of the average class distribution in bits (diversity; log2 C at most);
    ``class_freq``: the average class distribution itself.
    """
    if probs.dim() != 2 or len(probs) == 0:
        raise MTVAEError(f"expected class probabilities [N, C], got shape {tuple(probs.shape)}")
    mean = probs.double().mean(0)
    entropy = float(-(mean[mean > 0] * mean[mean > 0].log2()).sum())
    return {"confidence": float(probs.max(1).values.double().mean()),
            "class_entropy_bits": entropy, "class_freq": mean.tolist()}
