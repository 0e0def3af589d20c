"""Staged tuning for the multitask settings' grids: equal budgets, choice on validation.

The tables grid (:mod:`mtvae.experiments.tuning`) tunes a task weighting and a learning
rate per method family. The settings of Chapters 2-3 (auxiliary heads, multimodal fusion,
the VQ-VAE label head) share one question: does an MOO method beat the plain sum *once the
sum's task weight is tuned* (Kurin et al. 2022; Xin et al. 2022)? So every family gets
the same number of configurations, ``n``:

* the sum: its task weight lambda (the label head's, or the label modality's) at each of
  ``n`` log-spaced values;
* an MOO method: its CR-MOGM smoothing of the weights (Zhou et al. 2022) at ``n`` values,
  lambda = 1 (the weight a scale-invariant method does not see).

:func:`staged_blocks` lays out, per setting point (e.g. dataset x label fraction) and family,
the tuning runs on ``tuning_seeds``, the default configuration on the evaluation ``seeds``
(the untuned comparison: the book's lambda = 1 sum, the unsmoothed MOO method) and, once every
tuning run is recorded, the chosen configuration on the evaluation seeds.
:func:`choose_option` picks it by the mean VALIDATION metric over the tuning seeds through
:func:`mtvae.studies.selection.select_on_validation`: it reads one metric of each tuning
record and refuses test metrics; a failed run makes its configuration ineligible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mtvae.errors import MTVAEError
from mtvae.experiments.spec import Block
from mtvae.experiments.tuning import smoothed
from mtvae.moo import get_combiner
from mtvae.results import read_record, results_dir, run_id
from mtvae.studies.selection import select_on_validation


@dataclass(frozen=True)
class Tuning:
    """How a staged grid tunes its families.

    Attributes:
        families: ``sum`` and MOO specs (each with a ``crmogm`` option on its aggregator).
        weight_key: the config key of the sum's tuned weight (e.g. ``label_weight``).
        weights: the sum's values of ``weight_key``.
        default_weight: the sum's default (untuned) value, one of ``weights``.
        crmogm: an MOO method's smoothing values (the first is its default); as many as
            ``weights``, so that every family gets the same budget.
        select_on: the validation metric the choice maximises (a record's metrics key).
        tuning_seeds / seeds: seeds of the tuning runs / of the reported runs.
    """

    families: tuple[str, ...]
    weight_key: str
    weights: tuple[float, ...]
    default_weight: float
    crmogm: tuple[float, ...]
    select_on: str
    tuning_seeds: tuple[int, ...]
    seeds: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.crmogm):
            raise MTVAEError(f"equal budgets: the sum tunes {len(self.weights)} weights "
                             f"{self.weights} but an MOO method {len(self.crmogm)} smoothings "
                             f"{self.crmogm}; give both the same number of values")
        if self.default_weight not in self.weights:
            raise MTVAEError(f"the default weight {self.default_weight} is not among the "
                             f"tuned weights {self.weights}; add it")
        if self.select_on.lower().startswith("test"):
            raise MTVAEError(f"select_on {self.select_on!r} is a test metric; the choice must "
                             "read a validation metric")
        if set(self.tuning_seeds) & set(self.seeds):
            raise MTVAEError(f"tuning seeds {self.tuning_seeds} overlap the reported seeds "
                             f"{self.seeds}; keep them disjoint")
        for fam in self.families:
            options(self, fam)  # bad families fail when the grid is built


def _smoothed(family: str, c: float) -> str:
    method = smoothed(family, c)
    get_combiner(method)
    return method


def options(tuning: Tuning, family: str) -> list[dict[str, Any]]:
    """The family's configurations (settings merged into a run's config), default first."""
    if family == "sum":
        ws = [tuning.default_weight, *(w for w in tuning.weights if w != tuning.default_weight)]
        return [{"method": "sum", tuning.weight_key: float(w)} for w in ws]
    return [{"method": _smoothed(family, float(c)), tuning.weight_key: 1.0}
            for c in tuning.crmogm]


def _config(base: Mapping[str, Any], option: Mapping[str, Any], seed: int) -> dict[str, Any]:
    return {**base, **option, "seed": seed}


def tuning_frame(folder: Path, kind: str, base: Mapping[str, Any],
                 opts: Sequence[Mapping[str, Any]], seeds: Sequence[int], metric: str
                 ) -> pd.DataFrame | None:
    """One row per (option index, seed) with the record's ``metric`` (NaN for a failed or
    non-finite run); ``None`` while some tuning run has no record."""
    rows = []
    for i, opt in enumerate(opts):
        for seed in seeds:
            path = folder / f"{run_id(kind, _config(base, opt, seed))}.json"
            if not path.exists():
                return None
            rec = read_record(path)
            value = (rec.get("metrics") or {}).get(metric) if rec.get("status") != "failed" \
                else None
            ok = isinstance(value, (int, float)) and math.isfinite(float(value))
            rows.append({"option": i, "seed": seed, metric: float(value) if ok else math.nan})
    return pd.DataFrame(rows)


def choose_option(folder: Path, kind: str, base: Mapping[str, Any],
                  opts: Sequence[Mapping[str, Any]], seeds: Sequence[int], metric: str
                  ) -> tuple[int, float] | None:
    """The index of the option with the highest mean validation ``metric`` over ``seeds``
    and that mean; ``None`` until every tuning run is recorded, or when every option failed.
    Ties go to the earlier option (the default wins a tie)."""
    frame = tuning_frame(folder, kind, base, opts, seeds, metric)
    if frame is None or frame[metric].isna().groupby(frame.option).any().all():
        return None
    sel = select_on_validation(frame, param="option", val_metric=metric, higher_is_better=True)
    row = sel.chosen.iloc[0]
    return int(row.option), float(row.val_mean)


def staged_blocks(kind: str, tuning: Tuning, points: Sequence[Mapping[str, Any]],
                  fixed: Mapping[str, Any], folder: Path) -> list[Block]:
    """Tuning, default and (once the tuning is recorded) chosen blocks of every point x family.

    Each point's runs have config ``fixed | point | option | {"seed": ...}``.
    """
    blocks = []
    for point in points:
        base = {**fixed, **point}
        for fam in tuning.families:
            opts = options(tuning, fam)
            for opt in opts:
                blocks.append(Block(kind, {"seed": tuning.tuning_seeds}, {**base, **opt}))
            blocks.append(Block(kind, {"seed": tuning.seeds}, {**base, **opts[0]}))
            pick = choose_option(folder, kind, base, opts, tuning.tuning_seeds,
                                 tuning.select_on)
            if pick is not None:
                blocks.append(Block(kind, {"seed": tuning.seeds}, {**base, **opts[pick[0]]}))
    return blocks


def choices(kind: str, tuning: Tuning, points: Sequence[Mapping[str, Any]],
            fixed: Mapping[str, Any], folder: Path) -> pd.DataFrame:
    """One row per point x family: the chosen option's settings, its mean validation metric,
    or ``None`` while the tuning is incomplete (``chosen`` False)."""
    rows = []
    for point in points:
        base = {**fixed, **point}
        for fam in tuning.families:
            opts = options(tuning, fam)
            pick = choose_option(folder, kind, base, opts, tuning.tuning_seeds,
                                 tuning.select_on)
            row = {**point, "family": fam, "chosen": pick is not None,
                   "n_configs": len(opts), "select_on": tuning.select_on}
            if pick is not None:
                row |= {**opts[pick[0]], "val_mean": pick[1],
                        "is_default": pick[0] == 0}
            rows.append(row)
    return pd.DataFrame(rows)


def grid_folder(name: str, root: str | Path | None) -> Path:
    return (Path(root) if root is not None else results_dir()) / name
