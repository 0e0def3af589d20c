"""Chapter 5: the tables grid read in full, and the conditions under which each method helps.

Chapter 3.1 asks the headline question of the tables grid (:mod:`mtvae.studies.tables`):
does a MOO method beat the plain sum given the same tuning budget? This module gives the
Results chapter (and the front matter, through :mod:`mtvae.studies.findings`) the rest,
from the same records and the same paired gains:

* :func:`load` — the complete tables' scores of the corrected protocol, every method's
  relative gain over the tuned sum per table (seed-clustered bootstrap intervals) and
  across tables (tables resampled);
* :func:`per_table_verdicts` — per table: the tuned sum, the best MOO method and the best
  reference, each with its 95 % interval;
* :func:`rate_gains` — each method's gain at each missing rate, across tables;
* :func:`catastrophic` — the runs whose error is a multiple of mean imputation's (a
  log-normal predictive mean with a large predicted spread), which drive some means;
* :func:`feature_errors` / :func:`overlooked` — the features a method imputes no better
  than the column mean or mode (Javaloy et al.'s "overlooked" features), per table, rate
  and seed, and how many of the tuned sum's a method repairs;
* :func:`table_properties` / :func:`conditions` — each MOO method's per-table gain against
  the table's size, type heterogeneity and the gradient conflict measured while the tuned
  sum trained, with exact permutation p-values and Holm over every (method, condition).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mtvae import comparisons as C
from mtvae.bootstrap import clustered_bootstrap_ci
from mtvae.errors import MTVAEError
from mtvae.experiments.grids import REFERENCE_IMPUTERS
from mtvae.imputation.vae import load_data
from mtvae.profiles import Profile
from mtvae.results import results_dir
from mtvae.stats import holm
from mtvae.studies import tables as TS

MEAN_IMPUTATION = TS.REFERENCE_NAMES["mean"]
PAIR = ["dataset", "missing_rate", "seed"]


@dataclass(frozen=True)
class TablesResults:
    """The complete tables of the grid and the paired gains every analysis starts from."""

    profile: Profile
    root: Path
    runs: pd.DataFrame  # every record (ok and failed) of the complete tables
    complete: tuple[str, ...]
    pending: tuple[str, ...]
    vae: tuple[str, ...]  # the tuned sum first, then the MOO methods
    references: tuple[str, ...]
    main: pd.DataFrame  # scores on the (table, rate, seed) cells every method finished
    per_table: pd.DataFrame  # C.table_gains(relative=True): gain over the tuned sum
    across: pd.DataFrame  # C.across_tables of per_table (empty with fewer than 2 tables)

    @property
    def moo(self) -> tuple[str, ...]:
        return tuple(m for m in self.vae if m != TS.TUNED_SUM)

    @property
    def many(self) -> bool:
        """Across-table statistics need at least two tables."""
        return len(self.complete) >= 2


def load(profile: Profile, root: str | Path | None = None) -> TablesResults:
    """Read the tables grid; raise a clear error while no table is complete."""
    root = Path(root) if root is not None else results_dir()
    t = profile.tables
    runs_all = TS.records(profile, root)
    complete = TS.complete_tables(runs_all, profile, root)
    if not complete:
        raise MTVAEError(f"no table of the tables-{profile.name} grid is complete yet; run "
                         f"`python -m mtvae grid tables --profile {profile.name}`")
    runs = runs_all[runs_all.dataset.isin(complete)].reset_index(drop=True)
    vae = tuple(TS.label(f) for f in t.families)
    refs = tuple(TS.REFERENCE_NAMES[r] for r in REFERENCE_IMPUTERS)
    main = TS.common_pairs(TS.scores(runs, profile, root=root), [*vae, *refs])
    gains = C.paired_gains(main, methods=[m for m in (*vae, *refs) if m != TS.TUNED_SUM])
    per_table = C.table_gains(gains, relative=True)
    across = C.across_tables(per_table) if len(complete) >= 2 else pd.DataFrame()
    return TablesResults(profile, root, runs, complete,
                         tuple(d for d in t.datasets if d not in complete), vae, refs, main,
                         per_table, across)


def per_table_verdicts(res: TablesResults) -> pd.DataFrame:
    """Per table: the tuned sum's error (mean over rates and seeds, with a seed bootstrap
    interval), the MOO method and the reference with the largest relative gain over it, and
    those gains with their seed-clustered 95 % intervals (positive: lower error)."""
    rows = []
    pt = res.per_table
    for ds in res.complete:
        s = res.main[(res.main.dataset == ds) & (res.main.method == TS.TUNED_SUM)]
        ci = clustered_bootstrap_ci(s.mean_error, s.seed)
        mine = pt[pt.dataset == ds].set_index("method")
        moo, ref = mine.loc[list(res.moo), "gain"].idxmax(), mine.loc[
            list(res.references), "gain"].idxmax()
        rows.append({"table": ds, "seeds": int(s.seed.nunique()), "tuned sum": ci.estimate,
                     "sum low": ci.low, "sum high": ci.high, "best MOO": moo,
                     "MOO gain": mine.loc[moo, "gain"], "MOO low": mine.loc[moo, "ci_low"],
                     "MOO high": mine.loc[moo, "ci_high"], "best reference": ref,
                     "reference gain": mine.loc[ref, "gain"],
                     "reference low": mine.loc[ref, "ci_low"],
                     "reference high": mine.loc[ref, "ci_high"]})
    return pd.DataFrame(rows)


def rate_gains(res: TablesResults) -> pd.DataFrame:
    """Per (method, missing rate): the relative gain over the tuned sum, as the mean of the
    per-table gains at that rate with an interval over tables (over one table's seeds when
    only one table is complete)."""
    gains = C.paired_gains(res.main, methods=[*res.moo, *res.references])
    parts = []
    for rate, g in gains.groupby("missing_rate"):
        pt = C.table_gains(g, relative=True)
        out = C.across_tables(pt) if res.many else pt.drop(columns="dataset")
        parts.append(out.assign(missing_rate=rate))
    return pd.concat(parts, ignore_index=True)[
        ["method", "missing_rate", "gain", "ci_low", "ci_high"]]


# -- catastrophic imputations --------------------------------------------------------------
def exceeding(scores: pd.DataFrame, methods: tuple[str, ...] | list[str],
              factor: float = 2.0) -> pd.DataFrame:
    """The rows of ``methods`` in a score frame whose ``mean_error`` exceeds ``factor`` times
    mean/mode imputation's on the same (table, rate, seed), with that error as
    ``"mean/mode"``."""
    if not factor > 1:
        raise MTVAEError(f"factor must be > 1, got {factor!r}")
    base = scores[scores.method == MEAN_IMPUTATION].set_index(PAIR).mean_error
    if base.empty:
        raise MTVAEError(f"no {MEAN_IMPUTATION!r} scores to compare with")
    rows = scores[scores.method.isin(methods)].join(base.rename("mean/mode"), on=PAIR)
    return rows[rows.mean_error > factor * rows["mean/mode"]].reset_index(drop=True)


def catastrophic(res: TablesResults, factor: float = 2.0) -> pd.DataFrame:
    """The VAE runs of :attr:`TablesResults.main` whose test error exceeds ``factor`` times
    mean/mode imputation's on the same mask, with the feature that contributes most, its
    error, and the run's error under the mode estimator (one row per run).

    The predictive mean of a log-normal feature, ``exp(mu + sigma^2 / 2)``, grows without
    bound with the predicted ``sigma``: one cell with a large ``sigma`` can make a run's error
    hundreds of times the baseline's, where the mode ``exp(mu - sigma^2)`` stays small. Such
    runs are kept in every comparison (they are what the method produced) and listed here
    so that a reader can see what drives a large mean gain or loss."""
    bad = exceeding(res.main, res.vae, factor)
    cols = [*PAIR, "method", "mean_error", "mean/mode", "feature", "feature_error", "mode_error"]
    if bad.empty:
        return pd.DataFrame(columns=cols)
    fe = feature_errors(res)
    fe = fe.merge(bad[[*PAIR, "method"]], on=[*PAIR, "method"])
    worst = fe.loc[fe.groupby([*PAIR, "method"]).error.idxmax()].rename(
        columns={"error": "feature_error"})
    bad = bad.merge(worst, on=[*PAIR, "method"])
    mode = TS.scores(res.runs, res.profile, protocol="test_mode", root=res.root,
                     references=False).set_index([*PAIR, "method"]).mean_error
    bad["mode_error"] = mode.reindex(pd.MultiIndex.from_frame(bad[[*PAIR, "method"]])).to_numpy()
    return bad[cols].sort_values([*PAIR, "method"]).reset_index(drop=True)


# -- overlooked features --------------------------------------------------------------------
def feature_errors(res: TablesResults) -> pd.DataFrame:
    """Long frame ``dataset, missing_rate, seed, method, feature, error``: every method's
    test error per feature on the cells of :attr:`TablesResults.main`."""
    ev = TS.evaluation(res.runs, res.profile, res.root)
    ev = ev[ev.status == "ok"].assign(method=lambda d: d.family.map(TS.label))
    ref = res.runs[(res.runs.kind == "reference") & (res.runs.status == "ok")].assign(
        method=lambda d: d.imputer.map(TS.REFERENCE_NAMES))
    rows = [{"dataset": r.dataset, "missing_rate": r.missing_rate, "seed": r.seed,
             "method": r.method, "feature": f, "error": float(e)}
            for frame in (ev, ref) for r in frame.itertuples()
            for f, e in r.test["errors"].items()]
    fe = pd.DataFrame(rows)
    keep = res.main[[*PAIR, "method"]].drop_duplicates()
    return fe.merge(keep, on=[*PAIR, "method"])


def overlooked(fe: pd.DataFrame, threshold: float = 0.95) -> pd.DataFrame:
    """Per (table, rate, method, feature): the error over mean/mode imputation's on the same
    mask, averaged over seeds; ``overlooked`` when that ratio is at least ``threshold``.

    Features that mean/mode imputes without error on some seed have no ratio there and
    are left out of those seeds' average; a feature with no ratio at all is dropped."""
    if not threshold > 0:
        raise MTVAEError(f"threshold must be positive, got {threshold!r}")
    base = fe[fe.method == MEAN_IMPUTATION].set_index([*PAIR, "feature"]).error
    if base.empty:
        raise MTVAEError(f"no {MEAN_IMPUTATION!r} errors to compare with")
    df = fe[fe.method != MEAN_IMPUTATION].join(base.rename("base"), on=[*PAIR, "feature"])
    df = df[df.base > 0].assign(ratio=lambda d: d.error / d.base)
    out = df.groupby(["dataset", "missing_rate", "method", "feature"]).ratio.mean().reset_index()
    return out.assign(overlooked=out.ratio >= threshold)


