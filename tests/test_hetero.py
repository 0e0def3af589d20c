"""HeteroVAE: the loss_terms contract, masked cells never read, training with ``fit``."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from mtvae.data.base import Dataset, Split
from mtvae.data.schema import Schema
from mtvae.data.tabular import from_frame
from mtvae.errors import MTVAEError, SchemaFitWarning, ZerosReplacedWarning
from mtvae.imputation import evaluate_imputation
from mtvae.models.hetero import HeteroVAE
from mtvae.terms import Terms
from mtvae.train import fit

SPEC = {"height": "real", "price": "pos", "visits": "count", "member": "bin", "colour": "cat(3)"}


def _mixed_split(n, seed, missing=0.2):
    """Model-space mixed-type rows driven by a 2-d latent, following the tabular contract."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g)
    real = z[:, 0] + 0.3 * torch.randn(n, generator=g)
    log_pos = 0.8 * z[:, 1] + 0.2 * torch.randn(n, generator=g)
    count = torch.poisson(torch.exp(0.6 * z[:, 0]), generator=g)
    member = torch.bernoulli(torch.sigmoid(2.0 * z[:, 1]), generator=g)
    gumbel = -torch.log(-torch.log(torch.rand(n, 3, generator=g)))
    colour = (z @ torch.tensor([[2.0, -2.0, 0.0], [0.0, 1.0, -1.0]]) + gumbel).argmax(1)
    x = torch.stack([real, log_pos, count, member, colour.float()], 1)
    masked = torch.rand(n, 5, generator=g) < missing
    unknown = torch.rand(n, 5, generator=g) < 0.05  # "NaN in the source": x holds 0
    x = torch.where(unknown, torch.zeros(()), x)
    mask = (~masked & ~unknown).float()
    score = (masked & ~unknown).float()
    return Split({"x": x, "mask": mask, "score": score})


