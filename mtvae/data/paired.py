"""Paired digits: three views of one digit class — an MNIST image, an 8x8 digit, the label.

Each MNIST-5k image (:func:`~mtvae.data.images.load_mnist5k`) is paired with a scikit-learn
8x8 digit (:func:`~mtvae.data.images.load_digits`) of the same class, drawn uniformly with
replacement (seeded by ``pair_seed``) from the *same split* of the digits data: training
images get training digits, validation validation, test test, so no 8x8 digit seen in
training reappears at test time. The label is the third modality. This is the small,
offline analogue of the MNIST-SVHN pairs of Shi et al. (2019): the two image modalities
share only the class, not the writer or the style.

Each split holds ``x`` (1x28x28), ``digit`` (1x8x8, grey levels /16), ``y`` and
``digit_id`` (the row of the digit in scikit-learn's array, to audit the pairing).
"""

from __future__ import annotations

import numpy as np
import torch

from mtvae.data.base import Dataset, Split
from mtvae.data.images import load_digits, load_mnist5k
from mtvae.data.splits import stratified_split
from mtvae.errors import MTVAEError

SPLITS = ("train", "val", "test")


def _digit_split_ids(digits: Dataset, split_seed: int) -> dict[str, np.ndarray]:
    """scikit-learn row indices of each split of ``digits`` (= ``load_digits(split_seed)``)."""
    from sklearn.datasets import load_digits as sk_digits

    target = sk_digits().target.astype(np.int64)
    sizes = digits.info["sizes"]
    assert isinstance(sizes, dict)
    ids = stratified_split(target, (sizes["train"], sizes["val"], sizes["test"]), seed=split_seed)
    out = dict(zip(SPLITS, ids, strict=True))
    for name, split in digits.splits().items():
        if not np.array_equal(target[out[name]], split.y.numpy()):
            raise MTVAEError("the split of the 8x8 digits could not be reproduced; this is a "
                             "bug in mtvae.data.paired, please report it")
    return out


def load_paired_digits(split_seed: int = 0, pair_seed: int = 0, binarize: str | None = None,
                       train_size: int | None = None) -> Dataset:
    """MNIST-5k images paired with same-class 8x8 digits from the matching split.

    Args:
        split_seed: seed of both datasets' stratified splits (and of static binarisation).
        pair_seed: seed of the draw of a digit for each image.
        binarize: MNIST binarisation, ``None``, ``"static"`` or ``"dynamic"`` (the digits
            stay grey: their 17 levels are modelled as counts).
        train_size: keep a stratified subset of this many MNIST training images.
    """
    mnist = load_mnist5k(split_seed=split_seed, binarize=binarize, train_size=train_size)
    digits = load_digits(split_seed=split_seed)
    ids = _digit_split_ids(digits, split_seed)
    rng = np.random.default_rng(pair_seed)
    out: dict[str, Split] = {}
    for name in SPLITS:
        image_split, digit_split = mnist.splits()[name], digits.splits()[name]
        labels = image_split.y.numpy()
        dy = digit_split.y.numpy()
        rows = np.empty(len(labels), dtype=np.int64)
        for c in np.unique(labels):
            pool = np.flatnonzero(dy == c)
            if len(pool) == 0:
                raise MTVAEError(f"the digits {name} split has no example of class {c}")
            where = np.flatnonzero(labels == c)
            rows[where] = rng.choice(pool, size=len(where), replace=True)
        index = torch.as_tensor(rows)
        out[name] = Split({**image_split.tensors, "digit": digit_split.x[index],
                           "digit_id": torch.as_tensor(ids[name][rows])},
                          transform=image_split.transform)
    return Dataset(
        name="paired-digits", train=out["train"], val=out["val"], test=out["test"],
        x_shape=mnist.x_shape, n_classes=10,
        info={"binarize": mnist.info["binarize"], "split_seed": split_seed,
              "pair_seed": pair_seed, "modalities": {"x": (1, 28, 28), "digit": (1, 8, 8),
                                                     "y": (10,)},
              "sizes": {k: len(v) for k, v in out.items()}},
    )
