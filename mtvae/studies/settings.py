"""Reading the multitask settings' grids (``aux``, ``multimodal``, ``vqhead``, ``hier``,
``beta``) for the chapters: every run's role, the arms a chapter compares, which setting
points are complete, and how the runs stopped. The tested comparisons of the arms are
:mod:`mtvae.studies.evidence`'s.

A run of a staged grid is a *tuning* run (a tuning seed: never reported), a *default* run
(the untuned configuration on an evaluation seed: the book's old comparison) and/or a
*chosen* run (the configuration chosen on validation, :mod:`mtvae.experiments.staged`, on an
evaluation seed). The reported comparison is chosen against chosen, paired by seed, on a
test metric.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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
    folder = grid_folder(f"{grid}-{profile.name}", root)
    if not any(folder.glob("*.json")):  # nothing recorded yet: an empty frame, not an error
        return pd.DataFrame(columns=["id", "kind", "status", "seed", "method", "family",
                                     "dataset", "label_fraction", "tuning", "default",
                                     "chosen"])
    runs = load_results(f"{grid}-{profile.name}", root, status="all")
    runs["family"] = [family_of(m) if isinstance(m, str) else None
                      for m in runs.get("method", pd.Series([None] * len(runs)))]
    if grid not in STAGED_GRIDS:
        return runs
    kind, study, points, fixed, _ = _layout(grid, profile)
    t = _tuning(study)
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


def convergence(runs: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Per group: runs, share stopped by patience, median best epoch, the epoch cap."""
    ok = runs[runs.status == "ok"]
    g = ok.groupby(list(by)) if by else ok.groupby(np.zeros(len(ok)))
    out = pd.DataFrame({"runs": g.size(), "stopped_by_patience": g.stopped_early.mean(),
                        "median_best_epoch": g.best_epoch.median(), "epoch_cap": g.epoch_cap.max()})
    return out.reset_index(drop=not by)


# -- what the chapters read: complete points and arms ---------------------------------------
DEFAULT_SUM = "sum (λ = 1)"
PLAIN_PROBE = "plain VAE + probe"


def tuned(family: str) -> str:
    """The arm name of a family's configuration chosen on validation."""
    return TUNED_SUM if family == "sum" else f"{family} (tuned)"


def point_status(grid: str, profile: Profile, root: str | Path | None = None) -> pd.DataFrame:
    """One row per setting point of a staged grid: its planned, recorded and pending runs and
    ``complete`` (every family's tuning chosen, every evaluation run recorded). A run whose
    config lacks a point key (the ``aux`` grid's plain VAE has no label fraction) belongs to
    every point it matches on the keys it has."""
    from mtvae.experiments import get_grid
    from mtvae.experiments.runner import plan

    kind, study, points, fixed, keys = _layout(grid, profile)
    t = _tuning(study)
    folder = grid_folder(f"{grid}-{profile.name}", root)
    spec = get_grid(grid, profile.name, root)
    status = dict(zip(*(plan(spec, root)[c] for c in ("id", "status")), strict=True))
    rows = []
    for point in points:
        mine = [r for r in spec.runs()
                if all(str(r.config[k]) == str(v) for k, v in point.items() if k in r.config)]
        st = pd.Series([status[r.id] for r in mine], dtype=object)
        picks = [choose_option(folder, kind, {**fixed, **point}, options(t, fam),
                               t.tuning_seeds, t.select_on) for fam in t.families]
        pending = int((st == "pending").sum())
        rows.append({**point, "planned": len(mine), "done": int((st == "done").sum()),
                     "failed": int((st == "failed").sum()), "pending": pending,
                     "tuned": all(p is not None for p in picks),
                     "complete": pending == 0 and all(p is not None for p in picks)})
    return pd.DataFrame(rows, columns=[*keys, "planned", "done", "failed", "pending", "tuned",
                                       "complete"])


def setting_of(row: pd.Series, weight_key: str) -> str:
    """A run's tuned configuration in words: the sum's ``λ = 100`` (``weight_key``), an MOO
    method's CR-MOGM smoothing ``c = 0.5`` (``c = 0``: none)."""
    if row.family == "sum":
        return f"λ = {float(row[weight_key]):g}"
    found = re.search(r"crmogm=([0-9.e+-]+)", str(row.method))
    return f"c = {found.group(1) if found else '0'}"


def arms(runs: pd.DataFrame, weight_key: str = "label_weight") -> pd.DataFrame:
    """The ok evaluation runs as arms, a run once per role it has: the default sum
    (:data:`DEFAULT_SUM`), each MOO method's default (its family name), and every family's
    configuration chosen on validation (:func:`tuned`); ``setting`` names the configuration
    (``λ = 100``, ``c = 0.5``: the CR-MOGM smoothing)."""
    ok = runs[(runs.status == "ok") & ~runs.tuning]
    parts = []
    for role in ("default", "chosen"):
        part = ok[ok[role]].copy()
        part["arm"] = [(DEFAULT_SUM if f == "sum" else f) if role == "default" else tuned(f)
                       for f in part.family]
        part["role"] = role
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out["setting"] = [setting_of(r, weight_key) for _, r in out.iterrows()]
    return out


