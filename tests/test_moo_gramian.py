"""The Gramian path, the one-pass activation block and the options of torchjd's methods."""

import pytest
import torch

from mtvae.bench.moo import KBackward, bench_moo
from mtvae.errors import MTVAEError
from mtvae.models.hetero import HeteroVAE
from mtvae.moo import get_combiner, parse_spec
from mtvae.moo.chain import Chain
from mtvae.moo.diagnostics import gradient_stats, gramian_stats
from mtvae.moo.methods import AGGREGATORS

GRAMIAN_METHODS = [n for n, m in AGGREGATORS.items() if m.path != "matrix"]


def _random_G(seed, T=5, n=40, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(T, n, generator=g)


@pytest.mark.parametrize("name", GRAMIAN_METHODS)
def test_gramian_path_equals_torchjd_on_the_matrix(name):
    """Each call of a fresh pair sees the same matrices, so stateful methods are covered."""
    chain, reference = Chain(parse_spec(name)), AGGREGATORS[name].build(5)
    assert chain.uses_gramian
    for seed in range(3):
        G = _random_G(seed)
        torch.manual_seed(seed)  # Random and GradVac draw from the global generator
        ours = chain(G)
        torch.manual_seed(seed)
        theirs = reference(G)
        torch.testing.assert_close(ours, theirs, rtol=2e-3, atol=2e-4 * float(theirs.norm()))


@pytest.mark.parametrize("spec", ["nsgd+upgrad", "gradnorm-grad+config", "nsgd+nashmtl",
                                  "uncertainty+mgda", "nsgd"])
def test_weightings_then_gramian_equal_weightings_then_matrix(spec):
    head, _, last = spec.rpartition("+")
    G = _random_G(7)
    ours = Chain(parse_spec(spec))(G)
    weights = Chain(parse_spec(head or spec)).weightings
    Gw = G
    for w in weights:
        Gw = Gw * w.weights(Gw, torch.zeros(len(G))).unsqueeze(1)
    theirs = Gw.sum(0) if not head else AGGREGATORS[last].build(len(G))(Gw)
    torch.testing.assert_close(ours, theirs, rtol=2e-3, atol=2e-4 * float(theirs.norm()))


def test_weights_from_gramian_is_the_cheap_entry_point():
    G = _random_G(3, T=4, n=1000)
    for name in ["upgrad", "mgda", "gradnorm+pcgrad", "config", "mean"]:
        a = Chain(parse_spec(name)).weights_from_gramian(G @ G.T)
        assert a.shape == (4,)
        torch.testing.assert_close(a @ G, Chain(parse_spec(name))(G), rtol=1e-4, atol=1e-5)
    with pytest.raises(MTVAEError, match="needs the gradient matrix itself"):
        Chain(parse_spec("graddrop")).weights_from_gramian(G @ G.T)


def test_gramian_stats_equal_matrix_stats():
    G, a = _random_G(4), torch.tensor([0.5, 1.0, 0.0, 2.0, 0.3])
    s1, s2 = gramian_stats(G @ G.T, a), gradient_stats(G, a @ G)
    for f in ("norms", "cosine", "cos_update"):
        torch.testing.assert_close(getattr(s1, f), getattr(s2, f), rtol=1e-4, atol=1e-5)


def _hetero():
    torch.manual_seed(0)
    model = HeteroVAE({"a": "real", "b": "cat(3)", "c": "count", "d": "bin"}, hidden=16)
    g = torch.Generator().manual_seed(1)
    batch = {"x": torch.stack([torch.randn(32, generator=g),
                               torch.randint(0, 3, (32,), generator=g).float(),
                               torch.randint(0, 5, (32,), generator=g).float(),
                               torch.randint(0, 2, (32,), generator=g).float()], dim=1),
             "mask": (torch.rand(32, 4, generator=g) > 0.2).float()}
    return model, batch


def _grads(method, one_pass=True, observe=False):
    model, batch = _hetero()
    torch.manual_seed(5)  # the reparameterisation noise
    terms = model.loss_terms(batch)
    if not one_pass:
        terms.task_inputs = None
    comb = method if not isinstance(method, str) else get_combiner(method)
    stats = comb.backward(terms, model, observe=observe)
    return [p.grad.clone() for p in model.parameters()], stats


@pytest.mark.parametrize("method", ["mean", "upgrad", "gradnorm+pcgrad", "nsgd", "config",
                                    "uncertainty+imtl-g", "mgda[crmogm=0.5]"])
def test_one_backward_block_equals_the_two_pass_block(method):
    fast, s1 = _grads(method, observe=True)
    slow, s2 = _grads(method, one_pass=False, observe=True)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(s1.cos_update, s2.cos_update, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["imtl-g@parameter", "pcgrad@parameter-rescaled",
                                    "upgrad[crmogm=0.5]@parameter"])
def test_parameter_space_from_aliases_equals_torchjd_mtl_backward(method):
    """Two steps on one model (the second uses the cached heads) against mtl_backward."""
    model, batch = _hetero()
    fast, slow = get_combiner(method), get_combiner(method)
    for step in range(2):
        grads = []
        for comb, one_pass in ((fast, True), (slow, False)):
            model.zero_grad(set_to_none=True)
            torch.manual_seed(5 + step)
            terms = model.loss_terms(batch)
            if not one_pass:
                terms.task_inputs = None
            comb.backward(terms, model)
            grads.append([p.grad.clone() for p in model.parameters()])
        assert all(g.abs().sum() > 0 for g in grads[0])  # heads and shared all got a step
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_mean_block_and_k_backward_reference_equal_the_plain_step():
    plain, _ = _grads("sum")
    for method in ["mean", KBackward()]:
        grads, _ = _grads(method)
        for a, b in zip(grads, plain, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_non_finite_update_raises_within_check_every_steps():
    chain = Chain(parse_spec("upgrad"))
    chain.check_every = 3
    bad = torch.full((3, 4), float("nan"))
    chain(bad)
    chain(torch.eye(3, 4))
    with pytest.raises(MTVAEError, match=r"non-finite update \(in one of the last 3 steps\)"):
        chain(torch.eye(3, 4))
    on_cpu = Chain(parse_spec("upgrad"))  # default on the CPU: checked at every call
    with pytest.raises(MTVAEError, match="'upgrad' returned a non-finite update; this happens"):
        on_cpu(bad)


def test_nashmtl_update_weights_every_reuses_weights_between_solves():
    assert AGGREGATORS["nashmtl"].options == {"update_weights_every": 1}
    chain = Chain(parse_spec("nashmtl[update_weights_every=3]"))
    assert chain.final is None
    solves = []
    directions = []

    def counting(solve):
        def wrapped(gtg):
            solves.append(1)
            return solve(gtg)
        return wrapped

    for seed in range(4):
        a = chain.weights_from_gramian(_random_G(seed) @ _random_G(seed).T)
        if seed == 0:
            weighting = chain.final.weighting
            weighting._solve_optimization = counting(weighting._solve_optimization)
        directions.append(a / a.norm())
    assert len(solves) == 1  # calls 2 and 3 reuse the weights of call 1; call 4 solves again
    torch.testing.assert_close(directions[1], directions[0])
    torch.testing.assert_close(directions[2], directions[0])
    assert not torch.allclose(directions[3], directions[0], atol=1e-3)
    for bad in ["nashmtl[update_weights_every=2.5]", "nashmtl[update_weights_every=0]"]:
        with pytest.raises(MTVAEError, match="must be an integer ≥ 1"):
            parse_spec(bad)


def test_crmogm_option_averages_the_weights_of_successive_steps():
    from torchjd.aggregation import MGDAWeighting

    chain = Chain(parse_spec("mgda[crmogm=0.25]"))
    K1, K2 = (_random_G(s) @ _random_G(s).T for s in (1, 2))
    w1 = chain.weights_from_gramian(K1)
    w2 = chain.weights_from_gramian(K2)
    raw = MGDAWeighting()
    torch.testing.assert_close(w1, raw(K1))
    torch.testing.assert_close(w2, 0.25 * raw(K1) + 0.75 * raw(K2))
    with pytest.raises(MTVAEError, match=r"'crmogm' of 'mgda' is the weight"):
        parse_spec("mgda[crmogm=2]")
    with pytest.raises(MTVAEError, match="'config' takes no options"):
        parse_spec("config[crmogm=0.5]")


def test_bench_moo_rows_carry_the_ratio_spread_and_notes():
    rows = bench_moo(quick=True, device="cpu", methods=["mean", "nsgd", "k-backward"])
    assert [(r["method"], r["space"]) for r in rows] == [
        ("sum", "-"), ("k-backward", "activation"), ("mean", "activation"),
        ("nsgd", "activation")]
    for r in rows:
        assert set(r) >= {"method", "space", "device", "step_ms", "ratio_to_sum", "ratio_min",
                          "ratio_max", "repeats", "threads", "note"}
        assert r["ratio_min"] <= r["ratio_to_sum"] <= r["ratio_max"]
        assert r["step_ms"] > 0 and r["threads"] == 1 and isinstance(r["note"], str)
    assert rows[1]["note"].startswith("reference: one backward per task")


def test_stacked_corrections_equal_each_members_block():
    from mtvae.moo import block_correction, stacked_corrections

    G = torch.stack([_random_G(s, T=4, n=60) for s in range(3)])
    for spec in ["upgrad", "gradnorm+mgda", "graddrop"]:
        torch.manual_seed(0)
        stacked = stacked_corrections([Chain(parse_spec(spec)) for _ in range(3)], G)
        torch.manual_seed(0)
        single = torch.stack([block_correction(Chain(parse_spec(spec)), G[s]) for s in range(3)])
        assert stacked.shape == (3, 60)
        torch.testing.assert_close(stacked, single, rtol=1e-4, atol=1e-5)
    with pytest.raises(MTVAEError, match="got 2 chains for 3 members"):
        stacked_corrections([Chain(parse_spec("mean"))] * 2, G)
