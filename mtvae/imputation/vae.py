"""One heterogeneous-VAE imputation run, shared by Chapter 3 and the experiment grid.

Protocol (Javaloy et al. 2022, with the corrected evaluation): MCAR masks over every column
(rate ``missing_rate``, seeded by the run's seed), a 70/10/20 split fixed by ``split_seed=0``,
a :class:`~mtvae.models.HeteroVAE` trained on the observed training cells for about
``steps`` optimiser steps whatever the table's size, and the imputation error scored on the
*missing* test cells in original units (:mod:`mtvae.imputation`). The baseline fills the
same cells with the training split's column mean or mode.

A run's ``config`` dict holds every setting (see :func:`fit_and_score`); Chapter 3 stores
the per-epoch gradient diagnostics (:func:`epoch_diagnostics`), the grid a few numbers per
run (:func:`conflict_summary`), so a record of hundreds of runs stays small.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtvae.data import Dataset, load
from mtvae.errors import MTVAEError
from mtvae.imputation.evaluate import Imputer, evaluate_imputation
from mtvae.models import HeteroVAE
from mtvae.stack import fit_stacked
from mtvae.train import FitResult, fit

MAX_EPOCH_POINTS = 40  # per-epoch diagnostics kept in a chapter record (evenly thinned)
CHECKPOINT_SECONDS = 60.0
"""How often a run saves its checkpoint: a stack of 30 members writes 30 files (~0.09 s
each), so every 20 s cost ~13 % of a step budget on wine; a kill loses at most a minute."""


def load_data(dataset: str, *, missing_rate: float, seed: int, max_rows: int | None) -> Dataset:
    """The table with the MCAR mask of ``seed`` (the split is fixed by ``split_seed=0``)."""
    return load(dataset, missing_rate=missing_rate, mask_seed=seed, split_seed=0,
                max_rows=max_rows)


def budget(n_train: int, batch_size: int, steps: int, patience_steps: int) -> tuple[int, int]:
    """Epochs and patience giving about ``steps`` optimiser steps whatever the table's size."""
    per_epoch = math.ceil(n_train / batch_size)
    epochs = max(1, math.ceil(steps / per_epoch))
    patience = max(1, math.ceil(patience_steps / per_epoch))
    return epochs, patience


def num(v: float) -> float | None:
    """A JSON-friendly float: NaN (a feature with no scored cell) becomes ``None``."""
    v = float(v)
    return None if math.isnan(v) else v


def _scores(scores: dict[str, Any]) -> dict[str, Any]:
    return {"errors": {k: num(v) for k, v in scores["errors"].items()},
            "mean_error": scores["mean"], "numerical_error": scores["numerical"],
            "nominal_error": scores["nominal"], "n_scored": scores["n_scored"]}


def build_model(cfg: dict[str, Any], data: Dataset) -> HeteroVAE:
    """The run's HeteroVAE, initialised from the run's seed."""
    torch.manual_seed(cfg["seed"])
    return HeteroVAE(data.info["schema"], hidden=cfg["hidden"], depth=cfg["depth"],
                     scaler=data.info["scaler"])


def fit_settings(cfg: dict[str, Any], data: Dataset) -> dict[str, Any]:
    """Keyword arguments of ``fit`` / ``fit_stacked`` shared by every member of a run group.

    ``val_every_steps`` (optional) validates about every that many optimiser steps instead
    of every epoch (tiny tables have one step per epoch).
    """
    per_epoch = math.ceil(len(data.train) / cfg["batch_size"])
    epochs, patience = budget(len(data.train), cfg["batch_size"], cfg["steps"],
                              cfg["patience_steps"])
    settings: dict[str, Any] = {
        "epochs": epochs, "batch_size": cfg["batch_size"], "lr": cfg["lr"],
        "patience": patience, "combiner": cfg["method"],
        "monitor_every": cfg["monitor_every"], "checkpoint_every": CHECKPOINT_SECONDS}
    if cfg.get("val_every_steps"):
        settings["val_every"] = max(1, math.ceil(cfg["val_every_steps"] / per_epoch))
    return settings


def convergence(cfg: dict[str, Any], data: Dataset, result: FitResult) -> dict[str, Any]:
    """How the run stopped: epochs and steps run, the best one, the cap, wall time.

    ``train_seconds`` and ``ms_per_step`` are the wall time of the job while this run
    trained: a stacked run shares it with the other members of its stack, so its own cost
    is that divided by the record's ``engine["stack"]`` (the chapters divide)."""
    per_epoch = math.ceil(len(data.train) / cfg["batch_size"])
    steps = per_epoch * len(result.history)
    epochs, _ = budget(len(data.train), cfg["batch_size"], cfg["steps"], cfg["patience_steps"])
    return {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early, "epoch_cap": epochs,
            "best_step": (result.best_epoch or 0) * per_epoch, "step_cap": epochs * per_epoch,
            "train_seconds": result.seconds, "steps": steps,
            "ms_per_step": 1000 * result.seconds / max(steps, 1)}


