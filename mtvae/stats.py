"""Comparing several methods over many data sets: ranks, Friedman, Nemenyi, Wilcoxon–Holm.

Following Demšar (JMLR 2006), a comparison is a ``blocks x methods`` table of scores — one
row per block (a data set, or a data set at one missing rate, with the seeds averaged), one
column per method, lower is better unless told otherwise.

* :func:`average_ranks` ranks the methods within each block (ties share the average rank)
  and averages over blocks.
* :func:`friedman` tests whether all methods are equivalent: Friedman's chi-square (with
  the tie correction, equal to :func:`scipy.stats.friedmanchisquare`) and the less
  conservative Iman–Davenport F.
* :func:`nemenyi_cd` is the critical difference of average ranks for all-pairs comparisons
  (two methods differ significantly when their average ranks differ by at least CD);
  :func:`mtvae.plots.cd_diagram` draws it.
* :func:`wilcoxon_holm` compares every method with one reference by the Wilcoxon
  signed-rank test over blocks and corrects the p-values with Holm's step-down procedure
  (:func:`holm`).
* :func:`holm_adjust` corrects a declared family of primary comparisons ``{name: p}``
  (statsmodels' Holm) and says which are rejected.
* :func:`paired_comparison` is the per-seed view used inside one setting: each method against
  a reference run with the same seed (same data, mask and initialisation), as mean gain, its
  spread and the number of seeds won.

Degenerate inputs give documented results rather than crashes: a block in which all methods
tie contributes equal ranks; if every block is one big tie, the Friedman statistic is 0
with p = 1; a method whose differences to the reference are all zero gets p = 1. Too few
blocks or methods raise :class:`~mtvae.errors.MTVAEError` naming the fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as st

from mtvae.errors import MTVAEError, check_choice

# Critical values q_alpha of the Nemenyi test (studentized range / sqrt 2, infinite degrees
# of freedom) for k = 2..10 methods, Demšar (2006), Table 5(a).
Q_ALPHA: dict[float, tuple[float, ...]] = {
    0.05: (1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164),
    0.10: (1.645, 2.052, 2.291, 2.459, 2.589, 2.693, 2.780, 2.855, 2.920),
}


def block_table(df: pd.DataFrame, value: str = "mean_error", method: str = "method",
                blocks: Sequence[str] = ("dataset", "missing_rate")) -> pd.DataFrame:
    """``blocks x methods`` table of ``value`` averaged over the remaining rows (seeds).

    A block missing some method raises an error naming it: the tests need complete blocks.
    """
    missing = [c for c in (value, method, *blocks) if c not in df.columns]
    if missing:
        raise MTVAEError(f"columns {missing} are not in the table (it has "
                         f"{', '.join(map(str, df.columns))})")
    table = df.pivot_table(index=list(blocks), columns=method, values=value, aggfunc="mean")
    incomplete = table[table.isna().any(axis=1)]
    if len(incomplete):
        raise MTVAEError(f"blocks {list(incomplete.index)} lack results for some methods; "
                         "finish the grid or drop those blocks/methods first")
    table.columns.name = method
    return table


def _check_table(table: pd.DataFrame, min_methods: int = 2, min_blocks: int = 2) -> np.ndarray:
    values = table.to_numpy(dtype=float)
    if values.ndim != 2 or values.shape[1] < min_methods:
        raise MTVAEError(f"need at least {min_methods} methods (columns), got "
                         f"{values.shape[1] if values.ndim == 2 else 0}")
    if values.shape[0] < min_blocks:
        raise MTVAEError(f"need at least {min_blocks} blocks (rows: data sets x settings), "
                         f"got {values.shape[0]}")
    if not np.isfinite(values).all():
        raise MTVAEError("the table has missing or infinite scores; drop incomplete blocks")
    return values


def rank_table(table: pd.DataFrame, lower_is_better: bool = True) -> pd.DataFrame:
    """Rank of each method within each block (1 = best; ties get the average rank)."""
    values = _check_table(table, min_methods=1, min_blocks=1)
    ranks = st.rankdata(values if lower_is_better else -values, axis=1, method="average")
    return pd.DataFrame(ranks, index=table.index, columns=table.columns)


def average_ranks(table: pd.DataFrame, lower_is_better: bool = True) -> pd.Series:
    """Average rank of each method over the blocks, best (smallest) first."""
    return rank_table(table, lower_is_better).mean(axis=0).sort_values().rename("avg_rank")


@dataclass(frozen=True)
class FriedmanResult:
    """Friedman's test of "all methods are equivalent" over ``n_blocks`` blocks."""

    statistic: float  # chi-square, tie-corrected (as scipy)
    p_value: float
    f_statistic: float  # Iman–Davenport F
    f_p_value: float
    df1: int
    df2: int
    n_blocks: int
    k: int
    ranks: pd.Series


