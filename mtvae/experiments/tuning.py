"""Equal tuning budgets for every method family, and selection on validation.

Kurin et al. (2022) and Xin et al. (2022) showed that a plain sum given the tuning that
MOO methods implicitly get matches most of them. So in the tables grid every *family*
(``sum``, ``pcgrad``, ``gradnorm+pcgrad``, ...) gets the same number of configurations:
``len(VARIANTS) x len(lrs)``:

* the sum: its three static task weightings (``sum``, ``sum:initial-loss``, ``sum:type``;
  :func:`mtvae.moo.combine.static_weights`);
* a MOO method: its main option at three values — CR-MOGM smoothing of the weights
  (Zhou et al. 2022; ``crmogm`` 0, 0.5, 0.9) on the aggregator, which every Gramian method
  here accepts.

The first variant at the first learning rate is the family's *default* (what the anchor
paper and the old grid ran). :func:`choose` picks, per (table, family), the configuration
with the lowest mean VALIDATION error of the missing cells over the tuning seeds; test
scores are never read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mtvae.errors import MTVAEError
from mtvae.moo.chain import parse_spec
from mtvae.moo.methods import AGGREGATORS
from mtvae.studies.selection import select_on_validation

SUM_VARIANTS = ("sum", "sum:initial-loss", "sum:type")
CRMOGM = (0.0, 0.5, 0.9)
SELECT_ON = "val.mean_error"


def family_of(method: str) -> str:
    """The family of a method spec: options removed, ``sum:*`` -> ``sum``."""
    if method.split(":")[0] == "sum":
        return "sum"
    return re.sub(r"\[[^\]]*\]", "", method)


def smoothed(family: str, c: float) -> str:
    """The spec of ``family`` with CR-MOGM smoothing ``c`` on its aggregator (0: none)."""
    spec = parse_spec(family)
    if spec.aggregator is None or "crmogm" not in AGGREGATORS[spec.aggregator].options:
        raise MTVAEError(f"{family!r} has no aggregator with a 'crmogm' option to tune; the "
                         "grids tune Gramian aggregators (mgda, pcgrad, imtl-g, upgrad, "
                         "dualproj, aligned-mtl, cagrad, ...) and chains ending in one")
    text, at, space = family.partition("@")
    return (text if c == 0.0 else f"{text}[crmogm={c:g}]") + at + space


def variants(family: str) -> tuple[str, ...]:
    """The family's three variants (the first is its default)."""
    if family == "sum":
        return SUM_VARIANTS
    return tuple(smoothed(family, c) for c in CRMOGM)


@dataclass(frozen=True)
class Config:
    """One tuning configuration of a family."""

    method: str
    lr: float


def configs(family: str, lrs: Sequence[float]) -> list[Config]:
    """Every configuration of ``family``: variants x learning rates (default first)."""
    return [Config(m, float(lr)) for lr in lrs for m in variants(family)]


def default(family: str, lrs: Sequence[float]) -> Config:
    return configs(family, lrs)[0]


def _val_error(row: pd.Series) -> float:
    val = row.get("val")
    if row.get("status") != "ok" or not isinstance(val, dict):
        return math.inf  # a configuration that diverged is never chosen
    v = val.get("mean_error")
    return math.inf if v is None or not math.isfinite(v) else float(v)


def choose(runs: pd.DataFrame, family: str, lrs: Sequence[float], seeds: Sequence[int]
           ) -> tuple[Config, pd.DataFrame] | None:
    """The configuration of ``family`` with the lowest mean validation error over ``seeds``.

    ``runs`` holds the tuning records of ONE table (columns ``method``, ``lr``, ``seed``,
    ``status``, ``val``; see :func:`mtvae.experiments.load_results` with ``status="all"``).
    Returns ``None`` until every configuration has a record for every seed; otherwise the
    choice and the table of mean validation errors (ties go to the earlier configuration,
    so the default wins a tie). Only the ``val`` scores are read.
    """
    cfgs = configs(family, lrs)
    rows = []
    for i, cfg in enumerate(cfgs):
        sub = runs[(runs.method == cfg.method) & (runs.lr == cfg.lr) & runs.seed.isin(seeds)]
        if sub.seed.nunique() < len(seeds):
            return None
        rows += [{"option": i, "val_error": _val_error(r)} for _, r in sub.iterrows()]
    errors = pd.DataFrame(rows)
    means = errors.groupby("option").val_error.mean()
    table = pd.DataFrame({"method": [c.method for c in cfgs], "lr": [c.lr for c in cfgs],
                          "val_error": means.reindex(range(len(cfgs))).to_numpy()})
    if not np.isfinite(table.val_error).any():
        return cfgs[0], table  # every configuration diverged: the default stands
    # a diverged run (inf) leaves its configuration without a validation mean: never chosen
    sel = select_on_validation(errors.replace(math.inf, math.nan), param="option",
                               val_metric="val_error", higher_is_better=False)
    return cfgs[int(sel.chosen.option.iloc[0])], table
