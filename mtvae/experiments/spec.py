"""A declarative experiment grid: blocks of axes whose product gives the runs.

A :class:`GridSpec` names a folder (``results/<name>/``) and holds one or more
:class:`Block`: a run kind (see :mod:`mtvae.experiments.kinds`), its axes (each a name and
the values it takes, e.g. ``dataset``, ``method``, ``seed``, ``missing_rate``) and fixed
settings. The runs are the Cartesian product of the axes, in the order the axes are given
(the first axis varies slowest), each with ``config = fixed | axis values``. A run's id is
:func:`mtvae.results.run_id` of its kind and config, so its record is found again whatever
else the grid holds: growing a grid by a seed or a dataset reruns nothing.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mtvae.errors import MTVAEError
from mtvae.results import run_id

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Run:
    """One run: a kind, its full config and a short label of its axis values."""

    kind: str
    config: Mapping[str, Any]
    label: str = ""

    @property
    def id(self) -> str:
        return run_id(self.kind, dict(self.config))


@dataclass(frozen=True)
class Block:
    """Runs of one kind: the product of ``axes`` on top of the ``fixed`` settings."""

    kind: str
    axes: Mapping[str, Sequence[Any]]
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.axes:
            raise MTVAEError(f"block {self.kind!r} has no axes; give at least one, e.g. seed")
        for name, values in self.axes.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                raise MTVAEError(f"axis {name!r} must be a list or tuple of values, "
                                 f"got {values!r}")
            if len(values) == 0:
                raise MTVAEError(f"axis {name!r} of block {self.kind!r} has no values")
            if len(set(map(repr, values))) != len(values):
                raise MTVAEError(f"axis {name!r} of block {self.kind!r} repeats a value: "
                                 f"{list(values)}")
        both = sorted(set(self.axes) & set(self.fixed))
        if both:
            raise MTVAEError(f"{both} are both axes and fixed settings of block "
                             f"{self.kind!r}; keep each in one place")

    def runs(self) -> list[Run]:
        names = list(self.axes)
        out = []
        for values in itertools.product(*(self.axes[n] for n in names)):
            point = dict(zip(names, values, strict=True))
            label = " ".join(f"{k}={v}" for k, v in point.items())
            out.append(Run(self.kind, {**self.fixed, **point}, f"{self.kind} {label}"))
        return out

    def __len__(self) -> int:
        n = 1
        for values in self.axes.values():
            n *= len(values)
        return n


@dataclass(frozen=True)
class GridSpec:
    """A named grid: its records live in ``<results>/<name>/``."""

    name: str
    blocks: tuple[Block, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise MTVAEError(f"grid name {self.name!r} must be a folder name (letters, digits, "
                             "'-', '_', '.')")
        if not self.blocks:
            raise MTVAEError(f"grid {self.name!r} has no blocks of runs")

    def runs(self) -> list[Run]:
        """Every run, block by block; a run that two blocks both produce appears once."""
        seen: set[str] = set()
        out = []
        for block in self.blocks:
            for run in block.runs():
                if run.id not in seen:
                    seen.add(run.id)
                    out.append(run)
        return out

    def __len__(self) -> int:
        return len(self.runs())


def grid_of(name: str, kind: str, axes: Mapping[str, Sequence[Any]],
            fixed: Mapping[str, Any] | None = None) -> GridSpec:
    """A one-block grid (the common case)."""
    return GridSpec(name, (Block(kind, dict(axes), dict(fixed or {})),))
