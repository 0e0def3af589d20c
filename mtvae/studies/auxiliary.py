"""Chapter 3.2, "Auxiliary tasks": the pieces the ``aux`` and ``cvae`` grids' run kinds share.

Two ways to get a classifier out of a VAE when only a fraction of the training labels may
be used (Kingma et al. 2014): (a) train a plain VAE without labels and fit a linear probe on
the posterior means of the labelled training images; (b) train a multitask VAE whose linear
heads on z learn from the labelled rows during training (:class:`~mtvae.models.MultitaskVAE`).
Data: MNIST-5k with a digit head, and procedural shapes (Matthey et al. 2017) with one head
per generative factor. The runs themselves are the kinds of
:mod:`mtvae.experiments.kinds.aux` (``aux``, ``aux-plain``) and
:mod:`mtvae.experiments.kinds.conditional`; the chapter reads them through
:mod:`mtvae.studies.settings`. Here: the heads of a dataset, labels, codes, head accuracy and
the ELBO on a split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from mtvae.data import Dataset, Split
from mtvae.models import VAE, MultitaskVAE
from mtvae.models.multitask import Target, factor_targets


def heads_of(data: Dataset, dataset: str) -> tuple[dict[str, int], dict[str, Target]]:
    """Head sizes and targets of ``data``: the digit (MNIST-5k) or every generative factor
    (shapes)."""
    if dataset == "mnist5k":
        return {"y_digit": int(data.n_classes or 10)}, {"y_digit": "y"}
    names = list(data.info["factor_names"])  # type: ignore[call-overload]
    targets = factor_targets(names, names)
    sizes = dict(zip(names, data.info["factor_sizes"], strict=True))  # type: ignore[call-overload]
    return {k: int(sizes[k[2:]]) for k in targets}, targets


def label(split: Any, target: Target) -> torch.Tensor:
    """The labels a target names, from a split's tensors (on the CPU)."""
    key, col = (target, None) if isinstance(target, str) else target
    y = split.tensors[key]
    return (y if col is None else y[:, col]).cpu()


@torch.no_grad()
def codes(model: VAE, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Posterior means of ``x`` (on the CPU)."""
    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([model.encode(x[i : i + batch_size].to(dev))[0].cpu()
                      for i in range(0, len(x), batch_size)])


@torch.no_grad()
def split_head_accuracy(model: MultitaskVAE, split: Split, labelled_only: bool = False
                        ) -> dict[str, float]:
    """Accuracy of every head at the posterior mean on ``split`` (with ``labelled_only``,
    on its rows whose ``labelled`` mask is set: the labels a semi-supervised run may use)."""
    model.eval()
    dev = next(model.parameters()).device
    probs = model.predict(split.x.to(dev))
    keep = (split.tensors["labelled"].cpu() > 0 if labelled_only
            else torch.ones(len(split), dtype=torch.bool))
    if not bool(keep.any()):
        return {h: float("nan") for h in probs}
    return {h: float((p.argmax(-1).cpu() == label(split, model.targets[h]))[keep]
                     .float().mean()) for h, p in probs.items()}


@torch.no_grad()
def split_elbo(model: nn.Module, split: Split, samples: int, seed: int) -> dict[str, float]:
    """Negative ELBO and KL per image of ``split``, averaged over ``samples`` draws."""
    model.eval()
    torch.manual_seed(seed)
    dev = next(model.parameters()).device
    x = split.x.to(dev)
    vae_terms = VAE.loss_terms  # the ELBO alone, whatever heads the model has
    stats = [vae_terms(model, {"x": x}).stats for _ in range(samples)]  # type: ignore[arg-type]
    return {"nelbo": float(np.mean([float(t["nelbo"]) for t in stats])),
            "kl": float(np.mean([float(t["kl"]) for t in stats]))}
