"""Per-feature likelihood heads for heterogeneous tabular data (HI-VAE).

One small class per feature type, after HI-VAE (Nazabal et al. 2020) as used by Javaloy,
Meghdadi & Valera (ICML 2022, "Mitigating modality collapse in multimodal VAEs via
impartial optimization"). A decoder emits ``n_params`` numbers per feature; the head turns
them into a distribution over that feature's cells and scores or imputes them.

Everything works in MODEL SPACE (see the tabular contract, "Scaling"):

* ``real``  -> Normal(loc, softplus(raw) + min_scale) on the standardised value;
* ``pos``   -> the same Normal on the standardised log, i.e. a LogNormal in original units;
* ``count`` -> Poisson(rate = exp(raw)) on the raw count (the log link, see
  :class:`PoissonHead`), or (``count="negbin"``) a negative binomial with a learned
  dispersion, for overdispersed counts;
* ``bin``   -> Bernoulli(logit) on 0/1;
* ``cat(k)``-> Categorical(k logits) on the integer code stored as a float.

``log_prob`` is closed form and returns model-space log-densities; for ``pos`` it differs
from the density in original units by the Jacobian ``log x + log scale`` (tested).
``impute`` gives a point value per cell with one of two ``estimator`` (:data:`ESTIMATORS`):

* ``"mean"`` (the default) -- the predictive MEAN where a feature is scored by RMSE: the
  Normal's mean, the LogNormal's mean ``exp(mu + sigma^2 / 2)`` in ORIGINAL units, the
  Poisson rate (the negative binomial's mean), never rounded;
* ``"mode"`` -- the reference protocol of Javaloy et al. / HI-VAE, kept as an ablation: the
  Normal's mean, the LogNormal's MODE ``exp(mu - sigma^2)`` in original units, the floor of
  the Poisson rate (of the negative binomial's mean).

Nominal features are scored by error rate, so bin (p >= 0.5) and cat (most likely category)
impute the mode under both estimators.
``initial_bias`` gives the raw parameters at the column's training marginal, where the
decoder's output biases start.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torch import distributions as D

from mtvae.errors import MTVAEError

if TYPE_CHECKING:  # only needed for the type annotations
    from mtvae.data.marginals import Marginal
    from mtvae.data.schema import Feature

LOG_2PI = math.log(2 * math.pi)
MIN_SCALE = 1e-3
"""Lower bound on Normal scales (model space) so densities cannot run off to infinity."""
MIN_RATE = 1e-6
"""Lower bound on Poisson rates so that log(rate) stays finite."""
MAX_LOG_RATE = 20.0
"""Upper bound on the log of a count head's mean (e^20 ~ 4.9e8), so exp cannot overflow."""
ESTIMATORS = ("mean", "mode")
"""Point estimators of :meth:`Head.impute`: the predictive mean, or the reference's mode."""


def check_estimator(estimator: object) -> str:
    """``estimator`` if it is one of :data:`ESTIMATORS`; otherwise a clear error."""
    if estimator not in ESTIMATORS:
        raise MTVAEError(
            f"unknown estimator {estimator!r}; valid estimators are: mean (the predictive "
            "mean: LogNormal mean, Poisson rate; the default), mode (the reference's "
            "LogNormal mode and floor of the rate, an ablation)"
        )
    return str(estimator)


