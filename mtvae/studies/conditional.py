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

:func:`run` is the book's cached run for one seed: it trains (or loads) a CVAE with the
auxiliary study's MNIST-5k settings, loads that study's multitask model (all labels), and
scores both generators and the real test images with chapter 2's classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from mtvae.errors import MTVAEError
from mtvae.metrics import class_scores
from mtvae.models.cvae import ConditionalVAE
from mtvae.models.multitask import MultitaskVAE
from mtvae.results import cache_dir, cached_run, run_id
from mtvae.studies import auxiliary, vqvaes
from mtvae.train import FitResult, fit

DATASET = "mnist5k"
HEAD = "y_digit"  # the auxiliary study's digit head on MNIST-5k
PER_CLASS = 100  # generated images per label

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


# -- the book's runs ---------------------------------------------------------------------------
def cvae_config(aux: auxiliary.Study, seed: int) -> dict[str, Any]:
    """The CVAE's settings: the auxiliary study's MNIST-5k architecture and budget."""
    s = aux.s
    return {"model": "cvae", "dataset": DATASET, "seed": seed, "latent_dim": s.latent_dim,
            "hidden": list(s.hidden), "batch_size": s.batch_size, "lr": s.lr,
            "epochs": s.epochs, "patience": s.patience, "likelihood": "bernoulli",
            "binarize": "dynamic", "train_size": s.train_size,
            "eval_samples": s.eval_samples, "device": aux.device}


def cvae_model(aux: auxiliary.Study, seed: int) -> tuple[ConditionalVAE, FitResult]:
    """A trained CVAE (loaded from its checkpoint when it exists)."""
    cfg = cvae_config(aux, seed)
    data = aux.data(DATASET)
    torch.manual_seed(seed)
    model = ConditionalVAE(data.x_shape, cfg["latent_dim"], n_classes=int(data.n_classes or 10),
                           hidden=tuple(cfg["hidden"]))
    ckpt = cache_dir() / aux.grid / f"{run_id('cvae', cfg)}.pt"
    res = fit(model, data, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
              patience=cfg["patience"], seed=seed, device=aux.device, checkpoint=ckpt,
              progress=aux.progress, desc=f"cvae seed={seed}")
    return model, res


def classifier_config(aux: auxiliary.Study) -> dict[str, Any]:
    """What identifies chapter 2's classifier (so that a change of it reruns the scores)."""
    vq = aux.profile.vq
    return {"grid": f"ch02-{aux.profile.name}", "epochs": vq.classifier_epochs,
            "train_size": vq.train_size}


def run(aux: auxiliary.Study, seed: int, heads_method: str = "sum",
        per_class: int = PER_CLASS) -> dict[str, Any]:
    """One seed's record: ``cvae``, ``heads`` (the multitask model trained with
    ``heads_method`` on all labels) and ``real`` (test images) scores, plus the CVAE's test
    bounds ``nelbo_given_y`` (-ELBO(x, y)) and ``nelbo_marginal`` (a bound on -log p(x),
    comparable with a VAE's -ELBO) and its convergence."""
    cfg = {"model": "cond-gen", "seed": seed, "per_class": per_class,
           "cvae": cvae_config(aux, seed),
           "heads": aux.config(DATASET, heads_method, seed, 1.0),
           "classifier": classifier_config(aux), "device": aux.device}

    def compute() -> dict[str, Any]:
        clf, _ = vqvaes.classifier(vqvaes.Study(aux.profile, device=aux.device,
                                                progress=aux.progress))
        cvae, res = cvae_model(aux, seed)
        heads, _ = aux.model(DATASET, heads_method, seed, 1.0)
        assert isinstance(heads, MultitaskVAE)
        test = aux.data(DATASET).test
        dev = test.x.device
        gen = torch.Generator(device=dev).manual_seed(seed)
        classify = clf.predict_proba
        n_classes = cvae.n_classes
        torch.manual_seed(seed)
        with torch.no_grad():
            cvae.eval()
            x, y = test.x, test.y
            k = cfg["cvae"]["eval_samples"]
            nelbo_y = float(-cvae.elbo(x, y, k).mean())
            nelbo_x = float(-cvae.marginal_elbo(x, k).mean())
        return {
            "cvae": score_generator(lambda q: cvae.sample(q, 1, gen), classify, n_classes,
                                    per_class, dev)
            | {"nelbo_given_y": nelbo_y, "nelbo_marginal": nelbo_x,
               "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
               "stopped_early": res.stopped_early, "epochs_cap": cfg["cvae"]["epochs"],
               "train_seconds": res.seconds},
            "heads": score_generator(lambda q: head_conditional_sample(heads, HEAD, q, gen),
                                     classify, n_classes, per_class, dev),
            "real": conditional_scores(x, y, classify(x)),
        }

    return cached_run(aux.grid, "cond-gen", cfg, compute, device=aux.device)