def iman_davenport(chi2: float, n_blocks: int, k: int) -> tuple[float, float, int, int]:
    """Iman–Davenport F = (N-1) chi2 / (N(k-1) - chi2) with its p-value and degrees of freedom.

    When every block ranks the methods identically (chi2 = N(k-1)), F is infinite, p = 0.
    """
    df1, df2 = k - 1, (k - 1) * (n_blocks - 1)
    denom = n_blocks * (k - 1) - chi2
    if denom <= 1e-12:
        return math.inf, 0.0, df1, df2
    f = (n_blocks - 1) * chi2 / denom
    return float(f), float(st.f.sf(f, df1, df2)), df1, df2


def friedman_from_ranks(avg_ranks: Sequence[float], n_blocks: int) -> tuple[float, float]:
    """Friedman's chi-square (no tie correction) and Iman–Davenport F from average ranks.

    Demšar (2006), Sec. 3.2.2: chi2 = 12N / (k(k+1)) [sum_j R_j^2 - k(k+1)^2 / 4].
    """
    r = np.asarray(avg_ranks, dtype=float)
    k = len(r)
    chi2 = 12 * n_blocks / (k * (k + 1)) * (float((r ** 2).sum()) - k * (k + 1) ** 2 / 4)
    return chi2, iman_davenport(chi2, n_blocks, k)[0]


def friedman(table: pd.DataFrame, lower_is_better: bool = True) -> FriedmanResult:
    """Friedman test (tie-corrected, as scipy) plus the Iman–Davenport F (needs k >= 3)."""
    values = _check_table(table, min_methods=3, min_blocks=2)
    n, k = values.shape
    ranks = average_ranks(table, lower_is_better)
    if np.all(values == values[:, :1]):  # every block a complete tie: no evidence at all
        chi2, p = 0.0, 1.0
    else:
        chi2, p = (float(v) for v in st.friedmanchisquare(*values.T))
    f, fp, df1, df2 = iman_davenport(chi2, n, k)
    return FriedmanResult(chi2, p, f, fp, df1, df2, n, k, ranks)


