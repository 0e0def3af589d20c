"""Per-feature likelihood heads: closed-form log-probs vs torch.distributions, imputation."""

import math

import pytest
import torch
from torch import distributions as D

from mtvae.data.schema import Feature
from mtvae.errors import MTVAEError
from mtvae.likelihoods import (
    BernoulliHead,
    CategoricalHead,
    LogNormalHead,
    NormalHead,
    PoissonHead,
    make_head,
)

B = 64


def _params(n_params, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(B, n_params, generator=g, dtype=torch.float64)


def test_normal_log_prob_matches_torch():
    head = NormalHead()
    params = _params(2)
    x = torch.randn(B, dtype=torch.float64)
    loc, scale = params[:, 0], torch.nn.functional.softplus(params[:, 1]) + 1e-3
    torch.testing.assert_close(head.log_prob(params, x), D.Normal(loc, scale).log_prob(x))
    torch.testing.assert_close(head.distribution(params).log_prob(x), head.log_prob(params, x))
    torch.testing.assert_close(head.impute(params), loc)


def test_lognormal_log_prob_is_lognormal_in_original_units():
    shift, col_scale = 0.7, 1.6
    head = LogNormalHead(scale=col_scale)
    params = _params(2, seed=1)
    m = torch.randn(B, dtype=torch.float64)  # model space: (log x - shift) / scale
    x_orig = torch.exp(shift + col_scale * m)
    loc, s = params[:, 0], torch.nn.functional.softplus(params[:, 1]) + 1e-3
    lp = head.log_prob(params, m)
    torch.testing.assert_close(lp, D.Normal(loc, s).log_prob(m))
    # Change of variables: p_model(m) = p_orig(x) * x * scale.
    lognormal = D.LogNormal(shift + col_scale * loc, col_scale * s)
    torch.testing.assert_close(lp, lognormal.log_prob(x_orig) + x_orig.log() + math.log(col_scale))


def test_lognormal_impute_is_the_mode_in_original_units():
    shift, col_scale = -0.3, 2.5
    head = LogNormalHead(scale=col_scale)
    params = torch.tensor([[0.4, 0.0], [-1.0, 1.5]], dtype=torch.float64)
    s = torch.nn.functional.softplus(params[:, 1]) + 1e-3
    mu, sigma = shift + col_scale * params[:, 0], col_scale * s
    mode_orig = torch.exp(mu - sigma.square())
    imputed_orig = torch.exp(shift + col_scale * head.impute(params, "mode"))  # scaler.inverse
    torch.testing.assert_close(imputed_orig, mode_orig)
    # Numerically the mode maximises the LogNormal density in original units.
    for i in range(2):
        grid = mode_orig[i] * torch.linspace(0.9, 1.1, 2001, dtype=torch.float64)
        dens = D.LogNormal(mu[i], sigma[i]).log_prob(grid)
        torch.testing.assert_close(grid[dens.argmax()], mode_orig[i], rtol=2e-4, atol=0)


def test_lognormal_mean_estimator_is_the_mean_in_original_units():
    """Hand example: loc 0.4, s = 0.5 (raw = softplus^-1(0.5 - 1e-3)), column (shift, scale)
    = (1.0, 2.0), so log x ~ N(1 + 2 * 0.4, 2 * 0.5) = N(1.8, 1): mean exp(1.8 + 1/2) =
    exp(2.3), mode exp(1.8 - 1) = exp(0.8)."""
    from mtvae.likelihoods import softplus_inverse

    shift, col_scale = 1.0, 2.0
    head = LogNormalHead(scale=col_scale)
    params = torch.tensor([[0.4, softplus_inverse(0.5 - 1e-3)]], dtype=torch.float64)
    orig = {e: torch.exp(shift + col_scale * head.impute(params, e)) for e in ("mean", "mode")}
    torch.testing.assert_close(orig["mean"], torch.tensor([math.exp(2.3)], dtype=torch.float64))
    torch.testing.assert_close(orig["mode"], torch.tensor([math.exp(0.8)], dtype=torch.float64))
    torch.testing.assert_close(head.impute(params), head.impute(params, "mean"))  # default
    # and it is torch's LogNormal mean, for random parameters too
    params = _params(2, seed=4)
    loc, s = params[:, 0], torch.nn.functional.softplus(params[:, 1]) + 1e-3
    reference = D.LogNormal(shift + col_scale * loc, col_scale * s).mean
    torch.testing.assert_close(torch.exp(shift + col_scale * head.impute(params)), reference)


def test_estimator_leaves_nominal_and_real_heads_alone_and_is_checked():
    params = _params(2, seed=6)
    torch.testing.assert_close(NormalHead().impute(params, "mean"),
                               NormalHead().impute(params, "mode"))
    logits = _params(1, seed=7)
    torch.testing.assert_close(BernoulliHead().impute(logits, "mean"),
                               (logits[:, 0] >= 0).double())
    cat = _params(3, seed=8)
    torch.testing.assert_close(CategoricalHead(3).impute(cat, "mean"), cat.argmax(-1).double())
    for head, p in ((NormalHead(), params), (PoissonHead(), logits), (BernoulliHead(), logits)):
        with pytest.raises(MTVAEError, match="unknown estimator 'median'; valid estimators"):
            head.impute(p, "median")


def test_poisson_log_prob_and_impute():
    head = PoissonHead()
    params = _params(1, seed=2)
    x = torch.randint(0, 12, (B,)).double()
    rate = torch.exp(params[:, 0]) + 1e-6  # the log link
    torch.testing.assert_close(head.log_prob(params, x), D.Poisson(rate).log_prob(x))
    torch.testing.assert_close(head.impute(params), rate)  # the mean: the rate, unrounded
    torch.testing.assert_close(head.impute(params, "mode"), rate.floor())
    raw = torch.log(torch.tensor([[2.7], [0.3]], dtype=torch.float64))
    torch.testing.assert_close(head.impute(raw, "mode"),
                               torch.tensor([2.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(head.impute(raw), torch.tensor([2.7, 0.3], dtype=torch.float64)
                               + 1e-6)


def test_bernoulli_log_prob_and_impute():
    head = BernoulliHead()
    params = _params(1, seed=3)
    x = torch.randint(0, 2, (B,)).double()
    torch.testing.assert_close(
        head.log_prob(params, x), D.Bernoulli(logits=params[:, 0]).log_prob(x)
    )
    logits = torch.tensor([[-0.1], [0.0], [3.0]], dtype=torch.float64)  # p = 0.5 -> 1
    torch.testing.assert_close(head.impute(logits), torch.tensor([0.0, 1.0, 1.0]).double())


def test_categorical_log_prob_and_impute():
    head = CategoricalHead(4)
    params = _params(4, seed=4)
    x = torch.randint(0, 4, (B,)).double()
    torch.testing.assert_close(
        head.log_prob(params, x), D.Categorical(logits=params).log_prob(x.long())
    )
    torch.testing.assert_close(head.impute(params), params.argmax(-1).double())
    assert head.impute(torch.tensor([[0.0, 5.0, 1.0, 2.0]])).tolist() == [1.0]


@pytest.mark.parametrize(
    ("spec", "cls", "n_params"),
    [("real", NormalHead, 2), ("pos", LogNormalHead, 2), ("count", PoissonHead, 1),
     ("bin", BernoulliHead, 1)],
)
def test_make_head(spec, cls, n_params):
    head = make_head(Feature("f", spec, 2 if spec == "bin" else 1), scale=2.0)
    assert type(head) is cls and head.n_params == n_params
    if spec == "pos":
        assert head.scale == 2.0


def test_make_head_categorical_and_errors():
    head = make_head(Feature("colour", "cat", 5))
    assert isinstance(head, CategoricalHead) and head.n_params == 5
    with pytest.raises(MTVAEError, match="valid types are"):
        make_head(_Odd())
    with pytest.raises(MTVAEError, match=r"shape \[B, 2\]"):
        NormalHead().log_prob(torch.zeros(3, 1), torch.zeros(3))
    with pytest.raises(MTVAEError, match="k >= 2"):
        CategoricalHead(1)
    with pytest.raises(MTVAEError, match="scale > 0"):
        LogNormalHead(scale=0.0)


class _Odd:
    name = "weird"
    type = "ordinal"
    k = 3


# ------------------------------------------ issue 15: marginal init, negative binomial


def test_negative_binomial_log_prob_impute_and_distribution():
    from mtvae.likelihoods import NegativeBinomialHead

    head = NegativeBinomialHead()
    params = _params(2, seed=5)
    x = torch.randint(0, 40, (B,)).double()
    mean = torch.exp(params[:, 0]) + 1e-6  # the log link, as the Poisson head
    r = torch.nn.functional.softplus(params[:, 1]) + 1e-6
    reference = D.NegativeBinomial(total_count=r, probs=mean / (mean + r))
    torch.testing.assert_close(head.log_prob(params, x), reference.log_prob(x))
    torch.testing.assert_close(head.distribution(params).mean, mean)
    torch.testing.assert_close(head.impute(params), mean)
    torch.testing.assert_close(head.impute(params, "mode"), mean.floor())
    assert make_head(Feature("v", "count"), count="negbin").n_params == 2


def _marginal(**kw):
    from mtvae.data.marginals import Marginal

    return Marginal(**{"name": "c", "type": "count", "n": 100, "mean": 0.0, "var": 1.0} | kw)


def test_initial_bias_puts_every_head_at_its_marginal():
    from mtvae.likelihoods import NegativeBinomialHead

    def at(head, marginal):
        return head.initial_bias(marginal).double()[None]

    poisson = at(PoissonHead(), _marginal(mean=2000.0, var=2000.0))
    torch.testing.assert_close(PoissonHead().rate(poisson), torch.tensor([2000.0]).double())
    nb_head = NegativeBinomialHead()
    nb = nb_head.distribution(at(nb_head, _marginal(mean=1500.0, var=1500.0 + 1500.0**2 / 4)))
    torch.testing.assert_close(nb.mean, torch.tensor([1500.0]).double(), rtol=1e-4, atol=0)
    torch.testing.assert_close(nb.variance, torch.tensor([1500.0 + 1500.0**2 / 4]).double(),
                               rtol=1e-4, atol=0)
    normal = NormalHead().loc_scale(at(NormalHead(), _marginal(type="real", mean=0.1, var=4.0)))
    torch.testing.assert_close(torch.cat(normal), torch.tensor([0.1, 2.0]).double())
    p = BernoulliHead().distribution(at(BernoulliHead(), _marginal(type="bin",
                                                                   freqs=(0.8, 0.2)))).probs
    torch.testing.assert_close(p, torch.tensor([0.2]).double())
    cat = CategoricalHead(3).distribution(at(CategoricalHead(3), _marginal(
        type="cat", freqs=(0.5, 0.3, 0.2)))).probs
    torch.testing.assert_close(cat, torch.tensor([[0.5, 0.3, 0.2]]).double())


def test_count_heads_use_the_log_link_without_overflow():
    """A count of 1e5 needs raw = log(1e5) ~ 11.5, not 1e5 (softplus), so the shared
    representation stays small; a huge raw is clamped instead of overflowing."""
    from mtvae.likelihoods.features import MAX_LOG_RATE, NegativeBinomialHead

    raw = torch.tensor([[math.log(1e5)], [500.0]])
    rate = PoissonHead().rate(raw)
    torch.testing.assert_close(rate[0], torch.tensor(1e5), rtol=1e-5, atol=0)
    assert torch.isfinite(rate).all() and float(rate[1]) == pytest.approx(math.exp(MAX_LOG_RATE),
                                                                          rel=1e-5)
    mean, _ = NegativeBinomialHead().mean_count(torch.tensor([[math.log(1e5), 0.0]]))
    torch.testing.assert_close(mean, torch.tensor([1e5]), rtol=1e-5, atol=0)
