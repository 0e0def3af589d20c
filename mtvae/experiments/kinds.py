"""Run kinds: a registry ``name -> function(config, device) -> metrics``.

A kind does the work of one run and returns a JSON-serialisable dict of metrics; the
runner wraps it in a record (config, timings, device, versions) and writes it atomically.
A kind must be a module-level function (worker processes and Slurm jobs import it by
name) and deterministic given its config on a fixed device and thread count.

Kinds shipped here:

* ``hetero``: train a :class:`~mtvae.models.HeteroVAE` under Chapter 3's protocol
  (:mod:`mtvae.hetero_run`) with the missing rate as a setting, score its imputation of
  the missing test cells per feature, and keep a compact gradient-conflict summary.
* ``baseline``: column mean/mode imputation under the same mask and split.

``hetero`` also has a stacked variant (:func:`register_stacked`): runs that differ only in
their seed train as one stacked model and still get one record each.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from mtvae.data import Dataset
from mtvae.errors import MTVAEError, check_choice
from mtvae.hetero_run import (
    baseline_scores,
    conflict_summary,
    fit_and_score,
    fit_and_score_stacked,
    load_data,
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


@register_stacked("hetero")
def hetero_stacked(configs: list[dict[str, Any]], device: str
                   ) -> list[dict[str, Any] | BaseException]:
    """:func:`hetero` for runs that differ only in ``seed``, trained as one stacked job."""
    for c in configs:
        _require(c, HETERO_KEYS, "hetero")
    # a stack of S runs is S times the work of one: checkpoints let a killed job resume
    ckpts: list[Path | None] = [cache_dir() / "grid" / f"{run_id('hetero', c)}.pt"
                                for c in configs]
    out: list[dict[str, Any] | BaseException] = []
    results = fit_and_score_stacked(configs, [_data(c) for c in configs], device=device,
                                    checkpoints=ckpts)
    for r, path in zip(results, ckpts, strict=True):
        out.append(r if isinstance(r, BaseException)
                   else r[0] | {"conflict": conflict_summary(r[1])})
        if path is not None:
            path.unlink(missing_ok=True)  # the record, written next, is the durable state
    return out


@register("baseline")
def baseline(config: dict[str, Any], device: str) -> dict[str, Any]:
    """Mean/mode imputation of the missing test cells (``device`` is not used)."""
    _require(config, BASELINE_KEYS, "baseline")
    return baseline_scores(_data(config))
