"""Per-member gradients for a stacked batch: the plain sum or activation-space MOO.

Every member has its own combiner instance (its own MOO state: GradNorm weights, Nash-MTL's
last solution, ...). The task gradients at the shared representation come from *one*
backward pass for all members and tasks (member ``s``'s losses depend only on its own slice),
then each member's rows are aggregated by its own combiner and the differences to the plain
gradients are back-propagated once, together with the plain objective — the same
single-backward block as :class:`mtvae.moo.combine.ActivationCombiner`, per member.
Parameter-space MOO differentiates w.r.t. the shared *parameters*, which are stacked: the
Jacobian of every member's task losses w.r.t. the stacked parameters is block-diagonal in
the members (member ``s``'s losses depend only on its own slice), so one torchjd
``backward`` from the task rows at ``h`` gives every member's Jacobian as a slice
``jac[:, s]``, and each member's own combiner aggregates its slice (:func:`_parameter_space`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from mtvae.errors import MTVAEError
from mtvae.moo import Combiner
from mtvae.moo.chain import Chain
from mtvae.moo.combine import (
    ActivationCombiner,
    ParameterCombiner,
    SumCombiner,
    jacobian_through_aliases,
    rescale_factor,
    stacked_corrections,
)
from mtvae.moo.diagnostics import GradientStats, gradient_stats
from mtvae.stack.forward import Packed


def stackable(combiner: Combiner) -> bool:
    """Whether a combiner can run per member inside a stack."""
    return isinstance(combiner, (SumCombiner, ActivationCombiner, ParameterCombiner))


def _task_gradients(packed: Packed) -> Tensor:
    """Per-member task gradients at the shared representation: ``[S, T, n]``."""
    h = packed.shared
    if h is None:
        raise MTVAEError("activation-space MOO needs Terms.shared; this model returns none")
    n_tasks = packed.tasks.shape[1]
    if packed.task_inputs:
        grads = torch.autograd.grad(packed.tasks.sum(), packed.task_inputs, retain_graph=True,
                                    allow_unused=True)
        rows = [torch.zeros_like(h) if g is None else g for g in grads]
    else:
        rows = [torch.autograd.grad(packed.tasks[:, t].sum(), h, retain_graph=True,
                                    allow_unused=True)[0] for t in range(n_tasks)]
        rows = [torch.zeros_like(h) if g is None else g for g in rows]
    return torch.stack([r.reshape(len(h), -1) for r in rows], dim=1)


def _sum_weights(packed: Packed, combiners: list[SumCombiner], tasks: tuple[str, ...],
                 model: nn.Module | None) -> Tensor | None:
    """Every member's static task weights ``[S, T]`` (``None`` when all sums are uniform)."""
    if all(c.weighting == "uniform" for c in combiners):
        return None
    if model is None:
        raise MTVAEError("a weighted sum inside a stack needs the template model")
    losses = packed.tasks.detach()
    ones = torch.ones_like(losses[0])
    return torch.stack([ones if (w := c.task_weights(losses[s], tasks, model)) is None else w
                        for s, c in enumerate(combiners)])


def backward(packed: Packed, combiners: list[Combiner], observe: bool,
             tasks: tuple[str, ...] = (), model: nn.Module | None = None,
             params: list[Tensor] | None = None) -> list[GradientStats | None]:
    """Accumulate every member's gradients into the stacked parameters' ``.grad``.

    ``tasks`` (the task names) and ``model`` (the stack's template) are needed only by the
    weighted sums (``sum:type`` reads the model's schema); ``params`` (the stacked leaves)
    only by parameter-space MOO.
    """
    if any(isinstance(c, ParameterCombiner) for c in combiners):
        if not all(isinstance(c, ParameterCombiner) for c in combiners):
            raise MTVAEError("a stack mixes parameter-space MOO with other combiners; stack "
                             "runs of one space only")
        if params is None:
            raise MTVAEError("parameter-space MOO inside a stack needs the stacked parameters")
        return _parameter_space(packed, combiners, params, observe)  # type: ignore[arg-type]
    total = packed.totals().sum()
    if all(isinstance(c, SumCombiner) for c in combiners):
        sums = [c for c in combiners if isinstance(c, SumCombiner)]
        W = _sum_weights(packed, sums, tasks, model)
        stats: list[GradientStats | None] = [None] * len(combiners)
        if observe and packed.shared is not None and packed.tasks.shape[1] > 1:
            G = _task_gradients(packed)
            stats = [gradient_stats(G[s], G[s].sum(0) if W is None else W[s].to(G.dtype) @ G[s])
                     for s in range(len(combiners))]
        if W is not None:
            total = (packed.tasks * W).sum() + packed.regularizers.sum()
        total.backward()
        return stats
    for comb in combiners:
        if not isinstance(comb, ActivationCombiner):
            raise MTVAEError(f"combiner {comb.name!r} cannot run inside a stack; use --no-stack")
    losses = packed.tasks.detach()
    chains = [c.prepared_chain(losses[s], observe)  # type: ignore[union-attr]
              for s, c in enumerate(combiners)]
    h = packed.shared
    if h is None:
        raise MTVAEError("activation-space MOO needs Terms.shared; this model returns none")
    if packed.task_inputs:
        _one_pass(packed, h, chains, total)
    else:
        G = _task_gradients(packed)
        torch.autograd.backward([total, h], [torch.ones_like(total),
                                             stacked_corrections(chains, G).view_as(h)])
    for chain in chains:
        chain.check_finite()
    return [chain.last for chain in chains]