def score(cfg: dict[str, Any], data: Dataset, model: HeteroVAE, result: FitResult
          ) -> dict[str, Any]:
    """The run's metrics: imputation errors, log-likelihoods, −ELBO, timings, convergence."""
    scores = _scores(evaluate_imputation(model, data, "test"))  # same order as ever: the
    loglik = model.feature_log_likelihood(data.test, cells="score")  # RNG stream matters
    return scores | {
        "loglik": dict(zip(data.info["schema"].names, map(num, loglik.tolist()), strict=True)),
        "test_nelbo": test_nelbo(model, data),
    } | convergence(cfg, data, result)


def table_score(cfg: dict[str, Any], data: Dataset, model: HeteroVAE, result: FitResult
                ) -> dict[str, Any]:
    """The tables grid's metrics: both protocols' scores (:func:`protocol_scores`), the test
    log-likelihood of the missing cells, −ELBO and convergence."""
    loglik = model.feature_log_likelihood(data.test, cells="score")
    return protocol_scores(model, data) | {
        "loglik": dict(zip(data.info["schema"].names, map(num, loglik.tolist()), strict=True)),
        "test_nelbo": test_nelbo(model, data),
    } | convergence(cfg, data, result)


Scorer = Callable[[dict[str, Any], Dataset, HeteroVAE, FitResult], dict[str, Any]]


PROTOCOLS = {"test": ("test", "mean", "missing"), "val": ("val", "mean", "missing"),
             "test_mode": ("test", "mode", "missing"), "anchor": ("val", "mode", "observed")}
"""Score name -> (split, estimator, cells) of :func:`protocol_scores`."""


def protocol_scores(model: Imputer, data: Dataset,
                    protocols: tuple[str, ...] = tuple(PROTOCOLS)) -> dict[str, Any]:
    """The tables grid's scores of one trained model, under both protocols.

    * ``test``: the corrected protocol: the observed mask in, the MISSING test cells scored,
      numerical cells imputed by the predictive mean (log-normal mean, Poisson rate);
    * ``val``: the same on the validation split (what the tuning selects on);
    * ``test_mode``: the test cells imputed by the likelihood's mode (the anchor's
      estimator), the estimator ablation;
    * ``anchor``: Javaloy et al.'s own evaluation: reconstruction of the OBSERVED cells of
      the validation split with the mode estimator (the split their selection also used).

    ``protocols`` picks a subset (a classical imputer keeps observed cells as they are, so
    it has no ``anchor`` score).
    """
    out: dict[str, Any] = {}
    for key in protocols:
        split, estimator, cells = PROTOCOLS[key]
        sc = evaluate_imputation(model, data, split, estimator=estimator, cells=cells)
        out[key] = {"mean_error": sc["mean"], "numerical_error": sc["numerical"],
                    "nominal_error": sc["nominal"], "n_scored": sc["n_scored"],
                    "errors": {k: num(v) for k, v in sc["errors"].items()}}
    return out


def fit_and_score(cfg: dict[str, Any], data: Dataset, *, device: str, progress: str = "none",
                  checkpoint: Path | None = None, scorer: Scorer = score
                  ) -> tuple[dict[str, Any], FitResult]:
    """Train one HeteroVAE on ``data`` and score its imputations of the missing test cells.

    ``cfg`` needs ``dataset, method, seed, hidden, depth, batch_size, lr, steps,
    patience_steps, monitor_every``. Returns the metrics (per-feature errors and
    log-likelihoods, test negative ELBO, timings) and the :class:`FitResult`, whose
    diagnostics the caller summarises as it needs.
    """
    model = build_model(cfg, data)
    result = fit(model, data, seed=cfg["seed"], device=device, checkpoint=checkpoint,
                 progress=progress, desc=f"{cfg['dataset']} {cfg['method']} seed={cfg['seed']}",
                 **fit_settings(cfg, data))
    return scorer(cfg, data, model, result), result


