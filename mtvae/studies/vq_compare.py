"""Chapter 2 comparisons: the VQ-VAE against the VAE at matched latent information, and a
multitask VQ-VAE whose label head shares the code grid with the decoder (the ``vqhead`` grid,
:func:`label_head`).

*Matched information.* A VQ-VAE's rate is the code length of its code grid under its
learned prior (bits per image); a VAE's rate is its KL, the bits-back code length of z.
The VAE is held at the VQ-VAE's measured rate by :class:`~mtvae.models.CapacityVAE`; a
plain beta = 1 VAE shows what the VAE does when it chooses its own rate. Both VAEs use the
VQ-VAE's encoder and decoder (``arch="grid"``): a Gaussian latent with ``code_dim``
channels at each of the 7x7 positions takes the place of the quantiser, so that only the
bottleneck differs. All models use the same data, likelihood (Bernoulli, dynamic
binarisation), optimiser and epoch budget, and their samples are scored by the same
classifier.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from mtvae import metrics as M
from mtvae.errors import MTVAEError
from mtvae.models import VAE, CapacityVAE
from mtvae.studies.base import fit_info
from mtvae.studies.vqvaes import (
    Study,
    classifier,
    score_images,
)
from mtvae.train import FitResult

if TYPE_CHECKING:
    from mtvae.profiles import Profile
    from mtvae.studies.evidence import Evidence

LN2 = math.log(2)
KINDS = {"matched": "VAE (rate-matched)", "beta1": "VAE (β = 1)"}


def matched_capacity(vq_rows: pd.DataFrame) -> float:
    """The VAE's target KL in nats: the VQ-VAEs' mean prior code length (test images)."""
    return round(float(vq_rows["prior_bits"].mean()) * LN2, 2)


def vae_config(study: Study, seed: int, capacity: float | None,
               clf_cfg: dict[str, Any]) -> dict[str, Any]:
    s = study.s
    if s.channels != 32:
        raise MTVAEError("the grid VAE has the library's default width of 32 channels; set "
                         "VQStudy.channels = 32 to compare it with the VQ-VAE")
    return {"model": "vae" if capacity is None else "capacity-vae", "arch": "grid",
            "latent_dim": 49 * s.code_dim, "channels": 32, "likelihood": "bernoulli",
            "capacity_nats": capacity, "gamma": None if capacity is None else s.vae_gamma,
            "batch_size": s.batch_size, "lr": s.lr, "epochs": s.epochs,
            "patience": s.patience, "train_size": s.train_size, "binarize": "dynamic",
            "seed": seed, "n_samples": s.n_samples, "classifier": clf_cfg,
            "device": study.device}


def vae_model(study: Study, cfg: dict[str, Any]) -> tuple[VAE, FitResult]:
    """Train (or load) the VAE that ``cfg`` describes."""
    torch.manual_seed(cfg["seed"])
    shape = (1, 28, 28)
    model = (VAE(shape, cfg["latent_dim"], arch="grid") if cfg["capacity_nats"] is None else
             CapacityVAE(shape, cfg["latent_dim"], cfg["capacity_nats"], gamma=cfg["gamma"],
                         arch="grid"))
    return model, study.fit(cfg["model"], cfg, model, study.mnist("dynamic"))


def vae_runs(study: Study, capacity: float) -> pd.DataFrame:
    """Rate-matched and beta = 1 VAEs over seeds: rate, distortion, samples' scores."""
    s = study.s
    clf, clf_rec = classifier(study)
    data, grey = study.mnist("dynamic"), study.mnist(None)
    rows = []
    for kind, cap in (("matched", capacity), ("beta1", None)):
        for seed in s.seeds:
            cfg = vae_config(study, seed, cap, clf_rec["config"])

            def compute(cfg: dict[str, Any] = cfg) -> dict[str, Any]:
                model, res = vae_model(study, cfg)
                torch.manual_seed(cfg["seed"])
                dist, rate = M.elbo_parts(model, data.test, n_samples=10)
                with torch.no_grad():
                    recon = model.reconstruct(data.test.x)
                    images = model.sample(cfg["n_samples"], study.generator(cfg["seed"]))
                mse = float((recon - grey.test.x).square().mean())
                return fit_info(res) | {
                    "test_distortion": float(dist.mean()), "rate_nats": float(rate.mean()),
                    "rate_bits": float(rate.mean()) / LN2, "recon_mse_grey": mse,
                    "active_units": M.active_units(model, data.test)[0],
                } | score_images(clf, images)

            rec = study.run(cfg["model"], cfg, compute)
            rows.append({"model": KINDS[kind], "seed": seed, **rec["metrics"]})
    return pd.DataFrame(rows)


def vae_models(study: Study, capacity: float, seed: int = 0) -> dict[str, VAE]:
    """The rate-matched and beta = 1 VAEs of one seed, by display name."""
    clf_cfg = classifier(study)[1]["config"]
    return {KINDS[kind]: vae_model(study, vae_config(study, seed, cap, clf_cfg))[0]
            for kind, cap in (("matched", capacity), ("beta1", None))}


def comparison(vq_rows: pd.DataFrame, vae_rows: pd.DataFrame) -> pd.DataFrame:
    """One row per run with the columns the chapter compares."""
    vq = vq_rows.assign(rate_bits=vq_rows["prior_bits"])
    cols = ["model", "seed", "rate_bits", "test_distortion", "recon_mse_grey", "confidence",
            "class_entropy_bits"]
    return pd.concat([vq[cols], vae_rows[cols]], ignore_index=True)


# -- the multitask VQ-VAE: the vqhead grid -----------------------------------------------
def label_head(profile: Profile, root: str | Path | None = None, *, run: bool = False,
               device: str = "auto") -> Evidence:
    """The ``vqhead`` grid (the reference VQ-VAE with a label head on z_q: the sum with its
    label weight chosen on validation against each MOO method with its smoothing chosen the
    same way), trained first when ``run``; test accuracy and distortion, paired by seed.

    Raises an :class:`~mtvae.errors.MTVAEError` that names the command when the grid is not
    complete: a partial grid is not reported."""
    from mtvae.studies.evidence import complete_evidence, vq_evidence

    return complete_evidence("vqhead", vq_evidence, profile, root, run=run, device=device,
                             chapter="Chapter 2")


def head_table(ev: Evidence) -> pd.DataFrame:
    """Per arm of :func:`label_head`: its configuration, test accuracy (%), distortion,
    codes used (%), the reconstruction's gradient at z_q over the label's (mean over the
    monitored steps) and how many seeds stopped by patience."""
    from mtvae.studies.settings import DEFAULT_SUM, TUNED_SUM, arm_summary, tuned

    a = ev.arms.copy()
    a["norm_ratio_xy"] = [c["norm"]["x"] / max(c["norm"]["y"], 1e-12) if isinstance(c, dict)
                          else math.nan for c in a.conflict]
    a["accuracy"] = 100 * a.test_accuracy
    a["used"] = 100 * a.test_fraction_used
    order = [DEFAULT_SUM, TUNED_SUM, *ev.moo, *(tuned(f) for f in ev.moo)]
    return arm_summary(a, ["accuracy", "test_distortion", "used", "norm_ratio_xy"], order)
