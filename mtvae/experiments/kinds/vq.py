"""Run kind ``vqhead`` of the grid ``vqhead`` (Chapter 2).

Chapter 2's VQ-VAE with a label head on z_q, the head weighted by ``label_weight``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtvae import metrics as M
from mtvae.experiments.kinds.registry import register, require
from mtvae.experiments.kinds.training import convergence, mnist, on_model, train
from mtvae.imputation.vae import conflict_summary

VQ_KEYS = ("method", "seed", "label_weight", "quantizer", "num_codes", "code_dim", "channels",
           "batch_size", "lr", "epochs", "patience", "train_size")


@torch.no_grad()
def _vq_scores(model: nn.Module, split: Any) -> dict[str, float]:
    dist = torch.cat([model.distortion(b["x"]) for b in split.batches(500)])  # type: ignore[operator]
    logits = torch.cat([model.classify(b["x"]) for b in split.batches(500)])  # type: ignore[operator]
    return {"distortion": float(dist.mean()),
            "accuracy": float((logits.argmax(1) == split.y).float().mean())}


@register("vqhead")
def vqhead(config: dict[str, Any], device: str) -> dict[str, Any]:
    """A VQ-VAE with a label head (weight ``label_weight``) trained with ``method``: head
    accuracy and distortion on both splits, code use on test, convergence, and how the two
    tasks' gradients at z_q compared (``conflict``: sizes, cosine; every 10th step)."""
    from mtvae.studies.vqvaes import build_vq

    require(config, VQ_KEYS, "vqhead")
    cfg = config
    data = mnist(cfg["train_size"])
    torch.manual_seed(cfg["seed"])
    model = build_vq({"quantizer": cfg["quantizer"], "num_codes": cfg["num_codes"],
                      "fsq_levels": None, "code_dim": cfg["code_dim"],
                      "channels": cfg["channels"], "beta": 0.25, "decay": 0.99,
                      "n_classes": 10, "label_weight": float(cfg["label_weight"])})
    result = train("vqhead", cfg, model, data, device, cfg["method"], monitor_every=10)
    data = on_model(model, data)
    val, test = _vq_scores(model, data.val), _vq_scores(model, data.test)
    usage = M.codebook_usage(model, data.test, model.num_codes, transform=False)
    return ({f"val_{k}": v for k, v in val.items()} | {f"test_{k}": v for k, v in test.items()}
            | {"test_perplexity": usage["perplexity"],
               "test_fraction_used": usage["fraction_used"]}
            | convergence(result, cfg["epochs"]) | {"conflict": conflict_summary(result)})
