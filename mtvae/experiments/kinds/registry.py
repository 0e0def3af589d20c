"""The registry of run kinds: ``name -> function(config, device) -> metrics``.

A kind does the work of one run and returns a JSON-serialisable dict of metrics; the
runner wraps it in a record (config, timings, device, versions) and writes it atomically.
A kind must be a module-level function (worker processes and Slurm jobs import it by
name) and deterministic given its config on a fixed device and thread count. A kind may
also have a stacked variant (:func:`register_stacked`): runs that differ only in their
seed train as one stacked model and still get one record each.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mtvae.errors import MTVAEError, check_choice
from mtvae.experiments.tuning import family_of
from mtvae.moo import get_combiner
from mtvae.stack import stackable as combiner_stackable

Kind = Callable[[dict[str, Any], str], dict[str, Any]]
StackedKind = Callable[[list[dict[str, Any]], str], list[dict[str, Any] | BaseException]]
KINDS: dict[str, Kind] = {}
STACKED: dict[str, StackedKind] = {}
"""Kinds that can also train several runs differing only in ``seed`` as one stacked job
(:mod:`mtvae.stack`); ``stackable(config)`` says whether a config allows it."""


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
    """The registered kinds' names, sorted."""
    return sorted(KINDS)


def get_kind(name: str) -> Kind:
    """The kind registered as ``name``; an unknown name lists the valid ones."""
    check_choice("run kind", name, KINDS)
    return KINDS[name]


def require(config: dict[str, Any], keys: tuple[str, ...], kind: str) -> None:
    """One error naming every setting of ``keys`` that a ``kind`` run's config lacks."""
    missing = [k for k in keys if k not in config]
    if missing:
        raise MTVAEError(f"a {kind!r} run needs the settings {missing} in its config "
                         "(as an axis or a fixed setting of the grid)")
