"""Run kind ``mm`` of the grid ``multimodal`` (Chapter 3.3).

A :class:`~mtvae.models.multimodal.MultimodalVAE` on paired digits with the label modality
weighted by ``label_weight``: coherence and per-modality likelihood on both splits
(:func:`mtvae.studies.multimodal.evaluate`). :func:`mm_model` retrains a run's model for a
chapter's figure, keeping its checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from mtvae.data import Dataset, load
from mtvae.experiments.kinds.registry import register, register_stacked, require
from mtvae.experiments.kinds.training import (
    Built,
    convergence,
    fit_settings,
    on_model,
    single,
    stacked,
)
from mtvae.imputation.vae import conflict_summary
from mtvae.models.multimodal import MultimodalVAE
from mtvae.results import cache_dir, run_id
from mtvae.train import FitResult, fit

MM_KEYS = ("fusion", "method", "seed", "label_weight", "latent_dim", "hidden", "batch_size",
           "lr", "epochs", "patience", "train_size", "n_samples", "loglik_samples",
           "classifier_profile", "classifiers")


@lru_cache(maxsize=2)
def _paired(train_size: int | None, device: str) -> Dataset:
    return load("paired-digits", binarize="dynamic", train_size=train_size).to(device)


@lru_cache(maxsize=2)
def _classifiers(profile: str, device: str) -> tuple[dict[str, Callable[..., Any]],
                                                       dict[str, float]]:
    """The multimodal chapter's scorers of ``profile`` (Chapter 2's MNIST CNN and the 8x8
    digit CNN; trained once as the chapters' cached runs, then loaded)."""
    from mtvae.profiles import get_profile
    from mtvae.studies.multimodal import Study

    return Study(get_profile(profile), device=device, progress="none").classifiers()


def _nelbo(model: nn.Module, tensors: dict[str, torch.Tensor], seed: int) -> float:
    """Unweighted negative ELBO of the multimodal objective per example (one draw)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return float(model.loss_terms(tensors).stats["nelbo"])  # type: ignore[operator]


def _mm_build(cfg: dict[str, Any]) -> Built:
    data = _paired(cfg["train_size"], "cpu")  # fit / fit_stacked move it to the device
    torch.manual_seed(cfg["seed"])
    model = MultimodalVAE(cfg["latent_dim"], cfg["fusion"], hidden=cfg["hidden"],
                          modality_weights={"label": float(cfg["label_weight"])})
    return model, data, cfg["method"]


def _mm_score(cfg: dict[str, Any], model: nn.Module, data: Dataset, result: FitResult
              ) -> dict[str, Any]:
    from mtvae.studies.multimodal import directional, evaluate

    assert isinstance(model, MultimodalVAE)
    data = on_model(model, data)
    dev = next(model.parameters()).device
    classify, accuracy = _classifiers(cfg["classifier_profile"], dev.type)
    out: dict[str, Any] = {"classifier_accuracy": accuracy}
    for prefix, split in (("val_", data.val), ("", data.test)):
        gen = torch.Generator(device=split.x.device).manual_seed(int(cfg["seed"]))
        torch.manual_seed(cfg["seed"])
        sc = evaluate(model, split.tensors, classify, cfg["n_samples"], cfg["loglik_samples"],
                      gen)
        out |= {f"{prefix}{k}": v for k, v in sc.items()}
        out[f"{prefix}directional"] = directional(sc["cross"])
        out[f"{prefix}nelbo"] = _nelbo(model, split.tensors, int(cfg["seed"]))
    out["test_cross_mean"] = out["cross_mean"]
    out["test_nelbo"] = out.pop("nelbo")
    return out | convergence(result, cfg["epochs"]) | {"conflict": conflict_summary(result)}


MM_MONITOR = 10
"""Steps between two logs of the modalities' gradient statistics (the old study's rate)."""


@register("mm")
def mm(config: dict[str, Any], device: str) -> dict[str, Any]:
    """A multimodal VAE of the ``multimodal`` grid: coherence (``cross``, ``cross_mean``,
    ``joint_coherence``) and per-modality log-likelihood (``loglik``) on the validation
    pairs (``val_*``) and on the test pairs, unweighted −ELBO on both, convergence.

    Early stopping reads the *weighted* validation objective (the label weight is part of
    the sum being trained); the grid chooses on ``val_cross_mean``, not on it. ``conflict``:
    the modalities' gradient sizes and cosines at z (every :data:`MM_MONITOR`-th step).
    """
    return single("mm", MM_KEYS, _mm_build, _mm_score, config, device, MM_MONITOR)


@register_stacked("mm")
def mm_stacked(configs: list[dict[str, Any]], device: str
               ) -> list[dict[str, Any] | BaseException]:
    return stacked("mm", MM_KEYS, _mm_build, _mm_score, configs, device, MM_MONITOR)


def mm_model(config: dict[str, Any], device: str = "cpu") -> MultimodalVAE:
    """The trained model of the ``multimodal`` grid's run ``config``, for a chapter's
    figure: trained as the grid trained it (same seed, weight and method), with a checkpoint
    that is kept (``<id>-model.pt`` under the cache), so a re-executed chapter loads it."""
    require(config, MM_KEYS, "mm")
    model, data, combiner = _mm_build(config)
    ckpt = cache_dir() / "grid" / f"{run_id('mm', config)}-model.pt"
    fit(model, data, seed=config["seed"], device=device, checkpoint=ckpt,
        desc=f"mm {config['fusion']} {config['method']} seed={config['seed']}",
        monitor_every=MM_MONITOR, **fit_settings(config, combiner))
    return model.eval()
