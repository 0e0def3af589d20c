"""Bootstrap confidence intervals for a mean of paired differences, plain or clustered.

Both functions resample with :func:`scipy.stats.bootstrap` (no hand-written resampling) and
return an :class:`Interval`: the estimate (the sample mean), the interval and what it was
computed from.

* :func:`paired_bootstrap_ci` — the differences are independent units (e.g. one mean gain
  per table, or one gain per seed inside one setting): the mean and a percentile (default),
  basic or BCa interval.
* :func:`clustered_bootstrap_ci` — the differences come in clusters that must stay together
  (e.g. one seed's gains at every missing rate): whole clusters are resampled and the
  statistic is the mean over all values drawn, ``sum of cluster sums / sum of cluster
  sizes`` (or a ratio of sums with ``weights``). With equal cluster sizes this is the
  bootstrap of the cluster means.

The default is the percentile interval: with the 5–10 seeds or ~8 tables of the book, BCa's
jackknife estimate of the acceleration is itself noisy; pass ``method="BCa"`` for the
bias-corrected and accelerated version. Degenerate inputs have documented answers: when all
differences (or all cluster means) are equal, every resample has the same mean and the
interval has zero width at that value; fewer than two values (clusters) raise
:class:`~mtvae.errors.MTVAEError`, as do missing or infinite values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

from mtvae.errors import MTVAEError, check_choice

METHODS = ("percentile", "basic", "BCa")


@dataclass(frozen=True)
class Interval:
    """A mean with its bootstrap confidence interval (``low <= estimate <= high`` usually)."""

    estimate: float
    low: float
    high: float
    confidence: float
    n: int  # independent units resampled: values, or clusters
    method: str

    def excludes(self, value: float = 0.0) -> bool:
        """True when ``value`` lies outside the interval (e.g. 0: the gain is not zero)."""
        return bool(value < self.low or value > self.high)


def _check(values: np.ndarray, what: str, confidence: float, n_resamples: int,
           method: str) -> None:
    check_choice("bootstrap method", method, METHODS)
    if not 0 < confidence < 1:
        raise MTVAEError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence!r}")
    if n_resamples < 1:
        raise MTVAEError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if values.ndim != 1:
        raise MTVAEError(f"{what} must be one-dimensional, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise MTVAEError(f"{what} contain missing or infinite values; drop the failed runs "
                         "(or their pairs) first")


def paired_bootstrap_ci(diffs: Sequence[float] | np.ndarray, *, n_resamples: int = 10000,
                        confidence: float = 0.95, seed: int = 0,
                        method: str = "percentile") -> Interval:
    """Mean of paired differences with a bootstrap confidence interval.

    Each difference is one independent unit (resampled with replacement); ``seed`` fixes the
    resampling so a chapter's numbers are reproducible.
    """
    d = np.asarray(diffs, dtype=float)
    _check(d, "the differences", confidence, n_resamples, method)
    if len(d) < 2:
        raise MTVAEError(f"a bootstrap interval needs at least 2 differences, got {len(d)}")
    mean = float(d.mean())
    if np.ptp(d) == 0:  # every resample has this mean
        return Interval(mean, mean, mean, confidence, len(d), method)
    res = st.bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                       method=method, vectorized=True, rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return Interval(mean, float(ci.low), float(ci.high), confidence, len(d), method)


def _ratio_of_sums(sums: np.ndarray, sizes: np.ndarray, axis: int = -1) -> np.ndarray:
    return sums.sum(axis=axis) / sizes.sum(axis=axis)


def clustered_bootstrap_ci(values: Sequence[float] | np.ndarray,
                           clusters: Sequence[object] | np.ndarray, *,
                           weights: Sequence[float] | np.ndarray | None = None,
                           n_resamples: int = 10000, confidence: float = 0.95, seed: int = 0,
                           method: str = "percentile") -> Interval:
    """Mean of ``values`` with a bootstrap interval that resamples whole ``clusters``.

    ``clusters[i]`` names the cluster of ``values[i]`` (e.g. its seed). The estimate is
    ``sum(values) / sum(weights)`` — the plain mean when ``weights`` is None (all 1); with
    ``values = reference − method`` and ``weights = reference`` it is the relative gain of
    the pooled error. Each resample draws clusters with replacement and takes the same
    ratio over every value in the drawn clusters (paired resampling of the clusters' sums).
    """
    v = np.asarray(values, dtype=float)
    c = np.asarray(clusters)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=float)
    _check(v, "the values", confidence, n_resamples, method)
    if c.shape != v.shape or w.shape != v.shape:
        raise MTVAEError(f"values, clusters and weights must have the same length, got "
                         f"{len(v)}, {len(c)} and {len(w)}")
    if not (np.isfinite(w).all() and (w > 0).all()):
        raise MTVAEError("weights must be positive and finite (they are the denominators)")
    labels, inverse = np.unique(c, return_inverse=True)
    if len(labels) < 2:
        raise MTVAEError(f"a clustered bootstrap needs at least 2 clusters, got {len(labels)}")
    sums = np.bincount(inverse, weights=v)
    sizes = np.bincount(inverse, weights=w)
    mean = float(v.sum() / w.sum())
    if np.ptp(sums / sizes) == 0:  # every cluster has this ratio, and so every resample
        return Interval(mean, mean, mean, confidence, len(labels), method)
    res = st.bootstrap((sums, sizes), _ratio_of_sums, paired=True, n_resamples=n_resamples,
                       confidence_level=confidence, method=method, vectorized=True,
                       rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return Interval(mean, float(ci.low), float(ci.high), confidence, len(labels), method)
