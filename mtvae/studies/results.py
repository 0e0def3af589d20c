"""Chapter 5: the experiment grid's results and the conditions under which MOO helps.

The grid (:func:`mtvae.experiments.grids.hetero_grid`) crosses Chapter 3's imputation
protocol with tables, methods, missing rates and seeds. This module turns its records into
what the chapter reports: mean ± sd tables, ranks and significance tests over blocks (one
block = one table at one missing rate, seeds averaged; Demšar 2006), the per-seed paired
gain of each MOO method over the plain sum, the features each method overlooks, and the
table properties (size, type heterogeneity, measured gradient conflict, missing rate) that
the gain is related to.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as st

from mtvae import stats
from mtvae.data import load
from mtvae.experiments import GridSpec, GridSummary, LocalExecutor, get_grid, load_results
from mtvae.experiments import run_grid as _run_grid
from mtvae.experiments.grids import BASELINE_METHOD
from mtvae.profiles import GridStudy
from mtvae.studies.base import ChapterStudy
from mtvae.studies.hetero import overlooked_features, summary_table

REFERENCE = "sum"
BLOCK = ("dataset", "missing_rate")
PAIR = (*BLOCK, "seed")


class Study(ChapterStudy):
    """The grid behind Chapter 5: run it (resumably) and load its records."""

    chapter = "05"

    @property
    def s(self) -> GridStudy:
        return self.profile.grid

    @property
    def spec(self) -> GridSpec:
        return get_grid("hetero", self.profile.name)

    def run(self, workers: int = 1) -> GridSummary:
        """Run every grid run that has no record yet (a no-op once the grid is complete)."""
        return _run_grid(self.spec, executor=LocalExecutor(workers), device=self.device,
                         progress=self.progress)

    def records(self) -> pd.DataFrame:
        """The grid's successful records, baseline rows labelled ``mean imputation``."""
        df = load_results(self.spec)
        df.loc[df.kind == "baseline", "method"] = BASELINE_METHOD
        return df

    def failures(self) -> pd.DataFrame:
        df = load_results(self.spec, status="all")
        return df[df.status == "failed"]


# -- tables ---------------------------------------------------------------------------------
def error_summary(df: pd.DataFrame, metric: str = "mean_error") -> pd.DataFrame:
    """Mean, sd and count over seeds per (dataset, missing rate, method)."""
    return summary_table(df, metric, by=BLOCK)


def paired_gains(df: pd.DataFrame, reference: str = REFERENCE,
                 metric: str = "mean_error") -> pd.DataFrame:
    """One row per (dataset, rate, seed, method): reference minus method (positive = better).

    The seed fixes the mask, the split and the initialisation, so the pairs share all of them.
    """
    wide = df.pivot_table(index=list(PAIR), columns="method", values=metric)
    others = [m for m in wide.columns if m not in (reference, BASELINE_METHOD)]
    gains = wide[others].rsub(wide[reference], axis=0)
    return gains.stack().rename("gain").reset_index()


def block_scores(df: pd.DataFrame, methods: list[str] | None = None,
                 metric: str = "mean_error") -> pd.DataFrame:
    """``blocks x methods`` table (seeds averaged) for the rank tests."""
    if methods is not None:
        df = df[df.method.isin(methods)]
    return stats.block_table(df, value=metric, blocks=BLOCK)


# -- overlooking ----------------------------------------------------------------------------
def overlooked(df: pd.DataFrame, threshold: float = 0.95) -> pd.DataFrame:
    """Per (dataset, rate, method, feature): error over the mean-imputation error.

    The ratio is taken per seed (same mask) and averaged over seeds; a feature is
    ``overlooked`` when the model imputes it no better than the column mean/mode
    (ratio ≥ ``threshold``), the symptom Javaloy et al. (2022) describe.
    """
    return overlooked_features(df, threshold, by=BLOCK)