class Head:
    """Base class: ``params`` has shape ``[B, n_params]`` and data ``x`` shape ``[B]``."""

    n_params: int = 1
    type: str = ""

    def _check(self, params: Tensor) -> None:
        if params.dim() != 2 or params.shape[1] != self.n_params:
            raise MTVAEError(
                f"a {self.type!r} head expects parameters of shape [B, {self.n_params}], got "
                f"{tuple(params.shape)}; give the decoder {self.n_params} outputs per feature"
            )

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """log p(x | params) per row, in model space: shape ``[B]``."""
        raise NotImplementedError

    def distribution(self, params: Tensor) -> D.Distribution:
        """The same model as a :mod:`torch.distributions` object over model-space values."""
        raise NotImplementedError

    def impute(self, params: Tensor, estimator: str = "mean") -> Tensor:
        """The point imputation of each row in model space, shape ``[B]``: the predictive
        ``"mean"`` or the reference's ``"mode"`` (see the module docstring)."""
        raise NotImplementedError

    def initial_bias(self, marginal: Marginal) -> Tensor:
        """Raw parameters ``[n_params]`` at which the head equals the column's marginal
        (the decoder's output bias), so training starts near the data, not thousands of
        nats away (e.g. a Poisson at rate 0.7 on counts in the thousands)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_params={self.n_params})"


class NormalHead(Head):
    """``real``: Normal(loc, softplus(raw) + min_scale) on the standardised value."""

    n_params = 2
    type = "real"

    def __init__(self, min_scale: float = MIN_SCALE) -> None:
        self.min_scale = float(min_scale)

    def loc_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        self._check(params)
        return params[:, 0], F.softplus(params[:, 1]) + self.min_scale

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        loc, scale = self.loc_scale(params)
        z = (x - loc) / scale
        return -0.5 * z.square() - scale.log() - 0.5 * LOG_2PI

    def distribution(self, params: Tensor) -> D.Distribution:
        return D.Normal(*self.loc_scale(params))

    def impute(self, params: Tensor, estimator: str = "mean") -> Tensor:
        check_estimator(estimator)
        return self.loc_scale(params)[0]  # a Normal's mean and mode coincide

    def initial_bias(self, marginal: Marginal) -> Tensor:
        std = math.sqrt(max(marginal.var, 0.0)) if marginal.n else 1.0
        return torch.tensor([marginal.mean, softplus_inverse(max(std - self.min_scale, 1e-2))])


class LogNormalHead(NormalHead):
    """``pos``: a Normal on the standardised log = a LogNormal in original units.

    Args:
        scale: the scaler's scale of this column (std of log x on the training split); the
            mean and the mode in original units depend on it, see :meth:`impute`.
    """

    type = "pos"

    def __init__(self, scale: float = 1.0, min_scale: float = MIN_SCALE) -> None:
        super().__init__(min_scale)
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise MTVAEError(f"a 'pos' head needs the column's scaler scale > 0, got {scale!r}")
        self.scale = float(scale)

    def impute(self, params: Tensor, estimator: str = "mean") -> Tensor:
        """The LogNormal mean exp(mu + sigma^2 / 2) (``"mean"``) or mode exp(mu - sigma^2)
        (``"mode"``) in ORIGINAL units, mapped back into model space.

        Model space holds m = (log x - shift) / scale and the head is Normal(loc, s) on m, so
        in original units log x ~ Normal(mu, sigma) with mu = shift + scale * loc and
        sigma = scale * s. The scaler's inverse maps a model value v to exp(shift + scale * v),
        so the mean is v = (log mean - shift) / scale = loc + scale * s^2 / 2 and the mode
        v = loc - scale * s^2.
        """
        loc, s = self.loc_scale(params)
        if check_estimator(estimator) == "mean":
            return loc + 0.5 * self.scale * s.square()
        return loc - self.scale * s.square()


def log_link(raw: Tensor) -> Tensor:
    """A count head's mean from its raw output: ``exp(raw)`` (raw clamped at
    :data:`MAX_LOG_RATE`) plus :data:`MIN_RATE`."""
    return torch.exp(raw.clamp(max=MAX_LOG_RATE)) + MIN_RATE


class PoissonHead(Head):
    """``count``: Poisson(rate = exp(raw)) on the raw count (the GLM's log link).

    HI-VAE uses rate = softplus(raw), which is linear for large rates: a column of counts in
    the hundred thousands (movies' votes) then needs raw ~ 1e5, so the SHARED representation
    h grows to that scale, and every other head, linear in h, predicts values many times the
    range of its column on those rows; the run-to-run (thread-count) noise of that unstable
    regime moved movies' mean error between 2 and 3.5. With the log link, raw ~ log(rate)
    stays within a few units (measured in the issue-12 report: movies' test error 2.7 ->
    0.14).
    """

    n_params = 1
    type = "count"

    def rate(self, params: Tensor) -> Tensor:
        self._check(params)
        return log_link(params[:, 0])

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        rate = self.rate(params)
        return x * rate.log() - rate - torch.lgamma(x + 1.0)

    def distribution(self, params: Tensor) -> D.Distribution:
        return D.Poisson(self.rate(params))

    def impute(self, params: Tensor, estimator: str = "mean") -> Tensor:
        """The rate (the mean, ``"mean"``) or its floor (``"mode"``); counts are not scaled,
        so model space is the count itself."""
        rate = self.rate(params)
        return rate if check_estimator(estimator) == "mean" else rate.floor()

    def initial_bias(self, marginal: Marginal) -> Tensor:
        return torch.tensor([math.log(max(marginal.mean, 1e-2))])


class NegativeBinomialHead(Head):
    """``count`` with ``HeteroVAE(count="negbin")``: NegBin(mean = exp(raw_0) (the log link,
    as :class:`PoissonHead`), total_count r = softplus(raw_1)) on the raw count; variance
    ``mean + mean^2 / r``.

    For overdispersed counts (variance far above the mean) a Poisson pays about
    ``(var/mean - 1) / 2`` nats per cell for its wrong variance (see
    :mod:`mtvae.data.marginals`); the negative binomial learns the dispersion instead.
    Imputes the mean (``"mean"``) or its floor (``"mode"``), as the Poisson head does.
    """

    n_params = 2
    type = "count"

    def mean_count(self, params: Tensor) -> tuple[Tensor, Tensor]:
        self._check(params)
        return log_link(params[:, 0]), F.softplus(params[:, 1]) + MIN_RATE

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        mean, r = self.mean_count(params)
        log_total = torch.log(r + mean)
        return (torch.lgamma(x + r) - torch.lgamma(r) - torch.lgamma(x + 1.0)
                + r * (r.log() - log_total) + x * (mean.log() - log_total))

    def distribution(self, params: Tensor) -> D.Distribution:
        mean, r = self.mean_count(params)
        return D.NegativeBinomial(total_count=r, probs=mean / (mean + r))

    def impute(self, params: Tensor, estimator: str = "mean") -> Tensor:
        mean = self.mean_count(params)[0]
        return mean if check_estimator(estimator) == "mean" else mean.floor()

    def initial_bias(self, marginal: Marginal) -> Tensor:
        mean = max(marginal.mean, 1e-2)
        excess = marginal.var - mean  # method of moments: var = mean + mean^2 / r
        r = mean**2 / excess if excess > 1e-6 else 1e3
        return torch.tensor([math.log(mean), softplus_inverse(min(max(r, 1e-2), 1e3))])


class BernoulliHead(Head):
    """``bin``: Bernoulli(sigmoid(logit)) on 0/1."""

    n_params = 1
    type = "bin"

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        self._check(params)
        return -F.binary_cross_entropy_with_logits(params[:, 0], x, reduction="none")

    def distribution(self, params: Tensor) -> D.Distribution:
        self._check(params)
        return D.Bernoulli(logits=params[:, 0])

    def impute(self, params: Tensor, estimator: str = "mean") -> Tensor:
        self._check(params)
        check_estimator(estimator)  # scored by error rate: the mode under both estimators
        return (params[:, 0] >= 0).to(params.dtype)  # p >= 0.5  <=>  logit >= 0

    def initial_bias(self, marginal: Marginal) -> Tensor:
        p = min(max(marginal.freqs[1] if marginal.freqs else 0.5, 1e-3), 1 - 1e-3)
        return torch.tensor([math.log(p / (1 - p))])


class CategoricalHead(Head):
    """``cat(k)``: Categorical over k logits; data are integer codes stored as floats.

    Codes outside 0..k-1 are clamped into range in :meth:`log_prob` (so that a stray value
    can never crash a GPU kernel); the tabular loaders guarantee valid codes.
    """

    type = "cat"

    def __init__(self, k: int) -> None:
        if not isinstance(k, int) or k < 2:
            raise MTVAEError(f"a 'cat' head needs k >= 2 categories, got {k!r}")
        self.n_params = k

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        self._check(params)
        code = x.long().clamp(0, self.n_params - 1).unsqueeze(-1)
        return params.log_softmax(-1).gather(-1, code).squeeze(-1)

    def distribution(self, params: Tensor) -> D.Distribution:
        self._check(params)
        return D.Categorical(logits=params)

    def impute(self, params: Tensor, estimator: str = "mean") -> Tensor:
        self._check(params)
        check_estimator(estimator)  # scored by error rate: the mode under both estimators
        return params.argmax(-1).to(params.dtype)

    def initial_bias(self, marginal: Marginal) -> Tensor:
        freqs = marginal.freqs or (1.0 / self.n_params,) * self.n_params
        return torch.tensor([math.log(max(f, 1e-3)) for f in freqs])


HEAD_TYPES = ("real", "pos", "count", "bin", "cat")
COUNT_LIKELIHOODS = ("poisson", "negbin")


def softplus_inverse(y: float) -> float:
    """The raw value whose softplus is ``y > 0``."""
    return y + math.log(-math.expm1(-y))


def make_head(feature: Feature, scale: float = 1.0, count: str = "poisson") -> Head:
    """The head for one schema feature; ``scale`` is the column's scaler scale (``pos``);
    ``count`` picks the likelihood of count columns (``poisson`` or ``negbin``)."""
    kind = getattr(feature, "type", None)
    if kind == "real":
        return NormalHead()
    if kind == "pos":
        return LogNormalHead(scale)
    if kind == "count":
        return PoissonHead() if count == "poisson" else NegativeBinomialHead()
    if kind == "bin":
        return BernoulliHead()
    if kind == "cat":
        return CategoricalHead(int(feature.k))
    name = getattr(feature, "name", feature)
    raise MTVAEError(
        f"feature {name!r} has unknown type {kind!r}; valid types are: {', '.join(HEAD_TYPES)}"
    )