def _one_pass(packed: Packed, h: Tensor, chains: list[Chain], total: Tensor) -> None:
    """One backward pass for all members: hooks collect the task rows at the per-task
    aliases of ``h`` and swap each member's aggregated gradient in at ``h``."""
    rows: list[Tensor | None] = [None] * len(packed.task_inputs)

    def keep(i: int) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:
            rows[i] = grad
        return hook

    def replace(grad: Tensor) -> Tensor:
        G = torch.stack([torch.zeros_like(grad) if r is None else r for r in rows], dim=1)
        return grad + stacked_corrections(chains, G.reshape(len(grad), len(rows), -1)
                                          ).view_as(grad)

    handles = [t.register_hook(keep(i)) for i, t in enumerate(packed.task_inputs)]
    handles.append(h.register_hook(replace))
    try:
        total.backward()
    finally:
        for handle in handles:
            handle.remove()


def _parameter_space(packed: Packed, combiners: list[ParameterCombiner], params: list[Tensor],
                     observe: bool) -> list[GradientStats | None]:
    """Jacobian descent over each member's shared parameters, for all members at once.

    One backward through the heads gives the task rows at ``h`` (``[T, S, ...]``), torchjd's
    ``backward`` carries them into the stacked shared parameters (``.jac`` of shape
    ``[T, S, ...]``, member ``s``'s Jacobian in slice ``s``), the heads get the summed
    losses' gradient, and each member's chain aggregates its own ``[T, N]`` Jacobian exactly
    as :class:`~mtvae.moo.combine.ParameterCombiner` does for a single run.
    """
    h, inputs = packed.shared, packed.task_inputs
    if packed.tasks.shape[1] < 2:
        raise MTVAEError(f"a MOO method needs at least two tasks to balance, but this model "
                         f"returns {packed.tasks.shape[1]}; use 'sum'")
    if h is None or not inputs:
        raise MTVAEError("parameter-space MOO inside a stack needs Terms.shared and "
                         "Terms.task_inputs; this model has none: train it unstacked "
                         "(--no-stack)")
    losses = packed.tasks.detach()
    chains = [c.prepared_chain(losses[s], observe) for s, c in enumerate(combiners)]
    if packed.regularizers.numel():
        packed.regularizers.sum().backward(retain_graph=True)
    jacobian_through_aliases(packed.tasks.sum(), inputs, h, params)
    shared = [p for p in params if getattr(p, "jac", None) is not None]
    S, T = len(chains), len(inputs)
    J = torch.cat([p.jac.transpose(0, 1).reshape(S, T, -1) for p in shared], dim=2)
    for p in params:
        if hasattr(p, "jac"):
            del p.jac
    updates = []
    for s, (comb, chain) in enumerate(zip(combiners, chains, strict=True)):
        update = chain(J[s])
        if comb.space == "parameter-rescaled":
            plain = J[s].sum(0).double().square().sum().sqrt()
            update = rescale_factor(chain, plain, update.double().square().sum().sqrt()) * update
        updates.append(update)
    U = torch.stack(updates)
    start = 0
    for p in shared:
        n = p[0].numel()
        piece = U[:, start:start + n].reshape(p.shape)
        p.grad = piece if p.grad is None else p.grad + piece
        start += n
    for chain in chains:
        chain.check_finite()
    return [chain.last for chain in chains]