def fit_and_score_stacked(cfgs: list[dict[str, Any]], datas: list[Dataset], *, device: str,
                          progress: str = "none", checkpoints: list[Path | None] | None = None,
                          scorer: Scorer = score
                          ) -> list[tuple[dict[str, Any], FitResult] | BaseException]:
    """:func:`fit_and_score` for runs that differ only in their seed (and, within one method
    family, their method), as one stacked job."""
    models = [build_model(c, d) for c, d in zip(cfgs, datas, strict=True)]
    settings = fit_settings(cfgs[0], datas[0])
    for c, d in zip(cfgs[1:], datas[1:], strict=True):
        own = fit_settings(c, d)
        if {**own, "combiner": None} != {**settings, "combiner": None}:
            raise MTVAEError("stacked hetero runs must share every training setting but the "
                             f"method; {c} differs from {cfgs[0]}")
    settings["combiner"] = [c["method"] for c in cfgs]
    results = fit_stacked(models, datas, seeds=[c["seed"] for c in cfgs], device=device,
                          checkpoints=checkpoints, progress=progress,
                          desc=f"{cfgs[0]['dataset']} {cfgs[0]['method']}", **settings)
    out: list[tuple[dict[str, Any], FitResult] | BaseException] = []
    for c, d, m, r in zip(cfgs, datas, models, results, strict=True):
        out.append(r if isinstance(r, BaseException) else (scorer(c, d, m, r), r))
    return out


def baseline_scores(data: Dataset) -> dict[str, Any]:
    """Column mean/mode imputation of the missing test cells (same mask and split)."""
    return _scores(evaluate_imputation("mean", data, "test"))


@torch.no_grad()
def test_nelbo(model: HeteroVAE, data: Dataset) -> float:
    """Negative ELBO per test row on the observed test cells (one posterior sample)."""
    model.eval()
    torch.manual_seed(0)
    total, n = 0.0, 0
    for batch in data.test.batches(1000):
        total += float(model.loss_terms(batch).stats["nelbo"]) * len(batch["x"])
        n += len(batch["x"])
    return total / n


def _step_average(epochs: list[dict[str, Any]], key: str) -> np.ndarray:
    """Per-task average of ``key`` over epochs, weighted by the steps observed in each."""
    steps = np.array([e["steps"] for e in epochs], dtype=float)
    values = np.array([e[key] for e in epochs], dtype=float)
    if values.ndim == 1:
        return np.array((values * steps).sum() / steps.sum())
    return (values * steps[:, None]).sum(0) / steps.sum()


def epoch_diagnostics(result: FitResult) -> dict[str, Any] | None:
    """Chapter 3's record: the conflict diagnostics per epoch (thinned to 40 epochs)."""
    diag = result.diagnostics
    if diag is None:
        return None
    epochs = diag["epochs"]
    assert isinstance(epochs, list)
    keep = np.unique(np.linspace(0, len(epochs) - 1, min(len(epochs), MAX_EPOCH_POINTS))
                     .round().astype(int)) if epochs else []

    def avg(key: str) -> list[float]:
        return list(_step_average(epochs, key)) if epochs else []

    return {
        "tasks": diag["tasks"], "space": diag["space"], "steps_observed": diag["steps_observed"],
        "mean_cosine": diag["mean_cosine"],
        "overlooked": avg("overlooked"), "cos_update": avg("cos_update"), "norm": avg("norm"),
        "epochs": [{k: epochs[i][k] for k in ("epoch", "norm", "overlooked",
                                               "conflicting_pairs")} for i in keep],
    }


def conflict_summary(result: FitResult) -> dict[str, Any] | None:
    """The grid's record: how much the task gradients conflicted over the whole run.

    * ``mean_cosine`` / ``mean_abs_cosine``: mean (|.|) off-diagonal entry of the task
      gradients' cosine matrix averaged over the observed steps;
    * ``conflicting_pairs``: share of (step, task pair) with a negative cosine (Yu et al. 2020);
    * ``norm_ratio``: largest over smallest mean task-gradient norm (magnitude imbalance);
    * ``overlooked_share``: share of (step, task) whose gradient had a negative cosine with
      the applied update (Javaloy et al. 2022), with the per-task shares in ``overlooked``
      and the mean norms in ``norm``.
    """
    diag = result.diagnostics
    if diag is None or not diag["epochs"]:
        return None
    epochs = diag["epochs"]
    assert isinstance(epochs, list)
    tasks = list(diag["tasks"])
    cos = np.asarray(diag["mean_cosine"], dtype=float)
    off = ~np.eye(len(tasks), dtype=bool)
    norm, overlooked = _step_average(epochs, "norm"), _step_average(epochs, "overlooked")
    return {
        "space": diag["space"], "steps_observed": diag["steps_observed"],
        "mean_cosine": float(cos[off].mean()), "mean_abs_cosine": float(np.abs(cos[off]).mean()),
        "conflicting_pairs": float(_step_average(epochs, "conflicting_pairs")),
        "norm_ratio": float(norm.max() / max(norm.min(), 1e-12)),
        "overlooked_share": float(overlooked.mean()),
        "overlooked": dict(zip(tasks, overlooked.tolist(), strict=True)),
        "norm": dict(zip(tasks, norm.tolist(), strict=True)),
    }
