"""Run kinds: a registry ``name -> function(config, device) -> metrics``.

A kind does the work of one run and returns a JSON-serialisable dict of metrics; the
runner wraps it in a record (config, timings, device, versions) and writes it atomically.
A kind must be a module-level function (worker processes and Slurm jobs import it by
name) and deterministic given its config on a fixed device and thread count.

Kinds shipped here:

* ``hetero``: train a :class:`~mtvae.models.HeteroVAE` under Chapter 3's protocol
  (:mod:`mtvae.imputation.vae`) with the missing rate as a setting, score its imputation of
  the missing test cells per feature, and keep a compact gradient-conflict summary.
* ``baseline``: column mean/mode imputation under the same mask and split.
* ``tables``: the tables grid's run (Chapters 3-5): the same training as ``hetero`` with
  validation every ``val_every_steps`` steps, scored under both protocols
  (:func:`mtvae.imputation.vae.protocol_scores`: missing test cells by the predictive mean,
  the validation score the tuning selects on, the mode-estimator ablation and the anchor
  paper's observed-cell reconstruction).
* ``reference``: a classical imputer from scikit-learn (k-NN, MICE, missForest-style, or
  mean/mode) under the same masks, splits and scores (:mod:`mtvae.imputation`).

``hetero`` also has a stacked variant (:func:`register_stacked`): runs that differ only in
their seed train as one stacked model and still get one record each.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from mtvae.data import Dataset
from mtvae.errors import MTVAEError, check_choice
from mtvae.experiments.tuning import family_of
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
from mtvae.moo import get_combiner
from mtvae.results import cache_dir, run_id
from mtvae.stack import stackable as combiner_stackable

Kind = Callable[[dict[str, Any], str], dict[str, Any]]
StackedKind = Callable[[list[dict[str, Any]], str], list[dict[str, Any] | BaseException]]
KINDS: dict[str, Kind] = {}
STACKED: dict[str, StackedKind] = {}
"""Kinds that can also train several runs differing only in ``seed`` as one stacked job
(:mod:`mtvae.stack`); ``stackable(config)`` says whether a config allows it."""

HETERO_KEYS = ("dataset", "method", "seed", "missing_rate", "max_rows", "hidden", "depth",
               "batch_size", "lr", "steps", "patience_steps", "monitor_every")
BASELINE_KEYS = ("dataset", "seed", "missing_rate", "max_rows")
TABLE_KEYS = (*HETERO_KEYS, "val_every_steps")
REFERENCE_KEYS = (*BASELINE_KEYS, "imputer")


def register(name: str) -> Callable[[Kind], Kind]:
    """Decorator adding a kind under ``name`` (re-registering the same function is a no-op)."""

    def add(fn: Kind) -> Kind:
        old = KINDS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__,
                                                                     fn.__qualname__):
            raise MTVAEError(f"run kind {name!r} is already registered by "
                             f"{old.__module__}.{old.__qualname__}; choose another name")
        KINDS[name] = fn
        return fn

    return add


def register_stacked(name: str) -> Callable[[StackedKind], StackedKind]:
    """Decorator adding the stacked variant of kind ``name``: configs -> metrics or errors."""

    def add(fn: StackedKind) -> StackedKind:
        STACKED[name] = fn
        return fn

    return add


def stack_group(kind: str, config: dict[str, Any]) -> str:
    """Runs with the same group key may share a stack: everything but the seed — and, for
    ``tables`` runs, the method's variant within its family and the missing rate (the
    tuning configurations of one family at one learning rate train as one stack, each
    member with its own combiner; the evaluation's rates and seeds, each member with its
    own mask: on the small tables a step is bound by per-step overhead, so a stack of 30
    costs ~2.2x a stack of 10, measured on wine)."""
    rest = {k: v for k, v in config.items() if k != "seed"}
    if kind == "tables" and "method" in rest:
        rest["method"] = family_of(str(rest["method"]))
        rest.pop("missing_rate", None)
    return kind + json.dumps(rest, sort_keys=True, default=str)


def stackable(kind: str, config: dict[str, Any]) -> bool:
    """Whether a run of ``kind`` with ``config`` may train inside a stack."""
    if kind not in STACKED:
        return False
    method = config.get("method")
    return method is None or combiner_stackable(get_combiner(str(method)))


def available() -> list[str]:
    return sorted(KINDS)


def get_kind(name: str) -> Kind:
    """The kind registered as ``name``; an unknown name lists the valid ones."""
    check_choice("run kind", name, KINDS)
    return KINDS[name]


def _require(config: dict[str, Any], keys: tuple[str, ...], kind: str) -> None:
    missing = [k for k in keys if k not in config]
    if missing:
        raise MTVAEError(f"a {kind!r} run needs the settings {missing} in its config "
                         "(as an axis or a fixed setting of the grid)")


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
    _require(config, HETERO_KEYS, "hetero")
    metrics, result = fit_and_score(config, _data(config), device=device)
    return metrics | {"conflict": conflict_summary(result)}


def _stacked(kind: str, keys: tuple[str, ...], configs: list[dict[str, Any]], device: str,
             scorer: Scorer) -> list[dict[str, Any] | BaseException]:
    """Runs that differ only in ``seed``, trained as one stacked job, one metrics dict each."""
    for c in configs:
        _require(c, keys, kind)
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
    _require(config, TABLE_KEYS, "tables")
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

    _require(config, REFERENCE_KEYS, "reference")
    data = _data(config)
    imputer = reference_imputer(str(config["imputer"]), data, seed=int(config["seed"]))
    return protocol_scores(imputer, data, protocols=("test", "val"))


@register("baseline")
def baseline(config: dict[str, Any], device: str) -> dict[str, Any]:
    """Mean/mode imputation of the missing test cells (``device`` is not used)."""
    _require(config, BASELINE_KEYS, "baseline")
    return baseline_scores(_data(config))
