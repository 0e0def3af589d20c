"""Run kinds of the grid ``aux`` (Chapter 3.2): supervised heads on a VAE's code.

* ``aux``: a :class:`~mtvae.models.MultitaskVAE` with supervised heads on z (MNIST-5k's
  digit at a label fraction, or every shapes factor), the heads weighted by
  ``label_weight`` and combined by ``method``;
* ``aux-plain``: the plain VAE (no labels in training) with linear probes on its posterior
  means — the models and data of :mod:`mtvae.studies.auxiliary`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from mtvae.data import Dataset
from mtvae.data.semisup import with_label_fraction
from mtvae.experiments.kinds.registry import register, register_stacked
from mtvae.experiments.kinds.training import (
    Built,
    convergence,
    image_data,
    single,
    stacked,
)
from mtvae.models import VAE, MultitaskVAE
from mtvae.probes import linear_probe
from mtvae.train import FitResult

AUX_KEYS = ("dataset", "method", "seed", "label_fraction", "label_weight", "latent_dim",
            "hidden", "batch_size", "lr", "epochs", "patience", "train_size", "shapes_n",
            "eval_samples")
PLAIN_KEYS = ("dataset", "seed", "latent_dim", "hidden", "batch_size", "lr", "epochs",
              "patience", "train_size", "shapes_n", "eval_samples", "probe_fractions")
PLAIN = "plain"
"""``method`` the ``aux-plain`` kind gives its runs internally (no combiner: the VAE alone)."""


def _mean(values: dict[str, float]) -> float:
    v = [x for x in values.values() if not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


def _aux_build(cfg: dict[str, Any]) -> Built:
    from mtvae.studies import auxiliary as A

    base = image_data(cfg["dataset"], cfg["train_size"], cfg["shapes_n"])
    heads, targets = A.heads_of(base, cfg["dataset"])
    plain = cfg["method"] == PLAIN
    data = with_label_fraction(base, float(cfg.get("label_fraction", 1.0)),
                               seed=int(cfg["seed"]))
    torch.manual_seed(cfg["seed"])
    opts: dict[str, Any] = {"hidden": tuple(cfg["hidden"]), "likelihood": "bernoulli"}
    model: VAE = (VAE(base.x_shape, cfg["latent_dim"], **opts) if plain else
                  MultitaskVAE(base.x_shape, cfg["latent_dim"], heads=heads, targets=targets,
                               label_weight=float(cfg["label_weight"]), **opts))
    return model, data, "sum" if plain else cfg["method"]


def _aux_score(cfg: dict[str, Any], model: nn.Module, data: Dataset, result: FitResult
               ) -> dict[str, Any]:
    from mtvae.studies import auxiliary as A

    base = image_data(cfg["dataset"], cfg["train_size"], cfg["shapes_n"])
    _, targets = A.heads_of(base, cfg["dataset"])
    n, seed = int(cfg["eval_samples"]), int(cfg["seed"])
    val, test = A.split_elbo(model, data.val, n, seed), A.split_elbo(model, base.test, n, seed)
    out: dict[str, Any] = {"val_nelbo": val["nelbo"], "val_kl": val["kl"],
                           "test_nelbo": test["nelbo"], "test_kl": test["kl"],
                           **convergence(result, cfg["epochs"])}
    if cfg["method"] == PLAIN:
        assert isinstance(model, VAE)
        z_train, z_test = A.codes(model, base.train.x), A.codes(model, base.test.x)
        z_val = A.codes(model, base.val.x)
        probes, val_probes = {}, {}
        for frac in cfg["probe_fractions"]:
            marked = with_label_fraction(base, float(frac), seed=seed)
            lab = marked.train.tensors["labelled"].cpu() > 0
            vlab = marked.val.tensors["labelled"].cpu() > 0
            probes[str(frac)] = {h: linear_probe(z_train[lab], A.label(base.train, t)[lab],
                                                 z_test, A.label(base.test, t))
                                 for h, t in targets.items()}
            val_probes[str(frac)] = {h: linear_probe(z_train[lab], A.label(base.train, t)[lab],
                                                     z_val[vlab], A.label(base.val, t)[vlab])
                                     for h, t in targets.items()} if bool(vlab.any()) else {}
        return out | {"probe_acc": probes, "val_probe_acc": val_probes}
    assert isinstance(model, MultitaskVAE)
    val_lab = A.split_head_accuracy(model, data.val, labelled_only=True)
    val_all = A.split_head_accuracy(model, data.val)
    test_acc = A.split_head_accuracy(model, base.test)
    return out | {"val_head_acc": _mean(val_lab), "val_head_acc_all": _mean(val_all),
                  "val_head_acc_per": val_lab,
                  "n_val_labelled": int((data.val.tensors["labelled"] > 0).sum()),
                  "head_acc": test_acc, "test_head_acc": _mean(test_acc)}


@register("aux")
def aux(config: dict[str, Any], device: str) -> dict[str, Any]:
    """A multitask VAE of the ``aux`` grid, scored on both splits.

    ``val_head_acc``: mean over heads of the accuracy on the LABELLED validation rows (the
    labels a run at this fraction may use); ``val_head_acc_all`` on every validation row;
    ``val_nelbo``: validation −ELBO. Test: ``test_nelbo``, ``test_kl``, ``head_acc`` per head and
    ``test_head_acc`` (their mean). Convergence: :func:`convergence`.
    """
    return single("aux", AUX_KEYS, _aux_build, _aux_score, config, device)


@register_stacked("aux")
def aux_stacked(configs: list[dict[str, Any]], device: str
                ) -> list[dict[str, Any] | BaseException]:
    """:func:`aux` for runs that differ only in ``seed``, trained as one stacked job."""
    return stacked("aux", AUX_KEYS, _aux_build, _aux_score, configs, device)


@register("aux-plain")
def aux_plain(config: dict[str, Any], device: str) -> dict[str, Any]:
    """The plain VAE of the ``aux`` grid (no labels in training): −ELBO on both splits and
    linear probes on its posterior means at every ``probe_fractions`` (``probe_acc`` on test,
    ``val_probe_acc`` on the labelled validation rows), convergence."""
    return single("aux-plain", PLAIN_KEYS, _aux_build, _aux_score,
                   config | {"method": PLAIN}, device)


@register_stacked("aux-plain")
def aux_plain_stacked(configs: list[dict[str, Any]], device: str
                      ) -> list[dict[str, Any] | BaseException]:
    return stacked("aux-plain", PLAIN_KEYS, _aux_build, _aux_score,
                    [c | {"method": PLAIN} for c in configs], device)
