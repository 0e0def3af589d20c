"""Run kinds of the grid ``cvae``: label-conditioned generation on MNIST-5k (Chapter 3.2).

* ``cvae``: a conditional VAE (Sohn et al. 2015; :class:`~mtvae.models.ConditionalVAE`), the
  label an input of encoder and decoder, trained with the ``aux`` grid's architecture and
  budget; scored by the images it generates for each requested label;
* ``heads-gen``: the multitask VAE with a digit head (all labels, the plain sum at
  ``label_weight``), generating from p(z | y) ∝ N(z; 0, I) p_head(y | z)
  (:func:`mtvae.studies.conditional.head_conditional_sample`).

Both are scored with Chapter 2's MNIST classifier (trained on real images; conditional
accuracy and within-label diversity, :func:`mtvae.studies.conditional.score_generator`) and
record how they stopped. ``cvae`` also records the classifier's scores of the real test
images (the ceiling of conditional accuracy, and real diversity).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import nn

from mtvae.data import Dataset
from mtvae.experiments.kinds.registry import register, register_stacked
from mtvae.experiments.kinds.training import Built, convergence, single, stacked
from mtvae.models import MultitaskVAE
from mtvae.models.cvae import ConditionalVAE
from mtvae.train import FitResult

DATASET = "mnist5k"
CVAE_KEYS = ("seed", "latent_dim", "hidden", "batch_size", "lr", "epochs", "patience",
             "train_size", "eval_samples", "per_class", "classifier_profile")
HEADS_KEYS = (*CVAE_KEYS, "label_weight")


@lru_cache(maxsize=2)
def _data(train_size: int | None) -> Dataset:
    from mtvae.studies.base import binarized_images

    return binarized_images(DATASET, train_size, 0)


@lru_cache(maxsize=2)
def _classifier(profile: str, device: str) -> Any:
    """Chapter 2's MNIST classifier of ``profile`` (its cached run: trained once, then loaded)."""
    from mtvae.profiles import get_profile
    from mtvae.studies import vqvaes

    model, _ = vqvaes.classifier(vqvaes.Study(get_profile(profile), device=device,
                                              progress="none"))
    model.eval()
    return model


def _cvae_build(cfg: dict[str, Any]) -> Built:
    data = _data(cfg["train_size"])
    torch.manual_seed(int(cfg["seed"]))
    model = ConditionalVAE(data.x_shape, cfg["latent_dim"], n_classes=int(data.n_classes or 10),
                           hidden=tuple(cfg["hidden"]))
    return model, data, "sum"


def _cvae_score(cfg: dict[str, Any], model: nn.Module, data: Dataset, result: FitResult
                ) -> dict[str, Any]:
    from mtvae.studies.conditional import conditional_scores, score_generator

    assert isinstance(model, ConditionalVAE)
    clf = _classifier(cfg["classifier_profile"], _device(model))
    test, seed = data.test, int(cfg["seed"])
    x, y = test.x.to(_device(model)), test.y.to(_device(model))
    gen = torch.Generator(device=x.device).manual_seed(seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        k = int(cfg["eval_samples"])
        nelbo_y = float(-model.elbo(x, y, k).mean())
        nelbo_x = float(-model.marginal_elbo(x, k).mean())
        scores = score_generator(lambda q: model.sample(q, 1, gen), clf.predict_proba,
                                 model.n_classes, int(cfg["per_class"]), x.device)
        real = conditional_scores(x, y, clf.predict_proba(x))
    return {"test_nelbo_given_y": nelbo_y, "test_nelbo": nelbo_x, **scores, "real": real,
            **convergence(result, cfg["epochs"])}


def _heads_build(cfg: dict[str, Any]) -> Built:
    from mtvae.studies import auxiliary as A

    data = _data(cfg["train_size"])
    heads, targets = A.heads_of(data, DATASET)
    torch.manual_seed(int(cfg["seed"]))
    model = MultitaskVAE(data.x_shape, cfg["latent_dim"], heads=heads, targets=targets,
                         label_weight=float(cfg["label_weight"]),
                         hidden=tuple(cfg["hidden"]), likelihood="bernoulli")
    return model, data, "sum"


def _heads_score(cfg: dict[str, Any], model: nn.Module, data: Dataset, result: FitResult
                 ) -> dict[str, Any]:
    from mtvae.studies import auxiliary as A
    from mtvae.studies.conditional import head_conditional_sample, score_generator

    assert isinstance(model, MultitaskVAE)
    head = next(iter(model.heads))
    clf = _classifier(cfg["classifier_profile"], _device(model))
    seed, dev = int(cfg["seed"]), _device(model)
    gen = torch.Generator(device=dev).manual_seed(seed)
    scores = score_generator(lambda q: head_conditional_sample(model, head, q, gen),
                             clf.predict_proba, model.n_classes[head], int(cfg["per_class"]),
                             dev)
    elbo = A.split_elbo(model, data.test, int(cfg["eval_samples"]), seed)
    acc = A.split_head_accuracy(model, data.test)
    return {"test_nelbo": elbo["nelbo"], "test_head_acc": float(acc[head]), **scores,
            **convergence(result, cfg["epochs"])}


def _device(model: nn.Module) -> str:
    return str(next(model.parameters()).device)


@register("cvae")
def cvae(config: dict[str, Any], device: str) -> dict[str, Any]:
    """A CVAE on MNIST-5k: test −ELBO(x, y) and the bound on −log p(x) (``test_nelbo``,
    comparable with a VAE's −ELBO), scores of its generated and of the real test images."""
    return single("cvae", CVAE_KEYS, _cvae_build, _cvae_score, config, device)


@register_stacked("cvae")
def cvae_stacked(configs: list[dict[str, Any]], device: str
                 ) -> list[dict[str, Any] | BaseException]:
    """:func:`cvae` for runs that differ only in ``seed``, trained as one stacked job."""
    return stacked("cvae", CVAE_KEYS, _cvae_build, _cvae_score, configs, device)


@register("heads-gen")
def heads_gen(config: dict[str, Any], device: str) -> dict[str, Any]:
    """The multitask VAE with a digit head (every label, the sum at ``label_weight``) as a
    label-conditioned generator; its test −ELBO and head accuracy beside the scores."""
    return single("heads-gen", HEADS_KEYS, _heads_build, _heads_score, config, device)


@register_stacked("heads-gen")
def heads_gen_stacked(configs: list[dict[str, Any]], device: str
                      ) -> list[dict[str, Any] | BaseException]:
    return stacked("heads-gen", HEADS_KEYS, _heads_build, _heads_score, configs, device)
