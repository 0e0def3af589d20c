"""The multitask settings' grids (issue 13): ``python -m mtvae grid aux|multimodal|hier|vqhead|
beta --profile P``; records in ``results/<name>-<profile>/``, beside the chapters' records
(whose configs are unchanged).

* ``aux`` (staged): auxiliary heads on MNIST-5k (label fractions) and shapes (100 %): the sum's
  label weight against MOO methods, equal budgets (:mod:`mtvae.experiments.staged`), plus the
  plain VAE with linear probes;
* ``multimodal`` (staged): PoE / MoE / MoPoE, the sum's label-modality weight against MOO;
* ``hier``: the (beta1, beta2) grid with the sum, and the rates as MOO tasks at beta = 1;
* ``vqhead`` (staged): the VQ-VAE label head, tuned sum against MOO;
* ``beta``: Chapter 1's beta sweep at the reference budget (:func:`beta_choice` picks beta on
  validation).

Settings come from the profile (:class:`mtvae.profiles.AuxGrid`, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mtvae.errors import check_choice
from mtvae.experiments.spec import Block, GridSpec
from mtvae.experiments.staged import Tuning, choices, grid_folder, staged_blocks
from mtvae.fusion import FUSIONS
from mtvae.moo import get_combiner
from mtvae.profiles import Profile
from mtvae.studies.selection import Selection, select_on_validation

AUX_DATASETS = ("mnist5k", "shapes")


def _tuning(s: Any, weight_key: str = "label_weight") -> Tuning:
    return Tuning(families=tuple(s.families), weight_key=weight_key,
                  weights=tuple(float(w) for w in s.label_weights),
                  default_weight=float(s.default_label_weight),
                  crmogm=tuple(float(c) for c in s.crmogm), select_on=s.select_on,
                  tuning_seeds=tuple(s.tuning_seeds), seeds=tuple(s.seeds))


# -- auxiliary heads -------------------------------------------------------------------------
def aux_points(profile: Profile) -> list[dict[str, Any]]:
    """(dataset, label fraction) of the ``aux`` grid: every fraction on MNIST, 100 % on shapes."""
    s = profile.aux_grid
    for ds in s.datasets:
        check_choice("aux dataset", ds, AUX_DATASETS)
    return [{"dataset": ds, "label_fraction": float(f)} for ds in s.datasets
            for f in (s.label_fractions if ds == "mnist5k" else (1.0,))]


def aux_fixed(profile: Profile) -> dict[str, Any]:
    s = profile.aux_grid
    return {"latent_dim": s.latent_dim, "hidden": list(s.hidden), "batch_size": s.batch_size,
            "lr": s.lr, "epochs": s.epochs, "patience": s.patience, "train_size": s.train_size,
            "shapes_n": s.shapes_n, "eval_samples": s.eval_samples}


def aux_grid(profile: Profile, root: str | Path | None = None) -> GridSpec:
    """Auxiliary heads: tuning, default and chosen blocks per (dataset, fraction) x family,
    then the plain VAE (+ linear probes at every fraction) on the evaluation seeds."""
    s, name = profile.aux_grid, f"aux-{profile.name}"
    fixed = aux_fixed(profile)
    blocks = staged_blocks("aux", _tuning(s), aux_points(profile), fixed,
                           grid_folder(name, root))
    for ds in s.datasets:
        fracs = list(s.label_fractions) if ds == "mnist5k" else [1.0]
        blocks.append(Block("aux-plain", {"seed": s.seeds},
                            fixed | {"dataset": ds, "probe_fractions": fracs}))
    return GridSpec(name, tuple(blocks), description="auxiliary heads: tuned sum vs MOO, "
                    "equal budgets, chosen on validation")


def aux_choices(profile: Profile, root: str | Path | None = None) -> pd.DataFrame:
    """Per (dataset, fraction) x family: the configuration chosen on validation."""
    return choices("aux", _tuning(profile.aux_grid), aux_points(profile), aux_fixed(profile),
                   grid_folder(f"aux-{profile.name}", root))


# -- label-conditioned generation ------------------------------------------------------------
def cvae_grid(profile: Profile) -> GridSpec:
    """The conditional VAE and the multitask VAE's head as generators (MNIST-5k, all labels),
    with the ``aux`` grid's architecture and budget."""
    a, s = profile.aux_grid, profile.cvae_grid
    fixed = {"latent_dim": a.latent_dim, "hidden": list(a.hidden), "batch_size": a.batch_size,
             "lr": a.lr, "epochs": a.epochs, "patience": a.patience,
             "train_size": a.train_size, "eval_samples": a.eval_samples,
             "per_class": s.per_class, "classifier_profile": profile.name}
    blocks = (Block("cvae", {"seed": tuple(s.seeds)}, fixed),
              Block("heads-gen", {"seed": tuple(s.seeds),
                                  "label_weight": tuple(map(float, s.head_weights))}, fixed))
    return GridSpec(f"cvae-{profile.name}", blocks,
                    description="label-conditioned generation: CVAE vs the multitask head")


