"""Chapter 2 experiments: VQ-VAEs on MNIST-5k, their codebooks, a learned prior, and a
comparison with the VAE at matched latent information.

Every run goes through :func:`mtvae.results.cached_run` (one JSON record per run under
``results/ch02-<profile>/``) and :func:`mtvae.train.fit` with a checkpoint under the cache
folder, so re-executing the chapter loads instead of retraining and an interrupted
execution resumes. Runs that depend on others (a prior on a VQ-VAE's codes, samples scored
by the classifier) carry the configs they depend on inside their own config.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch
from torch import nn

from mtvae import metrics as M
from mtvae.data import Dataset, Split, load
from mtvae.device import resolve_device
from mtvae.models import VQVAE, Classifier, CodePrior
from mtvae.profiles import VQStudy
from mtvae.results import cache_dir, cached_run, run_id
from mtvae.studies.base import ChapterStudy, fit_info
from mtvae.train import FitResult, fit

LN2 = math.log(2)
HISTORY = ("epoch", "task/x", "task/y", "reg/codebook", "reg/commitment", "perplexity",
           "val_loss")  # per-epoch training averages kept in each VQ-VAE record


class Study(ChapterStudy):
    """Shared context of the chapter's runs."""

    chapter = "02"

    @property
    def s(self) -> VQStudy:
        return self.profile.vq

    def mnist(self, binarize: str | None = "dynamic") -> Dataset:
        if binarize not in self._data:
            self._data[binarize] = load("mnist5k", binarize=binarize,
                                        train_size=self.s.train_size).to(self.device)
        return self._data[binarize]

    def fit(self, name: str, cfg: dict[str, Any], model: nn.Module, data: Dataset,
            **kw: Any) -> FitResult:
        """Train (or load from its checkpoint) ``model`` as ``cfg`` says."""
        ckpt = cache_dir() / self.grid / f"{run_id(name, cfg)}.pt"
        return fit(model, data, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                   lr=cfg["lr"], patience=cfg["patience"], seed=cfg["seed"],
                   device=self.device, checkpoint=ckpt, progress=self.progress,
                   desc=f"{name} seed={cfg['seed']}", **kw)

    def run(self, name: str, cfg: dict[str, Any], compute: Any) -> dict[str, Any]:
        return cached_run(self.grid, name, cfg, compute, device=self.device)

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=resolve_device(self.device)).manual_seed(seed)


# -- VQ-VAEs ---------------------------------------------------------------------------------
def vq_config(study: Study, seed: int, quantizer: str | None = None,
              num_codes: int | None = None, epochs: int | None = None,
              **extra: Any) -> dict[str, Any]:
    s = study.s
    q = quantizer or s.quantizer
    return {"model": "vqvae", "quantizer": q,
            "num_codes": None if q == "fsq" else (num_codes or s.num_codes),
            "fsq_levels": list(s.fsq_levels) if q == "fsq" else None,
            "code_dim": s.code_dim, "channels": s.channels, "beta": 0.25, "decay": 0.99,
            "batch_size": s.batch_size, "lr": s.lr, "epochs": epochs or s.epochs,
            "patience": s.patience, "train_size": s.train_size, "binarize": "dynamic",
            "seed": seed, "device": study.device} | extra


def build_vq(cfg: dict[str, Any]) -> VQVAE:
    options: dict[str, Any] = {"levels": tuple(cfg["fsq_levels"])} if cfg["fsq_levels"] else {}
    if cfg["quantizer"] != "fsq":
        options |= {"beta": cfg["beta"], "decay": cfg["decay"]}
    return VQVAE((1, 28, 28), cfg["quantizer"], cfg["num_codes"], code_dim=cfg["code_dim"],
                 channels=cfg["channels"], n_classes=cfg.get("n_classes"),
                 label_weight=cfg.get("label_weight", 1.0), **options)


