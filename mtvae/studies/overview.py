"""Every multitask setting of the book in one table: MOO against the plain sum, paired by seed.

Chapters 2 and 3 each compare the plain sum of a model's terms with MOO methods in their own
setting (a quantised latent with a label head, heterogeneous features, supervised heads,
several modalities, latent layers whose rates are tasks). Chapter 5 needs them side by side to
answer *when* MT-VAEs win: this module reads each study's run records (train-or-load, so a
chapter that already ran costs nothing here) and reduces each to the same paired comparison:
the mean gain of a MOO method over the plain sum on the setting's main metric (sign chosen so
that positive = MOO better), its spread over seeds, on how many seeds it wins, and the change
of a secondary metric that shows what the gain cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mtvae.errors import MTVAEError

REFERENCE = "sum"


@dataclass(frozen=True)
class Metric:
    column: str
    label: str
    higher_is_better: bool


def paired_comparison(df: pd.DataFrame, metric: Metric, by: Sequence[str] = (),
                      method: str = "method", reference: str = REFERENCE,
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


def verdict(row: pd.Series) -> str:
    """``better`` / ``worse`` on every seed, else ``mixed`` (one seed proves nothing)."""
    if row.n < 2:
        return "one seed only"
    if row.wins == row.n:
        return "better on every seed"
    if row.wins == 0 and row.gain < 0:
        return "worse on every seed"
    return "mixed"


Loader = Callable[[], pd.DataFrame]


def _condition(df: pd.DataFrame, by: Sequence[str]) -> pd.Series:
    if not by:
        return pd.Series([""] * len(df), index=df.index)
    return df[list(by)].astype(str).agg(", ".join, axis=1)


def settings_table(profile: str, device: str = "auto", grid_runs: pd.DataFrame | None = None
                   ) -> pd.DataFrame:
    """One row per (setting, condition, MOO method): main-metric gain and secondary change."""
    from mtvae.studies import auxiliary, hierarchical, multimodal, vq_compare, vqvaes

    parts = []

    def add(setting: str, df: pd.DataFrame, main: Metric, cost: Metric,
            by: Sequence[str] = (), method: str = "method",
            pair: Sequence[str] = ("seed",)) -> None:
        a = paired_comparison(df, main, by, method, pair=pair)
        b = paired_comparison(df, cost, by, method, pair=pair)
        a["condition"], b["condition"] = _condition(a, by), _condition(b, by)
        b = b.rename(columns={"gain": "cost_gain", "metric": "cost_metric"})[
            ["condition", "method", "cost_metric", "cost_gain"]]
        out = a.merge(b, on=["condition", "method"])
        out.insert(0, "setting", setting)
        parts.append(out)

    if grid_runs is not None:
        g = grid_runs[grid_runs.kind == "hetero"].assign(
            rate=lambda d: [f"{100 * r:.0f} % missing" for r in d.missing_rate])
        add("heterogeneous features (grid)", g,
            Metric("mean_error", "imputation error", False),
            Metric("test_nelbo", "test −ELBO", False), by=("rate",), pair=("dataset", "seed"))
    aux = auxiliary.Study.create(profile, device).all_runs()
    mn = aux[(aux.dataset == "mnist5k") & (aux.method != auxiliary.PLAIN)].assign(
        labels=lambda d: [f"MNIST-5k, {100 * f:g} % labels" for f in d.fraction])
    add("auxiliary label head", mn, Metric("head_acc", "head accuracy", True),
        Metric("test_nelbo", "test −ELBO", False), by=("labels",))
    sh = aux[(aux.dataset == "shapes") & (aux.method != auxiliary.PLAIN)]
    sh = sh.groupby(["method", "seed"], as_index=False)[["head_acc", "test_nelbo"]].mean()
    add("auxiliary factor heads (shapes)", sh.assign(c="shapes, 5 heads"),
        Metric("head_acc", "mean head accuracy", True),
        Metric("test_nelbo", "test −ELBO", False), by=("c",))
    mm = multimodal.Study.create(profile, device).all_runs()
    add("multimodal", mm, Metric("cross_mean", "mean cross-modal coherence", True),
        Metric("ll_digit", "8×8 digit log-lik.", True), by=("fusion",))
    hr = hierarchical.Study.create(profile, device).moo_runs()
    add("hierarchical, rates as tasks", hr, Metric("nelbo", "test −ELBO", False),
        Metric("kl2", "top-layer rate R2 (nats)", True), by=("dataset",))
    vq = vq_compare.multitask(vqvaes.Study.create(profile, device))
    add("VQ-VAE + label head", vq.assign(c="MNIST-5k"),
        Metric("test_accuracy", "label accuracy", True),
        Metric("test_distortion", "distortion", False), by=("c",), method="combiner")
    out = pd.concat(parts, ignore_index=True)
    out["verdict"] = out.apply(verdict, axis=1)
    return out[["setting", "condition", "method", "metric", "reference", "value", "gain", "sd",
                "wins", "n", "cost_metric", "cost_gain", "verdict"]]
