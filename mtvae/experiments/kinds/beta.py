"""Run kind ``beta`` of the grid ``beta``: Chapter 1's beta-VAE at the reference budget.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtvae import metrics as M
from mtvae.data import Dataset
from mtvae.experiments.kinds.registry import register, register_stacked
from mtvae.experiments.kinds.training import (
    Built,
    convergence,
    mnist,
    on_model,
    single,
    stacked,
)
from mtvae.models import VAE
from mtvae.train import FitResult

BETA_KEYS = ("beta", "seed", "latent_dim", "hidden", "batch_size", "lr", "epochs", "patience",
             "train_size")


def _beta_build(cfg: dict[str, Any]) -> Built:
    data = mnist(cfg["train_size"])
    torch.manual_seed(cfg["seed"])
    model = VAE(data.x_shape, cfg["latent_dim"], likelihood="bernoulli", arch="mlp",
                hidden=tuple(cfg["hidden"]), beta=float(cfg["beta"]))
    return model, data, "sum"


def _beta_score(cfg: dict[str, Any], model: nn.Module, data: Dataset, result: FitResult
                ) -> dict[str, Any]:
    data = on_model(model, data)
    out: dict[str, Any] = {}
    for name, split in (("val", data.val), ("test", data.test)):
        torch.manual_seed(cfg["seed"])
        dist, rate = M.elbo_parts(model, split)
        out |= {f"{name}_rate": float(rate.mean()), f"{name}_distortion": float(dist.mean()),
                f"{name}_nelbo": float((dist + rate).mean())}
    au, _ = M.active_units(model, data.test)
    return out | {"active_units": au, "kl_per_dim": M.kl_per_dim(model, data.test).tolist()} \
        | convergence(result, cfg["epochs"])


@register("beta")
def beta(config: dict[str, Any], device: str) -> dict[str, Any]:
    """A beta-VAE on MNIST-5k: rate, distortion and −ELBO on both splits, active units and
    KL per dimension on test, convergence."""
    return single("beta", BETA_KEYS, _beta_build, _beta_score, config, device)


@register_stacked("beta")
def beta_stacked(configs: list[dict[str, Any]], device: str
                 ) -> list[dict[str, Any] | BaseException]:
    return stacked("beta", BETA_KEYS, _beta_build, _beta_score, configs, device)
