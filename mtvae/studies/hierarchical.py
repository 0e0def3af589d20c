"""Chapter 3 experiments: per-layer rates of a two-layer hierarchical VAE.

After Xiao & Bamler (ICLR 2023, "Trading information between latents in hierarchical
VAEs"): a (beta1, beta2) grid weights the rate of the lower layer z1 and of the top layer z2
separately. Each run (dataset, beta1, beta2, seed) reports the test distortion, the rate of
each layer in nats, the negative ELBO, the active units of each layer and the accuracy of
linear probes on each layer's posterior means (MNIST-5k: the digit; shapes: each of the
five generative factors). :func:`variance_explained` then asks how much of the variation of
a downstream score across the grid the two rates explain, compared with the two betas.
The runs are the ``hier`` grid's (:func:`grid_runs`); :func:`rates_as_tasks` compares the
rates as MOO tasks with the plain sum.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mtvae.data import Dataset, Split
from mtvae.errors import MTVAEError
from mtvae.models import HierarchicalVAE
from mtvae.models.hierarchical import Codes
from mtvae.profiles import Profile
from mtvae.studies.base import binarized_images

LAYERS = ("z1", "z2", "both")
ACTIVE_THRESHOLD = 0.01  # Var_x(E[z_d | x]) above it: an active unit (Burda et al. 2016)


def hier_data(profile: Profile, name: str) -> Dataset:
    """The ``hier`` grid's MNIST-5k or shapes, dynamically binarised (Bernoulli likelihood)."""
    s = profile.hier_grid
    return binarized_images(name, s.train_size, s.shapes_n)


def chance(data: Dataset) -> dict[str, float]:
    """Per probe target: the test accuracy of always predicting the training split's most
    frequent class."""
    train, test = labels_of(data, "train"), labels_of(data, "test")
    return {t: float((test[t] == torch.mode(train[t]).values).float().mean()) for t in train}


def labels_of(data: Dataset, split: str) -> dict[str, torch.Tensor]:
    """What the probes predict on ``split``: the digit, or each generative factor."""
    part = data.splits()[split]
    if "factors" in part.tensors:
        return {t: part.tensors["factors"][:, j]
                for j, t in enumerate(data.info["factor_names"])}  # type: ignore[arg-type]
    return {"digit": part.y}


@torch.no_grad()
def split_parts(model: HierarchicalVAE, split: Split) -> dict[str, float]:
    """Mean distortion, rate per layer and negative ELBO of ``split`` in nats (one sample,
    seed 0)."""
    torch.manual_seed(0)
    sums = np.zeros(3)
    for batch in split.batches(500):
        sums += [float(p.sum()) for p in model.elbo_parts(batch["x"])]
    d, r1, r2 = sums / len(split)
    return {"distortion": d, "kl1": r1, "kl2": r2, "rate": r1 + r2, "nelbo": d + r1 + r2}


