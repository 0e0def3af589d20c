"""Classical reference imputers from scikit-learn, under the VAE's masks, splits and metric.

:func:`reference_imputer` fits one of :data:`REFERENCES` on the TRAIN split's observed
cells only and returns an imputer that fills any split from that split's own observed cells
(scikit-learn's ``transform``), in MODEL SPACE, so :func:`~mtvae.imputation.evaluate_imputation`
maps it to original units and scores it exactly as it scores a HeteroVAE:

* ``mean`` -- the column's training mean (real, pos, count; in original units) or mode
  (bin, cat): today's baseline, :func:`~mtvae.imputation.mean_imputation`;
* ``knn`` -- :class:`sklearn.impute.KNNImputer`, the mean of the ``k = 5`` nearest training
  rows (NaN-aware Euclidean distance over the cells both rows observe; Troyanskaya et al.
  2001);
* ``mice`` -- :class:`sklearn.impute.IterativeImputer` with :class:`BayesianRidge`, chained
  regressions of each column on the others (MICE-style; van Buuren & Groothuis-Oudshoorn
  2011), point predictions (``sample_posterior=False``);
* ``missforest`` -- the same chained imputer with :class:`ExtraTreesRegressor`, after
  missForest (Stekhoven & Buehlmann 2012) with extremely randomised trees.

How a table is presented to scikit-learn (:class:`_Layout`): each real, pos, count and bin
column is one numeric column -- its model-space value (standardised real, standardised log
of a pos, the raw count, 0/1) standardised again with the mean and standard deviation of
the observed TRAINING cells, so that every column weighs alike in a distance and a
regression; each cat(k) column is k one-hot columns. An unobserved cell is NaN (in all k
one-hot columns of a cat cell), so nothing is ever read from a cell with mask 0. Outputs
are decoded back to model space: numeric columns by the inverse standardisation (counts
clipped at 0; a pos column's exp, applied by the scaler, is positive anyway), bin by the
threshold 1/2, cat by the argmax of its one-hot columns. Reals and pos columns are thus
predicted on the model's scale (the log for pos); counts on the count scale.

The settings (:data:`SETTINGS`) keep the largest tables (movies: 41 151 training rows, 23
columns) to minutes of CPU on one thread (measured fit times per table: the issue-12
notes). The trees' size is bounded because :class:`IterativeImputer` keeps every
iteration's fitted estimators to replay them in ``transform``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.experimental import enable_iterative_imputer  # noqa: F401  (registers it)
from sklearn.impute import IterativeImputer, KNNImputer
from sklearn.linear_model import BayesianRidge
from torch import Tensor

from mtvae.data.base import Dataset, Split
from mtvae.data.schema import Schema
from mtvae.errors import MTVAEError, check_choice
from mtvae.imputation.mean import MeanImputer, mean_imputation
from mtvae.imputation.space import finish_point, schema_of, tensors_of

REFERENCES = ("mean", "knn", "mice", "missforest")
"""The reference imputers, cheapest first."""

SETTINGS: dict[str, dict[str, Any]] = {
    "knn": {"n_neighbors": 5},
    "mice": {"max_iter": 10, "tol": 1e-3},
    "missforest": {"max_iter": 5, "tol": 1e-3, "n_estimators": 50, "max_depth": 12,
                   "min_samples_leaf": 5, "max_features": 0.5},
}
"""Settings of the scikit-learn references (see the module docstring)."""


@dataclass
class _Layout:
    """The column layout of a table for scikit-learn, standardised on the training split.

    ``slices[j]`` is the range of matrix columns of schema feature ``j`` (k for a cat(k),
    else 1); ``mean``/``std`` standardise the numeric columns (0/1 for the one-hot ones).
    """

    schema: Schema
    slices: list[slice]
    numeric: np.ndarray  # bool [M]: matrix column holds a standardised numeric value
    mean: np.ndarray  # [M], 0 for one-hot columns
    std: np.ndarray  # [M], 1 for one-hot columns

    @classmethod
    def for_schema(cls, schema: Schema) -> _Layout:
        slices, numeric, start = [], [], 0
        for feature in schema:
            width = feature.k if feature.type == "cat" else 1
            slices.append(slice(start, start + width))
            numeric += [feature.type != "cat"] * width
            start += width
        flags = np.array(numeric, dtype=bool)
        return cls(schema, slices, flags, np.zeros(start), np.ones(start))

    def raw(self, x: Tensor, mask: Tensor) -> np.ndarray:
        """``[N, M]`` float64 matrix, unstandardised: NaN wherever ``mask`` is 0."""
        xs = x.detach().cpu().double().numpy()
        obs = mask.detach().cpu().numpy() > 0
        out = np.full((len(xs), self.slices[-1].stop), np.nan)
        for j, (feature, cols) in enumerate(zip(self.schema, self.slices, strict=True)):
            rows = obs[:, j]
            if feature.type == "cat":
                codes = np.clip(np.rint(xs[rows, j]).astype(int), 0, feature.k - 1)
                onehot = np.zeros((int(rows.sum()), feature.k))
                onehot[np.arange(len(codes)), codes] = 1.0
                out[np.flatnonzero(rows)[:, None], np.arange(cols.start, cols.stop)] = onehot
            else:
                out[rows, cols.start] = xs[rows, j]
        return out

    def fit(self, raw: np.ndarray) -> None:
        """Mean and std of each numeric column over its observed (non-NaN) training cells."""
        for c in np.flatnonzero(self.numeric):
            col = raw[~np.isnan(raw[:, c]), c]
            if len(col):
                self.mean[c] = col.mean()
                std = col.std()
                self.std[c] = std if std > 0 else 1.0

    def limits(self, encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per matrix column, the observed training range (a chained imputer clips its
        predictions to it, so a regression cannot run away from the data: a pos column's
        log would become a huge value once exponentiated)."""
        known = ~np.isnan(encoded)
        low = np.where(known.any(0), np.nanmin(np.where(known, encoded, np.inf), 0), -1.0)
        high = np.where(known.any(0), np.nanmax(np.where(known, encoded, -np.inf), 0), 1.0)
        return low, np.maximum(high, low + 1e-6)

    def siblings(self) -> dict[int, np.ndarray]:
        """For each one-hot column, the other one-hot columns of its cat feature."""
        out = {}
        for feature, cols in zip(self.schema, self.slices, strict=True):
            if feature.type == "cat":
                members = np.arange(cols.start, cols.stop)
                out |= {int(c): members[members != c] for c in members}
        return out

    def encode(self, x: Tensor, mask: Tensor) -> np.ndarray:
        return (self.raw(x, mask) - self.mean) / self.std

    def decode(self, matrix: np.ndarray) -> Tensor:
        """``[N, M]`` imputed matrix -> ``[N, D]`` model-space values (float64)."""
        values = matrix * self.std + self.mean
        out = np.empty((len(values), len(self.schema)))
        for j, (feature, cols) in enumerate(zip(self.schema, self.slices, strict=True)):
            if feature.type == "cat":
                out[:, j] = values[:, cols].argmax(axis=1)
            elif feature.type == "bin":
                out[:, j] = values[:, cols.start] >= 0.5
            elif feature.type == "count":
                out[:, j] = np.clip(values[:, cols.start], 0.0, None)
            else:
                out[:, j] = values[:, cols.start]
        return torch.from_numpy(out)