def train_vq(study: Study, name: str, cfg: dict[str, Any]) -> tuple[VQVAE, FitResult]:
    torch.manual_seed(cfg["seed"])
    model = build_vq(cfg)
    res = study.fit(name, cfg, model, study.mnist("dynamic"),
                    combiner=cfg.get("combiner", "sum"), monitor_every=cfg.get("monitor_every"))
    return model, res


@torch.no_grad()
def vq_metrics(study: Study, model: VQVAE, res: FitResult, seed: int) -> dict[str, Any]:
    """Codebook use over one training epoch and on test, reconstruction error on test."""
    data = study.mnist("dynamic")
    grey = study.mnist(None).test.x
    usage = M.codebook_usage(model, data.train, model.num_codes, seed=seed)
    test_usage = M.codebook_usage(model, data.test, model.num_codes, transform=False)
    dist = torch.cat([model.distortion(b["x"]) for b in data.test.batches(500)])
    recon = torch.cat([model.reconstruct(b["x"]) for b in data.test.batches(500)])
    restarts = getattr(model.quantizer, "restarts", None)
    return fit_info(res) | {
        "num_codes": model.num_codes, "capacity_bits": model.capacity_bits,
        "fraction_used": usage["fraction_used"], "codes_used": usage["codes_used"],
        "epoch_perplexity": usage["perplexity"], "train_counts": usage["counts"],
        "test_fraction_used": test_usage["fraction_used"],
        "test_perplexity": test_usage["perplexity"],
        "batch_perplexity": res.history[-1].get("perplexity", float("nan")),
        "restarts": int(restarts) if restarts is not None else 0,
        "test_distortion": float(dist.mean()),
        "recon_mse_grey": float((recon - grey).square().mean()),
        "history": [{k: row[k] for k in HISTORY if k in row} for row in res.history],
    }


def vq_run(study: Study, cfg: dict[str, Any], name: str = "vq") -> dict[str, Any]:
    def compute() -> dict[str, Any]:
        model, res = train_vq(study, name, cfg)
        return vq_metrics(study, model, res, cfg["seed"])

    return study.run(name, cfg, compute)["metrics"]


def ablation(study: Study) -> pd.DataFrame:
    """Codebook use per remedy (at the reference size) and per codebook size."""
    s = study.s
    cells = [(q, s.num_codes) for q in s.remedies]
    cells += [(q, k) for q in s.size_remedies for k in s.sizes if (q, k) not in cells]
    rows = []
    for q, k in cells:
        for seed in s.ablation_seeds:
            cfg = vq_config(study, seed, q, k, epochs=s.ablation_epochs)
            rows.append({"quantizer": q, "seed": seed, **vq_run(study, cfg)})
    return pd.DataFrame(rows)


def ablation_model(study: Study, quantizer: str, num_codes: int | None = None,
                   seed: int = 0) -> VQVAE:
    """A trained model of the ablation (loaded from its checkpoint)."""
    cfg = vq_config(study, seed, quantizer, num_codes, epochs=study.s.ablation_epochs)
    return train_vq(study, "vq", cfg)[0]


def reference_model(study: Study, seed: int = 0) -> tuple[VQVAE, Dataset]:
    """The reference VQ-VAE of one seed (trained or loaded from its checkpoint)."""
    model, _ = train_vq(study, "vq", vq_config(study, seed))
    return model, study.mnist("dynamic")


# -- the learned prior ----------------------------------------------------------------------
@torch.no_grad()
def code_dataset(model: VQVAE, data: Dataset, seed: int) -> Dataset:
    """Code grids of one binarisation draw of the training images and of val/test."""
    model.eval()
    gen = torch.Generator(device=data.train.x.device).manual_seed(seed)

    def encode(split: Split, train: bool) -> Split:
        return Split({"x": torch.cat([model.codes(b["x"]) for b in
                                      split.batches(500, train=train, generator=gen)])})

    return Dataset("codes", encode(data.train, True), encode(data.val, False),
                   encode(data.test, False), x_shape=model.grid)


