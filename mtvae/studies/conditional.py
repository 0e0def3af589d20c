"""Scoring label-conditioned generation: does an image generated "as a 3" read as a 3?

Two generators are compared with the same classifier (chapter 2's MNIST CNN, trained on
real images, :class:`~mtvae.models.Classifier`):

* the conditional VAE (Sohn et al. 2015), where the label is a decoder input:
  ``cvae.sample(y)`` (:class:`~mtvae.models.ConditionalVAE`);
* the multitask VAE with a supervised head on z (:class:`~mtvae.models.MultitaskVAE`). Its
  decoder ignores the label, but prior and head define a joint p(z) p(y | z), hence a
  conditional p(z | y) ∝ N(z; 0, I) softmax(head(z))_y. :func:`head_conditional_codes` draws
  from it *exactly* by rejection: propose z ~ N(0, I), accept with probability
  p(y | z) ≤ 1 (about one proposal in ten is kept for ten balanced classes).

Two numbers per generator (:func:`conditional_scores`): **conditional accuracy**, the share of
generated images the classifier assigns to the requested label (chance 1 / C), and
**diversity**, the mean Euclidean distance between two different images generated for the
same label (0 = one image repeated; compare with the same number on real test images of a
class). Images are the means of p(x | z), as everywhere the book shows samples.

The book's runs are the ``cvae`` grid's kinds (:mod:`mtvae.experiments.kinds.conditional`): a CVAE
and the multitask VAE's head, trained with the ``aux`` grid's MNIST-5k settings and scored
with chapter 2's classifier, beside the real test images.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mtvae.errors import MTVAEError
from mtvae.metrics import class_scores
from mtvae.models.multitask import MultitaskVAE

Generate = Callable[[Tensor], Tensor]  # requested labels [N] -> images [N, ...]
Classify = Callable[[Tensor], Tensor]  # images [N, ...] -> class probabilities [N, C]


def within_class_distances(images: Tensor, labels: Tensor) -> dict[int, float]:
    """Per label with ≥ 2 images: mean Euclidean distance between two different images."""
    if len(images) != len(labels):
        raise MTVAEError(f"got {len(images)} images but {len(labels)} labels; give one "
                         "label per image")
    flat = images.flatten(1).double().cpu()
    labels = labels.cpu()
    out = {}
    for c in labels.unique().tolist():
        rows = flat[labels == c]
        n = len(rows)
        if n >= 2:
            out[int(c)] = float(torch.cdist(rows, rows).sum() / (n * (n - 1)))
    return out


def conditional_scores(images: Tensor, requested: Tensor, probs: Tensor
                       ) -> dict[str, float | list[float]]:
    """Conditional accuracy and within-label diversity of generated ``images``.

    Args:
        images: generated images ``[N, ...]``.
        requested: the label each image was generated for, ``[N]`` (integers 0..C-1).
        probs: the classifier's class probabilities of the images, ``[N, C]``.

    Returns: ``cond_accuracy`` (share classified as requested), ``per_class_accuracy``
    (list over the C classes, NaN for a class never requested), ``diversity`` (mean over
    labels of :func:`within_class_distances`), ``per_class_diversity`` and the classifier's
    ``confidence`` (mean top-class probability, :func:`mtvae.metrics.class_scores`).
    """
    if probs.dim() != 2 or len(probs) != len(images) or len(requested) != len(images):
        raise MTVAEError(f"need one requested label and one probability row [N, C] per image; "
                         f"got {len(images)} images, labels {tuple(requested.shape)}, "
                         f"probabilities {tuple(probs.shape)}")
    c = probs.shape[1]
    req = requested.long().cpu()
    if len(req) and (int(req.min()) < 0 or int(req.max()) >= c):
        raise MTVAEError(f"requested labels must lie in 0..{c - 1} (the classifier's classes)")
    hit = (probs.cpu().argmax(1) == req).double()
    per_class = [float(hit[req == k].mean()) if bool((req == k).any()) else float("nan")
                 for k in range(c)]
    dist = within_class_distances(images, req)
    return {"cond_accuracy": float(hit.mean()), "per_class_accuracy": per_class,
            "diversity": float(sum(dist.values()) / len(dist)) if dist else float("nan"),
            "per_class_diversity": [dist.get(k, float("nan")) for k in range(c)],
            "confidence": float(class_scores(probs)["confidence"])}  # type: ignore[arg-type]


def requested_labels(n_classes: int, per_class: int, device: torch.device | str = "cpu"
                     ) -> Tensor:
    """``[0]*per_class + [1]*per_class + ...``: every label requested equally often."""
    if per_class < 2:
        raise MTVAEError(f"per_class must be ≥ 2 to measure diversity, got {per_class}")
    return torch.arange(n_classes, device=device).repeat_interleave(per_class)


@torch.no_grad()
def score_generator(generate: Generate, classify: Classify, n_classes: int, per_class: int,
                    device: torch.device | str = "cpu") -> dict[str, float | list[float]]:
    """Generate ``per_class`` images for every label and score them with ``classify``."""
    y = requested_labels(n_classes, per_class, device)
    images = generate(y)
    return conditional_scores(images, y, classify(images))


@torch.no_grad()
def head_conditional_codes(model: MultitaskVAE, head: str, y: Tensor,
                           generator: torch.Generator | None = None, max_rounds: int = 200
                           ) -> Tensor:
    """One exact draw of z ~ p(z | y) ∝ N(z; 0, I) p_head(y | z) per requested label.

    Rejection sampling: each round proposes z ~ N(0, I) for every row still waiting and
    accepts it with probability softmax(head(z))_y. Raises when some label is still
    unserved after ``max_rounds`` rounds (its head almost never predicts it).
    """
    if head not in model.heads:
        raise MTVAEError(f"unknown head {head!r}; the model has heads {sorted(model.heads)}")
    n_classes = model.n_classes[head]
    y = y.long()
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise MTVAEError(f"labels of head {head!r} must lie in 0..{n_classes - 1}")
    model.eval()
    dev = y.device
    z = torch.zeros(len(y), model.latent_dim, device=dev)
    waiting = torch.ones(len(y), dtype=torch.bool, device=dev)
    for _ in range(max_rounds):
        if not bool(waiting.any()):
            return z
        idx = waiting.nonzero().squeeze(1)
        prop = torch.randn(len(idx), model.latent_dim, device=dev, generator=generator)
        p = model.heads[head](prop).softmax(-1).gather(1, y[idx, None]).squeeze(1)
        u = torch.rand(len(idx), device=dev, generator=generator)
        keep = u < p
        z[idx[keep]] = prop[keep]
        waiting[idx[keep]] = False
    if bool(waiting.any()):
        missing = sorted(set(y[waiting].tolist()))
        raise MTVAEError(f"head {head!r} gave labels {missing} too little prior mass: no code "
                         f"accepted in {max_rounds} rounds; raise max_rounds")
    return z


@torch.no_grad()
def head_conditional_sample(model: MultitaskVAE, head: str, y: Tensor,
                            generator: torch.Generator | None = None) -> Tensor:
    """Means of p(x | z) for z ~ p(z | y) (:func:`head_conditional_codes`): ``[N, *x_shape]``."""
    z = head_conditional_codes(model, head, y, generator)
    return model.likelihood.mean(model.decode(z))
