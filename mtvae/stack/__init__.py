"""Stacked runs: S runs of one architecture trained as one model with a member dimension.

:func:`fit_stacked` is :func:`mtvae.train.fit` for S members at once (one process, one
optimiser step per batch, ``torch.func.vmap`` over the members); each member keeps its own
data, seed, noise, combiner state, early stopping, best weights and checkpoint.
"""

from mtvae.stack.combine import stackable
from mtvae.stack.loop import ENGINE, fit_stacked
from mtvae.stack.members import Stack

__all__ = ["ENGINE", "Stack", "fit_stacked", "stackable"]
