"""The ``loss_terms`` contract shared by every model and every combiner.

A model's ``loss_terms(batch)`` returns :class:`Terms`: named per-task losses (the
objectives that multi-objective optimisation may balance), the shared representation
where the per-task gradients meet, and regularisers that stay outside MOO (for a VAE,
the weighted KL). A plain VAE is "the sum of all terms" (:meth:`Terms.total`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Terms:
    """Loss terms of one mini-batch, each a scalar averaged over the batch.

    Attributes:
        tasks: per-task losses, e.g. ``{"x": -log p(x|z)}`` for an image VAE or one
            entry per feature for a heterogeneous VAE.
        regularizers: losses that are added as they are and never balanced by MOO
            (already weighted, e.g. ``beta * KL``).
        shared: the tensor where per-task gradients meet (the decoder trunk's output);
            ``None`` when the model has no meaningful shared representation.
        stats: detached quantities to log (unweighted KL, rate, ...).
        task_inputs: optional per-task aliases of ``shared`` (e.g. ``shared.view_as(shared)``,
            one per task, in task order) such that task ``i`` reads ``shared`` only through
            ``task_inputs[i]``. Combiners then get every per-task gradient w.r.t. the
            shared representation from one backward pass instead of one per task.
    """

    tasks: dict[str, Tensor]
    regularizers: dict[str, Tensor] = field(default_factory=dict)
    shared: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)
    task_inputs: list[Tensor] | None = None

    def total(self) -> Tensor:
        """The plain objective: sum of every task loss and every regulariser."""
        parts = [*self.tasks.values(), *self.regularizers.values()]
        if not parts:
            raise ValueError("Terms has no tasks and no regularizers: nothing to optimise")
        return torch.stack(parts).sum()

    def scalars(self) -> dict[str, float]:
        """All terms and stats as Python floats (for logging and run records)."""
        out = {f"task/{k}": float(v.detach()) for k, v in self.tasks.items()}
        out |= {f"reg/{k}": float(v.detach()) for k, v in self.regularizers.items()}
        out |= {k: float(v.detach()) for k, v in self.stats.items()}
        return out
