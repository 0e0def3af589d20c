"""The imputation protocol for heterogeneous tabular data, scored on the missing cells.

Following Javaloy, Meghdadi & Valera (ICML 2022) and HI-VAE (Nazabal et al. 2020), a
fraction of the known cells is masked completely at random (MCAR); the model never sees
them and imputes them. The error is computed in ORIGINAL units on those cells only (the
``score`` mask), per feature:

* numerical (real, pos, count): RMSE over the scored cells divided by the column's range
  (max - min over the whole table), the normalised RMSE;
* nominal (bin, cat): the error rate over the scored cells.

Scoring the observed cells as well (as some implementations do) rewards reconstruction,
not imputation; here only the missing cells count. The baseline fills every missing cell
with the training split's observed mean (real, pos; rounded for counts) or mode (bin, cat).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

import pandas as pd
import torch
from torch import Tensor, nn

from mtvae.data.base import Dataset, Split
from mtvae.data.schema import Schema, check_same_columns
from mtvae.errors import MTVAEError, check_choice

if TYPE_CHECKING:
    from mtvae.data.tabular import TabularScaler


class Imputer(Protocol):
    """Anything that imputes a split in model space (a HeteroVAE, the mean baseline)."""

    def impute(self, data: Mapping[str, Tensor] | Split, batch_size: int = ...) -> Tensor: ...


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
        score: ``[N, D]``, 1 for the cells to score (the MCAR-masked, known cells).
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


@dataclass
class MeanImputer:
    """The mean/mode baseline: ``values`` holds one fill value per column in model space."""

    values: Tensor

    def impute(self, data: Mapping[str, Tensor] | Split, batch_size: int = 0) -> Tensor:
        """Observed cells as they are, every other cell filled with the column's value."""
        tensors = data.tensors if isinstance(data, Split) else data
        x, mask = tensors["x"], tensors["mask"]
        fill = self.values.to(device=x.device, dtype=x.dtype).expand_as(x)
        return torch.where(mask > 0, x, fill)

    __call__ = impute


def _scaler(dataset: Dataset) -> TabularScaler | None:
    return cast("TabularScaler | None", dataset.info.get("scaler"))


def _inverse(dataset: Dataset, x: Tensor) -> Tensor:
    scaler = _scaler(dataset)
    return x if scaler is None else scaler.inverse(x)


def _schema(dataset: Dataset) -> Schema:
    schema = dataset.info.get("schema")
    if not isinstance(schema, Schema):
        raise MTVAEError(
            f"dataset {dataset.name!r} has no info['schema']; load it with mtvae.data.load or "
            "mtvae.data.tabular.from_frame"
        )
    return schema


def mean_imputation(dataset: Dataset) -> MeanImputer:
    """Fit the baseline on the train split's observed cells.

    Per column, in original units: the mean (real, pos), the rounded mean (count) or the
    most frequent value (bin, cat; ties go to the smallest code). A column with no
    observed training cell is filled with 0 in model space.
    """
    schema = _schema(dataset)
    train = dataset.train.to("cpu")
    x_orig = _inverse(dataset, train.tensors["x"]).double()
    mask = train.tensors["mask"] > 0
    fill = torch.zeros(len(schema), dtype=torch.float64)
    known = torch.zeros(len(schema), dtype=torch.bool)
    for j, feature in enumerate(schema):
        col = x_orig[mask[:, j], j]
        if len(col) == 0:
            continue
        known[j] = True
        if feature.type in ("real", "pos"):
            fill[j] = col.mean()
        elif feature.type == "count":
            fill[j] = col.mean().round()
        else:
            codes, counts = col.round().unique(return_counts=True)  # sorted codes
            fill[j] = codes[counts.argmax()]
    scaler = _scaler(dataset)
    model = fill.float() if scaler is None else scaler.transform(fill.float()[None])[0]
    return MeanImputer(torch.where(known, model.float(), torch.zeros_like(model.float())))


def evaluate_imputation(
    model: Imputer | str, dataset: Dataset, split: str = "test", batch_size: int = 1000
) -> dict[str, object]:
    """Impute ``split`` in model space, map to original units, score the missing cells.

    Args:
        model: a trained HeteroVAE, a :class:`MeanImputer`, or ``"mean"`` for the baseline
            fitted on ``dataset``.
        split: ``train``, ``val`` or ``test``.

    Returns:
        ``{"errors": Series per feature, "mean", "numerical", "nominal": floats,
        "n_scored": number of scored cells}``.
    """
    check_choice("split", split, ("train", "val", "test"))
    schema = _schema(dataset)
    if isinstance(model, str):
        check_choice("baseline", model, ("mean",))
        model = mean_imputation(dataset)
    check_same_columns(getattr(model, "schema", None), schema, f"dataset {dataset.name!r}")
    part = dataset.splits()[split]
    if "score" not in part.tensors:
        raise MTVAEError(f"the {split} split has no 'score' mask of held-out cells to evaluate")
    if isinstance(model, nn.Module):
        part = part.to(next(model.parameters()).device)
    x_imp = model.impute(part, batch_size=batch_size).cpu()
    part = part.to("cpu")
    errors = imputation_errors(
        _inverse(dataset, part.tensors["x"]),
        _inverse(dataset, x_imp),
        part.tensors["score"],
        schema,
        torch.as_tensor(dataset.info["ranges"]).cpu(),
    )
    return {"errors": errors, **summarise(errors, schema),
            "n_scored": int((part.tensors["score"] > 0).sum())}
