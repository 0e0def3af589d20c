"""MOO combiners: known answers on synthetic conflicting tasks, and the block's invariants."""

import pytest
import torch
from torch import nn

from mtvae.data.base import Dataset, Split
from mtvae.errors import MTVAEError
from mtvae.moo import available, get_combiner, parse_spec
from mtvae.moo.chain import Chain
from mtvae.moo.diagnostics import ConflictLog, cosine_matrix, gradient_stats
from mtvae.moo.weighting import GradNorm, Uncertainty
from mtvae.terms import Terms
from mtvae.train import fit

# Two conflicting task gradients (g1 . g2 = -3); their plain sum increases task 2's loss.
G_CONFLICT = torch.tensor([[3.0, 0.0, 0.5], [-1.0, 1.0, 0.0]])


def _aggregate(method, G=G_CONFLICT):
    return Chain(parse_spec(method))(G)


def test_available_lists_at_least_fourteen_methods_and_unknown_names_list_them():
    names = available()
    assert len(names) >= 14
    for required in ["sum", "mgda", "pcgrad", "imtl-g", "cagrad", "nashmtl", "aligned-mtl",
                     "upgrad", "dualproj", "graddrop", "gradvac", "config", "fairgrad",
                     "gradnorm", "gradnorm-grad", "uncertainty"]:
        assert required in names
    with pytest.raises(MTVAEError, match="valid methods are: sum, aligned-mtl"):
        get_combiner("pcgard")
    with pytest.raises(MTVAEError, match="must come last in a chain"):
        get_combiner("pcgrad+gradnorm")
    with pytest.raises(MTVAEError, match="valid spaces are: activation, parameter"):
        get_combiner("pcgrad@weights")


def test_mgda_is_the_min_norm_convex_combination():
    g1, g2 = G_CONFLICT
    lam = float(torch.clamp((g2 - g1) @ g2 / (g1 - g2).pow(2).sum(), 0, 1))
    expected = lam * g1 + (1 - lam) * g2
    d = _aggregate("mgda")
    torch.testing.assert_close(d, expected, atol=2e-3, rtol=0)
    # No other convex combination has a smaller norm.
    for t in torch.linspace(0, 1, 101):
        assert d.norm() <= (t * g1 + (1 - t) * g2).norm() + 1e-3


def test_pcgrad_removes_the_negative_inner_product():
    g1, g2 = G_CONFLICT
    assert g1 @ g2 < 0 and (g1 + g2) @ g2 < 0  # the plain sum increases task 2's loss
    p1 = g1 - (g1 @ g2) / g2.pow(2).sum() * g2
    p2 = g2 - (g2 @ g1) / g1.pow(2).sum() * g1
    d = _aggregate("pcgrad")
    torch.testing.assert_close(d, p1 + p2)
    assert p1 @ g2 == pytest.approx(0, abs=1e-6) and p2 @ g1 == pytest.approx(0, abs=1e-6)
    assert d @ g1 >= 0 and d @ g2 >= 0  # the update no longer increases either loss


def test_pcgrad_leaves_agreeing_gradients_alone():
    G = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    torch.testing.assert_close(_aggregate("pcgrad", G), G.sum(0))


def test_imtl_g_update_has_equal_projections_on_the_unit_gradients():
    d = _aggregate("imtl-g")
    unit = G_CONFLICT / G_CONFLICT.norm(dim=1, keepdim=True)
    proj = unit @ d
    assert proj[0] == pytest.approx(float(proj[1]), rel=1e-4)


def test_nsgd_weights_gradients_to_unit_norm():
    d = _aggregate("nsgd")
    unit = G_CONFLICT / G_CONFLICT.norm(dim=1, keepdim=True)
    torch.testing.assert_close(d, unit.sum(0))


