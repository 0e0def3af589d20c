"""Datasets that never touch the network, behind one registry: ``load(name, **options)``.

Images (MNIST-5k, digits), a linear-Gaussian toy (ppca) and eight heterogeneous tables
(:mod:`mtvae.data.tables`) whose columns are real/pos/count/bin/cat(k) features.
"""

from __future__ import annotations

from collections.abc import Callable

from mtvae.data.base import Batch, Dataset, Split
from mtvae.data.images import load_digits, load_mnist5k
from mtvae.data.ppca import PPCAModel, linear_gaussian_log_marginal, make_ppca
from mtvae.data.schema import FEATURE_TYPES, Feature, Schema
from mtvae.data.tables import (
    load_boston,
    load_breast_cancer,
    load_diamonds,
    load_hi,
    load_labour,
    load_movies,
    load_rwm5yr,
    load_table,
    load_wine,
)
from mtvae.data.tabular import (
    TabularScaler,
    available_tables,
    from_csv,
    from_frame,
    mcar_mask,
)
from mtvae.errors import check_choice

_REGISTRY: dict[str, Callable[..., Dataset]] = {
    "mnist5k": load_mnist5k,
    "digits": load_digits,
    "ppca": lambda **kw: make_ppca(**kw)[0],
    "diamonds": load_diamonds,
    "hi": load_hi,
    "rwm5yr": load_rwm5yr,
    "labour": load_labour,
    "movies": load_movies,
    "boston": load_boston,
    "wine": load_wine,
    "breast_cancer": load_breast_cancer,
}


def available() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted(_REGISTRY)


def load(name: str, **options: object) -> Dataset:
    """Load a dataset by name; an unknown name raises an error listing the valid ones."""
    check_choice("dataset", name, _REGISTRY)
    return _REGISTRY[name](**options)


__all__ = [
    "FEATURE_TYPES",
    "Batch",
    "Dataset",
    "Feature",
    "PPCAModel",
    "Schema",
    "Split",
    "TabularScaler",
    "available",
    "available_tables",
    "from_csv",
    "from_frame",
    "linear_gaussian_log_marginal",
    "load",
    "load_boston",
    "load_breast_cancer",
    "load_diamonds",
    "load_digits",
    "load_hi",
    "load_labour",
    "load_mnist5k",
    "load_movies",
    "load_rwm5yr",
    "load_table",
    "load_wine",
    "make_ppca",
    "mcar_mask",
]