def overlooked_summary(ov: pd.DataFrame, reference: str = TS.TUNED_SUM) -> pd.DataFrame:
    """Per method: how many (table, rate, feature) it overlooks, and against ``reference``
    how many of the reference's overlooked features it repairs and how many it adds."""
    key = ["dataset", "missing_rate", "feature"]
    wide = ov.pivot_table(index=key, columns="method", values="overlooked", aggfunc="first")
    if reference not in wide.columns:
        raise MTVAEError(f"no {reference!r} among the methods {list(wide.columns)}")
    ref = wide[reference].astype(bool)
    rows = [{"method": m, "overlooked": int(col.astype(bool).sum()),
             "repaired": int((ref & ~col.astype(bool)).sum()) if m != reference else 0,
             "added": int((~ref & col.astype(bool)).sum()) if m != reference else 0}
            for m, col in wide.items()]
    return pd.DataFrame(rows).assign(features=len(wide))


# -- conditions -----------------------------------------------------------------------------
FACTORS = {"features": "number of features", "rows": "rows used",
           "type_entropy": "type heterogeneity",
           "mean_abs_cosine": "mean |cosine| of task gradients",
           "norm_ratio": "gradient-norm ratio (max/min)",
           "overlooked_share": "overlooked share of steps",
           "vs_mean": "tuned sum's error / mean/mode's"}


