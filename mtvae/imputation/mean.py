"""The mean/mode baseline: every cell to impute gets its column's training mean or mode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from mtvae.data.base import Dataset, Split
from mtvae.imputation.space import (
    finish_point,
    scaler_of,
    schema_of,
    tensors_of,
    to_original,
)


@dataclass
class MeanImputer:
    """The mean/mode baseline: ``values`` holds one fill value per column in model space;
    ``counts`` (bool ``[D]``) marks the count columns, rounded under ``estimator="mode"``."""

    values: Tensor
    counts: Tensor | None = None

    def impute(
        self,
        data: Mapping[str, Tensor] | Split,
        batch_size: int = 0,
        *,
        estimator: str = "mean",
        reconstruct: bool = False,
    ) -> Tensor:
        """Observed cells as they are (unless ``reconstruct``), every other cell filled with
        the column's value; ``estimator="mode"`` rounds the fill of count columns."""
        x, mask = tensors_of(data)
        fill = self.values.to(device=x.device, dtype=torch.float64).expand(x.shape)
        counts = (self.counts if self.counts is not None
                  else torch.zeros(len(self.values), dtype=torch.bool))
        return finish_point(fill, x, mask, counts, estimator=estimator, reconstruct=reconstruct)

    __call__ = impute


def mean_imputation(dataset: Dataset) -> MeanImputer:
    """Fit the baseline on the train split's observed cells.

    Per column, in original units: the mean (real, pos, count; a count column's mean is
    rounded only by the ``"mode"`` estimator) or the most frequent value (bin, cat; ties go
    to the smallest code). A column with no observed training cell is filled with 0 in
    model space.
    """
    schema = schema_of(dataset)
    train = dataset.train.to("cpu")
    x_orig = to_original(dataset, train.tensors["x"]).double()
    mask = train.tensors["mask"] > 0
    fill = torch.zeros(len(schema), dtype=torch.float64)
    known = torch.zeros(len(schema), dtype=torch.bool)
    for j, feature in enumerate(schema):
        col = x_orig[mask[:, j], j]
        if len(col) == 0:
            continue
        known[j] = True
        if feature.numerical:
            fill[j] = col.mean()
        else:
            codes, counts = col.round().unique(return_counts=True)  # sorted codes
            fill[j] = codes[counts.argmax()]
    scaler = scaler_of(dataset)
    model = fill if scaler is None else scaler.transform(fill[None])[0]
    counts = torch.tensor([f.type == "count" for f in schema])
    return MeanImputer(torch.where(known, model, torch.zeros_like(model)).float(), counts)