def _mixed_dataset(n=300):
    schema = Schema.parse(SPEC)
    info = {"schema": schema, "ranges": torch.tensor([6.0, 5.0, 10.0, 1.0, 1.0])}
    return Dataset("mixed", _mixed_split(n, 0), _mixed_split(n // 3, 1),
                   _mixed_split(n // 3, 2), x_shape=(5,), info=info)


def _model(**kwargs):
    torch.manual_seed(0)
    return HeteroVAE(Schema.parse(SPEC), hidden=16, depth=2, **kwargs)


def test_loss_terms_contract():
    model = _model(beta=2.0)
    batch = _mixed_split(32, 3).tensors
    terms = model.loss_terms(batch)
    assert isinstance(terms, Terms)
    assert list(terms.tasks) == list(SPEC) and set(terms.regularizers) == {"kl"}
    assert all(t.shape == () for t in terms.tasks.values())
    assert terms.shared is not None and terms.shared.shape == (32, 16)
    torch.testing.assert_close(terms.regularizers["kl"], 2.0 * terms.stats["kl"])
    tasks = torch.stack(list(terms.tasks.values())).sum()
    torch.testing.assert_close(tasks + terms.stats["kl"], terms.stats["nelbo"])
    terms.total().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.latent_dim == math.ceil(0.75 * 5)


def test_tasks_are_observed_log_likelihoods_over_batch_size():
    model = _model()
    model.eval()
    batch = _mixed_split(20, 4).tensors
    torch.manual_seed(1)
    terms = model.loss_terms(batch)
    torch.manual_seed(1)
    loc, scale = model.encode(batch)
    params = model.decode(loc + scale * torch.randn_like(scale))
    for d, name in enumerate(SPEC):
        obs = batch["mask"][:, d] > 0
        lp = model.likelihoods[d].log_prob(params[d][obs], batch["x"][obs, d])
        torch.testing.assert_close(terms.tasks[name], -lp.sum() / 20)


def test_masked_cells_are_never_read():
    model = _model()
    batch = _mixed_split(40, 5).tensors
    hidden = batch["mask"] == 0
    other = dict(batch)
    junk = torch.randn(batch["x"].shape) * 1e3
    junk[0] = math.nan
    junk[1] = math.inf
    other["x"] = torch.where(hidden, junk, batch["x"])

    def run(b):
        model.zero_grad()
        torch.manual_seed(7)
        terms = model.loss_terms(b)
        terms.total().backward()
        return terms, [p.grad.clone() for p in model.parameters()]

    (t1, g1), (t2, g2) = run(batch), run(other)
    for name in SPEC:
        torch.testing.assert_close(t1.tasks[name], t2.tasks[name], rtol=0, atol=0)
    torch.testing.assert_close(t1.total(), t2.total(), rtol=0, atol=0)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    imp1, imp2 = model.impute(batch), model.impute(other)
    torch.testing.assert_close(imp1, imp2, rtol=0, atol=0)
    assert torch.isfinite(imp2).all()
    torch.testing.assert_close(imp1[~hidden], batch["x"][~hidden])


def test_head_and_shared_parameters_are_disjoint():
    model = _model()
    heads = {id(p) for p in model.head_parameters()}
    shared = {id(p) for p in model.shared_parameters()}
    assert heads and shared and not heads & shared
    assert heads | shared == {id(p) for p in model.parameters()}
    # Task d reaches only its own head among the heads.
    terms = model.loss_terms(_mixed_split(16, 6).tensors)
    for d, name in enumerate(SPEC):
        grads = torch.autograd.grad(
            terms.tasks[name], list(model.heads.parameters()), retain_graph=True,
            allow_unused=True,
        )
        owners = [e for e, head in enumerate(model.heads) for _ in head.parameters()]
        for e, g in zip(owners, grads, strict=True):
            assert (g is not None and g.abs().sum() > 0) == (e == d)


def test_trains_with_fit_and_loss_goes_down():
    data = _mixed_dataset()
    model = _model()
    result = fit(model, data, epochs=12, batch_size=50, lr=3e-3, progress="none")
    losses = [row["loss"] for row in result.history]
    assert all(math.isfinite(v) for v in losses)
    assert all(math.isfinite(row["val_loss"]) for row in result.history)
    assert losses[-1] < losses[0] - 0.5, losses
    imp = model.impute(data.test)
    assert imp.shape == data.test.x.shape and torch.isfinite(imp).all()
    ll = model.feature_log_likelihood(data.test, cells="score")
    assert ll.shape == (5,) and torch.isfinite(ll).all()
    result = evaluate_imputation(model, data)
    assert set(result["errors"].index) == set(SPEC) and math.isfinite(result["mean"])


def test_fit_is_deterministic_on_cpu():
    data = _mixed_dataset(120)
    runs = []
    for _ in range(2):
        model = _model()
        res = fit(model, data, epochs=2, batch_size=40, seed=3, device="cpu", progress="none")
        runs.append(([row["loss"] for row in res.history], model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for key, value in runs[0][1].items():
        torch.testing.assert_close(value, runs[1][1][key], rtol=0, atol=0)


def test_feature_log_likelihood_nan_without_cells():
    model = _model()
    batch = _mixed_split(10, 8).tensors
    batch["score"] = torch.zeros_like(batch["score"])
    batch["score"][:, 0] = 1.0
    ll = model.feature_log_likelihood(batch)
    assert math.isfinite(float(ll[0])) and torch.isnan(ll[1:]).all()


def test_bad_input():
    model = _model()
    batch = _mixed_split(8, 9).tensors
    with pytest.raises(MTVAEError, match=r"\[B, 5\]"):
        model.loss_terms({"x": batch["x"][:, :4], "mask": batch["mask"][:, :4]})
    with pytest.raises(MTVAEError, match="needs 'mask'"):
        model.loss_terms({"x": batch["x"]})
    with pytest.raises(MTVAEError, match="no 'held' mask"):
        model.feature_log_likelihood(batch, cells="held")
    with pytest.raises(MTVAEError, match="valid types"):
        HeteroVAE({"a": "ordinal"})
    with pytest.raises(MTVAEError, match="latent_dim"):
        HeteroVAE(SPEC, latent_dim=0)
    with pytest.raises(MTVAEError, match="scale"):
        HeteroVAE(SPEC, scaler=object())


def test_end_to_end_with_from_frame():
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame({
        "h": rng.normal(170, 10, n), "p": rng.lognormal(3, 0.5, n), "v": rng.poisson(3, n),
        "m": rng.choice(["y", "n"], n), "c": rng.choice(["r", "g", "b"], n),
    })
    df.loc[:9, "h"] = np.nan
    data = from_frame(df, {"h": "real", "p": "pos", "v": "count", "m": "bin", "c": "cat(3)"})
    scaler = data.info["scaler"]
    torch.manual_seed(0)
    model = HeteroVAE(data.info["schema"], scaler=scaler, hidden=16, depth=2)
    assert model.likelihoods[1].scale == pytest.approx(float(scaler.scale[1]))
    fit(model, data, epochs=2, batch_size=50, progress="none")
    result = evaluate_imputation(model, data)
    assert result["n_scored"] == int(data.test.tensors["score"].sum())
    assert all(math.isfinite(v) for v in result["errors"])
    baseline = evaluate_imputation("mean", data)
    assert set(baseline["errors"].index) == set(result["errors"].index)


# ------------------------------- issue 15: heads at the marginal, poor fits, column order


def _overdispersed_frame(n=400, seed=0):
    """Hours-worked-like counts in the thousands with var/mean in the hundreds."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=n)
    return pd.DataFrame({
        "age": np.exp(3.6 + 0.25 * u + 0.1 * rng.normal(size=n)),
        "income": 2 * u + 0.5 * rng.normal(size=n),
        "hours": rng.negative_binomial(4, 4 / (4 + 1500 * np.exp(0.4 * u))),
        "smoker": (rng.random(n) < 1 / (1 + np.exp(-1.5 * u))).astype(int),
    })


OVER = {"age": "pos", "income": "real", "hours": "count", "smoker": "bin"}


def test_overdispersed_counts_are_reported_before_training_with_the_fix():
    # before: no message at all, and the VAE imputed 5-12x worse than the mean
    with pytest.warns(SchemaFitWarning, match=r"column 'hours' \(count\): overdispersed count: "
                      r"mean .*var/mean .*count='negbin'"):
        data = from_frame(_overdispersed_frame(), OVER)
    report = data.info["fit_report"]
    assert list(report["column"]) == ["hours"] and "declare the column 'real'" in report.fix[0]
    # a Poisson-like count and a pos column without zeros are not reported
    calm = _overdispersed_frame().assign(hours=np.random.default_rng(1).poisson(900, 400))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SchemaFitWarning)
        assert from_frame(calm, OVER).info["fit_report"].empty


def test_many_zeros_in_a_pos_column_are_reported():
    df = _overdispersed_frame().assign(hours=lambda d: d["hours"].clip(upper=3000) // 1000 + 1)
    df.loc[:39, "age"] = 0.0
    with pytest.warns(SchemaFitWarning, match=r"column 'age' \(pos\): 40 of 400 values are 0"), \
            pytest.warns(ZerosReplacedWarning, match="column 'age'"):
        data = from_frame(df, OVER)
    assert data.info["pos_zeros_replaced"] == {"age": 40}


def test_heads_start_at_the_training_marginal():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SchemaFitWarning)
        data = from_frame(_overdispersed_frame(), OVER)
    marginals = data.info["marginals"]
    train = data.train.tensors
    hours = train["x"][train["mask"][:, 2] > 0, 2].double()
    assert marginals[2].mean == pytest.approx(float(hours.mean()))
    for count, cls in (("poisson", "PoissonHead"), ("negbin", "NegativeBinomialHead")):
        model = HeteroVAE(data.info["schema"], scaler=data.info["scaler"], count=count)
        assert type(model.likelihoods[2]).__name__ == cls
        bias = model.heads[2].bias.detach().double()[None]
        mean = (model.likelihoods[2].rate(bias) if count == "poisson"
                else model.likelihoods[2].mean_count(bias)[0])
        assert float(mean) == pytest.approx(marginals[2].mean, rel=1e-4)
        p = torch.sigmoid(model.heads[3].bias.detach())
        assert float(p) == pytest.approx(marginals[3].freqs[1], rel=1e-4)
    with pytest.raises(MTVAEError, match="unknown count likelihood 'nb'; valid count "
                                         "likelihoods are: negbin, poisson"):
        HeteroVAE(data.info["schema"], count="nb")


def test_a_model_with_the_columns_in_another_order_is_refused():
    data = from_frame(_overdispersed_frame().assign(hours=1), OVER)
    reordered = HeteroVAE(dict(reversed(list(OVER.items()))), hidden=8, depth=1)
    # before: it trained and scored, each head on another column
    with pytest.raises(MTVAEError, match=r"the model's columns \['smoker', 'hours', 'income', "
                                         r"'age'\] do not match the data's \['age', .*build "
                                         r"the model with the dataset's own info\['schema'\]"):
        fit(reordered, data, epochs=1, progress="none")
    with pytest.raises(MTVAEError, match="do not match the dataset 'custom''s"):
        evaluate_imputation(reordered, data)


@pytest.mark.slow
def test_plain_vae_with_negbin_counts_is_no_worse_than_mean_imputation():
    """The acceptance case of issue 15 (the report lists the measured errors)."""
    import mtvae

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SchemaFitWarning)
        data = from_frame(_overdispersed_frame(n=750), OVER)
    mtvae.seed(0)
    model = HeteroVAE(data.info["schema"], scaler=data.info["scaler"], count="negbin")
    fit(model, data, epochs=200, patience=30, progress="none", device="cpu")
    assert evaluate_imputation(model, data)["mean"] <= evaluate_imputation("mean", data)["mean"]
