"""Methods against a reference with the table as the unit: paired gains, CIs and verdicts.

The grid gives one score per (table, missing rate, seed, method); lower is better unless the
:class:`Layout` says otherwise. The independent unit is the **table**: missing rates are
repeated measures inside a table (the same rows, schema and model family), and seeds are
the replications inside a table; counting each table × rate block as an independent unit
would count each table once per rate.

* :func:`paired_gains` — per (table, rate, seed): reference − method (positive = the method
  did better); unpaired rows raise an error naming the missing pairs.
* :func:`table_gains` — per method and table: the mean gain over rates and seeds, or the
  relative gain ``(mean reference − mean method) / mean reference``, with a bootstrap CI
  that resamples **seeds, each with all of its rates** (a clustered bootstrap,
  :func:`mtvae.bootstrap.clustered_bootstrap_ci`); the rates are fixed conditions and are
  not resampled, so the CI is about the average over the designed rates. The relative gain
  is a ratio of the table's pooled errors, not a mean of per-run ratios, so a run whose
  reference error happens to be tiny cannot dominate it.
* :func:`across_tables` — per method: the mean of the per-table gains with a CI from
  resampling tables. With ~8 tables this interval is wide, and it is still optimistic: a
  bootstrap from so few units tends to be too narrow (below its nominal coverage), and the
  eight tables are not a random sample of all tables. Read it as what these tables
  support, not as a prediction for a ninth.
* :func:`bayes_signed_rank`, :func:`bayes_by_method` — Benavoli et al. (2017)'s Bayesian
  signed-rank test (``baycomp``) on per-table gains with a region of practical equivalence
  (ROPE), so "no difference" is a probability, not a failure to reject.
* :func:`wilcoxon_tables`, :func:`seed_tests` — p-values for declared primary comparisons
  (correct them together with :func:`mtvae.stats.holm_adjust`).
* :func:`friedman_nemenyi` — ranks, Friedman and Nemenyi among the methods passed (tables as
  blocks), with references such as classical imputers excluded.
* :func:`conditions_by_method` — Spearman correlation of each method's per-table gain with
  table properties, per method (never averaged over methods).

``baycomp`` and ``scikit_posthocs`` are imported inside the functions that use them: each
takes seconds to import and most users of :mod:`mtvae` never need them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as st

from mtvae import stats
from mtvae.bootstrap import clustered_bootstrap_ci, paired_bootstrap_ci
from mtvae.errors import MTVAEError, check_choice

REFERENCE = "sum (tuned)"
"""The default reference: the plain sum with tuned feature weights and learning rate."""

RELATIVE_ROPE = 0.01
"""Default ROPE for relative gains: within ±1 % of the reference's error is "practically equal".