def nemenyi_cd(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference q_alpha sqrt(k(k+1) / (6N)) for k <= 10 methods."""
    if alpha not in Q_ALPHA:
        raise MTVAEError(f"alpha must be one of {sorted(Q_ALPHA)} (Demšar's table), got "
                         f"{alpha!r}")
    if not 2 <= k <= 10:
        raise MTVAEError(f"the Nemenyi table covers 2 to 10 methods, got k={k}")
    if n_blocks < 2:
        raise MTVAEError(f"need at least 2 blocks for a critical difference, got {n_blocks}")
    return Q_ALPHA[alpha][k - 2] * math.sqrt(k * (k + 1) / (6 * n_blocks))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as given; monotone, at most 1)."""
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or np.any((p < 0) | (p > 1)) or np.isnan(p).any():
        raise MTVAEError(f"p-values must be a list of numbers in [0, 1], got {list(p_values)}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order]).clip(max=1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out


def holm_adjust(p_values: Mapping[str, float], alpha: float = 0.05) -> pd.DataFrame:
    """Holm-adjust a declared family of primary comparisons ``{name: p-value}``.

    One row per comparison, in the given order: ``p_value``, ``p_holm`` (statsmodels'
    ``multipletests(method="holm")``, equal to :func:`holm`) and ``reject`` at ``alpha``
    (family-wise error rate). Declare the family before looking at the results: every
    comparison the text reads as a verdict belongs in it.
    """
    from statsmodels.stats.multitest import multipletests

    if not p_values:
        raise MTVAEError("no comparisons given; pass {comparison name: p-value}")
    if not 0 < alpha < 1:
        raise MTVAEError(f"alpha must be in (0, 1), got {alpha!r}")
    names = list(p_values)
    p = np.array([p_values[n] for n in names], dtype=float)
    if np.isnan(p).any() or np.any((p < 0) | (p > 1)):
        bad = [n for n, v in zip(names, p, strict=True) if not 0 <= v <= 1]
        raise MTVAEError(f"p-values must be numbers in [0, 1]; {bad} are not")
    reject, adjusted, _, _ = multipletests(p, alpha=alpha, method="holm")
    return pd.DataFrame({"p_value": p, "p_holm": adjusted, "reject": reject.astype(bool)},
                        index=pd.Index(names, name="comparison"))


def wilcoxon_holm(table: pd.DataFrame, reference: str, alpha: float = 0.05,
                  lower_is_better: bool = True,
                  alternative: str = "two-sided") -> pd.DataFrame:
    """Each method vs ``reference``: Wilcoxon signed-rank over blocks, Holm-corrected.

    Zero differences are split between the signs (``zero_method="zsplit"``, as Demšar
    recommends). A method identical to the reference on every block gets p = 1. The
    ``gain`` column is the mean of reference minus method (positive = method better when
    lower is better); ``alternative="greater"`` tests that gain.
    """
    check_choice("alternative", alternative, ("two-sided", "greater", "less"))
    values = _check_table(table, min_methods=2, min_blocks=2)
    if reference not in table.columns:
        raise MTVAEError(f"reference {reference!r} is not a column; columns are: "
                         + ", ".join(map(str, table.columns)))
    ref = values[:, list(table.columns).index(reference)]
    rows = []
    for j, name in enumerate(table.columns):
        if name == reference:
            continue
        gain = (ref - values[:, j]) if lower_is_better else (values[:, j] - ref)
        if np.all(gain == 0):
            stat, p = math.nan, 1.0
        else:
            res = st.wilcoxon(gain, zero_method="zsplit", alternative=alternative)
            stat, p = float(res.statistic), float(res.pvalue)
        rows.append({"method": name, "n": len(gain), "gain": float(gain.mean()),
                     "wins": int((gain > 0).sum()), "ties": int((gain == 0).sum()),
                     "losses": int((gain < 0).sum()), "statistic": stat, "p_value": p})
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(out.p_value.to_numpy())
    out["significant"] = out.p_holm < alpha
    return out


# -- paired comparisons over seeds -------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """A column of run results, how to name it, and which direction is better."""

    column: str
    label: str
    higher_is_better: bool


def paired_comparison(df: pd.DataFrame, metric: Metric, by: Sequence[str] = (),
                      method: str = "method", reference: str = "sum",
                      pair: Sequence[str] = ("seed",)) -> pd.DataFrame:
    """Per ``by`` group and method: reference and method means, paired gain, sd, wins, n.

    The gain is ``method - reference`` when higher is better and ``reference - method``
    otherwise, so a positive gain always means the MOO method did better.
    """
    missing = [c for c in (metric.column, method, *by, *pair) if c not in df.columns]
    if missing:
        raise MTVAEError(f"columns {missing} are not in the runs (they have "
                         f"{', '.join(map(str, df.columns))})")
    wide = df.pivot_table(index=[*by, *pair], columns=method, values=metric.column)
    if reference not in wide.columns:
        raise MTVAEError(f"no {reference!r} runs to compare with; methods: {list(wide.columns)}")
    rows = []
    for m in [c for c in wide.columns if c != reference]:
        diff = (wide[m] - wide[reference]) * (1 if metric.higher_is_better else -1)
        both = pd.DataFrame({"diff": diff, "ref": wide[reference], "value": wide[m]}).dropna()
        groups = both.groupby(level=list(by)) if by else [((), both)]
        for key, g in groups:
            key = key if isinstance(key, tuple) else (key,)
            rows.append({**dict(zip(by, key, strict=True)), "method": m,
                         "metric": metric.label, "reference": float(g.ref.mean()),
                         "value": float(g.value.mean()), "gain": float(g["diff"].mean()),
                         "sd": float(g["diff"].std(ddof=1)) if len(g) > 1 else np.nan,
                         "wins": int((g["diff"] > 0).sum()), "n": len(g)})
    return pd.DataFrame(rows)
