"""Combiners: how a model's :class:`~mtvae.terms.Terms` become parameter gradients.

``sum`` back-propagates the plain objective (the vanilla ELBO). Multi-objective
combiners (gradient aggregation in activation or parameter space, GradNorm, ...) plug in
behind the same :class:`~mtvae.moo.combine.Combiner` interface.
"""

from mtvae.moo.combine import Combiner, SumCombiner, available, get_combiner

__all__ = ["Combiner", "SumCombiner", "available", "get_combiner"]
