"""MVAE's objective (Wu & Goodman 2018) on a hand example: exactly the expected terms.

Experts are fixed by hand (every latent dimension alike): q_mnist = N(1, 1), q_digit =
N(3, 1/4), q_label = N(-1, 1), and the prior expert N(0, 1). Products of Gaussians add
precisions and precision-weight the means:

* joint  = prior x mnist x digit x label: precision 1+1+4+1 = 7, mean (1 + 12 - 1) / 7 = 12/7;
* mnist  = prior x mnist: precision 2, mean 1/2;
* digit  = prior x digit: precision 5, mean 12/5;
* label  = prior x label: precision 2, mean -1/2.

The PoE objective is -[ELBO(joint) + sum_m ELBO_m], where ELBO_m reconstructs x_m only from
z_m ~ q(z | x_m): task m = -log p(x_m | z_joint) - log p(x_m | z_m), regulariser = KL(joint) +
sum_m KL(q(z | x_m)).
"""

import math

import pytest
import torch

from mtvae import rng
from mtvae.models.multimodal import MODALITIES, MultimodalVAE

D, B = 4, 2
EXPERTS = {"mnist": (1.0, 1.0), "digit": (3.0, 0.5), "label": (-1.0, 1.0)}  # (mean, sd)
PRODUCTS = {"joint": (7.0, 12 / 7), "mnist": (2.0, 0.5), "digit": (5.0, 12 / 5),
            "label": (2.0, -0.5)}  # (precision, mean)


def _kl(precision: float, mean: float) -> float:
    """KL(N(mean, 1/precision) || N(0, 1)) summed over D dimensions."""
    var = 1 / precision
    return D * (0.5 * (mean ** 2 + var - 1) - 0.5 * math.log(var))


def _setup(poe_unimodal: bool):
    torch.manual_seed(0)
    model = MultimodalVAE(D, "poe", hidden=16, poe_unimodal=poe_unimodal)
    model.experts = lambda batch, subset=MODALITIES: {  # type: ignore[method-assign]
        m: (torch.full((B, D), EXPERTS[m][0]), torch.full((B, D), EXPERTS[m][1]))
        for m in subset}
    seen: dict[str, torch.Tensor] = {}
    for m in MODALITIES:
        model.decoders[m].register_forward_pre_hook(
            lambda _mod, args, m=m: seen.__setitem__(m, args[0].detach().clone()))
    batch = {"x": torch.rand(B, 1, 28, 28).bernoulli(), "digit": torch.rand(B, 1, 8, 8),
             "y": torch.tensor([3, 7])}
    return model, seen, batch


def test_fused_posteriors_are_the_hand_products():
    model, _, batch = _setup(True)
    post = model.encode(batch, MODALITIES)
    assert torch.allclose(post.loc, torch.full((1, B, D), 12 / 7))
    assert torch.allclose(post.scale, torch.full((1, B, D), 7 ** -0.5))
    for m in MODALITIES:
        precision, mean = PRODUCTS[m]
        one = model.encode(batch, (m,))
        assert torch.allclose(one.loc, torch.full((1, B, D), mean))
        assert torch.allclose(one.scale, torch.full((1, B, D), precision ** -0.5))


@pytest.mark.parametrize("poe_unimodal", [True, False])
def test_objective_has_exactly_the_expected_terms(poe_unimodal):
    model, seen, batch = _setup(poe_unimodal)
    posts = ["joint", *MODALITIES] if poe_unimodal else ["joint"]
    eps = torch.randn(len(posts), B, D)
    with rng.using(rng.NoiseBank(eps.flatten(), torch.zeros(0))) as bank:
        terms = model.loss_terms(batch)
    assert bank is not None and bank.n_normal == eps.numel()  # one sample per posterior
    z = {p: PRODUCTS[p][1] + PRODUCTS[p][0] ** -0.5 * eps[i] for i, p in enumerate(posts)}
    # the regulariser: KL of the joint plus (MVAE) the KL of every unimodal posterior
    kl = sum(_kl(*PRODUCTS[p]) for p in posts)
    assert float(terms.regularizers["kl"].detach()) == pytest.approx(kl, rel=1e-5)
    targets = {"mnist": batch["x"].flatten(1), "digit": batch["digit"].flatten(1),
               "label": batch["y"]}
    total = kl
    for m in MODALITIES:
        # decoder m reads the joint sample and (MVAE) its own modality's sample, nothing else
        expect_z = torch.stack([z["joint"], z[m]]) if poe_unimodal else z["joint"][None]
        assert torch.allclose(seen[m], expect_z, atol=1e-5)
        with torch.no_grad():
            nll = -model.log_prob(m, model.decode(expect_z, m), targets[m]).mean(-1).sum()
        assert float(terms.tasks[m].detach()) == pytest.approx(float(nll), rel=1e-5)
        total += float(nll)
    # -ELBO(joint) - sum_m ELBO_m, nothing more
    assert float(terms.total().detach()) == pytest.approx(total, rel=1e-5)
    assert set(terms.tasks) == set(MODALITIES) and set(terms.regularizers) == {"kl"}


def test_modality_weights_scale_only_their_task():
    plain, _, batch = _setup(True)
    weighted, _, _ = _setup(True)
    weighted.modality_weights["label"] = 50.0
    eps = torch.randn(4 * B * D)
    runs = []
    for model in (plain, weighted):
        with rng.using(rng.NoiseBank(eps, torch.zeros(0))):
            runs.append(model.loss_terms(batch))
    a, b = runs
    assert float(b.tasks["label"].detach()) == pytest.approx(50 * float(a.tasks["label"]
                                                                       .detach()), rel=1e-6)
    for m in ("mnist", "digit"):
        assert torch.equal(a.tasks[m], b.tasks[m])
    assert torch.equal(a.regularizers["kl"], b.regularizers["kl"])
    assert torch.equal(a.stats["nelbo"], b.stats["nelbo"])  # the ELBO itself is unweighted


def test_bad_modality_weights():
    from mtvae.errors import MTVAEError

    with pytest.raises(MTVAEError, match=r"unknown modalities \['text'\]"):
        MultimodalVAE(D, "poe", hidden=16, modality_weights={"text": 2.0})
    with pytest.raises(MTVAEError, match="label"):
        MultimodalVAE(D, "poe", hidden=16, modality_weights={"label": -1.0})
    w = MultimodalVAE(D, "moe", hidden=16, modality_weights={"label": 5.0}).modality_weights
    assert w == {"mnist": 1.0, "digit": 1.0, "label": 5.0}
