"""Multi-objective optimisation of a model's :class:`~mtvae.terms.Terms`.

``get_combiner(spec)`` returns how one batch's terms become gradients: ``"sum"`` (the plain
objective), or a chain of task weightings and one torchjd aggregator acting in activation
space (default) or parameter space, e.g. ``"gradnorm+pcgrad@parameter"``.
``available()`` lists the method names; :mod:`mtvae.moo.diagnostics` measures conflicts.
For a stacked engine, ``Chain.weights_from_gramian(K)`` (one member, ``K = G G^T``) and
``stacked_corrections(chains, G)`` (``S`` members, ``G`` ``[S, T, N]``) are the cheap entry
points of the activation block.
"""

from mtvae.moo.chain import SPACES, Chain, Spec, parse_spec
from mtvae.moo.combine import (
    ActivationCombiner,
    Combiner,
    ParameterCombiner,
    SumCombiner,
    available,
    block_correction,
    get_combiner,
    stacked_corrections,
)
from mtvae.moo.diagnostics import ConflictLog, GradientStats, gradient_stats, task_gradients

__all__ = [
    "SPACES",
    "ActivationCombiner",
    "Chain",
    "Combiner",
    "ConflictLog",
    "GradientStats",
    "ParameterCombiner",
    "Spec",
    "SumCombiner",
    "available",
    "block_correction",
    "get_combiner",
    "gradient_stats",
    "parse_spec",
    "stacked_corrections",
    "task_gradients",
]