@dataclass
class ReferenceImputer:
    """A scikit-learn imputer fitted on a table's training split (see :func:`reference_imputer`).

    ``fit_seconds`` is the wall-clock time of the fit (one thread unless the caller set more).
    """

    name: str
    schema: Schema
    layout: _Layout
    imputer: Any
    fit_seconds: float

    def impute(
        self,
        data: Mapping[str, Tensor] | Split,
        batch_size: int = 0,
        *,
        estimator: str = "mean",
        reconstruct: bool = False,
    ) -> Tensor:
        """Every cell with mask 0 imputed from the same rows' observed cells, in model
        space ``[N, D]``; observed cells keep their values. ``estimator="mode"`` rounds the
        count columns. ``batch_size`` is accepted for the common interface and unused."""
        if reconstruct:
            raise MTVAEError(
                f"the {self.name!r} reference cannot reconstruct observed cells (scikit-learn "
                "imputers return them unchanged); score it with cells='missing'"
            )
        x, mask = tensors_of(data)
        if x.dim() != 2 or x.shape[1] != len(self.schema) or mask.shape != x.shape:
            raise MTVAEError(
                f"the {self.name!r} reference was fitted on {len(self.schema)} columns; pass "
                f"x and mask of shape [N, {len(self.schema)}], got {tuple(x.shape)}"
            )
        matrix = self.imputer.transform(self.layout.encode(x, mask))
        counts = torch.tensor([f.type == "count" for f in self.schema])
        return finish_point(self.layout.decode(matrix), x, mask, counts,
                            estimator=estimator, reconstruct=False)

    __call__ = impute