A 1 % lower imputation error is not a difference anyone would choose a method for, and it is
below the seed-to-seed spread of one run's error, so calling it "equivalent" claims little;
a method must beat the tuned sum by more than 1 % on most tables to count as better. Pass
another ``rope`` (and say so in the text) to ask a stricter or looser question.
"""


@dataclass(frozen=True)
class Layout:
    """Column names of a long score frame, and the direction of the score."""

    table: str = "dataset"
    rate: str = "missing_rate"
    seed: str = "seed"
    method: str = "method"
    score: str = "mean_error"
    higher_is_better: bool = False

    @property
    def pair(self) -> list[str]:
        """The columns that pair a method's run with the reference's."""
        return [self.table, self.rate, self.seed]


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MTVAEError(f"columns {missing} are not in the {what} (it has "
                         f"{', '.join(map(str, df.columns))}); pass a Layout naming yours")


def _listed(keys: Sequence[object], limit: int = 8) -> str:
    """``(hi, 0.1, 3), (hi, 0.3, 3)`` for the first ``limit`` keys, then how many more."""
    def one(key: object) -> str:
        parts = key if isinstance(key, tuple) else (key,)
        return "(" + ", ".join(str(x.item() if isinstance(x, np.generic) else x)
                               for x in parts) + ")"

    keys = list(keys)
    shown = ", ".join(one(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _rows(df: pd.DataFrame, columns: Sequence[str]) -> list[tuple]:
    return list(df[list(columns)].drop_duplicates().itertuples(index=False, name=None))


def paired_gains(scores: pd.DataFrame, *, reference: str = REFERENCE,
                 methods: Sequence[str] | None = None,
                 layout: Layout = Layout()) -> pd.DataFrame:
    """One row per (method, table, rate, seed): the method's gain over ``reference``.

    ``gain = reference − method`` for a lower-is-better score (``method − reference`` when
    higher is better), so positive always means the method did better. ``methods`` defaults
    to every method but the reference. Every method must have exactly the reference's
    (table, rate, seed) pairs.
    """
    L = layout
    _require(scores, [*L.pair, L.method, L.score], "scores")
    present = list(pd.unique(scores[L.method]))
    if reference not in present:
        raise MTVAEError(f"no {reference!r} runs to compare with; methods: {present}")
    methods = [m for m in present if m != reference] if methods is None else list(methods)
    unknown = [m for m in methods if m not in present or m == reference]
    if unknown:
        raise MTVAEError(f"methods {unknown} are not in the scores or are the reference; "
                         f"methods: {present}")
    df = scores[scores[L.method].isin([reference, *methods])]
    bad = df[~np.isfinite(df[L.score].to_numpy(dtype=float))]
    if len(bad):
        raise MTVAEError(f"{len(bad)} rows have a missing or infinite {L.score!r}: "
                         f"{_listed(_rows(bad, [L.method, *L.pair]))}; "
                         "drop those runs and their pairs first")
    dup = df[df.duplicated([L.method, *L.pair], keep=False)]
    if len(dup):
        raise MTVAEError(f"{len(dup)} rows repeat a (method, {', '.join(L.pair)}): "
                         f"{_listed(_rows(dup, [L.method, *L.pair]))}"
                         "; average or drop the duplicates first")
    ref = df[df[L.method] == reference].set_index(L.pair)[L.score]
    sign = 1.0 if L.higher_is_better else -1.0
    rows, problems = [], []
    for m in methods:
        mine = df[df[L.method] == m].set_index(L.pair)[L.score]
        lacking, extra = ref.index.difference(mine.index), mine.index.difference(ref.index)
        if len(lacking):
            problems.append(f"{m!r} lacks {_listed(lacking)}")
        if len(extra):
            problems.append(f"{reference!r} lacks {_listed(extra)} (run by {m!r})")
        if len(lacking) or len(extra):
            continue
        r = ref.loc[mine.index]
        rows.append(pd.DataFrame({L.method: m, "ref_score": r, "method_score": mine,
                                  "gain": sign * (mine - r)}).reset_index())
    if problems:
        raise MTVAEError(f"unpaired runs ({', '.join(L.pair)}): " + "; ".join(problems)
                         + ". Finish those runs, or keep only complete pairs before comparing")
    return pd.concat(rows, ignore_index=True)[
        [L.method, *L.pair, "ref_score", "method_score", "gain"]]


def table_gains(gains: pd.DataFrame, *, relative: bool = False, layout: Layout = Layout(),
                n_resamples: int = 10000, confidence: float = 0.95, seed: int = 0,
                ci_method: str = "percentile") -> pd.DataFrame:
    """Per (method, table): the mean gain over rates and seeds with a seed-clustered CI.

    ``gains`` is :func:`paired_gains`'s output. The bootstrap resamples seeds, each with all
    of its rates, and averages every drawn (rate, seed) gain; with every seed at every rate
    this is the bootstrap of the per-seed gains averaged over rates. ``relative=True``
    reports ``sum(gain) / sum(|reference|)`` over the table's runs instead (e.g. 0.05: the
    method's error is 5 % below the reference's), resampled the same way.
    """
    L = layout
    _require(gains, [L.method, *L.pair, "gain", "ref_score", "method_score"],
             "gains (use paired_gains)")
    if relative and (gains.ref_score == 0).any():
        raise MTVAEError("the reference scores 0 on some runs; relative gains divide by the "
                         "reference's error: use relative=False")
    rows = []
    for (m, t), g in gains.groupby([L.method, L.table], sort=False):
        ci = clustered_bootstrap_ci(g["gain"], g[L.seed],
                                    weights=g.ref_score.abs() if relative else None,
                                    n_resamples=n_resamples, confidence=confidence, seed=seed,
                                    method=ci_method)
        rows.append({L.method: m, L.table: t, "gain": ci.estimate, "ci_low": ci.low,
                     "ci_high": ci.high, "n_seeds": ci.n, "n_rates": g[L.rate].nunique(),
                     "n_pairs": len(g), "ref_score": g.ref_score.mean(),
                     "method_score": g.method_score.mean(), "relative": relative})
    return pd.DataFrame(rows)


def _per_table(per_table: pd.DataFrame, layout: Layout) -> None:
    _require(per_table, [layout.method, layout.table, "gain", "relative"],
             "per-table gains (use table_gains)")


def across_tables(per_table: pd.DataFrame, *, layout: Layout = Layout(),
                  n_resamples: int = 10000, confidence: float = 0.95, seed: int = 0,
                  ci_method: str = "percentile") -> pd.DataFrame:
    """Per method: the mean of its per-table gains with a CI from resampling tables.

    ``tables_better``/``tables_worse`` count the tables whose own CI lies above/below 0.
    With ~8 tables the interval is wide; it is the honest width of what 8 tables say.
    """
    _per_table(per_table, layout)
    rows = []
    for m, g in per_table.groupby(layout.method, sort=False):
        ci = paired_bootstrap_ci(g["gain"], n_resamples=n_resamples, confidence=confidence,
                                 seed=seed, method=ci_method)
        row = {layout.method: m, "gain": ci.estimate, "ci_low": ci.low, "ci_high": ci.high,
               "n_tables": ci.n, "relative": bool(g.relative.iloc[0])}
        if {"ci_low", "ci_high"} <= set(g.columns):
            row |= {"tables_better": int((g.ci_low > 0).sum()),
                    "tables_worse": int((g.ci_high < 0).sum())}
        rows.append(row)
    return pd.DataFrame(rows)


# -- p-values for declared primary comparisons ---------------------------------------------
def signed_rank(x: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of paired differences ``x`` against 0: the
    statistic and p-value; zero differences split between the signs, all zeros give p = 1."""
    if np.all(x == 0):
        return math.nan, 1.0
    res = st.wilcoxon(x, zero_method="zsplit")
    return float(res.statistic), float(res.pvalue)


