"""Offline loaders, fixed stratified splits, binarisation and input validation."""

import socket

import numpy as np
import pytest
import torch

from mtvae import data
from mtvae.data import Split
from mtvae.data.splits import stratified_split
from mtvae.errors import MTVAEError


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test: loaders must work offline."""

    def refuse(*args, **kwargs):
        raise AssertionError("a data loader tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_mnist5k_offline_fixed_stratified_split(no_network):
    ds = data.load("mnist5k")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (4000, 500, 500)
    assert ds.x_shape == (1, 28, 28) and ds.n_classes == 10
    for split, n in ((ds.train, 400), (ds.val, 50), (ds.test, 50)):
        assert torch.bincount(split.y).tolist() == [n] * 10
    assert float(ds.train.x.min()) >= 0.0 and float(ds.train.x.max()) <= 1.0
    again = data.load("mnist5k")
    assert torch.equal(again.test.x, ds.test.x)
    summary = ds.summary()
    assert summary.loc["train", "examples"] == 4000 and summary.loc["test", "class 9"] == 50


def test_digits_offline(no_network):
    ds = data.load("digits")
    assert ds.x_shape == (1, 8, 8)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    assert float(ds.train.x.max()) <= 1.0


def test_split_seed_changes_the_split_but_not_the_sizes():
    labels = np.repeat(np.arange(5), 40)
    a = stratified_split(labels, (100, 50, 50), seed=0)
    b = stratified_split(labels, (100, 50, 50), seed=1)
    assert not np.array_equal(a[2], b[2])
    assert len(set(a[0]) | set(a[1]) | set(a[2])) == 200


def test_binarisation_modes():
    static = data.load("digits", binarize="static")
    assert set(static.train.x.unique().tolist()) <= {0.0, 1.0}
    dynamic = data.load("digits", binarize="dynamic")
    assert set(dynamic.test.x.unique().tolist()) <= {0.0, 1.0}
    assert len(dynamic.train.x.unique()) > 2  # grey values, binarised per batch
    gen = torch.Generator().manual_seed(0)
    b1 = next(dynamic.train.batches(64, generator=gen, train=True))["x"]
    b2 = next(dynamic.train.batches(64, generator=gen, train=True))["x"]
    assert set(b1.unique().tolist()) <= {0.0, 1.0} and not torch.equal(b1, b2)
    evaluation = next(dynamic.train.batches(64))["x"]
    assert len(evaluation.unique()) > 2  # no transform outside training


def test_exclude_removes_a_class_from_train_and_val_only():
    ds = data.load("digits", exclude=[3])
    assert 3 not in ds.train.y.tolist() and 3 not in ds.val.y.tolist()
    assert 3 in ds.test.y.tolist()
    with pytest.raises(MTVAEError, match="cannot exclude classes"):
        data.load("digits", exclude=[42])


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(MTVAEError, match="valid datasets are: boston, breast_cancer, diamonds"):
        data.load("mnist")


def test_bad_inputs_have_clear_errors():
    with pytest.raises(MTVAEError, match="empty"):
        Split({"x": torch.zeros(0, 3)})
    with pytest.raises(MTVAEError, match="NaN"):
        Split({"x": torch.tensor([[0.0, float("nan")]])})
    with pytest.raises(MTVAEError, match="same length"):
        Split({"x": torch.zeros(3, 2), "y": torch.zeros(2)})
    with pytest.raises(MTVAEError, match="binarizations are"):
        data.load("digits", binarize="sometimes")
    with pytest.raises(MTVAEError, match="train_size"):
        data.load("digits", train_size=10**6)


def test_batches_cover_every_example_once():
    split = Split({"x": torch.arange(10.0).unsqueeze(1)})
    seen = torch.cat([b["x"] for b in split.batches(3, shuffle=True,
                                                     generator=torch.Generator())])
    assert sorted(seen.squeeze(1).tolist()) == list(range(10))
