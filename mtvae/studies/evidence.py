"""What a staged grid says once its settings are complete: the tuned sum against each
MOO method, paired by seed, tested, and Holm-adjusted within the grid.

The arms come from :mod:`mtvae.studies.settings` (a run once per role: the default sum, each
method's default, every family's configuration chosen on validation). :func:`tested_gains`
compares them on a test metric with paired bootstrap intervals and signed-rank p-values;
:class:`Evidence` holds one grid's comparisons (:func:`aux_evidence`, :func:`vq_evidence`,
:func:`mm_evidence`), and :func:`book_primary` puts every grid's primary family in one ledger.
A chapter reports a grid only once it is complete (:func:`complete_evidence`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mtvae.bootstrap import paired_bootstrap_ci
from mtvae.errors import MTVAEError
from mtvae.profiles import Profile
from mtvae.studies.settings import (
    DEFAULT_SUM,
    PLAIN_PROBE,
    TUNED_SUM,
    arms,
    aux_where,
    point_status,
    probe_arm,
    records,
    tuned,
)


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