# -- multimodal ------------------------------------------------------------------------------
def mm_points(profile: Profile) -> list[dict[str, Any]]:
    for f in profile.mm_grid.fusions:
        check_choice("fusion", f, FUSIONS)
    return [{"fusion": f} for f in profile.mm_grid.fusions]


def mm_fixed(profile: Profile) -> dict[str, Any]:
    from mtvae.studies.multimodal import Study

    s = profile.mm_grid
    return {"latent_dim": s.latent_dim, "hidden": s.hidden, "batch_size": s.batch_size,
            "lr": s.lr, "epochs": s.epochs, "patience": s.patience, "train_size": s.train_size,
            "n_samples": s.n_samples, "loglik_samples": s.loglik_samples,
            "classifier_profile": profile.name,
            "classifiers": Study(profile).classifier_configs()}


def multimodal_grid(profile: Profile, root: str | Path | None = None) -> GridSpec:
    """Multimodal fusion: tuning, default and chosen blocks per fusion x family."""
    name = f"multimodal-{profile.name}"
    blocks = staged_blocks("mm", _tuning(profile.mm_grid), mm_points(profile),
                           mm_fixed(profile), grid_folder(name, root))
    return GridSpec(name, tuple(blocks), description="multimodal VAEs: tuned label weight vs "
                    "MOO, equal budgets, chosen on validation coherence")


def mm_choices(profile: Profile, root: str | Path | None = None) -> pd.DataFrame:
    return choices("mm", _tuning(profile.mm_grid), mm_points(profile), mm_fixed(profile),
                   grid_folder(f"multimodal-{profile.name}", root))


# -- hierarchical ----------------------------------------------------------------------------
def hier_grid(profile: Profile) -> GridSpec:
    """The (beta1, beta2) grid with the sum, and the rates as tasks at beta1 = beta2 = 1."""
    s = profile.hier_grid
    for ds in s.datasets:
        check_choice("hier dataset", ds, AUX_DATASETS)
    for m in s.moo_methods:
        get_combiner(m)
    fixed = {"z1_dim": s.z1_dim, "z2_dim": s.z2_dim, "hidden": list(s.hidden),
             "batch_size": s.batch_size, "lr": s.lr, "epochs": s.epochs, "patience": s.patience,
             "train_size": s.train_size, "shapes_n": s.shapes_n}
    blocks = (Block("hier", {"seed": s.seeds, "dataset": s.datasets,
                             "beta1": tuple(map(float, s.betas1)),
                             "beta2": tuple(map(float, s.betas2))},
                    fixed | {"method": "sum"}),
              Block("hier", {"seed": s.moo_seeds, "dataset": s.datasets,
                             "method": ("sum", *s.moo_methods)},
                    fixed | {"beta1": 1.0, "beta2": 1.0}))
    return GridSpec(f"hier-{profile.name}", blocks,
                    description="hierarchical VAE: (beta1, beta2) grid and rates as tasks")


# -- VQ-VAE label head -------------------------------------------------------------------------
def vq_fixed(profile: Profile) -> dict[str, Any]:
    s = profile.vq_grid
    return {"quantizer": s.quantizer, "num_codes": s.num_codes, "code_dim": s.code_dim,
            "channels": s.channels, "batch_size": s.batch_size, "lr": s.lr, "epochs": s.epochs,
            "patience": s.patience, "train_size": s.train_size}


def vqhead_grid(profile: Profile, root: str | Path | None = None) -> GridSpec:
    name = f"vqhead-{profile.name}"
    blocks = staged_blocks("vqhead", _tuning(profile.vq_grid), [{}], vq_fixed(profile),
                           grid_folder(name, root))
    return GridSpec(name, tuple(blocks), description="VQ-VAE label head: tuned sum vs MOO")


def vq_choices(profile: Profile, root: str | Path | None = None) -> pd.DataFrame:
    return choices("vqhead", _tuning(profile.vq_grid), [{}], vq_fixed(profile),
                   grid_folder(f"vqhead-{profile.name}", root))


# -- Chapter 1's beta sweep --------------------------------------------------------------------
def beta_grid(profile: Profile) -> GridSpec:
    s = profile.beta_grid
    fixed = {"latent_dim": s.latent_dim, "hidden": list(s.hidden), "batch_size": s.batch_size,
             "lr": s.lr, "epochs": s.epochs, "patience": s.patience, "train_size": s.train_size}
    return GridSpec(f"beta-{profile.name}",
                    (Block("beta", {"seed": s.seeds, "beta": tuple(map(float, s.betas))},
                           fixed),),
                    description="beta-VAE sweep at the reference budget")


def beta_choice(runs: pd.DataFrame) -> Selection:
    """beta with the lowest mean VALIDATION −ELBO over seeds (``runs``: the ``beta`` grid's
    records, :func:`mtvae.experiments.load_results`); its runs carry the test numbers."""
    return select_on_validation(runs, param="beta", val_metric="val_nelbo",
                                higher_is_better=False)


STAGED_SETTINGS = ("aux", "multimodal", "vqhead")
