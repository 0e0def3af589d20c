"""The imputation metric and the mean baseline on small hand-computed examples."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mtvae.data.base import Dataset, Split
from mtvae.data.schema import Schema
from mtvae.data.tabular import from_frame
from mtvae.errors import MTVAEError
from mtvae.imputation import (
    MeanImputer,
    evaluate_imputation,
    imputation_errors,
    mean_imputation,
    summarise,
)


class _HandScaler:
    """A scaler with hand-set (shift, scale), following the contract's formulas."""

    def __init__(self, schema, shift, scale):
        self.log = torch.tensor([f.type == "pos" for f in schema])
        self.shift, self.scale = torch.tensor(shift), torch.tensor(scale)

    def transform(self, x):
        x = torch.where(self.log, x.clamp_min(1e-12).log(), x)
        return (x - self.shift) / self.scale

    def inverse(self, m):
        x = m * self.scale + self.shift
        return torch.where(self.log, x.exp(), x)


def _schema_4():
    return Schema.parse({"a": "real", "b": "pos", "c": "cat(3)", "d": "bin"})


def test_imputation_errors_hand_example():
    schema = _schema_4()
    x_true = torch.tensor([[1.0, 2.0, 0, 1], [3.0, 5.0, 2, 0], [2.0, 8.0, 1, 1], [0.0, 1.0, 1, 0]])
    # Row 3 is never scored: its huge errors must not count.
    x_imp = torch.tensor([[2.0, 2.0, 0, 0], [3.0, 9.0, 1, 0], [0.0, 8.0, 1, 0], [99.0, 99, 2, 1]])
    score = torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]])
    ranges = torch.tensor([4.0, 10.0, 1.0, 1.0])
    errors = imputation_errors(x_true, x_imp, score, schema, ranges)
    assert list(errors.index) == ["a", "b", "c", "d"]
    # a: errors (1, -2) -> RMSE sqrt(2.5), range 4; b: errors (4, 0) -> RMSE sqrt(8), range 10
    assert errors["a"] == pytest.approx(0.39528470752104744)
    assert errors["b"] == pytest.approx(0.282842712474619)
    assert errors["c"] == pytest.approx(1 / 3)  # 0=0, 2!=1, 1=1
    assert math.isnan(errors["d"])  # no scored cell
    summary = summarise(errors, schema)
    assert summary["numerical"] == pytest.approx(0.3390637099978332)
    assert summary["nominal"] == pytest.approx(1 / 3)  # d (NaN) is skipped
    assert summary["mean"] == pytest.approx(0.33715358444299987)


def test_imputation_errors_checks_shapes_and_zero_range():
    schema = Schema.parse({"a": "real"})
    x = torch.tensor([[1.0], [3.0]])
    errors = imputation_errors(x, x + 2.0, torch.ones(2, 1), schema, torch.tensor([0.0]))
    assert errors["a"] == pytest.approx(2.0)  # constant column: plain RMSE
    with pytest.raises(MTVAEError, match="schema features"):
        imputation_errors(x, x, torch.ones(2, 2), schema, torch.tensor([1.0]))
    with pytest.raises(MTVAEError, match="ranges"):
        imputation_errors(x, x, torch.ones(2, 1), schema, torch.tensor([1.0, 1.0]))


def _hand_dataset():
    schema = Schema.parse(
        {"r": "real", "p": "pos", "n": "count", "b": "bin", "c": "cat(3)"}
    )
    scaler = _HandScaler(schema, [1.0, 0.5, 0, 0, 0], [2.0, 1.5, 1, 1, 1])
    # Train split in original units; the masked cells hold values that would change any
    # statistic that (wrongly) used them.
    train_orig = torch.tensor(
        [[1.0, 2.0, 1, 1, 2], [3.0, 4.0, 2, 0, 2], [100.0, 6.0, 2, 0, 0], [5.0, 1e4, 7, 1, 1]]
    )
    train_mask = torch.tensor(
        [[1.0, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1], [1, 0, 0, 0, 1]]
    )
    test_orig = torch.tensor([[4.0, 4.0, 3, 1, 2], [2.0, 8.0, 0, 0, 1]])
    test_score = torch.tensor([[1.0, 0, 1, 1, 0], [0, 1, 0, 1, 1]])

    def split(x_orig, mask, score):
        return Split({"x": scaler.transform(x_orig), "mask": mask, "score": score})

    train = split(train_orig, train_mask, torch.zeros(4, 5))
    test = split(test_orig, 1.0 - test_score, test_score)
    info = {"schema": schema, "scaler": scaler,
            "ranges": torch.tensor([10.0, 20.0, 7.0, 1.0, 1.0])}
    return Dataset("hand", train, test, test, x_shape=(5,), info=info)


