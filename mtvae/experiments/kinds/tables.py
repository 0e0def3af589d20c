"""Run kinds of the heterogeneous tables (Chapters 3.1 and 5; :mod:`mtvae.imputation.vae`).

* ``hetero``: train a :class:`~mtvae.models.HeteroVAE` under Chapter 3's protocol with the
  missing rate as a setting, score its imputation of the missing test cells per feature,
  and keep a compact gradient-conflict summary (the earlier single-stage grid);
* ``tables``: the tables grid's run: the same training with validation every
  ``val_every_steps`` steps, scored under both protocols
  (:func:`mtvae.imputation.vae.protocol_scores`: missing test cells by the predictive mean,
  the validation score the tuning selects on, the mode-estimator ablation and the anchor
  paper's observed-cell reconstruction);
* ``reference``: a classical imputer from scikit-learn (k-NN, MICE, missForest-style, or
  mean/mode) under the same masks, splits and scores (:mod:`mtvae.imputation`);
* ``baseline``: column mean/mode imputation under the same mask and split.

``hetero`` and ``tables`` also train as stacks of runs that differ only in their seed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from mtvae.data import Dataset
from mtvae.experiments.kinds.registry import register, register_stacked, require
from mtvae.imputation.vae import (
    Scorer,
    baseline_scores,
    conflict_summary,
    fit_and_score,
    fit_and_score_stacked,
    load_data,
    protocol_scores,
    score,
    table_score,
)
from mtvae.results import cache_dir, run_id

HETERO_KEYS = ("dataset", "method", "seed", "missing_rate", "max_rows", "hidden", "depth",
               "batch_size", "lr", "steps", "patience_steps", "monitor_every")
BASELINE_KEYS = ("dataset", "seed", "missing_rate", "max_rows")
TABLE_KEYS = (*HETERO_KEYS, "val_every_steps")
REFERENCE_KEYS = (*BASELINE_KEYS, "imputer")


@lru_cache(maxsize=16)
def _table(dataset: str, missing_rate: float, seed: int, max_rows: int | None) -> Dataset:
    """Loaded tables are reused by the later runs of the same worker process."""
    return load_data(dataset, missing_rate=missing_rate, seed=seed, max_rows=max_rows)


def _data(config: dict[str, Any]) -> Dataset:
    return _table(config["dataset"], float(config["missing_rate"]), int(config["seed"]),
                  config["max_rows"])


@register("hetero")
def hetero(config: dict[str, Any], device: str) -> dict[str, Any]:
    """A HeteroVAE trained with ``config['method']`` (``sum`` or a MOO spec), then scored."""
    require(config, HETERO_KEYS, "hetero")
    metrics, result = fit_and_score(config, _data(config), device=device)
    return metrics | {"conflict": conflict_summary(result)}


def _stacked(kind: str, keys: tuple[str, ...], configs: list[dict[str, Any]], device: str,
             scorer: Scorer) -> list[dict[str, Any] | BaseException]:
    """Runs that differ only in ``seed``, trained as one stacked job, one metrics dict each."""
    for c in configs:
        require(c, keys, kind)
    # a stack of S runs is S times the work of one: checkpoints let a killed job resume
    ckpts: list[Path | None] = [cache_dir() / "grid" / f"{run_id(kind, c)}.pt" for c in configs]
    results = fit_and_score_stacked(configs, [_data(c) for c in configs], device=device,
                                    checkpoints=ckpts, scorer=scorer)
    out: list[dict[str, Any] | BaseException] = []
    for r, path in zip(results, ckpts, strict=True):
        out.append(r if isinstance(r, BaseException)
                   else r[0] | {"conflict": conflict_summary(r[1])})
        if path is not None:
            path.unlink(missing_ok=True)  # the record, written next, is the durable state
    return out


@register_stacked("hetero")
def hetero_stacked(configs: list[dict[str, Any]], device: str
                   ) -> list[dict[str, Any] | BaseException]:
    """:func:`hetero` for runs that differ only in ``seed``, trained as one stacked job."""
    return _stacked("hetero", HETERO_KEYS, configs, device, score)


@register("tables")
def tables(config: dict[str, Any], device: str) -> dict[str, Any]:
    """A HeteroVAE of the tables grid, scored under both protocols."""
    require(config, TABLE_KEYS, "tables")
    metrics, result = fit_and_score(config, _data(config), device=device, scorer=table_score)
    return metrics | {"conflict": conflict_summary(result)}


@register_stacked("tables")
def tables_stacked(configs: list[dict[str, Any]], device: str
                   ) -> list[dict[str, Any] | BaseException]:
    """:func:`tables` for runs that differ only in ``seed``, trained as one stacked job."""
    return _stacked("tables", TABLE_KEYS, configs, device, table_score)


@register("reference")
def reference(config: dict[str, Any], device: str) -> dict[str, Any]:
    """A classical imputer under the tables grid's masks and scores (``device`` unused)."""
    from mtvae.imputation import reference_imputer  # scikit-learn: imported when used

    require(config, REFERENCE_KEYS, "reference")
    data = _data(config)
    imputer = reference_imputer(str(config["imputer"]), data, seed=int(config["seed"]))
    return protocol_scores(imputer, data, protocols=("test", "val"))


@register("baseline")
def baseline(config: dict[str, Any], device: str) -> dict[str, Any]:
    """Mean/mode imputation of the missing test cells (``device`` is not used)."""
    require(config, BASELINE_KEYS, "baseline")
    return baseline_scores(_data(config))
