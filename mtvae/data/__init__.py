"""Datasets that never touch the network, behind one registry: ``load(name, **options)``.

Images (MNIST-5k, digits), a linear-Gaussian toy (ppca) and eight heterogeneous tables
(:mod:`mtvae.data.tables`) whose columns are real/pos/count/bin/cat(k) features.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from mtvae.data.base import Batch, Dataset, Split
from mtvae.data.images import load_digits, load_mnist5k
from mtvae.data.paired import load_paired_digits as load_paired_digits
from mtvae.data.ppca import PPCAModel, linear_gaussian_log_marginal, make_ppca
from mtvae.data.schema import FEATURE_TYPES, Feature, Schema
from mtvae.data.shapes import load_shapes
from mtvae.data.tables import TABLES, available_tables, load_table
from mtvae.data.tabular import (
    TabularScaler,
    from_csv,
    from_frame,
    mcar_mask,
)
from mtvae.errors import check_choice

_REGISTRY: dict[str, Callable[..., Dataset]] = {
    "mnist5k": load_mnist5k,
    "digits": load_digits,
    "paired-digits": load_paired_digits,
    "shapes": load_shapes,
    "ppca": lambda **kw: make_ppca(**kw)[0],
    **{name: partial(load_table, name) for name in TABLES},
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
    "load_digits",
    "load_mnist5k",
    "load_shapes",
    "load_table",
    "make_ppca",
    "mcar_mask",
]
