"""Procedural dSprites-like shapes with known generative factors (Matthey et al. 2017).

Every image is a white shape on black, 28x28 (so the MNIST architectures apply), rendered with
numpy alone from five discrete factors:

* ``shape``    — square, ellipse (axes 2:1), equilateral triangle;
* ``scale``    — four sizes;
* ``rotation`` — six angles in [0°, 90°): the square is 90°-, the triangle 120°- and the
  ellipse 180°-symmetric, so every rotation value is identifiable from the image of every shape;
* ``x``, ``y`` — six centre positions each (``x`` = column, growing rightwards; ``y`` = row,
  growing downwards, as in image coordinates).

Grey values in [0, 1] are the covered fraction of each pixel, estimated by 4x4 supersampling
(anti-aliasing), so the same factors always give the same bytes. ``load_shapes`` samples the
factors uniformly and independently with a seed, which makes the factors a ground truth for
auxiliary supervised tasks and for probing what a latent space encodes.
"""

from __future__ import annotations

import numpy as np
import torch

from mtvae.data.base import Dataset, Split
from mtvae.data.images import BINARIZE, _dynamic_binarize
from mtvae.errors import MTVAEError, check_choice

FACTOR_NAMES = ("shape", "scale", "rotation", "x", "y")
SHAPES = ("square", "ellipse", "triangle")
SIZE = 28
SUPERSAMPLE = 4
SCALES = (3.0, 3.75, 4.5, 5.25)  # pixels; each shape's size is proportional to it
ROTATIONS = (0.0, 15.0, 30.0, 45.0, 60.0, 75.0)  # degrees
POSITIONS = tuple(float(p) for p in np.linspace(7.5, 20.5, 6))  # pixel coordinates of centres
FACTOR_VALUES: dict[str, tuple] = {
    "shape": SHAPES, "scale": SCALES, "rotation": ROTATIONS, "x": POSITIONS, "y": POSITIONS,
}
FACTOR_SIZES = tuple(len(FACTOR_VALUES[name]) for name in FACTOR_NAMES)
_CHUNK = 256  # images rasterised at once (bounds memory of the supersampled grid)


def _check_factors(factors: np.ndarray) -> np.ndarray:
    arr = np.asarray(factors)
    if arr.ndim != 2 or arr.shape[1] != len(FACTOR_NAMES):
        raise MTVAEError(
            f"factors must have shape [N, {len(FACTOR_NAMES)}] (columns {FACTOR_NAMES}), "
            f"got {arr.shape}; stack one column per factor"
        )
    integral = np.issubdtype(arr.dtype, np.integer) or np.array_equal(arr, np.round(arr))
    if arr.size and not integral:
        raise MTVAEError("factors must be integer indices into FACTOR_VALUES, not values")
    arr = arr.astype(np.int64)
    sizes = np.asarray(FACTOR_SIZES)
    bad = (arr < 0) | (arr >= sizes)
    if bad.any():
        col = int(np.nonzero(bad.any(axis=0))[0][0])
        raise MTVAEError(
            f"factor {FACTOR_NAMES[col]!r} must be an index in 0..{sizes[col] - 1}, "
            f"got {arr[bad.any(axis=1), col][0]}; see FACTOR_SIZES"
        )
    return arr


