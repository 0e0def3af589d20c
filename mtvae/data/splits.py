"""Fixed, seeded, stratified train/validation/test splits."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from mtvae.errors import MTVAEError


def stratified_split(
    labels: np.ndarray, sizes: tuple[int, int, int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a stratified split into ``sizes = (n_train, n_val, n_test)``.

    The same labels, sizes and seed always give the same indices (returned sorted).
    """
    n = len(labels)
    if any(s <= 0 for s in sizes) or sum(sizes) > n:
        raise MTVAEError(
            f"split sizes {sizes} must be positive and sum to at most the {n} examples"
        )
    n_train, n_val, n_test = sizes
    idx = np.arange(n)
    rest, test = train_test_split(idx, test_size=n_test, stratify=labels, random_state=seed)
    train, val = train_test_split(
        rest, test_size=n_val, train_size=n_train, stratify=labels[rest], random_state=seed + 1
    )
    return np.sort(train), np.sort(val), np.sort(test)


def stratified_subset(index: np.ndarray, labels: np.ndarray, size: int, seed: int = 0
                      ) -> np.ndarray:
    """A seeded, class-balanced subset of ``size`` entries of ``index`` (sorted)."""
    if not 0 < size <= len(index):
        raise MTVAEError(f"subset size must be in 1..{len(index)}, got {size}")
    if size == len(index):
        return np.sort(index)
    keep, _ = train_test_split(index, train_size=size, stratify=labels, random_state=seed + 2)
    return np.sort(keep)
