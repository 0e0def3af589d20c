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

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


# -- what the chapters read: complete points, arms, gains with tests ------------------------
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


def tested_gains(frame: pd.DataFrame, metric: str, *, higher_is_better: bool,
                 pairs: Sequence[tuple[str, str]], by: Sequence[str] = (), seed: int = 0
                 ) -> pd.DataFrame:
    """Each ``(arm, reference)`` pair: mean paired gain of ``arm`` over ``reference`` on
    ``metric`` (positive = better), its 95 % bootstrap interval, wins of ``n`` seeds and a
    two-sided Wilcoxon signed-rank p-value (:func:`mtvae.comparisons.signed_rank`).
    ``frame`` has ``arm``, ``seed`` and ``metric`` columns (one row per arm and seed)."""
    from mtvae.comparisons import signed_rank

    if metric.lower().startswith("val"):
        raise MTVAEError(f"report a test metric, not {metric!r}; validation is for choosing")
    rows = []
    groups = frame.groupby(list(by), dropna=False, sort=False) if by else [((), frame)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        for arm, ref in pairs:
            a = g[g.arm == arm].set_index("seed")[metric]
            b = g[g.arm == ref].set_index("seed")[metric]
            seeds = sorted(set(a.index) & set(b.index))
            if len(seeds) < 2:
                continue
            diff = (a[seeds] - b[seeds]).to_numpy(dtype=float) * (1 if higher_is_better else -1)
            ci = paired_bootstrap_ci(diff, seed=seed)
            rows.append({**dict(zip(by, key, strict=True)), "arm": arm, "reference": ref,
                         "gain": ci.estimate, "low": ci.low, "high": ci.high,
                         "wins": int((diff > 0).sum()), "n": len(diff),
                         "p_value": signed_rank(diff)[1]})
    return pd.DataFrame(rows, columns=[*by, "arm", "reference", "gain", "low", "high", "wins",
                                       "n", "p_value"])


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


@dataclass(frozen=True)
class Evidence:
    """What a staged grid's complete settings say (Chapters 2, 3.2 and 5 read it).

    ``arms``: one row per arm x evaluation seed x complete setting (``where``). ``task`` and
    ``cost``: :func:`tested_gains` per setting on the test task metric (``task_metric``: head
    accuracy) and on the test cost metric (``cost_metric``: −ELBO or distortion, lower is
    better), for the primary pairs (each tuned MOO method against the tuned sum) and the
    secondary ones; ``task.p_holm`` is the Holm-adjusted p of the primary comparisons (NaN
    for the others); ``holm``: :func:`mtvae.stats.holm_adjust` of the primary family
    (``None`` without one).
    """

    status: pd.DataFrame
    arms: pd.DataFrame
    task: pd.DataFrame
    cost: pd.DataFrame
    holm: pd.DataFrame | None
    moo: tuple[str, ...]
    task_metric: str
    cost_metric: str

    @property
    def primary(self) -> pd.DataFrame:
        a = self.task
        return a[a.p_holm.notna()]


def _evidence(status: pd.DataFrame, arm_frame: pd.DataFrame, moo: tuple[str, ...], *,
              task_metric: str, cost_metric: str, extra_task: Sequence[tuple[str, str]] = (),
              extra_cost: Sequence[tuple[str, str]] = ()) -> Evidence:
    """Paired, tested comparisons of ``arm_frame`` (higher ``task_metric`` and lower
    ``cost_metric`` are better); ``extra_*``: secondary pairs beyond the defaults'."""
    primary = [(tuned(f), TUNED_SUM) for f in moo]
    secondary = [(f, DEFAULT_SUM) for f in moo] + [(TUNED_SUM, DEFAULT_SUM)]
    task = tested_gains(arm_frame, task_metric, higher_is_better=True,
                        pairs=[*primary, *secondary, *extra_task], by=("where",))
    cost = tested_gains(arm_frame, cost_metric, higher_is_better=False,
                        pairs=[*primary, (TUNED_SUM, DEFAULT_SUM), *extra_cost], by=("where",))
    is_primary = task.reference.eq(TUNED_SUM) & task.arm.isin([a for a, _ in primary])
    holm = holm_primary(task, is_primary, "where")
    if holm is not None:
        holm["gain"] = task.loc[is_primary, "gain"].to_numpy()
    return Evidence(status, arm_frame, task, cost, holm, moo, task_metric, cost_metric)


def holm_primary(gains: pd.DataFrame, is_primary: pd.Series, where: str
                 ) -> pd.DataFrame | None:
    """Holm's correction over the primary rows of ``gains`` (:func:`tested_gains`; one family,
    each comparison named by its arm, reference and ``where`` column): sets ``p_holm`` (NaN
    for the secondary rows) and returns :func:`mtvae.stats.holm_adjust` of the family, or
    ``None`` when there is no primary row."""
    from mtvae.stats import holm_adjust

    gains["p_holm"] = np.nan
    if not bool(is_primary.any()):
        return None
    holm = holm_adjust({f"{r.arm} vs {r.reference} ({getattr(r, where)})": r.p_value
                        for r in gains[is_primary].itertuples()})
    gains.loc[is_primary, "p_holm"] = holm.p_holm.to_numpy()
    return holm


def incomplete_grid(grid: str, profile: Profile, done: int, planned: int, *, chapter: str,
                    tuned: bool = True) -> MTVAEError:
    """The error of a chapter asked to report the ``grid`` of ``profile`` before it is
    complete: how far it is and the command that completes it."""
    return MTVAEError(
        f"the {grid}-{profile.name} grid is not complete ({done} of {planned} planned runs "
        f"recorded{'' if tuned else ', tuning unfinished'}); train it with `python -m mtvae "
        f"grid {grid} --profile {profile.name}` (or execute {chapter} with run_grid=True)")


def complete_evidence(grid: str, read: Callable[..., Evidence], profile: Profile,
                      root: str | Path | None = None, *, chapter: str, run: bool = False,
                      device: str = "auto") -> Evidence:
    """``read(profile, root)`` of the staged ``grid`` (:func:`aux_evidence`,
    :func:`vq_evidence`, :func:`mm_evidence`), trained first when ``run``. Raises
    :func:`incomplete_grid` while any setting is incomplete: a partial grid is not reported."""
    from mtvae.experiments import get_grid
    from mtvae.experiments.runner import run_staged

    if run:
        run_staged(lambda: get_grid(grid, profile.name, root), root=root, device=device,
                   progress="none")
    ev = read(profile, root)
    st = ev.status
    if not bool(st.complete.all()):
        raise incomplete_grid(grid, profile, int(st.done.sum()), int(st.planned.sum()),
                              chapter=chapter, tuned=bool(st.tuned.all()))
    return ev


def _no_arms(*extra: str) -> pd.DataFrame:
    return pd.DataFrame(columns=["where", "arm", "role", "seed", "setting", *extra])


def aux_evidence(profile: Profile, root: str | Path | None = None,
                 runs: pd.DataFrame | None = None) -> Evidence:
    """The arms and the paired, tested comparisons of the ``aux`` grid's complete settings:
    test head accuracy (task) and test −ELBO (cost), with the plain VAE's linear probe."""
    runs = records("aux", profile, root) if runs is None else runs
    status = point_status("aux", profile, root)
    frames = []
    for p in status[status.complete].itertuples():
        sub = runs[(runs.dataset == p.dataset) & (runs.label_fraction == p.label_fraction)]
        frames.append(pd.concat([probe_arm(runs, p.dataset, p.label_fraction), arms(sub)],
                                ignore_index=True).assign(where=aux_where(p.dataset,
                                                                          p.label_fraction)))
    arm_frame = (pd.concat(frames, ignore_index=True) if frames else
                 _no_arms("dataset", "label_fraction", "test_head_acc", "test_nelbo"))
    moo = tuple(f for f in profile.aux_grid.families if f != "sum")
    return _evidence(status, arm_frame, moo, task_metric="test_head_acc",
                     cost_metric="test_nelbo",
                     extra_task=[(TUNED_SUM, PLAIN_PROBE), (DEFAULT_SUM, PLAIN_PROBE)],
                     extra_cost=[(TUNED_SUM, PLAIN_PROBE)])


VQ_WHERE = "VQ-VAE, MNIST-5k"


def vq_evidence(profile: Profile, root: str | Path | None = None,
                runs: pd.DataFrame | None = None) -> Evidence:
    """The ``vqhead`` grid (one setting: Chapter 2's reference VQ-VAE with a label head on
    MNIST-5k) once complete: test accuracy (task) and test distortion (cost)."""
    runs = records("vqhead", profile, root) if runs is None else runs
    status = point_status("vqhead", profile, root)
    arm_frame = (arms(runs).assign(where=VQ_WHERE) if bool(status.complete.all())
                 else _no_arms("test_accuracy", "test_distortion"))
    moo = tuple(f for f in profile.vq_grid.families if f != "sum")
    return _evidence(status, arm_frame, moo, task_metric="test_accuracy",
                     cost_metric="test_distortion")


FUSION_NAMES = {"poe": "PoE", "moe": "MoE", "mopoe": "MoPoE"}


def mm_evidence(profile: Profile, root: str | Path | None = None,
                runs: pd.DataFrame | None = None) -> Evidence:
    """The ``multimodal`` grid's complete fusions (``where``: PoE, MoE, MoPoE): test mean
    cross-modal coherence (task) and test unweighted −ELBO (cost)."""
    runs = records("multimodal", profile, root) if runs is None else runs
    status = point_status("multimodal", profile, root)
    frames = [arms(runs[runs.fusion == p.fusion]).assign(where=FUSION_NAMES.get(p.fusion,
                                                                                p.fusion))
              for p in status[status.complete].itertuples()]
    arm_frame = (pd.concat(frames, ignore_index=True) if frames else
                 _no_arms("fusion", "test_cross_mean", "test_nelbo"))
    moo = tuple(f for f in profile.mm_grid.families if f != "sum")
    return _evidence(status, arm_frame, moo, task_metric="test_cross_mean",
                     cost_metric="test_nelbo")


def primary_rows(ev: Evidence) -> pd.DataFrame:
    """``ev``'s primary comparisons with the metric they are on, for :func:`book_primary`."""
    return ev.primary.assign(metric=ev.task_metric)


def book_primary(families: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The book's declared primary comparisons, one family per grid (``{grid: rows}``, each
    row one comparison with ``where``, ``arm``, ``metric``, ``gain``, ``low``, ``high``,
    ``wins``, ``n``, ``p_value`` and the grid's own Holm-adjusted ``p_holm``:
    :func:`primary_rows` of an :class:`Evidence`, or
    :func:`mtvae.studies.hierarchical.primary_rows`). Adds ``grid``, ``family_size`` and
    ``reject`` (``p_holm`` < 0.05).

    One family per setting, not one for the book: with n seeds the smallest two-sided
    signed-rank p is 2 / 2**n (0.002 for 10), and Holm's first step needs p < 0.05 / m, so a
    family of more than :func:`largest_family` comparisons could reject nothing."""
    cols = ["grid", "where", "arm", "metric", "gain", "low", "high", "wins", "n", "p_value",
            "p_holm", "family_size"]
    parts = [rows.assign(grid=g, family_size=len(rows)) for g, rows in families.items()
             if len(rows)]
    if not parts:
        return pd.DataFrame(columns=[*cols, "reject"])
    out = pd.concat(parts, ignore_index=True)[cols]
    out["reject"] = out.p_holm < 0.05
    return out


def largest_family(n_seeds: int, alpha: float = 0.05) -> int:
    """The most comparisons a Holm family can hold and still reject one, when each is a
    two-sided signed-rank test over ``n_seeds`` paired seeds (smallest p: 2 / 2**n)."""
    return int(alpha / (2.0 / 2**n_seeds) - 1e-9)


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