def overlooked_counts(ov: pd.DataFrame) -> pd.DataFrame:
    """Number of overlooked features per (dataset, rate) and method."""
    return ov.pivot_table(index=list(BLOCK), columns="method", values="overlooked",
                          aggfunc="sum").astype("Int64")


# -- conditions -----------------------------------------------------------------------------
def table_properties(datasets: list[str], max_rows: int | None) -> pd.DataFrame:
    """Per table: rows, features, distinct likelihood types and their normalised entropy."""
    rows = []
    for name in datasets:
        data = load(name, max_rows=max_rows)
        counts = np.array([c for c in data.info["schema"].type_counts().values() if c > 0])
        p = counts / counts.sum()
        entropy = float(-(p * np.log(p)).sum() / math.log(5))  # 5 types: 1 = all equal shares
        rows.append({"dataset": name, "rows": int(data.info["n_rows"]),
                     "features": int(counts.sum()), "types": len(counts),
                     "type_entropy": entropy})
    return pd.DataFrame(rows)


def _conflict(df: pd.DataFrame, key: str) -> pd.Series:
    return df.conflict.apply(lambda c: c.get(key, np.nan) if isinstance(c, dict) else np.nan)


def conditions(df: pd.DataFrame, props: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """One row per block: the MOO gain (mean over methods and seeds) next to its candidates.

    Candidates: the table's size and type heterogeneity, the missing rate, the gradient
    conflict measured during the *reference* runs (mean |cosine| between task gradients,
    largest/smallest mean gradient-norm ratio, overlooked share of steps) and how far the
    reference is from mean imputation (its error over the baseline's).
    """
    gains = paired_gains(df, reference)
    per_block = gains.groupby(list(BLOCK)).gain.mean().rename("moo_gain")
    best = gains.groupby([*BLOCK, "method"]).gain.mean().groupby(list(BLOCK)).max()
    ref = df[df.method == reference].copy()
    for key in ("mean_abs_cosine", "norm_ratio", "overlooked_share"):
        ref[key] = _conflict(ref, key)
    conflict = ref.groupby(list(BLOCK))[["mean_abs_cosine", "norm_ratio",
                                        "overlooked_share", "mean_error"]].mean()
    base = df[df.method == BASELINE_METHOD].groupby(list(BLOCK)).mean_error.mean()
    out = pd.concat([per_block, best.rename("best_gain"), conflict], axis=1).reset_index()
    out["vs_baseline"] = out.mean_error.to_numpy() / base.reindex(
        pd.MultiIndex.from_frame(out[list(BLOCK)])).to_numpy()
    out["relative_gain"] = out.moo_gain / out.mean_error
    return out.merge(props, on="dataset").drop(columns="mean_error")


FACTORS = {"features": "number of features", "type_entropy": "type heterogeneity",
           "missing_rate": "missing rate", "mean_abs_cosine": "mean |cosine| of task gradients",
           "norm_ratio": "gradient-norm ratio (max/min)",
           "overlooked_share": "overlooked share of steps",
           "vs_baseline": "sum's error / mean imputation's"}


def correlations(cond: pd.DataFrame, target: str = "relative_gain",
                 factors: dict[str, str] | None = None) -> pd.DataFrame:
    """Spearman's rho between the gain and each candidate condition, Holm-corrected."""
    rows: list[dict[str, Any]] = []
    for col, label in (factors or FACTORS).items():
        x, y = cond[col].to_numpy(float), cond[target].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 3 or np.ptp(x[ok]) == 0:
            rho, p = math.nan, 1.0
        else:
            res = st.spearmanr(x[ok], y[ok])
            rho, p = float(res.statistic), float(res.pvalue)
        rows.append({"factor": col, "condition": label, "rho": rho, "p_value": p,
                     "n": int(ok.sum())})
    out = pd.DataFrame(rows)
    out["p_holm"] = stats.holm(out.p_value.fillna(1.0).to_numpy())
    return out