def wilcoxon_tables(per_table: pd.DataFrame, *, layout: Layout = Layout()) -> pd.DataFrame:
    """Per method: two-sided Wilcoxon signed-rank test of its per-table mean gains against 0.

    Zero gains are split between the signs (as :func:`mtvae.stats.wilcoxon_holm`); all-zero
    gains give p = 1. With n tables the smallest possible p is 2 / 2**n (0.0078 for 8).
    """
    _per_table(per_table, layout)
    rows = []
    for m, g in per_table.groupby(layout.method, sort=False):
        if len(g) < 2:
            raise MTVAEError(f"{m!r} has {len(g)} table(s); the test needs at least 2")
        stat, p = signed_rank(g["gain"].to_numpy(dtype=float))
        rows.append({layout.method: m, "n_tables": len(g), "gain": float(g.gain.mean()),
                     "statistic": stat, "p_value": p})
    return pd.DataFrame(rows)


def seed_tests(gains: pd.DataFrame, *, test: str = "t",
               layout: Layout = Layout()) -> pd.DataFrame:
    """Per (method, table): paired t (``"t"``) or Wilcoxon test of the per-seed gains vs 0.

    A seed's gain is first averaged over the rates, so the seeds are the independent units.
    Equal gains on every seed give p = 1 when they are 0 and p = 0 otherwise (t test).
    """
    check_choice("test", test, ("t", "wilcoxon"))
    L = layout
    _require(gains, [L.method, *L.pair, "gain"], "gains (use paired_gains)")
    per_seed = gains.groupby([L.method, L.table, L.seed], sort=False)["gain"].mean()
    rows = []
    for (m, t), g in per_seed.groupby(level=[0, 1], sort=False):
        x = g.to_numpy(dtype=float)
        if len(x) < 2:
            raise MTVAEError(f"{m!r} on {t!r} has {len(x)} seed(s); the test needs at least 2")
        if test == "wilcoxon":
            stat, p = signed_rank(x)
        elif np.ptp(x) == 0:
            stat, p = math.nan, 1.0 if x[0] == 0 else 0.0
        else:
            res = st.ttest_1samp(x, 0.0)
            stat, p = float(res.statistic), float(res.pvalue)
        rows.append({L.method: m, L.table: t, "n_seeds": len(x), "gain": float(x.mean()),
                     "statistic": stat, "p_value": p})
    return pd.DataFrame(rows)


