"""Reading the tables grid (Chapters 3-5): convergence, tuned comparisons, both protocols.

The grid (:func:`mtvae.experiments.grids.tables_grid`) holds three kinds of record: the
tuning runs (tuning seeds, one missing rate), the evaluation runs (the chosen and the
default configuration of every family on the evaluation seeds) and the classical
references. This module turns them into the frames the chapters show and test:

* :func:`convergence` — per (table, rate): the share of runs stopped by patience and the
  best step against the cap (the "converged by construction" check);
* :func:`scores` — one row per (table, rate, seed, method) of the corrected protocol, each
  family at its configuration chosen on validation (the sum as ``"sum (tuned)"``), the
  references beside them, ready for :mod:`mtvae.comparisons`;
* :func:`protocols` — the default configurations scored both ways (the anchor paper's
  observed-cell reconstruction on validation, and the missing test cells), so the effect
  of the protocol is seen on the same runs;
* :func:`estimators` — the predictive mean against the anchor's mode estimator;
* :func:`complete_tables` — the tables whose every run is recorded, the only ones a chapter
  reports while the grid is still running; :func:`common_pairs` keeps the (table, rate,
  seed) cells that every compared method has finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtvae.errors import MTVAEError
from mtvae.experiments import load_results
from mtvae.experiments.grids import (
    tables_choices,
    tables_families,
    tables_grid,
    tables_seeds,
)
from mtvae.experiments.tuning import choose, default, family_of
from mtvae.profiles import Profile
from mtvae.results import compute_seconds, results_dir

TUNED_SUM = "sum (tuned)"
REFERENCE_NAMES = {"mean": "mean/mode", "knn": "k-NN", "mice": "MICE (Bayesian ridge)",
                   "missforest": "missForest-style (extra trees)"}


def records(profile: Profile, root: str | Path | None = None) -> pd.DataFrame:
    """Every record of the profile's tables grid (ok and failed), with a ``family`` column
    (an empty frame with the key columns while nothing is recorded)."""
    folder = (Path(root) if root is not None else results_dir()) / f"tables-{profile.name}"
    if not any(folder.glob("*.json")):  # nothing recorded yet: an empty frame, not an error
        return pd.DataFrame(columns=["id", "kind", "status", "dataset", "method", "lr", "seed",
                                     "missing_rate", "family"])
    runs = load_results(f"tables-{profile.name}", root, status="all")
    runs["family"] = [family_of(m) if isinstance(m, str) else None
                      for m in runs.get("method", pd.Series([None] * len(runs)))]
    return runs


def complete_tables(runs: pd.DataFrame, profile: Profile, root: str | Path | None = None
                    ) -> tuple[str, ...]:
    """The profile's tables (in its order) whose grid is finished: every family's tuning is
    recorded (so its choice exists) and every run the grid asks of the table — tuning,
    evaluation of the chosen and the default configurations, references — has a record
    (ok or failed) among ``runs``. A chapter reports these and names the others pending."""
    t = profile.tables
    chosen = tables_choices(profile, root)
    done = set(runs["id"]) if "id" in runs.columns else set()
    wanted: dict[str, list[str]] = {ds: [] for ds in t.datasets}
    for run in tables_grid(profile, root).runs():
        wanted[str(run.config["dataset"])].append(run.id)
    return tuple(ds for ds in t.datasets
                 if all((ds, fam) in chosen for fam in tables_families(t, ds))
                 and all(i in done for i in wanted[ds]))


def common_pairs(scores: pd.DataFrame, methods: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """The rows of ``methods`` on the (table, rate, seed) cells where every one of them has a
    finite score, so paired comparisons never meet a half-finished or diverged cell."""
    if not len(methods):
        raise MTVAEError("common_pairs needs at least one method")
    key = ["dataset", "missing_rate", "seed"]
    df = scores[scores.method.isin(methods) & np.isfinite(scores.mean_error.astype(float))]
    n = df.groupby(key).method.nunique()
    keep = n[n == len(set(methods))].index
    return df[df.set_index(key).index.isin(keep)].reset_index(drop=True)


def _score(cell: Any, key: str = "mean_error") -> float:
    return float(cell[key]) if isinstance(cell, dict) and cell.get(key) is not None else np.nan


def label(family: str) -> str:
    """The name a family carries in the chapters' tables (the sum is the tuned sum)."""
    return TUNED_SUM if family == "sum" else family


def evaluation(runs: pd.DataFrame, profile: Profile, root: str | Path | None = None
               ) -> pd.DataFrame:
    """The evaluation runs of every family at its chosen configuration (one row each)."""
    t = profile.tables
    chosen = tables_choices(profile, root)
    vae = runs[runs.kind == "tables"]
    parts = []
    for (ds, fam), cfg in chosen.items():
        sub = vae[(vae.dataset == ds) & (vae.method == cfg.method) & (vae.lr == cfg.lr)
                  & vae.seed.isin(tables_seeds(t, ds))].copy()
        sub["family"] = fam
        parts.append(sub)
    if not parts:
        raise MTVAEError(f"the tables-{profile.name} grid has no finished tuning yet; run "
                         f"`python -m mtvae grid tables --profile {profile.name}`")
    return pd.concat(parts, ignore_index=True)


