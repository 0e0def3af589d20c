"""Scores of label-conditioned generation on cases with a known answer."""

import math

import pytest
import torch

from mtvae.errors import MTVAEError
from mtvae.models import ConditionalVAE, MultitaskVAE
from mtvae.studies.conditional import (
    conditional_scores,
    head_conditional_codes,
    head_conditional_sample,
    requested_labels,
    score_generator,
    within_class_distances,
)


def _bright(images):
    """A fake 2-class classifier: class 1 when the mean pixel exceeds 0.5."""
    c1 = (images.flatten(1).mean(1) > 0.5).float()
    return torch.stack([1 - c1, c1], 1)


def test_scores_on_a_hand_example():
    zeros, ones = torch.zeros(1, 2, 2), torch.ones(1, 2, 2)  # distance 2 apart
    images = torch.stack([zeros, zeros, ones, ones, ones, ones])
    requested = torch.tensor([0, 0, 0, 1, 1, 1])
    s = conditional_scores(images, requested, _bright(images))
    assert s["cond_accuracy"] == pytest.approx(5 / 6)
    assert s["per_class_accuracy"] == pytest.approx([2 / 3, 1.0])
    # class 0: pairs (0,0), (0,1), (0,1) -> distances 0, 2, 2 -> mean 4/3; class 1: 0
    assert s["per_class_diversity"] == pytest.approx([4 / 3, 0.0])
    assert s["diversity"] == pytest.approx(2 / 3)
    assert s["confidence"] == pytest.approx(1.0)
    assert within_class_distances(images[:3], requested[:3]) == pytest.approx({0: 4 / 3})


def test_score_generator_requests_every_label_equally():
    seen = []

    def generate(y):
        seen.append(y)
        return y.float()[:, None, None, None].expand(len(y), 1, 2, 2)

    def classify(images):
        return torch.eye(3)[images.flatten(1)[:, 0].long()]

    s = score_generator(generate, classify, n_classes=3, per_class=4)
    assert torch.equal(seen[0], torch.tensor([0] * 4 + [1] * 4 + [2] * 4))
    assert s["cond_accuracy"] == 1.0 and s["diversity"] == 0.0
    # a generator that ignores the label is right one time in three
    s = score_generator(lambda y: generate(torch.zeros_like(y)), classify, 3, 4)
    assert s["cond_accuracy"] == pytest.approx(1 / 3)


def test_bad_score_inputs():
    with pytest.raises(MTVAEError, match="one requested label"):
        conditional_scores(torch.zeros(3, 4), torch.zeros(2).long(), torch.zeros(3, 2))
    with pytest.raises(MTVAEError, match=r"0\.\.1"):
        conditional_scores(torch.zeros(2, 4), torch.tensor([0, 2]), torch.zeros(2, 2))
    with pytest.raises(MTVAEError, match="per_class"):
        requested_labels(10, 1)


def _mt(weight, bias):
    torch.manual_seed(0)
    m = MultitaskVAE((1, 8, 8), 2, heads={"y": 2}, hidden=(8,))
    with torch.no_grad():
        m.heads["y"][0].weight.copy_(torch.tensor(weight))
        m.heads["y"][0].bias.copy_(torch.tensor(bias))
    return m


def test_head_codes_follow_prior_times_head():
    """Head logit gap 4 z_0: p(z | y=0) ∝ N(z; 0, I) sigmoid(4 z_0), known by quadrature."""
    m = _mt([[2.0, 0.0], [-2.0, 0.0]], [0.0, 0.0])
    gen = torch.Generator().manual_seed(0)
    n = 6000
    z = head_conditional_codes(m, "y", torch.zeros(n, dtype=torch.long), gen)
    t = torch.linspace(-8, 8, 20001, dtype=torch.float64)
    w = torch.exp(-t ** 2 / 2) * torch.sigmoid(4 * t)
    mean0 = float((w * t).sum() / w.sum())
    assert 0.6 < mean0 < 0.8  # the tilt is visible
    assert float(z[:, 0].mean()) == pytest.approx(mean0, abs=4 * 0.8 / math.sqrt(n))
    assert float(z[:, 1].mean()) == pytest.approx(0.0, abs=4 / math.sqrt(n))  # untouched
    assert float(z[:, 1].std()) == pytest.approx(1.0, abs=0.05)
    z1 = head_conditional_codes(m, "y", torch.ones(n, dtype=torch.long), gen)
    assert float(z1[:, 0].mean()) == pytest.approx(-mean0, abs=4 * 0.8 / math.sqrt(n))
    assert head_conditional_sample(m, "y", torch.tensor([0, 1, 1]), gen).shape == (3, 1, 8, 8)


def test_head_codes_refuse_bad_requests():
    m = _mt([[0.0, 0.0], [0.0, 0.0]], [-40.0, 40.0])  # label 0 has no prior mass
    with pytest.raises(MTVAEError, match="too little prior mass"):
        head_conditional_codes(m, "y", torch.tensor([1, 0]), max_rounds=5)
    with pytest.raises(MTVAEError, match="unknown head"):
        head_conditional_codes(m, "digit", torch.tensor([0]))
    with pytest.raises(MTVAEError, match=r"0\.\.1"):
        head_conditional_codes(m, "y", torch.tensor([2]))


def test_cvae_sample_plugs_into_the_scorer():
    torch.manual_seed(0)
    cvae = ConditionalVAE((1, 8, 8), 2, n_classes=2, hidden=(8,))
    gen = torch.Generator().manual_seed(0)
    s = score_generator(lambda y: cvae.sample(y, 1, gen), _bright, n_classes=2, per_class=5)
    assert 0.0 <= s["cond_accuracy"] <= 1.0 and s["diversity"] > 0.0