@torch.no_grad()
def _codes(model: HierarchicalVAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Posterior means of each layer and of both, concatenated."""
    codes: list[Codes] = [model.encode(b) for b in x.split(500)]
    z1, z2 = torch.cat([c.z1 for c in codes]), torch.cat([c.z2 for c in codes])
    return {"z1": z1, "z2": z2, "both": torch.cat([z1, z2], dim=1)}


def add_probe_means(runs: pd.DataFrame) -> pd.DataFrame:
    """Add ``probe_<layer>``: the digit accuracy (MNIST-5k) or the mean accuracy over the
    generative factors (shapes) of the probe on that layer."""
    out = runs.copy()
    for layer in LAYERS:
        cols = [c for c in runs.columns if c.startswith(f"acc_{layer}_")]
        out[f"probe_{layer}"] = runs[cols].mean(axis=1)  # each run has its own targets only
    return out


def summary(runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Mean and sd over seeds of ``columns`` per dataset, method, beta1 and beta2."""
    keys = ["dataset", "method", "beta1", "beta2"]
    g = runs.groupby(keys, sort=False)[columns]
    return g.mean().join(g.std(ddof=1), rsuffix="_sd").reset_index()


def layer_factors(runs: pd.DataFrame, dataset: str = "shapes") -> pd.DataFrame:
    """Long table of probe accuracy per (beta1, beta2, seed, layer, target) of one dataset."""
    cols = [c for c in runs.columns if c.startswith("acc_")]
    sub = runs[runs.dataset == dataset].melt(id_vars=["beta1", "beta2", "seed"],
                                             value_vars=cols, value_name="accuracy")
    parts = sub.variable.str.split("_", n=2, expand=True)
    return (sub.assign(layer=parts[1], target=parts[2]).drop(columns="variable")
            .dropna(subset=["accuracy"]).reset_index(drop=True))


def layer_accuracy(runs: pd.DataFrame, chance: dict[str, float], beta1: float, beta2: float,
                   dataset: str = "shapes") -> pd.DataFrame:
    """Mean probe accuracy over seeds per target (rows) and layer (z1, z2, both) in one cell
    of the grid, next to the ``chance`` accuracy of each target."""
    lf = layer_factors(runs, dataset)
    at = lf[(lf.beta1 == beta1) & (lf.beta2 == beta2)]
    acc = at.groupby(["target", "layer"]).accuracy.mean().unstack("layer")
    acc = acc.reindex(index=list(chance), columns=list(LAYERS))
    return acc.assign(chance=pd.Series(chance))


def _r2(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """In-sample R^2 of OLS (with intercept) and its leave-one-group-out CV R^2."""
    design = np.column_stack([np.ones(len(y)), x])
    tss = float(((y - y.mean()) ** 2).sum())
    if tss <= 0 or len(y) <= design.shape[1]:
        return math.nan, math.nan
    fit_all = np.linalg.lstsq(design, y, rcond=None)[0]
    in_sample = 1 - float(((y - design @ fit_all) ** 2).sum()) / tss
    press = 0.0
    for g in np.unique(groups):
        out = groups == g
        if (~out).sum() <= design.shape[1]:
            return in_sample, math.nan
        coef = np.linalg.lstsq(design[~out], y[~out], rcond=None)[0]
        press += float(((y[out] - design[out] @ coef) ** 2).sum())
    return in_sample, 1 - press / tss


FEATURE_SETS = {"betas": ("log_beta1", "log_beta2"), "rates": ("kl1", "kl2"),
                "log rates": ("log1p_kl1", "log1p_kl2"),
                "rates + betas": ("kl1", "kl2", "log_beta1", "log_beta2")}


def variance_explained(runs: pd.DataFrame, score: str) -> pd.DataFrame:
    """How much of the variance of ``score`` over the grid's runs each feature set explains.

    Per dataset, an ordinary least-squares fit of ``score`` on (log beta1, log beta2), on
    the two test rates (R1, R2), on (log(1 + R1), log(1 + R2)) — a concave encoding, since
    accuracy saturates as a rate grows — and on the rates and the weights together, each
    with an intercept. ``r2`` is the
    in-sample R^2; ``cv_r2`` leaves out one (beta1, beta2) cell at a time (all its seeds),
    fits on the other cells and scores the held-out cell, so it measures how well the
    features predict a setting that was not seen. If downstream performance is a function
    of the rates (Xiao & Bamler 2023), the rates should predict at least as well as the
    betas, and adding the betas to the rates should add little.
    """
    rows = []
    for ds, sub in runs[runs.method == "sum"].groupby("dataset", sort=False):
        sub = sub.assign(log_beta1=np.log(sub.beta1), log_beta2=np.log(sub.beta2),
                         log1p_kl1=np.log1p(sub.kl1), log1p_kl2=np.log1p(sub.kl2))
        groups = (sub.beta1.astype(str) + "/" + sub.beta2.astype(str)).to_numpy()
        y = sub[score].to_numpy(dtype=float)
        for name, feats in FEATURE_SETS.items():
            r2, cv = _r2(sub[list(feats)].to_numpy(dtype=float), y, groups)
            rows.append({"dataset": ds, "score": score, "features": name, "r2": r2,
                         "cv_r2": cv, "n_runs": len(y)})
    return pd.DataFrame(rows)


GRID_COLUMNS = ("distortion", "kl1", "kl2", "rate", "nelbo")
"""The ``hier`` grid records them per split as ``val_<name>`` and ``test_<name>``."""


def grid_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """The ``hier`` grid's ok records (:func:`mtvae.experiments.load_results`) as
    :func:`runs_frame` rows: the test numbers under the names the section reads, the
    validation −ELBO, the probes as ``acc_<layer>_<target>`` and how each run stopped."""
    ok = runs[runs.status == "ok"] if "status" in runs else runs
    rows = []
    for r in ok.to_dict("records"):
        row = {k: r[k] for k in ("dataset", "beta1", "beta2", "seed", "method")}
        row |= {k: r[f"test_{k}"] for k in GRID_COLUMNS} | {"val_nelbo": r["val_nelbo"]}
        row |= {k: r[k] for k in ("active_z1", "active_z2", "epochs_run", "best_epoch",
                                  "stopped_early", "epoch_cap")}
        row |= {f"acc_{layer}_{t}": a for layer, accs in r["probe"].items()
                for t, a in accs.items()}
        rows.append(row)
    return pd.DataFrame(rows)


HierGrid = tuple[pd.DataFrame, pd.DataFrame]
""":func:`grid_runs`: the (beta1, beta2) grid with the sum, and beta1 = beta2 = 1 with every
method."""


def grid_runs(profile: Profile, root: str | Path | None = None, *, run: bool = False,
              device: str = "auto") -> HierGrid:
    """The ``hier`` grid of ``profile`` (trained first when ``run``) as two frames: the
    (beta1, beta2) grid with the sum, and beta1 = beta2 = 1 with the sum and each MOO
    method (the rates as tasks). Raises an :class:`~mtvae.errors.MTVAEError` naming the
    command while any planned run is missing: a partial grid is not reported."""
    from mtvae.experiments import get_grid, load_results
    from mtvae.experiments.runner import plan, run_grid

    spec = get_grid("hier", profile.name, root)
    if run:
        run_grid(spec, root=root, device=device, progress="none")
    status = plan(spec, root).status
    if (status != "done").any():
        from mtvae.studies.evidence import incomplete_grid

        raise incomplete_grid("hier", profile, int((status == "done").sum()), len(status),
                              chapter="Chapter 3.4")
    runs = grid_frame(load_results(spec, root))
    s = profile.hier_grid
    at_one = (runs.beta1 == 1.0) & (runs.beta2 == 1.0)
    betas = runs[(runs.method == "sum") & runs.beta1.isin(s.betas1) & runs.beta2.isin(s.betas2)
                 & runs.seed.isin(s.seeds)]
    return (betas.drop_duplicates(["dataset", "beta1", "beta2", "seed"]).reset_index(drop=True),
            runs[at_one].drop_duplicates(["dataset", "method", "seed"]).reset_index(drop=True))


SUM_AT_ONE = "sum (β1 = β2 = 1)"
SUM_CHOSEN = "sum (β chosen)"


def chosen_cell(betas: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: the (beta1, beta2) cell of the sum's grid with the lowest mean VALIDATION
    −ELBO over seeds (the sum tuned on validation; the test numbers are not looked at)."""
    means = betas.groupby(["dataset", "beta1", "beta2"], sort=False).val_nelbo.mean()
    best = means.groupby(level="dataset", sort=False).idxmin()
    return pd.DataFrame([{"dataset": ds, "beta1": b1, "beta2": b2,
                          "val_nelbo": float(means[(ds, b1, b2)])}
                         for ds, (_, b1, b2) in best.items()])


def rates_as_tasks(betas: pd.DataFrame, at_one: pd.DataFrame, methods: tuple[str, ...]
                   ) -> dict[str, pd.DataFrame]:
    """The rates as MOO tasks against the plain sum, paired by seed, on test −ELBO.

    ``betas`` and ``at_one``: :func:`grid_runs`. Arms: :data:`SUM_AT_ONE` (the ELBO), each
    MOO method at beta1 = beta2 = 1, and :data:`SUM_CHOSEN` (the sum at
    :func:`chosen_cell`, on the grid's seeds). Returns ``gains`` (one row per pair and
    dataset, :func:`mtvae.studies.evidence.tested_gains`; ``p_holm``: Holm over the primary
    family, each method against the ELBO on every dataset, NaN for the others), ``rates``
    (mean test R1, R2, D and −ELBO per arm) and ``chosen`` (the chosen cells)."""
    from mtvae.studies.evidence import holm_primary, tested_gains

    chosen = chosen_cell(betas)
    picked = betas.merge(chosen[["dataset", "beta1", "beta2"]], on=["dataset", "beta1", "beta2"])
    frame = pd.concat([at_one.assign(arm=at_one.method.replace({"sum": SUM_AT_ONE})),
                       picked.assign(arm=SUM_CHOSEN)], ignore_index=True)
    primary = [(m, SUM_AT_ONE) for m in methods]
    secondary = [(m, SUM_CHOSEN) for m in methods] + [(SUM_CHOSEN, SUM_AT_ONE)]
    gains = tested_gains(frame, "nelbo", higher_is_better=False, pairs=[*primary, *secondary],
                         by=("dataset",))
    holm_primary(gains, gains.reference.eq(SUM_AT_ONE) & gains.arm.isin(methods), "dataset")
    rates = (frame.groupby(["dataset", "arm"], sort=False)[["kl1", "kl2", "distortion", "nelbo"]]
             .mean().reset_index())
    return {"gains": gains, "rates": rates, "chosen": chosen}


DATASET_NAMES = {"mnist5k": "MNIST-5k", "shapes": "shapes"}


def primary_rows(gains: pd.DataFrame) -> pd.DataFrame:
    """The primary comparisons of :func:`rates_as_tasks` (each method against the ELBO) for
    :func:`mtvae.studies.evidence.book_primary`: ``where`` names the dataset."""
    prim = gains[gains.p_holm.notna()]
    return prim.assign(where=[f"hierarchical, {DATASET_NAMES.get(d, d)}" for d in prim.dataset],
                       metric="test_nelbo")


def complete_grid(profile: Profile, root: str | Path | None = None) -> HierGrid | None:
    """:func:`grid_runs` once the ``hier`` grid is complete; ``None`` before."""
    try:
        return grid_runs(profile, root)
    except MTVAEError:  # not complete: nothing is reported
        return None


def grid_primary(gains: pd.DataFrame | None) -> pd.DataFrame:
    """:func:`primary_rows` of a complete ``hier`` grid's :func:`rates_as_tasks` gains; empty
    without a complete grid (``None``)."""
    if gains is None:
        return pd.DataFrame(columns=["where", "arm", "metric", "gain", "low", "high", "wins",
                                     "n", "p_value"])
    return primary_rows(gains)