# -- Bayesian signed-rank test -------------------------------------------------------------
@dataclass(frozen=True)
class BayesResult:
    """Posterior probabilities that the method is better, equivalent, or worse (sum to 1)."""

    p_better: float  # the gain exceeds +rope
    p_equivalent: float  # the gain lies within ±rope
    p_worse: float  # the gain is below −rope: the reference is better
    rope: float
    n: int


def bayes_signed_rank(gains: Sequence[float] | np.ndarray, *, rope: float = RELATIVE_ROPE,
                      prior: float = 0.5, nsamples: int = 50000, seed: int = 0) -> BayesResult:
    """Bayesian signed-rank test (Benavoli et al. 2017, ``baycomp.SignedRankTest``).

    ``gains`` are per-table gains (positive = method better) in the unit of ``rope``: the
    default 0.01 is 1 % of the reference's error and fits relative gains. The Dirichlet
    process posterior (prior strength ``prior`` on a pseudo-observation at 0) is sampled
    ``nsamples`` times; each probability is the share of samples in which that region is
    the most probable, as in ``baycomp``.
    """
    import baycomp

    g = np.asarray(gains, dtype=float)
    if g.ndim != 1 or len(g) < 2 or not np.isfinite(g).all():
        raise MTVAEError(f"the test needs at least 2 finite gains, got {list(g.ravel())}")
    if rope < 0 or prior < 0 or nsamples < 1:
        raise MTVAEError(f"rope and prior must be >= 0 and nsamples >= 1, got rope={rope}, "
                         f"prior={prior}, nsamples={nsamples}")
    # baycomp's "left" is x − y > rope; with x = gains, y = 0 that is "the method is better"
    post = baycomp.SignedRankTest(g, np.zeros_like(g), rope, prior=prior, nsamples=nsamples,
                                  random_state=seed)
    left, mid, right = (float(p) for p in post.probs(with_rope=True))
    return BayesResult(left, mid, right, rope, len(g))


def bayes_by_method(per_table: pd.DataFrame, *, rope: float | None = None, prior: float = 0.5,
                    nsamples: int = 50000, seed: int = 0,
                    layout: Layout = Layout()) -> pd.DataFrame:
    """:func:`bayes_signed_rank` for each method on its per-table gains.

    ``rope`` defaults to :data:`RELATIVE_ROPE` for relative gains; absolute gains need an
    explicit ``rope`` in the score's unit.
    """
    _per_table(per_table, layout)
    relative = bool(per_table.relative.all())
    if rope is None:
        if not relative:
            raise MTVAEError("absolute gains need an explicit rope in the score's unit; or use "
                             "relative gains (table_gains(..., relative=True))")
        rope = RELATIVE_ROPE
    rows = []
    for m, g in per_table.groupby(layout.method, sort=False):
        r = bayes_signed_rank(g["gain"], rope=rope, prior=prior, nsamples=nsamples, seed=seed)
        rows.append({layout.method: m, "n_tables": r.n, "gain": float(g.gain.mean()),
                     "p_better": r.p_better, "p_equivalent": r.p_equivalent,
                     "p_worse": r.p_worse, "rope": r.rope, "relative": relative})
    return pd.DataFrame(rows)


# -- ranks among the VAE methods -----------------------------------------------------------
@dataclass(frozen=True)
class FriedmanNemenyi:
    """Friedman's test, average ranks, Nemenyi p-values and critical difference."""

    friedman: stats.FriedmanResult
    ranks: pd.Series  # average rank per method, best (1) first
    cd: float  # two methods differ at ``alpha`` when their ranks differ by at least cd
    nemenyi: pd.DataFrame = field(repr=False)  # pairwise p-values (scikit-posthocs)
    table: pd.DataFrame = field(repr=False)  # tables x methods, rates and seeds averaged
    alpha: float = 0.05


def critical_difference(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi's CD = q_alpha sqrt(k(k+1)/(6N)) for any k, q from the studentized range."""
    if k < 2 or n_blocks < 2 or not 0 < alpha < 1:
        raise MTVAEError(f"need k >= 2 methods, N >= 2 blocks and 0 < alpha < 1; got k={k}, "
                         f"N={n_blocks}, alpha={alpha}")
    q = st.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6 * n_blocks)))


