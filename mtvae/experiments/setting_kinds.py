"""Run kinds of the multitask settings' grids (issue 13): one trained model each, scored on
VALIDATION (what the staged grids choose on) and on TEST (what the chapters report), with
how the run stopped (:func:`convergence`).

* ``aux``: a :class:`~mtvae.models.MultitaskVAE` with supervised heads on z (MNIST-5k's
  digit at a label fraction, or every shapes factor), or the plain VAE with linear probes
  (``method="plain"``) — the models and data of :mod:`mtvae.studies.auxiliary`;
* ``mm``: a :class:`~mtvae.models.multimodal.MultimodalVAE` on paired digits with the label
  modality weighted by ``label_weight`` — coherence and per-modality likelihood on both splits
  (:func:`mtvae.studies.multimodal.evaluate`);
* ``hier``: a :class:`~mtvae.models.HierarchicalVAE` at (beta1, beta2), the rates as MOO tasks
  when ``method`` is not the sum (:mod:`mtvae.studies.hierarchical`);
* ``vqhead``: Chapter 2's VQ-VAE with a label head on z_q, the head weighted by
  ``label_weight``;
* ``beta``: Chapter 1's beta-VAE at the reference budget.

Every kind validates on the split ``fit`` early-stops on (validation), never on test.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mtvae import metrics as M
from mtvae.data import Dataset, load
from mtvae.data.semisup import with_label_fraction
from mtvae.experiments.kinds import _require, register, register_stacked
from mtvae.imputation.vae import conflict_summary
from mtvae.models import VAE, HierarchicalVAE, MultitaskVAE
from mtvae.models.multimodal import MultimodalVAE
from mtvae.probes import linear_probe
from mtvae.results import cache_dir, run_id
from mtvae.stack import fit_stacked
from mtvae.train import FitResult, fit

AUX_KEYS = ("dataset", "method", "seed", "label_fraction", "label_weight", "latent_dim",
            "hidden", "batch_size", "lr", "epochs", "patience", "train_size", "shapes_n",
            "eval_samples")
MM_KEYS = ("fusion", "method", "seed", "label_weight", "latent_dim", "hidden", "batch_size",
           "lr", "epochs", "patience", "train_size", "n_samples", "loglik_samples",
           "classifier_profile", "classifiers")
HIER_KEYS = ("dataset", "method", "seed", "beta1", "beta2", "z1_dim", "z2_dim", "hidden",
             "batch_size", "lr", "epochs", "patience", "train_size", "shapes_n")
VQ_KEYS = ("method", "seed", "label_weight", "quantizer", "num_codes", "code_dim", "channels",
           "batch_size", "lr", "epochs", "patience", "train_size")
BETA_KEYS = ("beta", "seed", "latent_dim", "hidden", "batch_size", "lr", "epochs", "patience",
             "train_size")
PLAIN_KEYS = ("dataset", "seed", "latent_dim", "hidden", "batch_size", "lr", "epochs",
              "patience", "train_size", "shapes_n", "eval_samples", "probe_fractions")
PLAIN = "plain"
"""``method`` the ``aux-plain`` kind gives its runs internally (no combiner: the VAE alone)."""


def convergence(result: FitResult, epochs: int) -> dict[str, Any]:
    """How the run stopped: epochs run, best epoch, whether patience stopped it, the cap."""
    return {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early, "epoch_cap": int(epochs),
            "best_val": result.best_val, "train_seconds": result.seconds}


def _checkpoint(kind: str, cfg: dict[str, Any]) -> Path:
    return cache_dir() / "grid" / f"{run_id(kind, cfg)}.pt"


def _fit_settings(cfg: dict[str, Any], combiner: str) -> dict[str, Any]:
    return {"epochs": cfg["epochs"], "batch_size": cfg["batch_size"], "lr": cfg["lr"],
            "patience": cfg["patience"], "combiner": combiner, "checkpoint_every": 30.0,
            "progress": "none"}


def _train(kind: str, cfg: dict[str, Any], model: nn.Module, data: Dataset, device: str,
           combiner: str = "sum", monitor_every: int | None = None) -> FitResult:
    """``fit`` with the run's checkpoint (a killed run resumes), deleted once it finished:
    the record written next is the durable state. ``monitor_every``: log the tasks'
    gradient statistics every this many steps (:class:`mtvae.moo.diagnostics.ConflictLog`)."""
    ckpt = _checkpoint(kind, cfg)
    result = fit(model, data, seed=cfg["seed"], device=device, checkpoint=ckpt,
                 desc=f"{kind} {cfg.get('method', '')} seed={cfg['seed']}",
                 monitor_every=monitor_every, **_fit_settings(cfg, combiner))
    model.eval()
    ckpt.unlink(missing_ok=True)
    return result


Built = tuple[nn.Module, Dataset, str]  # model, its data, its combiner
Builder = Callable[[dict[str, Any]], Built]
Scorer = Callable[[dict[str, Any], nn.Module, Dataset, FitResult], dict[str, Any]]


def _single(kind: str, keys: tuple[str, ...], build: Builder, score: Scorer,
            config: dict[str, Any], device: str, monitor_every: int | None = None
            ) -> dict[str, Any]:
    _require(config, keys, kind)
    model, data, combiner = build(config)
    return score(config, model, data, _train(kind, config, model, data, device, combiner,
                                             monitor_every))


def _stacked(kind: str, keys: tuple[str, ...], build: Builder, score: Scorer,
             configs: list[dict[str, Any]], device: str, monitor_every: int | None = None
             ) -> list[dict[str, Any] | BaseException]:
    """Runs that differ only in ``seed`` trained as one stacked job (:func:`fit_stacked`),
    then scored one by one as the single kind scores them."""
    for c in configs:
        _require(c, keys, kind)
    built = [build(c) for c in configs]
    combiner = built[0][2]
    ckpts: list[Path | None] = [_checkpoint(kind, c) for c in configs]
    settings = _fit_settings(configs[0], combiner) | {"monitor_every": monitor_every}
    results = fit_stacked([b[0] for b in built], [b[1] for b in built],
                          seeds=[int(c["seed"]) for c in configs], device=device,
                          checkpoints=ckpts, desc=f"{kind} {configs[0].get('method', '')}",
                          **settings)
    out: list[dict[str, Any] | BaseException] = []
    for c, (model, data, _), r, path in zip(configs, built, results, ckpts, strict=True):
        if isinstance(r, BaseException):
            out.append(r)
            continue
        model.eval()
        try:
            out.append(score(c, model, data, r))
        except Exception as err:  # one member's scoring failing leaves the others
            out.append(err)
        if path is not None:
            path.unlink(missing_ok=True)
    return out


@lru_cache(maxsize=4)
def _images(dataset: str, train_size: int | None, shapes_n: int) -> Dataset:
    from mtvae.studies.base import binarized_images

    return binarized_images(dataset, train_size, shapes_n)


def _mean(values: dict[str, float]) -> float:
    v = [x for x in values.values() if not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


# -- auxiliary heads -------------------------------------------------------------------------
def _aux_build(cfg: dict[str, Any]) -> Built:
    from mtvae.studies import auxiliary as A

    base = _images(cfg["dataset"], cfg["train_size"], cfg["shapes_n"])
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

    base = _images(cfg["dataset"], cfg["train_size"], cfg["shapes_n"])
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
    return _single("aux", AUX_KEYS, _aux_build, _aux_score, config, device)


@register_stacked("aux")
def aux_stacked(configs: list[dict[str, Any]], device: str
                ) -> list[dict[str, Any] | BaseException]:
    """:func:`aux` for runs that differ only in ``seed``, trained as one stacked job."""
    return _stacked("aux", AUX_KEYS, _aux_build, _aux_score, configs, device)


@register("aux-plain")
def aux_plain(config: dict[str, Any], device: str) -> dict[str, Any]:
    """The plain VAE of the ``aux`` grid (no labels in training): −ELBO on both splits and
    linear probes on its posterior means at every ``probe_fractions`` (``probe_acc`` on test,
    ``val_probe_acc`` on the labelled validation rows), convergence."""
    return _single("aux-plain", PLAIN_KEYS, _aux_build, _aux_score,
                   config | {"method": PLAIN}, device)


@register_stacked("aux-plain")
def aux_plain_stacked(configs: list[dict[str, Any]], device: str
                      ) -> list[dict[str, Any] | BaseException]:
    return _stacked("aux-plain", PLAIN_KEYS, _aux_build, _aux_score,
                    [c | {"method": PLAIN} for c in configs], device)


# -- multimodal ------------------------------------------------------------------------------
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
    data = _on_model(model, data)
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
    return _single("mm", MM_KEYS, _mm_build, _mm_score, config, device, MM_MONITOR)


@register_stacked("mm")
def mm_stacked(configs: list[dict[str, Any]], device: str
               ) -> list[dict[str, Any] | BaseException]:
    return _stacked("mm", MM_KEYS, _mm_build, _mm_score, configs, device, MM_MONITOR)


# -- hierarchical ----------------------------------------------------------------------------
def _hier_build(cfg: dict[str, Any]) -> Built:
    data = _images(cfg["dataset"], cfg["train_size"], cfg["shapes_n"])
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
    return _single("hier", HIER_KEYS, _hier_build, _hier_score, config, device)


@register_stacked("hier")
def hier_stacked(configs: list[dict[str, Any]], device: str
                 ) -> list[dict[str, Any] | BaseException]:
    return _stacked("hier", HIER_KEYS, _hier_build, _hier_score, configs, device)


# -- VQ-VAE label head ------------------------------------------------------------------------
@lru_cache(maxsize=2)
def _mnist(train_size: int | None) -> Dataset:
    return load("mnist5k", binarize="dynamic", train_size=train_size)


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

    _require(config, VQ_KEYS, "vqhead")
    cfg = config
    data = _mnist(cfg["train_size"])
    torch.manual_seed(cfg["seed"])
    model = build_vq({"quantizer": cfg["quantizer"], "num_codes": cfg["num_codes"],
                      "fsq_levels": None, "code_dim": cfg["code_dim"],
                      "channels": cfg["channels"], "beta": 0.25, "decay": 0.99,
                      "n_classes": 10, "label_weight": float(cfg["label_weight"])})
    result = _train("vqhead", cfg, model, data, device, cfg["method"], monitor_every=10)
    data = _on_model(model, data)
    val, test = _vq_scores(model, data.val), _vq_scores(model, data.test)
    usage = M.codebook_usage(model, data.test, model.num_codes, transform=False)
    return ({f"val_{k}": v for k, v in val.items()} | {f"test_{k}": v for k, v in test.items()}
            | {"test_perplexity": usage["perplexity"],
               "test_fraction_used": usage["fraction_used"]}
            | convergence(result, cfg["epochs"]) | {"conflict": conflict_summary(result)})


# -- Chapter 1's beta sweep --------------------------------------------------------------------
def _beta_build(cfg: dict[str, Any]) -> Built:
    data = _mnist(cfg["train_size"])
    torch.manual_seed(cfg["seed"])
    model = VAE(data.x_shape, cfg["latent_dim"], likelihood="bernoulli", arch="mlp",
                hidden=tuple(cfg["hidden"]), beta=float(cfg["beta"]))
    return model, data, "sum"


def _on_model(model: nn.Module, data: Dataset) -> Dataset:
    """``data`` on the device that ``fit`` left the model on (scores run there)."""
    return data.to(next(model.parameters()).device)


def _beta_score(cfg: dict[str, Any], model: nn.Module, data: Dataset, result: FitResult
                ) -> dict[str, Any]:
    data = _on_model(model, data)
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
    return _single("beta", BETA_KEYS, _beta_build, _beta_score, config, device)


@register_stacked("beta")
def beta_stacked(configs: list[dict[str, Any]], device: str
                 ) -> list[dict[str, Any] | BaseException]:
    return _stacked("beta", BETA_KEYS, _beta_build, _beta_score, configs, device)


def mm_model(config: dict[str, Any], device: str = "cpu") -> MultimodalVAE:
    """The trained model of the ``multimodal`` grid's run ``config``, for a chapter's
    figure: trained as the grid trained it (same seed, weight and method), with a checkpoint
    that is kept (``<id>-model.pt`` under the cache), so a re-executed chapter loads it."""
    _require(config, MM_KEYS, "mm")
    model, data, combiner = _mm_build(config)
    ckpt = cache_dir() / "grid" / f"{run_id('mm', config)}-model.pt"
    fit(model, data, seed=config["seed"], device=device, checkpoint=ckpt,
        desc=f"mm {config['fusion']} {config['method']} seed={config['seed']}",
        monitor_every=MM_MONITOR, **_fit_settings(config, combiner))
    return model.eval()