def prior_config(study: Study, seed: int, clf_cfg: dict[str, Any]) -> dict[str, Any]:
    """The prior of the reference VQ-VAE of ``seed``, and how its samples are scored."""
    s = study.s
    return {"model": "prior", "vq": vq_config(study, seed), "d_model": s.prior_d_model,
            "layers": s.prior_layers, "heads": 4, "dropout": 0.1, "epochs": s.prior_epochs,
            "patience": s.prior_patience, "batch_size": 100, "lr": s.prior_lr, "seed": seed,
            "n_samples": s.n_samples, "classifier": clf_cfg, "device": study.device}


def train_prior(study: Study, vq: VQVAE, cfg: dict[str, Any]) -> tuple[CodePrior, Dataset,
                                                                       FitResult]:
    codes = code_dataset(vq, study.mnist("dynamic"), cfg["seed"])
    torch.manual_seed(cfg["seed"])
    prior = CodePrior(vq.num_codes, vq.grid, cfg["d_model"], cfg["layers"], cfg["heads"],
                      cfg["dropout"])
    res = study.fit("prior", cfg, prior, codes)
    return prior, codes, res


def classifier(study: Study) -> tuple[Classifier, dict[str, Any]]:
    """The digit classifier that scores generated images (grey MNIST-5k, one seed)."""
    s = study.s
    cfg = {"model": "classifier", "epochs": s.classifier_epochs, "patience": 3,
           "batch_size": 100, "lr": 1e-3, "train_size": s.train_size, "seed": 0,
           "device": study.device}
    data = study.mnist(None)
    torch.manual_seed(0)
    model = Classifier()
    res = study.fit("classifier", cfg, model, data)

    def compute() -> dict[str, Any]:
        probs = model.predict_proba(data.test.x)
        acc = float((probs.argmax(1) == data.test.y.cpu()).float().mean())
        return fit_info(res) | {"test_accuracy": acc} | M.class_scores(probs)

    return model, study.run("classifier", cfg, compute)


@torch.no_grad()
def score_images(clf: Classifier, images: torch.Tensor) -> dict[str, Any]:
    return M.class_scores(clf.predict_proba(images))


def reference_runs(study: Study) -> pd.DataFrame:
    """The reference VQ-VAE over seeds, each with its prior: code use, reconstruction,
    the prior's bits per image (test codes) and classifier scores of prior samples."""
    s = study.s
    clf, clf_rec = classifier(study)
    rows = []
    for seed in s.seeds:
        row = vq_run(study, vq_config(study, seed))
        cfg = prior_config(study, seed, clf_rec["config"])

        def compute(cfg: dict[str, Any] = cfg) -> dict[str, Any]:
            vq, _ = reference_model(study, cfg["seed"])
            prior, codes, res = train_prior(study, vq, cfg)
            with torch.no_grad():
                nll = torch.cat([-prior.log_prob(b["x"]) for b in codes.test.batches(500)])
                train_nll = torch.cat([-prior.log_prob(b["x"]) for b in
                                       codes.train.batches(500)])
                samples = prior.sample(cfg["n_samples"], study.generator(cfg["seed"]))
                images = torch.cat([vq.decode_indices(samples[i: i + 500])
                                    for i in range(0, len(samples), 500)])
            return {f"prior_{k}": v for k, v in fit_info(res).items()} | {
                "prior_bits": float(nll.mean()) / LN2,
                "prior_train_bits": float(train_nll.mean()) / LN2,
                "sample_codes_used": int(samples.unique().numel()),
            } | score_images(clf, images)

        row |= study.run("prior", cfg, compute)["metrics"]
        rows.append({"model": "VQ-VAE", "seed": seed, **row})
    return pd.DataFrame(rows)


def reference_prior(study: Study, seed: int = 0) -> tuple[CodePrior, VQVAE]:
    """The learned prior of the reference VQ-VAE of ``seed`` (and that VQ-VAE)."""
    vq, _ = reference_model(study, seed)
    prior, _, _ = train_prior(study, vq, prior_config(study, seed, classifier(study)[1]["config"]))
    return prior, vq
