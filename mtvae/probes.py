"""Linear probes: how much of a label a representation holds, read by a linear classifier.

A probe is trained on the training split's codes (posterior means) and scored on the test
split. It is the usual downstream measure of representation quality (e.g. Xiao & Bamler
2023): a plain VAE followed by a probe is the baseline that a VAE with supervised heads
must beat. Features are standardised on the training codes; the classifier is a multinomial
logistic regression (scikit-learn, lbfgs), which is deterministic.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from mtvae.errors import MTVAEError


def _numpy(a: Tensor | np.ndarray) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def linear_probe(
    z_train: Tensor | np.ndarray,
    y_train: Tensor | np.ndarray,
    z_test: Tensor | np.ndarray,
    y_test: Tensor | np.ndarray,
    *,
    c: float = 1.0,
    max_iter: int = 2000,
) -> float:
    """Test accuracy of a logistic-regression probe trained on ``(z_train, y_train)``.

    Args:
        z_train, z_test: codes ``[N, D]``; y_train, y_test: integer labels ``[N]``.
        c: inverse L2 regularisation strength.
    """
    zt, yt, zs, ys = map(_numpy, (z_train, y_train, z_test, y_test))
    if zt.ndim != 2 or zs.ndim != 2 or zt.shape[1] != zs.shape[1]:
        raise MTVAEError(f"probe codes must be [N, D] with the same D, got {zt.shape} and "
                         f"{zs.shape}")
    if len(zt) != len(yt) or len(zs) != len(ys):
        raise MTVAEError("probe codes and labels must have the same number of rows")
    if len(np.unique(yt)) < 2:
        raise MTVAEError("a probe needs at least two classes among its training labels; "
                         "use more labelled examples")
    if not (np.isfinite(zt).all() and np.isfinite(zs).all()):
        raise MTVAEError("probe codes contain NaN or infinite values; check the encoder")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    clf.fit(zt, yt)
    return float((clf.predict(zs) == ys).mean())
