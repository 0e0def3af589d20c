"""Choosing a setting on validation and reporting it on test (the book's fair-comparison rule).

A tuned plain sum picks its weight (e.g. the label weight lambda from a log-spaced grid) per
group of runs (dataset, label fraction, ...) by the *mean validation* metric over seeds;
only then are the chosen setting's *test* metrics read. :func:`select_on_validation` makes
that order structural: the choice is computed from the group keys, the setting and the
validation column alone (the other columns are not handed to it), so test numbers cannot
leak into the choice. Ties go to the smallest setting; a setting with a missing validation
value on some seed (a diverged run) is never chosen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mtvae.errors import MTVAEError


@dataclass(frozen=True)
class Selection:
    """The outcome of a selection.

    Attributes:
        chosen: one row per group: the group keys, the chosen ``param`` value, its mean
            validation metric (``val_mean``), its number of runs (``n``) and how many
            settings were compared (``n_settings``).
        runs: every run of the chosen settings with all its columns (test metrics included),
            for reporting and paired comparisons.
    """

    chosen: pd.DataFrame
    runs: pd.DataFrame

    def test_summary(self, metrics: Sequence[str]) -> pd.DataFrame:
        """Mean test ``metrics`` of the chosen setting per group (beside ``chosen``)."""
        keys = [c for c in self.chosen.columns if c not in ("val_mean", "n", "n_settings")]
        missing = [m for m in metrics if m not in self.runs.columns]
        if missing:
            raise MTVAEError(f"the runs have no columns {missing}; they have "
                             f"{sorted(self.runs.columns)}")
        means = self.runs.groupby(keys, dropna=False)[list(metrics)].mean().reset_index()
        return self.chosen.merge(means, on=keys)


def as_frame(records_or_frame: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A DataFrame from a frame, from row dicts, or from run records (``config`` + ``metrics``
    merged into one row each; metrics win on a name clash)."""
    if isinstance(records_or_frame, pd.DataFrame):
        return records_or_frame
    rows = [({**r["config"], **r["metrics"]} if "config" in r and "metrics" in r else dict(r))
            for r in records_or_frame]
    return pd.DataFrame(rows)


def select_on_validation(
    records_or_frame: pd.DataFrame | Sequence[Mapping[str, Any]],
    *,
    by: Sequence[str] = (),
    param: str = "label_weight",
    val_metric: str,
    higher_is_better: bool,
) -> Selection:
    """Per group of ``by``, the ``param`` value with the best mean ``val_metric`` over runs.

    Args:
        records_or_frame: one row per run (see :func:`as_frame`).
        by: the columns that define a group (e.g. ``("dataset", "fraction")``); ``()`` for one.
        param: the column holding the setting to choose (e.g. ``"label_weight"``).
        val_metric: the validation column to rank by; names starting with ``test`` are
            refused (selection must not read test data).
        higher_is_better: whether a larger ``val_metric`` is better (accuracy) or worse (NLL).
    """
    frame = as_frame(records_or_frame)
    by = list(by)
    if val_metric.lower().startswith("test"):
        raise MTVAEError(f"val_metric {val_metric!r} is a test metric; select on a validation "
                         "metric and read test metrics only for the chosen setting")
    if param in by or val_metric in by or param == val_metric:
        raise MTVAEError(f"param {param!r} and val_metric {val_metric!r} must differ from each "
                         f"other and from the group keys {by}")
    missing = [c for c in [*by, param, val_metric] if c not in frame.columns]
    if missing:
        raise MTVAEError(f"the runs have no columns {missing}; they have {sorted(frame.columns)}")
    if frame.empty:
        raise MTVAEError("no runs to select from")
    # the decision sees these columns only
    decision = frame[[*by, param, val_metric]].copy()
    decision[val_metric] = pd.to_numeric(decision[val_metric], errors="coerce")
    keys = [*by, param]
    stats = (decision.groupby(keys, dropna=False)[val_metric]
             .agg(val_mean=lambda v: v.mean(skipna=False), n="size").reset_index())
    sign = 1.0 if higher_is_better else -1.0
    stats["_score"] = sign * stats["val_mean"]
    chosen_rows = []
    groups = stats.groupby(by, dropna=False, sort=True) if by else [((), stats)]
    for key, g in groups:
        ok = g[g["_score"].notna()]
        if ok.empty:
            raise MTVAEError(f"group {dict(zip(by, _tuple(key), strict=True))} has no setting "
                             f"with a validation {val_metric!r} on every run")
        best = ok.sort_values(["_score", param], ascending=[False, True]).iloc[0]
        chosen_rows.append({**best[keys].to_dict(), "val_mean": float(best["val_mean"]),
                            "n": int(best["n"]), "n_settings": len(g)})
    chosen = pd.DataFrame(chosen_rows, columns=[*keys, "val_mean", "n", "n_settings"])
    runs = frame.merge(chosen[keys], on=keys, how="inner")
    return Selection(chosen=chosen, runs=runs)


def _tuple(key: object) -> tuple[object, ...]:
    return key if isinstance(key, tuple) else (key,)
