"""Datasets that never touch the network, behind one registry: ``load(name, **options)``."""

from __future__ import annotations

from collections.abc import Callable

from mtvae.data.base import Batch, Dataset, Split
from mtvae.data.images import load_digits, load_mnist5k
from mtvae.data.ppca import PPCAModel, linear_gaussian_log_marginal, make_ppca
from mtvae.errors import check_choice

_REGISTRY: dict[str, Callable[..., Dataset]] = {
    "mnist5k": load_mnist5k,
    "digits": load_digits,
    "ppca": lambda **kw: make_ppca(**kw)[0],
}


def available() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted(_REGISTRY)


def load(name: str, **options: object) -> Dataset:
    """Load a dataset by name; an unknown name raises an error listing the valid ones."""
    check_choice("dataset", name, _REGISTRY)
    return _REGISTRY[name](**options)


__all__ = [
    "Batch",
    "Dataset",
    "PPCAModel",
    "Split",
    "available",
    "linear_gaussian_log_marginal",
    "load",
    "load_digits",
    "load_mnist5k",
    "make_ppca",
]
