"""One vmapped evaluation of ``loss_terms`` for every member of a :class:`Stack`.

The model's :class:`~mtvae.terms.Terms` are packed into tensors (``vmap`` returns tensors,
not dataclasses): task losses ``[S, T]``, regularisers ``[S, R]``, stats ``[S, K]``, the
shared representation ``[S, ...]`` and its per-task aliases. Each member's noise comes from
its own buffer (:class:`mtvae.rng.NoiseBank`), sized once by a counting pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from mtvae import rng
from mtvae.errors import MTVAEError
from mtvae.stack.members import Stack
from mtvae.terms import Terms


class _LossTerms(nn.Module):
    """``forward = model.loss_terms`` so that ``functional_call`` can run it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, batch: dict[str, Tensor]) -> Terms:
        return self.m.loss_terms(batch)


@dataclass(frozen=True)
class Layout:
    """Names of the packed terms and the noise a batch needs (from the counting pass)."""

    tasks: tuple[str, ...]
    regularizers: tuple[str, ...]
    stats: tuple[str, ...]
    has_shared: bool
    has_inputs: bool
    n_normal: int
    n_uniform: int


@dataclass
class Packed:
    """The stacked terms of one batch."""

    tasks: Tensor  # [S, T]
    regularizers: Tensor  # [S, R]
    stats: Tensor  # [S, K]
    shared: Tensor | None  # [S, ...]
    task_inputs: tuple[Tensor, ...]  # T aliases of shared, each [S, ...]

    def totals(self) -> Tensor:
        """Each member's plain objective ``[S]``."""
        return self.tasks.sum(-1) + self.regularizers.sum(-1)


def _prefixed(d: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"m.{k}": v for k, v in d.items()}


def _pack(terms: Terms) -> tuple[Tensor, ...]:
    empty = next(iter(terms.tasks.values())).new_zeros(0)

    def vec(values: list[Tensor]) -> Tensor:
        return torch.stack([v.reshape(()) for v in values]) if values else empty

    shared = terms.shared if terms.shared is not None else empty
    return (vec(list(terms.tasks.values())), vec(list(terms.regularizers.values())),
            vec([v.detach() for v in terms.stats.values()]), shared,
            *(terms.task_inputs or ()))


class StackedForward:
    """Runs ``loss_terms`` of every member on its own batch in one vmapped call."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.module = _LossTerms(stack.template)
        self.layouts: dict[tuple[bool, tuple[int, ...]], Layout] = {}

    def layout(self, batch: dict[str, Tensor], training: bool) -> Layout:
        """Term names and noise counts for this batch shape (a counting pass on member 0)."""
        key = (training, tuple(batch["x"].shape))
        if key not in self.layouts:
            one = {k: v[0] for k, v in batch.items()}
            params = {k: v[0].detach() for k, v in self.stack.params.items()}
            buffers = {k: v[0].clone() for k, v in self.stack.buffers.items()}
            bank = rng.NoiseBank(None, None, count_only=True)
            self.module.train(training)
            with torch.no_grad(), rng.using(bank):
                terms = functional_call(self.module, (_prefixed(params), _prefixed(buffers)),
                                        (one,))
            if not terms.tasks:
                raise MTVAEError("a stacked model must return at least one task in Terms")
            self.layouts[key] = Layout(
                tuple(terms.tasks), tuple(terms.regularizers), tuple(terms.stats),
                terms.shared is not None, terms.task_inputs is not None,
                bank.n_normal, bank.n_uniform)
        return self.layouts[key]

    def __call__(self, batch: dict[str, Tensor], normals: Tensor, uniforms: Tensor,
                 training: bool) -> Packed:
        self.module.train(training)
        module = self.module

        def one(params: dict[str, Tensor], buffers: dict[str, Tensor],
                b: dict[str, Tensor], n: Tensor, u: Tensor) -> tuple[Tensor, ...]:
            with rng.using(rng.NoiseBank(n, u)):
                return _pack(functional_call(module, (params, buffers), (b,)))

        out = vmap(one, randomness="error")(
            _prefixed(self.stack.params), _prefixed(self.stack.buffers), batch, normals,
            uniforms)
        tasks, regs, stats, shared, *inputs = out
        return Packed(tasks, regs, stats, shared if shared.numel() else None, tuple(inputs))
