"""Semi-supervised views of a labelled dataset: which labels a model may use.

The semi-supervised setting of Kingma et al. (2014) trains on all images but only a fraction
of their labels. :func:`with_label_fraction` keeps every tensor (the labels too, so that
evaluation code stays simple) and adds a float tensor ``labelled`` (1 = this row's label may
be used for training, 0 = it may not). Models with supervised heads and post-hoc probes read
that mask; the test split is all ones because it is only ever used for scoring.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from mtvae.data.base import Dataset, Split
from mtvae.errors import MTVAEError


def labelled_mask(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified, seeded boolean mask keeping ``round(fraction * n_c)`` rows of class c.

    At least one row of every class present is kept, so a 1 % split of a small class still
    has an example of it.
    """
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        k = min(len(rows), max(1, round(fraction * len(rows))))
        keep[rng.permutation(rows)[:k]] = True
    return keep


def with_label_fraction(data: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """``data`` with a ``labelled`` tensor: a ``fraction`` of train and val labels usable.

    Args:
        data: a dataset whose splits hold integer labels ``y`` (the stratification key).
        fraction: share of labelled rows per class in the training and validation splits,
            in (0, 1]; 1 marks every row labelled.
        seed: seed of the choice (train and val use different streams of it).
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
        0.0 < fraction <= 1.0
    ):
        raise MTVAEError(f"the label fraction must be a number in (0, 1], got {fraction!r}; "
                         "use 1 for fully supervised training")
    if "y" not in data.train.tensors:
        raise MTVAEError(f"dataset {data.name!r} has no labels 'y' to keep a fraction of")

    def mark(split: Split, stream: int | None) -> Split:
        y = split.y.cpu().numpy()
        keep = np.ones(len(y), dtype=bool) if stream is None else labelled_mask(
            y, float(fraction), seed * 1000 + stream)
        mask = torch.as_tensor(keep, dtype=torch.float32, device=split.x.device)
        return replace(split, tensors={**split.tensors, "labelled": mask})

    return replace(
        data,
        train=mark(data.train, 0),
        val=mark(data.val, 1),
        test=mark(data.test, None),
        info={**data.info, "label_fraction": float(fraction), "label_seed": seed},
    )
