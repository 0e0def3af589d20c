"""The tuned-sum family: static task weights of the plain sum (Kurin et al. 2022)."""

import math

import pytest
import torch

from mtvae.data import load
from mtvae.errors import MTVAEError
from mtvae.models import HeteroVAE
from mtvae.moo import get_combiner
from mtvae.moo.combine import SumCombiner, static_weights
from mtvae.stack import fit_stacked
from mtvae.terms import Terms
from mtvae.train import fit


def test_static_weights_on_hand_examples():
    losses = torch.tensor([2.0, -4.0, 1.0])
    w = static_weights("initial-loss", losses)
    # 1/|L| = (0.5, 0.25, 1) normalised to sum 3
    assert torch.allclose(w, torch.tensor([0.5, 0.25, 1.0]) * 3 / 1.75)
    assert torch.allclose(static_weights("uniform", losses), torch.ones(3))
    w = static_weights("type", losses, ["real", "real", "cat"])
    # each of the 2 types gets the same total weight: (1/4, 1/4, 1/2) normalised to sum 3
    assert torch.allclose(w, torch.tensor([0.75, 0.75, 1.5]))
    assert math.isclose(float(w.sum()), 3.0, rel_tol=1e-6)


def test_a_near_zero_initial_loss_cannot_take_all_the_weight():
    w = static_weights("initial-loss", torch.tensor([1.0, 1.0, 0.0]))
    assert float(w.max()) < 3.0 and bool(torch.isfinite(w).all())


def test_the_weighted_sum_backpropagates_the_weighted_objective():
    a = torch.tensor(1.0, requires_grad=True)
    b = torch.tensor(1.0, requires_grad=True)
    comb = SumCombiner("initial-loss")
    terms = Terms(tasks={"x": 2 * a, "y": 8 * b}, regularizers={"kl": a * b})
    comb.backward(terms, torch.nn.Module())
    w = static_weights("initial-loss", torch.tensor([2.0, 8.0]))  # (1.6, 0.4)
    assert math.isclose(float(a.grad), 2 * float(w[0]) + 1.0, rel_tol=1e-6)
    assert math.isclose(float(b.grad), 8 * float(w[1]) + 1.0, rel_tol=1e-6)
    # the weights are fixed at the first step and survive a checkpoint
    restored = SumCombiner("initial-loss")
    restored.load_state_dict(comb.state_dict())
    assert torch.equal(restored.weights, comb.weights)


def test_names_and_errors():
    assert get_combiner("sum:type").name == "sum:type"
    assert get_combiner("sum").name == "sum"
    with pytest.raises(MTVAEError, match="sum:initial-loss"):
        get_combiner("sum:bogus")
    with pytest.raises(MTVAEError, match="schema"):
        SumCombiner("type").task_weights(torch.ones(2), ["a", "b"], torch.nn.Module())


@pytest.mark.parametrize("combiner", ["sum:type", "sum:initial-loss"])
def test_stacked_weighted_sum_matches_the_single_run(combiner):
    datas = [load("hi", missing_rate=0.3, mask_seed=s, split_seed=0, max_rows=300)
             for s in (0, 1)]

    def model(seed, data):
        torch.manual_seed(seed)
        return HeteroVAE(data.info["schema"], hidden=16, depth=1, scaler=data.info["scaler"])

    kw = {"epochs": 3, "batch_size": 64, "patience": 2, "device": "cpu", "progress": "none",
          "combiner": combiner}
    # a stack of one is the reference (single-run fit draws its noise from the global RNG)
    r_alone = fit_stacked([model(1, datas[1])], datas[1:], seeds=[1], **kw)[0]
    stack = [model(s, d) for s, d in zip((0, 1), datas, strict=True)]
    r_stack = fit_stacked(stack, datas, seeds=[0, 1], **kw)
    for a, b in zip(r_alone.history, r_stack[1].history, strict=True):
        assert all(math.isclose(a[k], b[k], rel_tol=1e-5, abs_tol=1e-6)
                   for k in a if k != "seconds")
    r_plain = fit_stacked([model(1, datas[1])], datas[1:], seeds=[1],
                          **(kw | {"combiner": "sum"}))[0]
    assert r_plain.history[-1]["task/whrswk"] != r_alone.history[-1]["task/whrswk"]
    single = model(1, datas[1])  # the single-run engine takes the same weights
    fit(single, datas[1], seed=1, **kw)


def test_parameter_space_rescaled_takes_the_plain_step_size():
    """``@parameter-rescaled`` keeps torchjd's direction and the plain sum's norm."""
    from torch import nn

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.trunk = nn.Linear(3, 4)
            self.heads = nn.ModuleList([nn.Linear(4, 1) for _ in range(3)])

        def loss_terms(self, x):
            h = torch.tanh(self.trunk(x))
            tasks = {f"t{i}": (head(h) ** 2).mean() * (i + 1) ** 2
                     for i, head in enumerate(self.heads)}
            return Terms(tasks=tasks, shared=h)

    x = torch.randn(8, 3)

    def grads(spec):
        m = Two()
        get_combiner(spec).backward(m.loss_terms(x), m)
        return torch.cat([p.grad.flatten() for p in m.trunk.parameters()])

    raw, rescaled = grads("mgda@parameter"), grads("mgda@parameter-rescaled")
    m = Two()
    SumCombiner().backward(m.loss_terms(x), m)
    plain = torch.cat([p.grad.flatten() for p in m.trunk.parameters()])
    assert math.isclose(float(rescaled.norm()), float(plain.norm()), rel_tol=1e-4)
    assert float(torch.nn.functional.cosine_similarity(raw, rescaled, dim=0)) > 0.9999
    assert float(raw.norm()) < 0.9 * float(plain.norm())  # MGDA's step is much smaller


def test_variants_of_one_family_share_a_stack_and_stay_independent():
    """Per-member combiners: each member trains as it would in a stack of its own."""
    datas = [load("hi", missing_rate=0.3, mask_seed=s, split_seed=0, max_rows=300)
             for s in (0, 1)]

    def model(seed, data):
        torch.manual_seed(seed)
        return HeteroVAE(data.info["schema"], hidden=16, depth=1, scaler=data.info["scaler"])

    kw = {"epochs": 2, "batch_size": 64, "patience": 2, "device": "cpu", "progress": "none"}
    # the member of interest at position 0: vectorised CPU kernels may round a stacked
    # tensor's tail differently (see tests/test_stack.py), so compare to float precision
    mixed = fit_stacked([model(s, d) for s, d in zip((1, 0), datas[::-1], strict=True)],
                        datas[::-1], seeds=[1, 0], combiner=["pcgrad[crmogm=0.9]", "pcgrad"],
                        **kw)
    alone = fit_stacked([model(1, datas[1])], datas[1:], seeds=[1],
                        combiner="pcgrad[crmogm=0.9]", **kw)[0]
    for a, b in zip(alone.history, mixed[0].history, strict=True):
        assert all(math.isclose(a[k], b[k], rel_tol=1e-4, abs_tol=1e-5)
                   for k in a if k != "seconds")
    with pytest.raises(MTVAEError, match="2 models"):
        fit_stacked([model(0, datas[0]), model(1, datas[1])], datas, seeds=[0, 1],
                    combiner=["sum"], **kw)
