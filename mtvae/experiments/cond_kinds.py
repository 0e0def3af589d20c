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

from mtvae.data import Dataset
from mtvae.experiments.kinds import _require, register
from mtvae.experiments.setting_kinds import _train, convergence
from mtvae.models import MultitaskVAE
from mtvae.models.cvae import ConditionalVAE

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


def _fit_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg | {"method": "sum"}


@register("cvae")
def cvae(config: dict[str, Any], device: str) -> dict[str, Any]:
    """A CVAE on MNIST-5k: test −ELBO(x, y) and the bound on −log p(x) (``nelbo_marginal``,
    comparable with a VAE's −ELBO), scores of its generated and of the real test images."""
    from mtvae.studies.conditional import conditional_scores, score_generator

    _require(config, CVAE_KEYS, "cvae")
    data = _data(config["train_size"])
    seed = int(config["seed"])
    torch.manual_seed(seed)
    model = ConditionalVAE(data.x_shape, config["latent_dim"], n_classes=int(data.n_classes or 10),
                           hidden=tuple(config["hidden"]))
    result = _train("cvae", _fit_cfg(config), model, data, device)
    clf = _classifier(config["classifier_profile"], device)
    test = data.test.to(device) if hasattr(data.test, "to") else data.test
    model = model.to(device)
    gen = torch.Generator(device=test.x.device).manual_seed(seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        k = int(config["eval_samples"])
        nelbo_y = float(-model.elbo(test.x, test.y, k).mean())
        nelbo_x = float(-model.marginal_elbo(test.x, k).mean())
        scores = score_generator(lambda q: model.sample(q, 1, gen), clf.predict_proba,
                                 model.n_classes, int(config["per_class"]), test.x.device)
        real = conditional_scores(test.x, test.y, clf.predict_proba(test.x))
    return {"test_nelbo_given_y": nelbo_y, "test_nelbo": nelbo_x, **scores, "real": real,
            **convergence(result, config["epochs"])}


@register("heads-gen")
def heads_gen(config: dict[str, Any], device: str) -> dict[str, Any]:
    """The multitask VAE with a digit head (every label, the sum at ``label_weight``) as a
    label-conditioned generator; its test −ELBO and head accuracy beside the scores."""
    from mtvae.studies import auxiliary as A
    from mtvae.studies.conditional import head_conditional_sample, score_generator

    _require(config, HEADS_KEYS, "heads-gen")
    data = _data(config["train_size"])
    heads, targets = A.heads_of(data, DATASET)
    seed = int(config["seed"])
    torch.manual_seed(seed)
    model = MultitaskVAE(data.x_shape, config["latent_dim"], heads=heads, targets=targets,
                         label_weight=float(config["label_weight"]),
                         hidden=tuple(config["hidden"]), likelihood="bernoulli")
    result = _train("heads-gen", _fit_cfg(config), model, data, device)
    clf = _classifier(config["classifier_profile"], device)
    model = model.to(device)
    test = data.test
    gen = torch.Generator(device=test.x.device).manual_seed(seed)
    head = next(iter(heads))
    scores = score_generator(lambda q: head_conditional_sample(model, head, q, gen),
                             clf.predict_proba, model.n_classes[head], int(config["per_class"]),
                             test.x.device)
    elbo = A.split_elbo(model, test, int(config["eval_samples"]), seed)
    acc = A.split_head_accuracy(model, test)
    return {"test_nelbo": elbo["nelbo"], "test_head_acc": float(acc[head]), **scores,
            **convergence(result, config["epochs"])}
