"""Every multitask setting of the book in one table: MOO against the plain sum, paired by seed.

Chapters 2 and 3 each compare the plain sum of a model's terms with MOO methods in their own
setting (a quantised latent with a label head, supervised heads,
several modalities, latent layers whose rates are tasks). Chapter 5 needs them side by side to
answer *when* MT-VAEs win: this module reads each study's run records (train-or-load, so a
chapter that already ran costs nothing here) and reduces each to the same paired comparison:
the mean gain of a MOO method over the plain sum on the setting's main metric (sign chosen so
that positive = MOO better), its spread over seeds, on how many seeds it wins, and the change
of a secondary metric that shows what the gain cost.

The auxiliary heads', the VQ-VAE label head's and the hierarchical rates' rows come from the
``aux``, ``vqhead`` and ``hier`` grids (early-stopped runs; the untuned arms: each MOO method
at its default against the sum with lambda = 1, or at beta1 = beta2 = 1), at their complete
settings only; the tuned comparisons are Chapters 3.2's, 2's and 3.4's. The multimodal rows
come from the ``multimodal`` grid once every fusion is complete, and until then from Chapter
3.3's earlier runs (untuned sums, fixed epoch budgets).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mtvae.stats import Metric, paired_comparison

if TYPE_CHECKING:
    from mtvae.profiles import Profile
    from mtvae.studies.evidence import Evidence
    from mtvae.studies.hierarchical import HierGrid


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


AUX_SETTINGS = {"mnist5k": "auxiliary label head", "shapes": "auxiliary factor heads (shapes)"}


@dataclass(frozen=True)
class GridEvidence:
    """The staged grids of Chapters 2 and 3 as Chapter 5 reads them, each read once: the
    :class:`~mtvae.studies.evidence.Evidence` of ``aux``, ``vqhead`` and ``multimodal``, and
    the ``hier`` grid (:func:`mtvae.studies.hierarchical.complete_grid`: ``None`` while
    incomplete)."""

    profile: Profile
    aux: Evidence
    vqhead: Evidence
    multimodal: Evidence
    hier: HierGrid | None

    @classmethod
    def read(cls, profile: Profile, root: str | Path | None = None, *,
             aux: Evidence | None = None) -> GridEvidence:
        """Every grid of ``profile`` under ``root`` (``aux``: already read)."""
        from mtvae.studies import evidence as EV
        from mtvae.studies.hierarchical import complete_grid

        return cls(profile, aux or EV.aux_evidence(profile, root), EV.vq_evidence(profile, root),
                   EV.mm_evidence(profile, root), complete_grid(profile, root))

    @cached_property
    def hier_gains(self) -> pd.DataFrame | None:
        """The rates as tasks against the plain sum
        (:func:`mtvae.studies.hierarchical.rates_as_tasks` ``gains``) of a complete ``hier``
        grid; ``None`` before."""
        from mtvae.studies.hierarchical import rates_as_tasks

        if self.hier is None:
            return None
        return rates_as_tasks(*self.hier, tuple(self.profile.hier_grid.moo_methods))["gains"]

    def primary(self) -> pd.DataFrame:
        """The book's primary comparisons, one Holm family per grid
        (:func:`mtvae.studies.evidence.book_primary`)."""
        from mtvae.studies import evidence as EV
        from mtvae.studies.hierarchical import grid_primary

        return EV.book_primary({"aux": EV.primary_rows(self.aux),
                                "vqhead": EV.primary_rows(self.vqhead),
                                "multimodal": EV.primary_rows(self.multimodal),
                                "hier": grid_primary(self.hier_gains)})

    def counts(self) -> pd.DataFrame:
        """Per grid (complete settings only): the paired, tested comparisons its chapter
        reports (every arm pair on the task and the cost metric; the hierarchical rates on
        test −ELBO) and how many of them are declared primaries."""
        rows = [{"grid": g, "comparisons": len(e.task) + len(e.cost), "primary": len(e.primary)}
                for g, e in (("aux", self.aux), ("vqhead", self.vqhead),
                             ("multimodal", self.multimodal))]
        gains = self.hier_gains
        rows.append({"grid": "hier", "comparisons": 0 if gains is None else len(gains),
                     "primary": 0 if gains is None else int(gains.p_holm.notna().sum())})
        return pd.DataFrame(rows)


def aux_default_arms(ev: Evidence) -> pd.DataFrame:
    """The untuned comparison of the ``aux`` grid (converged runs): each MOO method at its
    default against the sum with lambda = 1 (``method`` ``sum``), at the grid's complete
    settings only, with ``setting`` and ``condition`` columns for the overview."""
    from mtvae.studies import settings as S

    parts = []
    for (ds, frac), g in ev.arms[ev.arms.role == "default"].groupby(
            ["dataset", "label_fraction"], sort=False):
        parts.append(g.assign(method=g.arm.replace({S.DEFAULT_SUM: "sum"}),
                              setting=AUX_SETTINGS[ds], condition=S.aux_where(ds, frac)))
    cols = ["setting", "condition", "method", "seed", "test_head_acc", "test_nelbo"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def vq_default_arms(ev: Evidence) -> pd.DataFrame:
    """The untuned comparison of the ``vqhead`` grid (converged runs): each MOO method at its
    default against the sum with lambda = 1, once the grid is complete (empty before)."""
    from mtvae.studies import settings as S

    d = ev.arms[ev.arms.role == "default"] if len(ev.arms) else ev.arms
    cols = ["condition", "method", "seed", "test_accuracy", "test_distortion"]
    if d.empty:
        return pd.DataFrame(columns=cols)
    return d.assign(method=d.arm.replace({S.DEFAULT_SUM: "sum"}),
                    condition="MNIST-5k")[cols].reset_index(drop=True)


def mm_default_arms(ev: Evidence) -> pd.DataFrame:
    """The untuned comparison of the ``multimodal`` grid: each MOO method at its default
    against the sum with lambda = 1, per fusion, once every fusion is complete (empty
    before)."""
    from mtvae.studies import settings as S
    from mtvae.studies.multimodal import grid_frame

    cols = ["fusion", "method", "seed", "cross_mean", "ll_digit"]
    if not bool(ev.status.complete.all()) or ev.arms.empty:
        return pd.DataFrame(columns=cols)
    d = grid_frame(ev.arms[ev.arms.role == "default"])
    return d.assign(method=d.method.replace({S.DEFAULT_SUM: "sum"}))[cols]


def hier_default_arms(grid: HierGrid | None) -> pd.DataFrame:
    """The ``hier`` grid's beta1 = beta2 = 1 runs (the sum and each method with the rates as
    tasks) of a complete grid (empty without one)."""
    if grid is None:  # not complete: the row waits for the grid
        return pd.DataFrame(columns=["dataset", "method", "seed", "nelbo", "kl2"])
    return grid[1]


def settings_table(profile: str, device: str = "auto",
                   grids: GridEvidence | None = None) -> pd.DataFrame:
    """One row per (setting, condition, MOO method): main-metric gain and secondary change, and
    ``records``: the grid the row reads (``aux grid``, ``multimodal grid``, ``hier grid``,
    ``vqhead grid``) or ``chapter`` (the chapter's own, earlier runs). ``grids``: the grids
    already read (:meth:`GridEvidence.read` of ``profile`` otherwise)."""
    from mtvae.profiles import get_profile
    from mtvae.studies import multimodal

    grids = grids or GridEvidence.read(get_profile(profile))
    parts = []

    def add(setting: str, df: pd.DataFrame, main: Metric, cost: Metric,
            by: Sequence[str] = (), method: str = "method",
            pair: Sequence[str] = ("seed",), records: str = "chapter") -> None:
        a = paired_comparison(df, main, by, method, pair=pair)
        b = paired_comparison(df, cost, by, method, pair=pair)
        a["condition"], b["condition"] = _condition(a, by), _condition(b, by)
        b = b.rename(columns={"gain": "cost_gain", "metric": "cost_metric"})[
            ["condition", "method", "cost_metric", "cost_gain"]]
        out = a.merge(b, on=["condition", "method"])
        out.insert(0, "setting", setting)
        out["records"] = records
        parts.append(out)

    for setting, frame in aux_default_arms(grids.aux).groupby("setting", sort=False):
        add(setting, frame, Metric("test_head_acc", "head accuracy", True),
            Metric("test_nelbo", "test −ELBO", False), by=("condition",), records="aux grid")
    mm = mm_default_arms(grids.multimodal)
    mm_records = "multimodal grid" if len(mm) else "chapter"
    if not len(mm):  # the grid is incomplete: Chapter 3.3's earlier runs, until it is
        mm = multimodal.Study.create(profile, device).all_runs()
    add("multimodal", mm, Metric("cross_mean", "mean cross-modal coherence", True),
        Metric("ll_digit", "8×8 digit log-lik.", True), by=("fusion",), records=mm_records)
    hr = hier_default_arms(grids.hier)
    if len(hr):
        add("hierarchical, rates as tasks", hr, Metric("nelbo", "test −ELBO", False),
            Metric("kl2", "top-layer rate R2 (nats)", True), by=("dataset",),
            records="hier grid")
    vq = vq_default_arms(grids.vqhead)
    if len(vq):
        add("VQ-VAE + label head", vq, Metric("test_accuracy", "label accuracy", True),
            Metric("test_distortion", "test distortion", False), by=("condition",),
            records="vqhead grid")
    out = pd.concat(parts, ignore_index=True)
    out["verdict"] = out.apply(verdict, axis=1)
    return out[["setting", "condition", "method", "metric", "reference", "value", "gain", "sd",
                "wins", "n", "cost_metric", "cost_gain", "verdict", "records"]]