def test_gradnorm_with_alpha_zero_equalises_weighted_gradient_norms():
    G = torch.tensor([[4.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    gn = GradNorm(alpha=0.0, lr=0.05, progress="grad")
    for _ in range(400):
        w = gn.weights(G, torch.zeros(3))
    weighted = w * G.norm(dim=1)
    assert float(weighted.std() / weighted.mean()) < 0.05
    assert float(w.sum()) == pytest.approx(3.0, rel=1e-4)  # weights renormalised to T


def test_gradnorm_loss_progress_accepts_negative_losses():
    gn = GradNorm(alpha=1.0, progress="loss")
    G = torch.eye(2)
    w1 = gn.weights(G, torch.tensor([-1.0, 2.0]))
    w2 = gn.weights(G, torch.tensor([-3.0, 2.0]))  # task 0 learns: its weight falls
    assert torch.isfinite(w2).all() and float(w1[0]) == 1.0
    w3 = gn.weights(G, torch.tensor([-3.0, 2.0]))
    assert w3[0] < w3[1]


def test_uncertainty_weighting_converges_to_half_inverse_loss():
    uw = Uncertainty(lr=0.05)
    losses = torch.tensor([0.5, 2.0, 8.0])
    for _ in range(1500):
        w = uw.weights(torch.eye(3), losses)
    torch.testing.assert_close(w, 0.5 / losses, rtol=0.03, atol=0)


def test_diagnostics_on_known_vectors():
    stats = gradient_stats(G_CONFLICT, G_CONFLICT.sum(0))
    torch.testing.assert_close(stats.norms, G_CONFLICT.norm(dim=1))
    cos = cosine_matrix(G_CONFLICT)
    assert cos[0, 1] == pytest.approx(-3 / (9.25**0.5 * 2**0.5))
    torch.testing.assert_close(torch.diag(cos), torch.ones(2))
    log = ConflictLog(["a", "b"], "activation")
    log.add(gradient_stats(torch.tensor([[1.0, 0.0], [-1.0, 0.1]]), torch.tensor([1.0, 0.0])))
    log.add(gradient_stats(torch.tensor([[1.0, 0.0], [1.0, 0.1]]), torch.tensor([1.0, 0.0])))
    log.end_epoch(1)
    row = log.summary()["epochs"][0]
    assert row["overlooked"] == [0.0, 0.5]  # task b was pushed uphill in one of two steps
    assert row["conflicting_pairs"] == 0.5


class TwoHeads(nn.Module):
    """A shared trunk and two heads whose targets pull the trunk in opposite directions."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(nn.Linear(3, 8), nn.Tanh())
        self.heads = nn.ModuleList([nn.Linear(8, 1), nn.Linear(8, 1)])
        self.last_h = None

    def loss_terms(self, batch):
        x = batch["x"]
        h = self.trunk(x)
        self.last_h = h
        losses = {
            "a": (self.heads[0](h).squeeze(1) - x[:, 0]).pow(2).mean(),
            "b": (self.heads[1](h).squeeze(1) + 10 * x[:, 0]).pow(2).mean(),
        }
        reg = 1e-3 * sum(p.pow(2).sum() for p in self.trunk.parameters())
        return Terms(tasks=losses, regularizers={"l2": reg}, shared=h)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(16, 3, generator=g)}


def _grad_at_h(model, method):
    model.zero_grad()
    terms = model.loss_terms(_batch())
    h = terms.shared
    plain = sum(torch.autograd.grad(t, h, retain_graph=True)[0] for t in terms.tasks.values())
    captured = []
    h.register_hook(lambda g: captured.append(g.clone()))
    get_combiner(method).backward(terms, model)
    assert len(captured) >= 1
    return captured[-1], plain  # the final backward (earlier calls: per-task grads)


@pytest.mark.parametrize("method", ["mgda", "pcgrad", "upgrad", "gradnorm+pcgrad", "nsgd"])
def test_activation_block_preserves_the_plain_norm(method):
    model = TwoHeads()
    g, plain = _grad_at_h(model, method)
    assert g.norm() == pytest.approx(float(plain.norm()), rel=1e-5)
    if method == "pcgrad":  # and its direction is PCGrad's
        terms = model.loss_terms(_batch())
        G = torch.stack([torch.autograd.grad(t, terms.shared, retain_graph=True)[0].flatten()
                         for t in terms.tasks.values()])
        d = _aggregate("pcgrad", G)
        cos = torch.nn.functional.cosine_similarity(d, g.flatten(), dim=0)
        assert float(cos) == pytest.approx(1.0, abs=1e-5)


def test_activation_block_leaves_heads_and_regularisers_untouched():
    plain_model, moo_model = TwoHeads(), TwoHeads()
    plain_model.loss_terms(_batch()).total().backward()
    get_combiner("mgda").backward(moo_model.loss_terms(_batch()), moo_model)
    for a, b in zip(plain_model.heads.parameters(), moo_model.heads.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_parameter_space_mean_equals_plain_gradient_over_task_count():
    plain_model, moo_model = TwoHeads(), TwoHeads()
    terms = plain_model.loss_terms(_batch())
    (sum(terms.tasks.values()) / 2 + sum(terms.regularizers.values())).backward()
    get_combiner("mean@parameter").backward(moo_model.loss_terms(_batch()), moo_model)
    for a, b in zip(plain_model.trunk.parameters(), moo_model.trunk.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    terms = TwoHeads().loss_terms(_batch())
    (sum(terms.tasks.values()) + sum(terms.regularizers.values())).backward()


def test_moo_needs_two_tasks_and_a_shared_representation():
    class One(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2))

        def loss_terms(self, batch):
            return Terms(tasks={"x": self.w.sum()})

    with pytest.raises(MTVAEError, match="at least two tasks"):
        get_combiner("pcgrad").backward(One().loss_terms({}), One())


def _toy_dataset():
    g = torch.Generator().manual_seed(0)
    splits = [Split({"x": torch.randn(n, 3, generator=g)}) for n in (64, 32, 32)]
    return Dataset("toy", *splits, x_shape=(3,))


@pytest.mark.parametrize("method", [m for m in available() if m != "sum"])
@pytest.mark.parametrize("space", ["activation", "parameter"])
def test_every_method_trains_without_nan_in_both_spaces(method, space):
    spec = method if space == "activation" else f"{method}@parameter"
    model = TwoHeads()
    res = fit(model, _toy_dataset(), epochs=2, batch_size=16, seed=0, device="cpu",
              progress="none", combiner=spec, monitor_every=2)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history)
    diag = res.diagnostics
    assert diag is not None and diag["tasks"] == ["a", "b"] and diag["space"] == space
    assert len(diag["epochs"]) == 2 and diag["steps_observed"] == 4


def test_chained_combiner_resumes_exactly(tmp_path):
    """GradNorm's learned weights and Adam state travel in the checkpoint."""
    kw = {"epochs": 3, "batch_size": 16, "seed": 0, "device": "cpu", "progress": "none",
          "combiner": "gradnorm+pcgrad", "monitor_every": 1}
    straight = TwoHeads()
    ref = fit(straight, _toy_dataset(), **kw)

    class Interrupt(Exception):
        pass

    model = TwoHeads()
    original, calls = model.loss_terms, {"n": 0}

    def flaky(batch):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] > 4 + 2:  # 4 steps per epoch: dies inside epoch 2
                raise Interrupt
        return original(batch)

    model.loss_terms = flaky
    ckpt = tmp_path / "run.pt"
    with pytest.raises(Interrupt):
        fit(model, _toy_dataset(), checkpoint=ckpt, **kw)
    resumed = TwoHeads(seed=5)
    res = fit(resumed, _toy_dataset(), checkpoint=ckpt, **kw)
    assert res.resumed_from == 1
    assert [h["loss"] for h in res.history] == [h["loss"] for h in ref.history]
    assert res.diagnostics == ref.diagnostics


def test_task_inputs_fast_path_equals_one_backward_per_task():
    from mtvae.models.hetero import HeteroVAE
    from mtvae.moo.diagnostics import task_gradients

    torch.manual_seed(0)
    model = HeteroVAE({"a": "real", "b": "cat(3)", "c": "count", "d": "bin"}, hidden=16)
    batch = {"x": torch.stack([torch.randn(32), torch.randint(0, 3, (32,)).float(),
                               torch.randint(0, 5, (32,)).float(),
                               torch.randint(0, 2, (32,)).float()], dim=1),
             "mask": (torch.rand(32, 4) > 0.2).float()}
    terms = model.loss_terms(batch)
    fast = task_gradients(terms)
    terms.task_inputs = None
    slow = task_gradients(terms)
    torch.testing.assert_close(fast, slow)


def test_weighting_options_in_a_spec():
    comb = get_combiner("gradnorm[alpha=0.5,lr=0.01]+pcgrad")
    assert comb.name == "gradnorm[alpha=0.5,lr=0.01]+pcgrad"
    gn = comb.chain.weightings[0]
    assert isinstance(gn, GradNorm) and gn.alpha == 0.5 and gn.lr == 0.01
    with pytest.raises(MTVAEError, match=r"has no option 'beta'.*valid options are: alpha, lr"):
        get_combiner("gradnorm[beta=1]")
    with pytest.raises(MTVAEError, match="must be a number"):
        get_combiner("gradnorm[alpha=big]")
    with pytest.raises(MTVAEError, match="'graddrop' takes no options"):
        get_combiner("graddrop[c=1]")
    with pytest.raises(MTVAEError, match=r"has no option 'c'.*valid options are: crmogm"):
        get_combiner("pcgrad[c=1]")
    with pytest.raises(MTVAEError, match="GradNorm alpha must be a number"):
        get_combiner("gradnorm[alpha=-1]")