def convergence(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (table, rate): runs, share stopped by patience, best step / cap (median, max)."""
    vae = runs[(runs.kind == "tables") & (runs.status == "ok")].copy()
    vae["best_share"] = vae.best_step / vae.step_cap
    g = vae.groupby(["dataset", "missing_rate"])
    return pd.DataFrame({"runs": g.size(), "stopped_by_patience": g.stopped_early.mean(),
                         "median_best_step": g.best_step.median(),
                         "step_cap": g.step_cap.max(),
                         "max_best_share": g.best_share.max()}).reset_index()


def core_hours(runs: pd.DataFrame) -> float:
    """Training time of ``runs`` (a :func:`load_results` frame) in core-hours, a job running on
    one thread; each stacked job counts once (:func:`mtvae.results.compute_seconds`)."""
    if "seconds" not in runs.columns:
        return 0.0
    rows = runs.dropna(subset=["seconds"])
    engines = rows["engine"] if "engine" in rows.columns else pd.Series("single", rows.index)
    stacks = rows["stack"] if "stack" in rows.columns else pd.Series(1, rows.index)
    return compute_seconds(
        {"engine": {"name": e, "stack": s}, "timings": {"seconds": float(t)}}
        for e, s, t in zip(engines, stacks, rows["seconds"], strict=True)) / 3600


def scores(runs: pd.DataFrame, profile: Profile, *, protocol: str = "test",
           root: str | Path | None = None, references: bool = True) -> pd.DataFrame:
    """Long frame ``dataset, missing_rate, seed, method, mean_error`` of the corrected
    protocol: each family at its chosen configuration (named by :func:`label`), plus the
    references (named by :data:`REFERENCE_NAMES`) when ``references``."""
    ev = evaluation(runs, profile, root)
    ev = ev[ev.status == "ok"]
    out = pd.DataFrame({"dataset": ev.dataset, "missing_rate": ev.missing_rate,
                        "seed": ev.seed, "method": ev.family.map(label),
                        "mean_error": ev[protocol].map(_score)})
    if references:
        ref = runs[(runs.kind == "reference") & (runs.status == "ok")]
        out = pd.concat([out, pd.DataFrame({
            "dataset": ref.dataset, "missing_rate": ref.missing_rate, "seed": ref.seed,
            "method": ref.imputer.map(REFERENCE_NAMES), "mean_error": ref[protocol].map(_score)})],
            ignore_index=True)
    return out.reset_index(drop=True)


def protocols(runs: pd.DataFrame, profile: Profile) -> pd.DataFrame:
    """The default configuration of every family at the tuning rate, scored under both
    protocols: ``anchor`` (observed validation cells, mode estimator) and ``corrected``
    (missing test cells, predictive mean). One row per (table, seed, method)."""
    t = profile.tables
    rows = []
    vae = runs[(runs.kind == "tables") & (runs.status == "ok")
               & (runs.missing_rate == t.tuning_rate)]
    for ds in t.datasets:
        for fam in tables_families(t, ds):
            cfg = default(fam, t.lrs)
            sub = vae[(vae.dataset == ds) & (vae.method == cfg.method) & (vae.lr == cfg.lr)
                      & vae.seed.isin(tables_seeds(t, ds))]
            rows += [{"dataset": ds, "seed": r.seed, "method": fam,
                      "anchor": _score(r.anchor), "corrected": _score(r.test)}
                     for r in sub.itertuples()]
    return pd.DataFrame(rows)


def estimators(runs: pd.DataFrame, profile: Profile, root: str | Path | None = None
               ) -> pd.DataFrame:
    """Per (table, method): mean test error with the predictive mean and with the mode."""
    ev = evaluation(runs, profile, root)
    ev = ev[ev.status == "ok"]
    frame = pd.DataFrame({"dataset": ev.dataset, "method": ev.family.map(label),
                          "predictive mean": ev.test.map(_score),
                          "mode": ev.test_mode.map(_score)})
    return frame.groupby(["dataset", "method"]).mean().reset_index()


def _val_errors(tuning: pd.DataFrame, dataset: str, cfg: Any) -> pd.Series:
    """Validation errors of one configuration by tuning seed (NaN for a failed run)."""
    sub = tuning[(tuning.dataset == dataset) & (tuning.method == cfg.method)
                 & (tuning.lr == cfg.lr)]
    return pd.Series([_score(v) if s == "ok" else np.nan
                      for v, s in zip(sub.val, sub.status, strict=True)],
                     index=sub.seed.to_numpy(), dtype=float)


def selection_noise(runs: pd.DataFrame, profile: Profile, datasets: tuple[str, ...] | list[str]
                    ) -> pd.DataFrame:
    """How well validation resolves each choice: per (table, family), the mean validation
    error of the default and of the chosen configuration over the tuning seeds, their paired
    difference ``gap`` (default minus chosen; 0 where the default was chosen) and its standard
    error over those seeds (``sd / sqrt(n)`` of the per-seed differences, on the same masks).
    ``resolved`` is whether the chosen configuration beats the default by more than two
    standard errors: where it does not, the choice is within the noise of ``len(tuning_seeds)``
    seeds and a "tuned" configuration can be worse than the default on other seeds."""
    t = profile.tables
    tun = runs[(runs.kind == "tables") & (runs.missing_rate == t.tuning_rate)
               & runs.seed.isin(t.tuning_seeds)]
    rows = []
    for ds in datasets:
        for fam in tables_families(t, ds):
            picked = choose(tun[tun.dataset == ds], fam, t.lrs, t.tuning_seeds)
            if picked is None:  # tuning not finished
                continue
            pick, base = picked[0], default(fam, t.lrs)
            e_base, e_pick = _val_errors(tun, ds, base), _val_errors(tun, ds, pick)
            diff = (e_base - e_pick).dropna()
            se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else np.nan
            gap = float(diff.mean()) if len(diff) else np.nan
            rows.append({"dataset": ds, "family": fam, "default_val": float(e_base.mean()),
                         "chosen_val": float(e_pick.mean()), "gap": gap, "se": se,
                         "is_default": pick == base,
                         "resolved": bool(pick != base and gap > 2 * se)})
    return pd.DataFrame(rows, columns=["dataset", "family", "default_val", "chosen_val", "gap",
                                       "se", "is_default", "resolved"])
