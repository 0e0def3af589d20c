"""Shared plumbing of the imputers: a dataset's schema and scaler, model space <-> original
units, and how a point imputer finishes its output (observed cells, the estimator)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor

from mtvae.data.base import Dataset, Split
from mtvae.data.schema import Schema
from mtvae.errors import MTVAEError
from mtvae.likelihoods import check_estimator

if TYPE_CHECKING:
    from mtvae.data.tabular import TabularScaler


def schema_of(dataset: Dataset) -> Schema:
    """The dataset's ``info["schema"]``, or a clear error."""
    schema = dataset.info.get("schema")
    if not isinstance(schema, Schema):
        raise MTVAEError(
            f"dataset {dataset.name!r} has no info['schema']; load it with mtvae.data.load or "
            "mtvae.data.tabular.from_frame"
        )
    return schema


def scaler_of(dataset: Dataset) -> TabularScaler | None:
    return cast("TabularScaler | None", dataset.info.get("scaler"))


def to_original(dataset: Dataset, x: Tensor) -> Tensor:
    """Model space -> original units (identity without a scaler)."""
    scaler = scaler_of(dataset)
    return x if scaler is None else scaler.inverse(x)


def to_model(dataset: Dataset, x: Tensor) -> Tensor:
    """Original units -> model space (identity without a scaler)."""
    scaler = scaler_of(dataset)
    return x if scaler is None else scaler.transform(x)


def tensors_of(data: Mapping[str, Tensor] | Split) -> tuple[Tensor, Tensor]:
    """``(x, mask)`` of a Split or a batch dict, with a clear error when one is missing."""
    tensors = data.tensors if isinstance(data, Split) else data
    for key in ("x", "mask"):
        if key not in tensors:
            raise MTVAEError(
                f"an imputer needs {key!r} (x: model-space values, mask: 1 = observed); load "
                "tabular data with mtvae.data.tabular"
            )
    return tensors["x"], tensors["mask"]


def finish_point(
    predicted: Tensor,
    x: Tensor,
    mask: Tensor,
    counts: Tensor,
    *,
    estimator: str,
    reconstruct: bool,
) -> Tensor:
    """A point imputer's output in model space: ``predicted`` at the cells to impute, the
    observed value elsewhere (``reconstruct=False``) or ``predicted`` everywhere (``True``).

    A point imputer's prediction is its estimate of the mean; with ``estimator="mode"`` the
    ``counts`` columns (a boolean ``[D]``) are rounded to the nearest integer, as the old
    baseline did, so the estimator ablation moves the references as it moves the VAE.
    """
    if check_estimator(estimator) == "mode":
        predicted = torch.where(counts.to(predicted.device), predicted.round(), predicted)
    predicted = predicted.to(device=x.device, dtype=x.dtype)
    return predicted if reconstruct else torch.where(mask > 0, x, predicted)
