"""Chapter 3 (part 1) experiments: heterogeneous VAEs trained with and without MOO.

Protocol (Javaloy et al. 2022, with the corrected evaluation): MCAR masks over every
column, a 70/10/20 split, the model trained on the observed training cells, and the
imputation error scored on the *missing* test cells. Each run is one (dataset, method,
seed); the seed sets the mask, the initialisation and the mini-batch order. Every run goes
through :func:`mtvae.results.cached_run`, so re-executing the chapter loads its records.
The run itself lives in :mod:`mtvae.imputation.vae`, which the experiment grid shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mtvae.data import Dataset
from mtvae.imputation.vae import (
    baseline_scores,
    budget,
    epoch_diagnostics,
    fit_and_score,
    load_data,
)
from mtvae.profiles import HeteroStudy
from mtvae.results import cache_dir, cached_run, run_id
from mtvae.stats import Metric, paired_comparison
from mtvae.studies.base import ChapterStudy


class Study(ChapterStudy):
    """Shared context of the chapter's runs."""

    chapter = "03"

    @property
    def s(self) -> HeteroStudy:
        return self.profile.hetero

    def data(self, name: str, seed: int) -> Dataset:
        """The table with the mask of ``seed`` (split fixed by split_seed=0)."""
        key = (name, seed)
        if key not in self._data:
            self._data[key] = load_data(name, missing_rate=self.s.missing_rate, seed=seed,
                                        max_rows=self.s.max_rows)
        return self._data[key]

    def budget(self, n_train: int) -> tuple[int, int]:
        """Epochs and patience giving about ``steps`` optimiser steps whatever the size."""
        return budget(n_train, self.s.batch_size, self.s.steps, self.s.patience_steps)

    def config(self, dataset: str, method: str, seed: int) -> dict[str, Any]:
        s = self.s
        return {"dataset": dataset, "method": method, "seed": seed,
                "missing_rate": s.missing_rate, "max_rows": s.max_rows, "hidden": s.hidden,
                "depth": s.depth, "batch_size": s.batch_size, "lr": s.lr, "steps": s.steps,
                "patience_steps": s.patience_steps, "monitor_every": s.monitor_every,
                "device": self.device}

    def run(self, dataset: str, method: str, seed: int) -> dict[str, Any]:
        """Train (or load) one heterogeneous VAE and score its imputations."""
        cfg = self.config(dataset, method, seed)
        return cached_run(self.grid, "hetero", cfg, lambda: self._compute(cfg),
                          device=self.device)

    def _compute(self, cfg: dict[str, Any]) -> dict[str, Any]:
        ckpt = cache_dir() / self.grid / f"{run_id('hetero', cfg)}.pt"
        metrics, result = fit_and_score(cfg, self.data(cfg["dataset"], cfg["seed"]),
                                        device=self.device, progress=self.progress,
                                        checkpoint=ckpt)
        return metrics | {"diagnostics": epoch_diagnostics(result)}

    def baseline(self, dataset: str, seed: int) -> dict[str, Any]:
        """Column mean/mode imputation under the same mask and split."""
        cfg = {"dataset": dataset, "seed": seed, "missing_rate": self.s.missing_rate,
               "max_rows": self.s.max_rows, "method": "mean imputation"}
        return cached_run(self.grid, "baseline", cfg,
                          lambda: baseline_scores(self.data(dataset, seed)), device="cpu")

    def all_runs(self) -> pd.DataFrame:
        """Every (dataset, method, seed) of the main comparison plus the baseline."""
        rows = []
        for ds in self.s.datasets:
            for seed in self.s.seeds:
                rows.append(_row(self.baseline(ds, seed)))
                for method in self.s.methods:
                    rows.append(_row(self.run(ds, method, seed)))
        return pd.DataFrame(rows)

    def space_runs(self) -> pd.DataFrame:
        """The same aggregator in activation and in parameter space."""
        rows = [_row(self.run(ds, m, seed)) for ds in self.s.space_datasets
                for m in self.s.space_methods for seed in self.s.seeds]
        return pd.DataFrame(rows)


def _row(record: dict[str, Any]) -> dict[str, Any]:
    m = record["metrics"]
    cfg = record["config"]
    return {"dataset": cfg["dataset"], "method": cfg["method"], "seed": cfg["seed"],
            "mean_error": m["mean_error"], "numerical_error": m["numerical_error"],
            "nominal_error": m["nominal_error"], "errors": m["errors"],
            "test_nelbo": m.get("test_nelbo"), "ms_per_step": m.get("ms_per_step"),
            "loglik": m.get("loglik"),
            "epochs_run": m.get("epochs_run"), "diagnostics": m.get("diagnostics")}


def per_feature(runs: pd.DataFrame, by: Sequence[str] = ("dataset",)) -> pd.DataFrame:
    """Long table: one row per (``by``..., method, seed, feature) with its error."""
    rows = [{**{k: getattr(r, k) for k in by}, "method": r.method, "seed": r.seed,
             "feature": f, "error": e}
            for r in runs.itertuples() for f, e in r.errors.items() if e is not None]
    return pd.DataFrame(rows)


def mean_loglik(runs: pd.DataFrame) -> pd.Series:
    """Per run: the test log-likelihood of the missing cells averaged over features."""
    return runs.loglik.apply(lambda d: float(np.nanmean([v for v in d.values() if v is not None]))
                             if isinstance(d, dict) else np.nan)


def summary_table(runs: pd.DataFrame, metric: str = "mean_error",
                  by: Sequence[str] = ("dataset",)) -> pd.DataFrame:
    """Mean and sd over seeds per (``by``..., method)."""
    g = runs.groupby([*by, "method"])[metric]
    return pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "n": g.count()}).reset_index()


def paired_gain(runs: pd.DataFrame, method: str, reference: str = "sum",
                metric: str = "mean_error") -> pd.DataFrame:
    """Per dataset: reference minus method, paired by seed (positive = method better)."""
    pairs = runs[runs.method.isin([method, reference])]
    out = paired_comparison(pairs, Metric(metric, metric, higher_is_better=False),
                            by=("dataset",), reference=reference)
    return out.set_index("dataset")[["gain", "sd", "wins", "n"]]


def overlooked_features(runs: pd.DataFrame, threshold: float = 0.95,
                        by: Sequence[str] = ("dataset",)) -> pd.DataFrame:
    """Features a method imputes no better than mean imputation (error ratio >= threshold).

    The ratio is taken per seed (same mask) and averaged over seeds, per (``by``..., method,
    feature).
    """
    pf = per_feature(runs, by)
    key = [*by, "seed", "feature"]
    base = pf[pf.method == "mean imputation"].set_index(key).error
    pf = pf[pf.method != "mean imputation"].copy()
    ref = base.reindex(pd.MultiIndex.from_frame(pf[key])).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0: both perfect -> undefined
        pf["ratio"] = np.where(ref > 0, pf.error.to_numpy() / ref, np.nan)
    mean_ratio = pf.groupby([*by, "method", "feature"]).ratio.mean().reset_index()
    mean_ratio["overlooked"] = mean_ratio.ratio >= threshold
    return mean_ratio