def _inside(shape: np.ndarray, u: np.ndarray, v: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Which points (u, v) of each image's local, unrotated frame lie inside its shape."""
    square = np.maximum(np.abs(u), np.abs(v)) <= 0.85 * s
    ellipse = (u / (1.2 * s)) ** 2 + (v / (0.6 * s)) ** 2 <= 1.0
    # equilateral triangle, circumradius 1.25 s: three half-planes at the inradius R/2
    radius = 1.25 * s
    tri = np.ones_like(square)
    for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
        tri &= -(u * np.cos(angle) + v * np.sin(angle)) <= radius / 2
    return np.where(shape == 0, square, np.where(shape == 1, ellipse, tri))


def _column(values: tuple[float, ...], index: np.ndarray) -> np.ndarray:
    return np.asarray(values)[index][:, None, None]


def render(factors: np.ndarray) -> np.ndarray:
    """Images [N, 28, 28] (float32, in [0, 1]) of the factor indices ``factors`` [N, 5]."""
    idx = _check_factors(factors)
    out = np.empty((len(idx), SIZE, SIZE), dtype=np.float32)
    k = SUPERSAMPLE
    grid = (np.arange(SIZE * k, dtype=np.float64) + 0.5) / k  # sub-pixel centres
    for start in range(0, len(idx), _CHUNK):
        f = idx[start : start + _CHUNK]
        shape = f[:, 0][:, None, None]
        s, theta = _column(SCALES, f[:, 1]), np.deg2rad(_column(ROTATIONS, f[:, 2]))
        dx = grid[None, None, :] - _column(POSITIONS, f[:, 3])
        dy = grid[None, :, None] - _column(POSITIONS, f[:, 4])
        # rotate the sampling points by -theta into the shape's own frame
        u = np.cos(theta) * dx + np.sin(theta) * dy
        v = -np.sin(theta) * dx + np.cos(theta) * dy
        hit = _inside(shape, u, v, s).astype(np.float32)
        out[start : start + len(f)] = hit.reshape(len(f), SIZE, k, SIZE, k).mean(axis=(2, 4))
    return out


def sample_factors(n: int, seed: int = 0) -> np.ndarray:
    """``n`` factor-index rows [n, 5], each factor uniform and independent, seeded."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, size, n) for size in FACTOR_SIZES], axis=1).astype(np.int64)


def load_shapes(n: int = 6000, seed: int = 0, binarize: str | None = None) -> Dataset:
    """``n`` random shapes split 2/3 : 1/6 : 1/6 (4000/1000/1000 for the default ``n``).

    Each split holds ``x`` [N, 1, 28, 28], ``y`` (the shape index, the default label) and
    ``factors`` [N, 5] (long indices in ``FACTOR_NAMES`` order). ``binarize`` works as for
    MNIST-5k (``None``, ``"static"``, ``"dynamic"``).
    """
    if not isinstance(n, (int, np.integer)) or n < 60:
        raise MTVAEError(f"n must be an integer ≥ 60 (≥ 10 test images), got {n!r}")
    mode = check_choice("binarization", binarize or "none", BINARIZE)
    factors = sample_factors(int(n), seed)
    x = torch.from_numpy(render(factors)).unsqueeze(1)
    f = torch.from_numpy(factors)
    n_train, n_val = round(n * 2 / 3), round(n / 6)
    n_fit = n_train + n_val
    bounds = {"train": (0, n_train), "val": (n_train, n_fit), "test": (n_fit, n)}
    gen = torch.Generator().manual_seed(10_000 + seed)

    def make(name: str) -> Split:
        lo, hi = bounds[name]
        xs = x[lo:hi]
        training = name == "train"
        if mode == "static" or (mode == "dynamic" and not training):
            xs = torch.bernoulli(xs, generator=gen)
        transform = _dynamic_binarize if (mode == "dynamic" and training) else None
        tensors = {"x": xs, "y": f[lo:hi, 0].clone(), "factors": f[lo:hi].clone()}
        return Split(tensors, transform=transform)

    return Dataset(
        name="shapes",
        train=make("train"),
        val=make("val"),
        test=make("test"),
        x_shape=(1, SIZE, SIZE),
        n_classes=len(SHAPES),
        info={
            "factor_names": list(FACTOR_NAMES),
            "factor_sizes": list(FACTOR_SIZES),
            "factor_values": {k: list(v) for k, v in FACTOR_VALUES.items()},
            "seed": seed,
            "binarize": mode,
            "sizes": {k: hi - lo for k, (lo, hi) in bounds.items()},
        },
    )