def table_properties(res: TablesResults) -> pd.DataFrame:
    """Per complete table (index): rows used, features, distinct likelihood types and the
    normalised entropy of their counts, the gradient conflict measured during the tuned
    sum's evaluation runs (mean |cosine| between the per-feature gradients at the shared
    representation, largest/smallest mean gradient norm, share of steps in which the step
    made some feature worse to first order) and the tuned sum's error over mean/mode's."""
    t = res.profile.tables
    ev = TS.evaluation(res.runs, res.profile, res.root)
    ev = ev[(ev.family == "sum") & (ev.status == "ok")]
    means = res.main.groupby(["dataset", "method"]).mean_error.mean()
    rows = []
    for ds in res.complete:
        data = load_data(ds, missing_rate=t.tuning_rate, seed=TS.tables_seeds(t, ds)[0],
                         max_rows=dict(t.row_caps).get(ds))
        counts = np.array([c for c in data.info["schema"].type_counts().values() if c > 0])
        p = counts / counts.sum()
        conflict = pd.DataFrame(list(ev[ev.dataset == ds].conflict))
        rows.append({"dataset": ds, "rows": int(data.info["n_rows"]),
                     "features": int(counts.sum()), "types": len(counts),
                     "type_entropy": float(-(p * np.log(p)).sum() / math.log(5)),
                     **{k: float(conflict[k].mean()) if k in conflict else math.nan
                        for k in ("mean_abs_cosine", "norm_ratio", "overlooked_share")},
                     "vs_mean": float(means[(ds, TS.TUNED_SUM)] / means[(ds, MEAN_IMPUTATION)])})
    return pd.DataFrame(rows).set_index("dataset")


def conditions(res: TablesResults, props: pd.DataFrame) -> pd.DataFrame:
    """Spearman's rho of each MOO method's per-table gain with each condition of
    :data:`FACTORS`, with its exact permutation p-value and Holm's adjustment over every
    (method, condition) pair. Needs at least 3 complete tables."""
    pt = res.per_table[res.per_table.method.isin(res.moo)]
    out = C.conditions_by_method(pt, props[list(FACTORS)])
    out["condition"] = out.property.map(FACTORS)
    ok = out.p_value.notna()
    out["p_holm"] = np.nan
    out.loc[ok, "p_holm"] = holm(out.loc[ok, "p_value"].to_numpy())
    return out
