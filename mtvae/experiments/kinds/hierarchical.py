"""Run kind ``hier`` of the grid ``hier`` (Chapter 3.4).

A :class:`~mtvae.models.HierarchicalVAE` at (beta1, beta2), the two layers' rates as MOO
tasks when ``method`` is not the sum (:mod:`mtvae.studies.hierarchical`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtvae.data import Dataset
from mtvae.experiments.kinds.registry import register, register_stacked
from mtvae.experiments.kinds.training import (
    Built,
    convergence,
    image_data,
    single,
    stacked,
)
from mtvae.models import HierarchicalVAE
from mtvae.probes import linear_probe
from mtvae.train import FitResult

HIER_KEYS = ("dataset", "method", "seed", "beta1", "beta2", "z1_dim", "z2_dim", "hidden",
             "batch_size", "lr", "epochs", "patience", "train_size", "shapes_n")


def _hier_build(cfg: dict[str, Any]) -> Built:
    data = image_data(cfg["dataset"], cfg["train_size"], cfg["shapes_n"])
    torch.manual_seed(cfg["seed"])
    model = HierarchicalVAE(data.x_shape, cfg["z1_dim"], cfg["z2_dim"],
                            hidden=tuple(cfg["hidden"]), beta1=cfg["beta1"], beta2=cfg["beta2"],
                            likelihood="bernoulli", rate_tasks=cfg["method"] != "sum")
    return model, data, cfg["method"]


def _hier_score(cfg: dict[str, Any], model: nn.Module, data: Dataset, result: FitResult
                ) -> dict[str, Any]:
    from mtvae.studies import hierarchical as H

    assert isinstance(model, HierarchicalVAE)
    model.cpu().eval()
    val, test = H.split_parts(model, data.val), H.split_parts(model, data.test)
    train_codes, test_codes = H._codes(model, data.train.x), H._codes(model, data.test.x)
    y_train, y_test = H.labels_of(data, "train"), H.labels_of(data, "test")
    probes = {layer: {t: linear_probe(train_codes[layer], y_train[t], test_codes[layer],
                                      y_test[t]) for t in y_train} for layer in H.LAYERS}
    return ({f"val_{k}": v for k, v in val.items()} | {f"test_{k}": v for k, v in test.items()}
            | {"active_z1": int((test_codes["z1"].var(0) > H.ACTIVE_THRESHOLD).sum()),
               "active_z2": int((test_codes["z2"].var(0) > H.ACTIVE_THRESHOLD).sum()),
               "probe": probes} | convergence(result, cfg["epochs"]))


@register("hier")
def hier(config: dict[str, Any], device: str) -> dict[str, Any]:
    """A two-layer VAE of the ``hier`` grid: distortion, rates and −ELBO on both splits
    (``val_*`` and ``test_*``), active units and linear probes per layer (test), convergence."""
    return single("hier", HIER_KEYS, _hier_build, _hier_score, config, device)


@register_stacked("hier")
def hier_stacked(configs: list[dict[str, Any]], device: str
                 ) -> list[dict[str, Any] | BaseException]:
    return stacked("hier", HIER_KEYS, _hier_build, _hier_score, configs, device)