class _ChainedImputer(IterativeImputer):
    """:class:`IterativeImputer` that never predicts a one-hot column from its siblings.

    The k one-hot columns of a cat(k) cell are unknown together. Regressed on its siblings,
    a one-hot column learns the identity ``onehot_0 = 1 - onehot_1 - ...`` from the rows
    where the cell is known and, on the rows where it is not, reproduces the siblings'
    initial column means: every chain stays at the marginal (measured on wine: the class
    column imputed no better than its mode). Here a one-hot column is predicted from the
    other features only; ``siblings[c]`` lists the matrix columns of the same feature as c.
    """

    siblings: dict[int, np.ndarray]

    def _get_neighbor_feat_idx(self, n_features: int, feat_idx: int, abs_corr_mat: Any
                               ) -> np.ndarray:
        chosen = super()._get_neighbor_feat_idx(n_features, feat_idx, abs_corr_mat)
        same = getattr(self, "siblings", {}).get(int(feat_idx))
        return chosen if same is None else np.setdiff1d(chosen, same)


def _sklearn_imputer(name: str, seed: int, layout: _Layout, encoded: np.ndarray) -> Any:
    s = SETTINGS[name]
    if name == "knn":
        return KNNImputer(n_neighbors=s["n_neighbors"], keep_empty_features=True)
    if name == "mice":
        regressor: Any = BayesianRidge()
    else:
        regressor = ExtraTreesRegressor(
            n_estimators=s["n_estimators"], max_depth=s["max_depth"],
            min_samples_leaf=s["min_samples_leaf"], max_features=s["max_features"],
            n_jobs=1, random_state=seed)
    low, high = layout.limits(encoded)
    imputer = _ChainedImputer(
        estimator=regressor, max_iter=s["max_iter"], tol=s["tol"], sample_posterior=False,
        initial_strategy="mean", random_state=seed, keep_empty_features=True,
        min_value=low, max_value=high)
    imputer.siblings = layout.siblings()
    return imputer


def reference_imputer(name: str, dataset: Dataset, *, seed: int = 0
                      ) -> MeanImputer | ReferenceImputer:
    """Fit the reference ``name`` (one of :data:`REFERENCES`) on ``dataset``'s train split.

    Only the observed cells (mask 1) of the TRAIN split are read; validation and test rows
    are imputed later from their own observed cells. ``seed`` seeds the chained imputers
    (their random order of ties and the trees); ``mean`` and ``knn`` are deterministic.
    """
    check_choice("reference imputer", name, REFERENCES)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MTVAEError(f"seed must be an integer >= 0, got {seed!r}")
    if name == "mean":
        return mean_imputation(dataset)
    schema = schema_of(dataset)
    layout = _Layout.for_schema(schema)
    train = dataset.train.to("cpu")
    raw = layout.raw(train.tensors["x"], train.tensors["mask"])
    layout.fit(raw)
    encoded = (raw - layout.mean) / layout.std
    imputer = _sklearn_imputer(name, seed, layout, encoded)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # the chained imputers stop at max_iter by design (a time budget), not by accident
        warnings.simplefilter("ignore", ConvergenceWarning)
        imputer.fit(encoded)
    return ReferenceImputer(name, schema, layout, imputer, time.perf_counter() - start)
