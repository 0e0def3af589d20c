"""Procedural shapes: determinism, factor-consistent rendering, splits and input validation."""

import numpy as np
import pytest
import torch

from mtvae import data
from mtvae.data.shapes import FACTOR_NAMES, FACTOR_SIZES, render
from mtvae.errors import MTVAEError


def one(shape=0, scale=2, rotation=0, x=2, y=2) -> np.ndarray:
    return render(np.array([[shape, scale, rotation, x, y]]))[0]


def centroid(img: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(img.shape)
    return float((rows * img).sum() / img.sum()), float((cols * img).sum() / img.sum())


def test_same_seed_same_bytes_different_seed_differs():
    a, b = data.load("shapes", n=120, seed=3), data.load("shapes", n=120, seed=3)
    assert a.train.x.numpy().tobytes() == b.train.x.numpy().tobytes()
    assert torch.equal(a.test.tensors["factors"], b.test.tensors["factors"])
    c = data.load("shapes", n=120, seed=4)
    assert not torch.equal(a.train.x, c.train.x)


def test_splits_tensors_and_info():
    ds = data.load("shapes")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (4000, 1000, 1000)
    assert ds.x_shape == (1, 28, 28) and ds.n_classes == 3
    f = ds.train.tensors["factors"]
    assert f.shape == (4000, 5) and f.dtype == torch.long
    assert torch.equal(ds.train.y, f[:, 0])
    assert ds.info["factor_names"] == list(FACTOR_NAMES)
    assert ds.info["factor_sizes"] == list(FACTOR_SIZES)
    assert len(ds.info["factor_values"]["rotation"]) == FACTOR_SIZES[2]
    # every factor value occurs (uniform sampling)
    for j, size in enumerate(FACTOR_SIZES):
        assert torch.bincount(f[:, j], minlength=size).min() > 0
    small = data.load("shapes", n=600)
    assert (len(small.train), len(small.val), len(small.test)) == (400, 100, 100)


def test_values_in_unit_interval_and_anti_aliased():
    x = data.load("shapes", n=300).train.x
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert ((x > 0) & (x < 1)).any()  # grey edge pixels from supersampling
    static = data.load("shapes", n=120, binarize="static")
    assert set(static.test.x.unique().tolist()) <= {0.0, 1.0}


def test_centroid_follows_x_and_y():
    for shape in range(3):
        rows_x = [centroid(one(shape=shape, x=i))[1] for i in range(6)]
        rows_y = [centroid(one(shape=shape, y=i))[0] for i in range(6)]
        assert np.all(np.diff(rows_x) > 1.5)  # x = column, rightwards
        assert np.all(np.diff(rows_y) > 1.5)  # y = row, downwards
        # moving x leaves the row centroid alone
        assert abs(centroid(one(shape=shape, x=0))[0] - centroid(one(shape=shape, x=5))[0]) < 1e-3


def test_ink_area_grows_with_scale():
    for shape in range(3):
        for rotation in (0, 3):
            area = [one(shape=shape, scale=s, rotation=rotation).sum() for s in range(4)]
            assert np.all(np.diff(area) > 2.0)


def test_shapes_differ_and_rotation_changes_the_triangle():
    imgs = [one(shape=s, rotation=1) for s in range(3)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(imgs[i] - imgs[j]).sum() > 5.0
    tri = [one(shape=2, rotation=r) for r in range(6)]
    for i in range(6):
        for j in range(i + 1, 6):
            assert np.abs(tri[i] - tri[j]).sum() > 1.0


def test_every_rotation_is_identifiable_for_every_shape():
    for shape in range(3):
        imgs = [one(shape=shape, scale=3, rotation=r) for r in range(6)]
        dist = [np.abs(a - b).sum() for i, a in enumerate(imgs) for b in imgs[i + 1 :]]
        assert min(dist) > 1.0


def test_bad_input_raises_clear_errors():
    with pytest.raises(MTVAEError, match=r"n must be an integer"):
        data.load("shapes", n=10)
    with pytest.raises(MTVAEError, match=r"shape \[N, 5\]"):
        render(np.zeros((3, 4), dtype=int))
    with pytest.raises(MTVAEError, match=r"factor 'rotation' must be an index in 0\.\.5"):
        render(np.array([[0, 0, 6, 0, 0]]))
    with pytest.raises(MTVAEError, match=r"factor 'shape'"):
        render(np.array([[-1, 0, 0, 0, 0]]))
    with pytest.raises(MTVAEError, match=r"integer indices"):
        render(np.array([[0.5, 0, 0, 0, 0]]))
    with pytest.raises(MTVAEError, match=r"unknown binarization"):
        data.load("shapes", n=120, binarize="sometimes")
    assert render(np.zeros((0, 5), dtype=int)).shape == (0, 28, 28)
