"""Reading the multitask settings' grids (``aux``, ``multimodal``, ``vqhead``, ``hier``,
``beta``) for the chapters: every run's role, the tuned sum against each MOO method with
paired bootstrap intervals, and how the runs stopped.

A run of a staged grid is a *tuning* run (a tuning seed: never reported), a *default* run
(the untuned configuration on an evaluation seed: the book's old comparison) and/or a
*chosen* run (the configuration chosen on validation, :mod:`mtvae.experiments.staged`, on an
evaluation seed). The reported comparison is chosen against chosen, paired by seed, on a
test metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtvae.bootstrap import paired_bootstrap_ci
from mtvae.errors import MTVAEError, check_choice
from mtvae.experiments.runner import load_results
from mtvae.experiments.setting_grids import (
    _tuning,
    aux_fixed,
    aux_points,
    mm_fixed,
    mm_points,
    vq_fixed,
)
from mtvae.experiments.staged import choose_option, grid_folder, options
from mtvae.experiments.tuning import family_of
from mtvae.profiles import Profile
from mtvae.results import run_id

TUNED_SUM = "sum (tuned)"
STAGED_GRIDS = {"aux": ("aux", "aux_grid", ("dataset", "label_fraction")),
                "multimodal": ("mm", "mm_grid", ("fusion",)),
                "vqhead": ("vqhead", "vq_grid", ())}
"""grid -> (run kind, profile study, the keys of a setting point)."""


def _layout(grid: str, profile: Profile) -> tuple[str, Any, list[dict[str, Any]],
                                                  dict[str, Any], tuple[str, ...]]:
    check_choice("staged settings grid", grid, STAGED_GRIDS)
    kind, study, keys = STAGED_GRIDS[grid]
    points = {"aux": aux_points, "multimodal": mm_points, "vqhead": lambda p: [{}]}[grid](profile)
    fixed = {"aux": aux_fixed, "multimodal": mm_fixed, "vqhead": vq_fixed}[grid](profile)
    return kind, getattr(profile, study), points, fixed, keys


def records(grid: str, profile: Profile, root: str | Path | None = None) -> pd.DataFrame:
    """Every record of ``<grid>-<profile>`` (ok and failed) with ``family``, ``tuning``,
    ``default`` and ``chosen`` columns (a run can be both default and chosen)."""
    runs = load_results(f"{grid}-{profile.name}", root, status="all")
    runs["family"] = [family_of(m) if isinstance(m, str) else None
                      for m in runs.get("method", pd.Series([None] * len(runs)))]
    if grid not in STAGED_GRIDS:
        return runs
    kind, study, points, fixed, _ = _layout(grid, profile)
    t = _tuning(study)
    folder = grid_folder(f"{grid}-{profile.name}", root)
    default_ids, chosen_ids = set(), set()
    for point in points:
        base = {**fixed, **point}
        for fam in t.families:
            opts = options(t, fam)
            default_ids |= {run_id(kind, {**base, **opts[0], "seed": s}) for s in t.seeds}
            pick = choose_option(folder, kind, base, opts, t.tuning_seeds, t.select_on)
            if pick is not None:
                chosen_ids |= {run_id(kind, {**base, **opts[pick[0]], "seed": s})
                               for s in t.seeds}
    runs["tuning"] = runs.seed.isin(t.tuning_seeds)
    runs["default"] = runs.id.isin(default_ids)
    runs["chosen"] = runs.id.isin(chosen_ids)
    return runs


def evaluation(runs: pd.DataFrame, *, role: str = "chosen") -> pd.DataFrame:
    """The ok evaluation runs of one role (``chosen`` or ``default``), with a ``method``
    column naming the family (the sum as :data:`TUNED_SUM` when ``role`` is chosen)."""
    check_choice("role", role, ("chosen", "default"))
    ev = runs[runs[role] & (runs.status == "ok")].copy()
    if ev.empty:
        raise MTVAEError(f"no {role} runs recorded yet; run the grid (python -m mtvae grid ...) "
                         "until its tuning is complete")
    ev["compared"] = [TUNED_SUM if (f == "sum" and role == "chosen") else f for f in ev.family]
    return ev


def tuned_gains(ev: pd.DataFrame, metric: str, *, higher_is_better: bool,
                by: Sequence[str] = (), reference: str = TUNED_SUM, seed: int = 0
                ) -> pd.DataFrame:
    """Per group of ``by`` and method: the mean paired gain over ``reference`` on ``metric``
    (positive = the method did better), its 95 % bootstrap interval, wins and pairs."""
    if metric.lower().startswith("val"):
        raise MTVAEError(f"report a test metric, not {metric!r}; validation is for choosing")
    by = list(by)
    rows = []
    groups = ev.groupby(by, dropna=False) if by else [((), ev)]
    for key, g in groups:
        ref = g[g.compared == reference].set_index("seed")[metric]
        for method in sorted(set(g.compared) - {reference}):
            other = g[g.compared == method].set_index("seed")[metric]
            seeds = sorted(set(ref.index) & set(other.index))
            if len(seeds) < 2:
                continue
            diff = (other[seeds] - ref[seeds]).to_numpy(dtype=float)
            diff = diff if higher_is_better else -diff
            ci = paired_bootstrap_ci(diff, seed=seed)
            rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,),
                                    strict=True)),
                         "method": method, "gain": ci.estimate, "low": ci.low, "high": ci.high,
                         "wins": int((diff > 0).sum()), "n": len(diff)})
    return pd.DataFrame(rows)


def convergence(runs: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Per group: runs, share stopped by patience, median best epoch, the epoch cap."""
    ok = runs[runs.status == "ok"]
    g = ok.groupby(list(by)) if by else ok.groupby(np.zeros(len(ok)))
    out = pd.DataFrame({"runs": g.size(), "stopped_by_patience": g.stopped_early.mean(),
                        "median_best_epoch": g.best_epoch.median(), "epoch_cap": g.epoch_cap.max()})
    return out.reset_index(drop=not by)
