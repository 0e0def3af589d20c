"""The imputation error per feature, in original units, on a given set of scored cells.

* numerical (real, pos, count): RMSE over the scored cells divided by the column's range
  (max - min over the whole table), the normalised RMSE. Predictions are NOT rounded, so a
  count column is scored on the predicted mean count (rounding is the ``"mode"`` estimator's
  business, done by the imputer);
* nominal (bin, cat): the error rate over the scored cells (both sides rounded to a code).
"""

from __future__ import annotations

import math

import pandas as pd
from torch import Tensor

from mtvae.data.schema import Schema
from mtvae.errors import MTVAEError


def _check_same(name: str, t: Tensor, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != shape:
        raise MTVAEError(
            f"{name} has shape {tuple(t.shape)}, expected {shape} (rows x schema features, "
            "columns in schema order)"
        )


def imputation_errors(
    x_true: Tensor, x_imp: Tensor, score: Tensor, schema: Schema, ranges: Tensor
) -> pd.Series:
    """Per-feature imputation error on the scored cells, in original units.

    Args:
        x_true, x_imp: ``[N, D]`` true and imputed values in original units.
        score: ``[N, D]``, 1 for the cells to score (the MCAR-masked, known cells; or the
            observed cells for the reconstruction protocol).
        schema: the features, in column order.
        ranges: ``[D]`` max - min of each column over the whole table (1 for bin/cat); a
            zero range (constant column) is replaced by 1, giving the plain RMSE.

    Returns:
        A Series indexed by feature name: NRMSE for numerical features, error rate for
        nominal ones, NaN for a feature with no scored cell.
    """
    n, d = x_true.shape[0], len(schema)
    for name, t in (("x_true", x_true), ("x_imp", x_imp), ("score", score)):
        _check_same(name, t, (n, d))
    _check_same("ranges", ranges, (d,))
    values: dict[str, float] = {}
    for j, feature in enumerate(schema):
        cells = score[:, j] > 0
        if not bool(cells.any()):
            values[feature.name] = math.nan
            continue
        t, p = x_true[cells, j].double(), x_imp[cells, j].double()
        if feature.numerical:
            span = float(ranges[j])
            rmse = float((t - p).square().mean().sqrt())
            values[feature.name] = rmse / (span if span > 0 else 1.0)
        else:
            values[feature.name] = float((t.round() != p.round()).double().mean())
    return pd.Series(values, name="error", dtype=float)


def _mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def summarise(errors: pd.Series, schema: Schema) -> dict[str, float]:
    """Unweighted means over features (NaN features skipped): all, numerical, nominal."""
    numerical = [float(errors[f.name]) for f in schema if f.numerical]
    nominal = [float(errors[f.name]) for f in schema if not f.numerical]
    return {
        "mean": _mean(numerical + nominal),
        "numerical": _mean(numerical),
        "nominal": _mean(nominal),
    }