def friedman_nemenyi(scores: pd.DataFrame, *, methods: Sequence[str] | None = None,
                     exclude: Sequence[str] = (), alpha: float = 0.05,
                     layout: Layout = Layout()) -> FriedmanNemenyi:
    """Friedman + Nemenyi among ``methods`` (default all) minus ``exclude``, tables as blocks.

    Each table's score is averaged over its rates and seeds first. Pass the classical
    imputers (and mean imputation) in ``exclude`` so the ranks compare VAE methods only;
    every name in ``methods`` and ``exclude`` must occur in the scores (a typo would
    silently change the comparison).
    """
    from scikit_posthocs import posthoc_nemenyi_friedman

    L = layout
    _require(scores, [L.table, L.method, L.score], "scores")
    present = list(pd.unique(scores[L.method]))
    chosen = present if methods is None else list(methods)
    unknown = [m for m in [*chosen, *exclude] if m not in present]
    if unknown:
        raise MTVAEError(f"methods {unknown} are not in the scores; methods: {present}")
    chosen = [m for m in chosen if m not in set(exclude)]
    df = scores[scores[L.method].isin(chosen)]
    table = stats.block_table(df, value=L.score, method=L.method, blocks=(L.table,))
    table = table[chosen]
    res = stats.friedman(table, lower_is_better=not L.higher_is_better)
    signed = table if not L.higher_is_better else -table
    nemenyi = posthoc_nemenyi_friedman(signed.to_numpy(dtype=float))
    nemenyi.index = nemenyi.columns = table.columns
    cd = critical_difference(len(chosen), len(table), alpha)
    return FriedmanNemenyi(res, res.ranks, cd, nemenyi, table, alpha)


# -- conditions per method -----------------------------------------------------------------
def spearman_exact(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
                   n_resamples: int = 50000, seed: int = 0) -> tuple[float, float]:
    """Spearman's rho and its two-sided permutation p-value (``scipy.stats.permutation_test``).

    With a handful of tables the usual t approximation is badly wrong (for 3 tables in the
    same order it gives p = 0; the exact p is 1/3), so the p-value counts the pairings of
    ``x`` with ``y``: exactly, over all n! of them, while n! <= ``n_resamples`` (n <= 8),
    else from ``n_resamples`` random ones drawn with ``seed``.
    """
    rx, ry = st.rankdata(np.asarray(x, dtype=float)), st.rankdata(np.asarray(y, dtype=float))
    if len(rx) != len(ry) or len(rx) < 3:
        raise MTVAEError(f"spearman_exact needs two samples of the same length >= 3, got "
                         f"{len(rx)} and {len(ry)}")
    cy = ry - ry.mean()
    cy = cy / np.linalg.norm(cy)

    def rho(a: np.ndarray, axis: int = -1) -> np.ndarray:
        a = a - a.mean(axis=axis, keepdims=True)
        return (a * cy).sum(axis=axis) / np.linalg.norm(a, axis=axis)

    res = st.permutation_test((rx,), rho, permutation_type="pairings", vectorized=True,
                              n_resamples=n_resamples, rng=np.random.default_rng(seed))
    return float(np.clip(res.statistic, -1.0, 1.0)), float(res.pvalue)


def conditions_by_method(per_table: pd.DataFrame, properties: pd.DataFrame, *,
                         layout: Layout = Layout()) -> pd.DataFrame:
    """Spearman correlation of each method's per-table gain with each table property.

    ``properties`` is indexed by table, one column per property (size, heterogeneity,
    measured conflict, ...). One row per (method, property) with Spearman's rho and its
    exact permutation p-value (:func:`spearman_exact`); a constant property or gain gives
    rho = NaN. Tables lacking a property raise an error naming them.
    """
    _per_table(per_table, layout)
    missing = sorted(set(per_table[layout.table]) - set(properties.index))
    if missing:
        raise MTVAEError(f"tables {missing} have no properties; index `properties` by table")
    rows = []
    for m, g in per_table.groupby(layout.method, sort=False):
        if len(g) < 3:
            raise MTVAEError(f"{m!r} has {len(g)} table(s); a correlation needs at least 3")
        for prop in properties.columns:
            x = properties.loc[g[layout.table], prop].to_numpy(dtype=float)
            y = g["gain"].to_numpy(dtype=float)
            if np.ptp(x) == 0 or np.ptp(y) == 0:
                rho, p = math.nan, math.nan
            else:
                rho, p = spearman_exact(x, y)
            rows.append({layout.method: m, "property": prop, "rho": rho, "p_value": p,
                         "n_tables": len(g)})
    return pd.DataFrame(rows)