def test_mean_baseline_hand_example():
    data = _hand_dataset()
    imputer = mean_imputation(data)
    assert isinstance(imputer, MeanImputer)
    fill_orig = data.info["scaler"].inverse(imputer.values[None])[0]
    # real: mean(1, 3, 5) = 3; pos: mean(2, 4, 6) = 4 (original units, not the log mean);
    # count: mean(1, 2, 2) = 5/3 (the mean estimator does not round); bin: mode(1, 0, 0) = 0;
    # cat: mode(2, 2, 0, 1) = 2.
    torch.testing.assert_close(fill_orig, torch.tensor([3.0, 4.0, 5 / 3, 0.0, 2.0]))
    imp = imputer.impute(data.test)
    observed = data.test.tensors["mask"] > 0
    torch.testing.assert_close(imp[observed], data.test.x[observed])
    torch.testing.assert_close(imputer(data.test.tensors), imp)
    # the old baseline (estimator="mode") rounds the count: round(5/3) = 2
    old = imputer.impute(data.test, estimator="mode")
    torch.testing.assert_close(old[~observed], imp[~observed].where(
        torch.arange(5).expand_as(imp)[~observed] != 2, torch.tensor(2.0)))
    # reconstruct: the fill everywhere, observed cells included
    full = imputer.impute(data.test, reconstruct=True)
    torch.testing.assert_close(full, imputer.values.expand_as(full))


def test_evaluate_imputation_mean_baseline_hand_example():
    data = _hand_dataset()
    # The old baseline (estimator="mode", counts rounded): real: 4 vs 3 over range 10;
    # pos: 8 vs 4 over 20; count: 3 vs round(5/3) = 2 over 7; bin: (1 vs 0, 0 vs 0) -> 1/2;
    # cat: 1 vs 2 -> 1.
    result = evaluate_imputation("mean", data, split="test", estimator="mode")
    errors = result["errors"]
    expected = {"r": 0.1, "p": 0.2, "n": 1 / 7, "b": 0.5, "c": 1.0}
    for name, value in expected.items():
        assert errors[name] == pytest.approx(value, rel=1e-5), name
    assert result["numerical"] == pytest.approx(0.14761904761904762, rel=1e-5)
    assert result["nominal"] == pytest.approx(0.75)
    assert result["mean"] == pytest.approx(0.38857142857142857, rel=1e-5)
    assert result["n_scored"] == 6
    assert (result["cells"], result["estimator"]) == ("missing", "mode")
    # The default, the mean estimator: count 3 vs 5/3 over 7; everything else as above.
    errors = evaluate_imputation("mean", data, split="test")["errors"]
    assert errors["n"] == pytest.approx((3 - 5 / 3) / 7, rel=1e-5)
    for name in ("r", "p", "b", "c"):
        assert errors[name] == pytest.approx(expected[name], rel=1e-5), name
    with pytest.raises(MTVAEError, match="valid splits"):
        evaluate_imputation("mean", data, split="holdout")
    with pytest.raises(MTVAEError, match="valid baselines"):
        evaluate_imputation("median", data)


def test_mean_baseline_with_the_tabular_scaler():
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"p": rng.lognormal(2.0, 0.8, 120), "k": rng.choice(["a", "b"], 120)})
    data = from_frame(df, {"p": "pos", "k": "cat(2)"}, missing_rate=0.3)
    fill = data.info["scaler"].inverse(mean_imputation(data).values[None])[0]
    train = data.train.tensors
    observed = train["mask"][:, 0] > 0
    p_orig = data.info["scaler"].inverse(train["x"])[observed, 0]
    assert float(fill[0]) == pytest.approx(float(p_orig.double().mean()), rel=1e-5)
    codes = train["x"][train["mask"][:, 1] > 0, 1]
    assert float(fill[1]) == float(torch.bincount(codes.long()).argmax())  # ties: smallest