def probe_arm(runs: pd.DataFrame, dataset: str, fraction: float) -> pd.DataFrame:
    """The ``aux`` grid's plain VAEs on ``dataset`` as the arm :data:`PLAIN_PROBE`: per seed,
    ``test_head_acc`` is the mean over heads of the linear probe trained on the labelled rows
    of label fraction ``fraction`` (``probe_acc`` of the record), with the VAE's test −ELBO
    and convergence."""
    plain = runs[(runs.kind == "aux-plain") & (runs.status == "ok") & (runs.dataset == dataset)]
    if plain.empty:
        return pd.DataFrame(columns=["seed", "arm", "test_head_acc"])
    key = str(float(fraction))
    missing = [s for s, p in zip(plain.seed, plain.probe_acc, strict=True) if key not in p]
    if missing:
        raise MTVAEError(f"the plain VAEs of seeds {missing} have no probe at label fraction "
                         f"{fraction:g}; their records probe {sorted(plain.probe_acc.iloc[0])}")
    out = plain[["seed", "test_nelbo", "stopped_early", "best_epoch", "epoch_cap"]].copy()
    out["test_head_acc"] = [float(np.mean(list(p[key].values()))) for p in plain.probe_acc]
    out["arm"], out["dataset"], out["label_fraction"] = PLAIN_PROBE, dataset, float(fraction)
    out["setting"], out["role"] = "no labels in training", "plain"
    return out.reset_index(drop=True)


def arm_summary(frame: pd.DataFrame, metrics: Sequence[str], order: Sequence[str]
                ) -> pd.DataFrame:
    """Per arm in ``order``: the configuration (``setting``), mean and sd over seeds of each
    of ``metrics`` (columns ``<metric>`` and ``<metric>_sd``), seeds, how many stopped by
    patience and the median best epoch."""
    rows = []
    for arm in order:
        g = frame[frame.arm == arm]
        if g.empty:
            continue
        row: dict[str, Any] = {"arm": arm, "setting": ", ".join(sorted(set(g.setting)))}
        for m in metrics:
            row[m], row[f"{m}_sd"] = float(g[m].mean()), float(g[m].std(ddof=1))
        row |= {"seeds": len(g), "stopped": int(g.stopped_early.astype(bool).sum()),
                "median_best_epoch": float(g.best_epoch.median()),
                "epoch_cap": int(g.epoch_cap.max())}
        rows.append(row)
    return pd.DataFrame(rows)


def aux_where(dataset: str, fraction: float) -> str:
    """A setting point of the ``aux`` grid in words: ``MNIST-5k, 10 % labels``."""
    return f"{'MNIST-5k' if dataset == 'mnist5k' else dataset}, {100 * float(fraction):g} % labels"


READABLE_SPAN = 3.0
"""Nats the sum's mean validation −ELBO must span over its weights for a method's position on
the λ curve to be read from the −ELBO (a flat curve places every method anywhere)."""
MATCHING_ACCURACY = 0.02
"""How close (as a share) the method's validation accuracy must be to that weight's."""


def equivalent_weights(runs: pd.DataFrame, by: Sequence[str] = ("dataset", "label_fraction"),
                       weight_key: str = "label_weight") -> pd.DataFrame:
    """Where each MOO method's *default* configuration (c = 0, λ = 1) sits on the sum's λ
    curve, on the tuning seeds and validation numbers only: per setting and method, its mean
    validation head accuracy and −ELBO, and the sum's label weight whose mean validation −ELBO
    is nearest (``lambda_like``), with that weight's two numbers; ``span``: the range of the
    sum's curve, ``readable``: span ≥ :data:`READABLE_SPAN`, ``matches``: the accuracies
    within :data:`MATCHING_ACCURACY`. A scale-invariant method that rebalances the tasks
    lands at a large λ; one that keeps the sum's scale, at λ = 1."""
    tun = runs[runs.tuning & (runs.status == "ok") & (runs.kind != "aux-plain")]
    rows = []
    for key, g in tun.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        curve = g[g.family == "sum"].groupby(weight_key)[["val_head_acc", "val_nelbo"]].mean()
        if curve.empty:
            continue
        defaults = g[(g.family != "sum") & (g.method == g.family)]
        for fam, d in defaults.groupby("family", sort=False):
            acc, nelbo = float(d.val_head_acc.mean()), float(d.val_nelbo.mean())
            near = float((curve.val_nelbo - nelbo).abs().idxmin())
            span = float(curve.val_nelbo.max() - curve.val_nelbo.min())
            sum_acc = float(curve.loc[near, "val_head_acc"])
            rows.append({**dict(zip(by, key, strict=True)), "method": fam, "val_head_acc": acc,
                         "val_nelbo": nelbo, "lambda_like": near, "sum_val_head_acc": sum_acc,
                         "sum_val_nelbo": float(curve.loc[near, "val_nelbo"]), "span": span,
                         "readable": span >= READABLE_SPAN,
                         "matches": abs(acc - sum_acc) <= MATCHING_ACCURACY})
    return pd.DataFrame(rows)
