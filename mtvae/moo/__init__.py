"""Multi-objective optimisation of a model's :class:`~mtvae.terms.Terms`.

``get_combiner(spec)`` returns how one batch's terms become gradients: ``"sum"`` (the plain
objective), or a chain of task weightings and one torchjd aggregator acting in activation
space (default) or parameter space, e.g. ``"gradnorm+pcgrad@parameter"``.
``available()`` lists the method names; :mod:`mtvae.moo.diagnostics` measures conflicts.
"""

from mtvae.moo.chain import SPACES, Spec, parse_spec
from mtvae.moo.combine import (
    ActivationCombiner,
    Combiner,
    ParameterCombiner,
    SumCombiner,
    available,
    get_combiner,
)
from mtvae.moo.diagnostics import ConflictLog, GradientStats, gradient_stats, task_gradients

__all__ = [
    "SPACES",
    "ActivationCombiner",
    "Combiner",
    "ConflictLog",
    "GradientStats",
    "ParameterCombiner",
    "Spec",
    "SumCombiner",
    "available",
    "get_combiner",
    "gradient_stats",
    "parse_spec",
    "task_gradients",
]
