"""The combiner interface and the plain ``sum`` combiner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from torch import nn

from mtvae.errors import check_choice
from mtvae.terms import Terms


class Combiner(Protocol):
    """Turns the terms of one batch into gradients on the model's parameters."""

    name: str

    def backward(self, terms: Terms, model: nn.Module) -> dict[str, float]:
        """Accumulate gradients into ``.grad``; return diagnostics to log (may be empty)."""
        ...


class SumCombiner:
    """The vanilla objective: back-propagate the sum of all tasks and regularisers."""

    name = "sum"

    def backward(self, terms: Terms, model: nn.Module) -> dict[str, float]:
        terms.total().backward()
        return {}


_COMBINERS: dict[str, Callable[[], Combiner]] = {"sum": SumCombiner}


def available() -> list[str]:
    """Names accepted by :func:`get_combiner`."""
    return sorted(_COMBINERS)


def get_combiner(name: str | Combiner) -> Combiner:
    """A combiner by name (or pass an instance through); unknown names list the valid ones."""
    if not isinstance(name, str):
        return name
    check_choice("combiner", name, _COMBINERS)
    return _COMBINERS[name]()
