"""Semi-supervised label masks and the VAE with auxiliary supervised heads."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtvae import moo
from mtvae.data import load
from mtvae.data.semisup import with_label_fraction
from mtvae.data.shapes import FACTOR_NAMES
from mtvae.errors import MTVAEError
from mtvae.models import MultitaskVAE
from mtvae.models.multitask import factor_targets
from mtvae.moo.diagnostics import task_gradients
from mtvae.train import fit


@pytest.fixture(scope="module")
def shapes():
    return load("shapes", n=300, seed=0)


def model_for(data, **kw):
    torch.manual_seed(0)
    targets = factor_targets(["shape", "scale"], FACTOR_NAMES, prefix="")
    return MultitaskVAE(data.x_shape, 4, heads={"shape": 3, "scale": 4}, targets=targets,
                        hidden=(32,), **kw)


def batch_of(data, n=16, labelled=None):
    b = {k: v[:n] for k, v in data.train.tensors.items()}
    if labelled is not None:
        b["labelled"] = torch.as_tensor(labelled, dtype=torch.float32)
    return b


# -- label fractions ------------------------------------------------------------------
def test_label_fraction_is_stratified_seeded_and_keeps_every_class(shapes):
    ten = with_label_fraction(shapes, 0.1, seed=0)
    for split in (ten.train, ten.val):
        lab = split.tensors["labelled"]
        assert lab.dtype == torch.float32 and set(lab.unique().tolist()) == {0.0, 1.0}
        for c in range(3):
            n_c = int((split.y == c).sum())
            assert int(lab[split.y == c].sum()) == max(1, round(0.1 * n_c))
    assert bool((ten.test.tensors["labelled"] == 1).all())
    assert torch.equal(ten.train.tensors["labelled"],
                       with_label_fraction(shapes, 0.1, seed=0).train.tensors["labelled"])
    assert not torch.equal(ten.train.tensors["labelled"],
                           with_label_fraction(shapes, 0.1, seed=1).train.tensors["labelled"])
    tiny = with_label_fraction(shapes, 0.001, seed=0)
    assert int(tiny.train.tensors["labelled"].sum()) == 3  # one per class
    full = with_label_fraction(shapes, 1.0)
    assert bool((full.train.tensors["labelled"] == 1).all())
    assert full.info["label_fraction"] == 1.0 and torch.equal(full.train.x, shapes.train.x)


@pytest.mark.parametrize("fraction", [0, 0.0, -0.1, 1.5, float("nan"), "half", True])
def test_label_fraction_outside_unit_interval_is_refused(shapes, fraction):
    with pytest.raises(MTVAEError, match=r"label fraction must be a number in \(0, 1\]"):
        with_label_fraction(shapes, fraction)


# -- the model ------------------------------------------------------------------------
def test_tasks_regulariser_and_head_loss_normalisation(shapes):
    model = model_for(shapes, label_weight=0.5)
    lab = np.zeros(16)
    lab[[1, 4, 9]] = 1
    b = batch_of(shapes, labelled=lab)
    torch.manual_seed(1)
    t = model.loss_terms(b)
    assert list(t.tasks) == ["x", "shape", "scale"] and list(t.regularizers) == ["kl"]
    assert t.shared.shape == (16, 4) and len(t.task_inputs) == 3
    # head loss = lambda * sum of CE over labelled rows / batch size, at the same z
    logits = model.heads["scale"](t.shared)
    ce = F.cross_entropy(logits, b["factors"][:, 1], reduction="none")
    expected = 0.5 * ce[[1, 4, 9]].sum() / 16
    assert torch.allclose(t.tasks["scale"], expected, atol=1e-6)
    assert math.isclose(float(t.stats["nelbo"]), float(t.tasks["x"].detach() + t.stats["kl"]),
                        rel_tol=1e-6)


def test_unlabelled_rows_only_feed_the_elbo(shapes):
    model = model_for(shapes)
    lab = np.r_[np.ones(8), np.zeros(8)]
    b = batch_of(shapes, labelled=lab)
    garbage = {**b, "factors": b["factors"].clone()}
    garbage["factors"][8:] = -1  # placeholder labels on unlabelled rows are never read
    torch.manual_seed(1)
    t1 = model.loss_terms(b)
    torch.manual_seed(1)
    t2 = model.loss_terms(garbage)
    assert torch.equal(t1.tasks["shape"], t2.tasks["shape"])
    g = torch.autograd.grad(t1.tasks["shape"], t1.task_inputs[1])[0]
    assert bool((g[8:] == 0).all()) and bool((g[:8] != 0).any())


def test_a_batch_without_labels_gives_zero_head_loss_and_finite_moo_steps(shapes):
    b = batch_of(shapes, labelled=np.zeros(16))
    for method in ["sum", "pcgrad", "imtl-g", "mgda", "upgrad"]:
        model = model_for(shapes)
        t = model.loss_terms(b)
        assert float(t.tasks["shape"].detach()) == 0.0 == float(t.tasks["scale"].detach())
        moo.get_combiner(method).backward(t, model)
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(bool(torch.isfinite(g).all()) for g in grads), method


def test_task_inputs_give_each_tasks_gradient_at_z(shapes):
    model = model_for(shapes)
    t = model.loss_terms(batch_of(shapes))
    G = task_gradients(t)
    for i, loss in enumerate(t.tasks.values()):
        (g,) = torch.autograd.grad(loss, t.shared, retain_graph=True)
        assert torch.allclose(G[i], g.reshape(-1), atol=1e-6)


def test_default_target_is_y_and_predict_uses_the_posterior_mean(shapes):
    torch.manual_seed(0)
    model = MultitaskVAE(shapes.x_shape, 4, heads={"label": 3}, hidden=(32,))
    assert model.targets == {"label": "y"}
    x = shapes.test.x[:10]
    p1, p2 = model.predict(x)["label"], model.predict(x)["label"]
    assert p1.shape == (10, 3) and torch.equal(p1, p2)
    assert torch.allclose(p1.sum(-1), torch.ones(10))
    t = model.loss_terms({"x": x, "y": shapes.test.y[:10]})  # no mask: every row labelled
    assert float(t.stats["labelled"]) == 1.0


def test_bad_heads_and_targets_raise(shapes):
    with pytest.raises(MTVAEError, match=r"at least one head"):
        MultitaskVAE(shapes.x_shape, 4, heads={})
    with pytest.raises(MTVAEError, match=r"'x' is the reconstruction task"):
        MultitaskVAE(shapes.x_shape, 4, heads={"x": 6})
    with pytest.raises(MTVAEError, match=r"number of classes ≥ 2"):
        MultitaskVAE(shapes.x_shape, 4, heads={"a": 1})
    with pytest.raises(MTVAEError, match=r"have no target"):
        MultitaskVAE(shapes.x_shape, 4, heads={"a": 2, "b": 2}, targets={"a": "y"})
    with pytest.raises(MTVAEError, match=r"unknown factors \['colour'\]"):
        factor_targets(["colour"], FACTOR_NAMES)
    model = MultitaskVAE(shapes.x_shape, 4, heads={"a": 3, "b": 4})
    with pytest.raises(MTVAEError, match=r"reads labels from 'a'"):
        model.loss_terms(batch_of(shapes))


def test_semi_supervised_training_is_deterministic_and_learns_a_factor(shapes):
    data = with_label_fraction(shapes, 0.5, seed=0)
    heads = factor_targets(["x"], FACTOR_NAMES)  # the horizontal position, 6 classes
    assert heads == {"y_x": ("factors", 3)}
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = MultitaskVAE(data.x_shape, 8, heads={"y_x": 6}, targets=heads, hidden=(128,),
                             label_weight=5.0)
        res = fit(model, data, epochs=10, batch_size=50, lr=3e-3, seed=0, device="cpu",
                  progress="none", combiner="pcgrad")
        pred = model.predict(data.test.x)["y_x"].argmax(-1)
        acc = float((pred == data.test.tensors["factors"][:, 3]).float().mean())
        runs.append((res.history[-1]["val_loss"], acc))
    assert runs[0] == runs[1]
    assert runs[0][1] > 0.3  # chance is 1/6
