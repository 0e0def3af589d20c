"""Likelihoods: how a decoder's outputs become a distribution over the data.

Two families, one module each:

* :mod:`mtvae.likelihoods.images` -- observation models p(x | z) for images, one
  distribution over all dimensions of an example (:class:`Bernoulli` for binarised pixels,
  :class:`Gaussian` with fixed or learned variance for grey values), built by
  :func:`make_likelihood`;
* :mod:`mtvae.likelihoods.features` -- per-feature likelihood heads for heterogeneous tables
  (HI-VAE): one :class:`Head` per column type (real, pos, count, bin, cat) that scores the
  column's cells in model space and imputes them by the predictive mean or mode, built by
  :func:`make_head`.
"""

from mtvae.likelihoods.features import (
    COUNT_LIKELIHOODS,
    ESTIMATORS,
    HEAD_TYPES,
    BernoulliHead,
    CategoricalHead,
    Head,
    LogNormalHead,
    NegativeBinomialHead,
    NormalHead,
    PoissonHead,
    check_estimator,
    make_head,
    softplus_inverse,
)
from mtvae.likelihoods.images import (
    LIKELIHOODS,
    Bernoulli,
    Gaussian,
    Likelihood,
    make_likelihood,
)

__all__ = [
    "COUNT_LIKELIHOODS",
    "ESTIMATORS",
    "HEAD_TYPES",
    "LIKELIHOODS",
    "Bernoulli",
    "BernoulliHead",
    "CategoricalHead",
    "Gaussian",
    "Head",
    "Likelihood",
    "LogNormalHead",
    "NegativeBinomialHead",
    "NormalHead",
    "PoissonHead",
    "check_estimator",
    "make_head",
    "make_likelihood",
    "softplus_inverse",
]
