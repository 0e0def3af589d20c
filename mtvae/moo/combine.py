"""Combiners: how a model's :class:`~mtvae.terms.Terms` become parameter gradients.

* ``sum`` — the plain objective (the vanilla ELBO): every task and regulariser summed;
  ``sum:initial-loss`` and ``sum:type`` weight the tasks statically (the tuned-sum family of
  Kurin et al. 2022 and Xin et al. 2022, see :func:`static_weights`).
* activation space (default for a method spec, e.g. ``"pcgrad"``) — the "impartial" block
  of Javaloy et al. (2022): take each task's gradient w.r.t. the shared representation
  ``h = Terms.shared``, aggregate them, rescale the result to the norm of the plain summed
  gradient (the direction changes, the magnitude does not) and back-propagate it once
  through the shared part of the model. Regularisers (the KL) are never balanced: their
  gradient reaches the encoder as usual, and each task's own head receives its own gradient.
* parameter space (``"pcgrad@parameter"``) — torchjd's Jacobian descent (Quinton & Rey 2024):
  ``mtl_backward`` stores the Jacobian of the task losses w.r.t. every shared parameter,
  ``jac_to_grad`` aggregates it into ``.grad``. ``"pcgrad@parameter-rescaled"`` rescales that
  update to the norm of the plain summed gradient over the shared parameters, as the
  activation block does, so the two spaces take steps of the same size.

Every combiner can also report :class:`~mtvae.moo.diagnostics.GradientStats` for a step
(``observe=True``); the trainer asks for them every few steps.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torchjd.autojac import backward as torchjd_backward
from torchjd.autojac import jac_to_grad, mtl_backward

from mtvae.errors import MTVAEError, check_choice
from mtvae.moo.chain import Chain, Spec, method_names, parse_spec
from mtvae.moo.diagnostics import GradientStats, gradient_stats, task_gradients
from mtvae.terms import Terms


class Combiner(Protocol):
    """Turns the terms of one batch into gradients on the model's parameters."""

    name: str
    space: str

    def backward(self, terms: Terms, model: nn.Module, observe: bool = False
                 ) -> GradientStats | None:
        """Accumulate gradients into ``.grad``; with ``observe``, return this step's stats."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


SUM_WEIGHTINGS = ("uniform", "initial-loss", "type")
"""Static task weightings of the plain sum (``"sum"``, ``"sum:initial-loss"``, ``"sum:type"``)."""


def task_types(model: nn.Module, names: Sequence[str]) -> list[str]:
    """The feature type of every task, read from the model's ``schema`` (a HeteroVAE)."""
    schema = getattr(model, "schema", None)
    types = {} if schema is None else {f.name: f.type for f in schema}
    missing = [n for n in names if n not in types]
    if missing:
        raise MTVAEError(f"'sum:type' weights tasks by feature type, but the model has no "
                         f"schema naming the tasks {missing}; use 'sum' or 'sum:initial-loss'")
    return [types[n] for n in names]


def static_weights(weighting: str, losses: Tensor, types: Sequence[str] | None = None
                   ) -> Tensor:
    """Per-task weights of a weighted plain sum, normalised to sum to the number of tasks.

    * ``uniform``: every task 1 (the plain ELBO);
    * ``initial-loss``: ``1 / |L_i(0)|`` for the first batch's task losses ``losses`` (each
      task starts at the same weighted loss; ``|.|`` because a log-likelihood loss may be
      negative, floored at 1 % of the mean magnitude so a near-zero loss cannot take all
      the weight);
    * ``type``: ``1 / (number of types * number of tasks of the same type)``, so every
      feature type gets the same total weight however many columns it has.

    The weights sum to ``T`` so that, against the KL, the reconstruction keeps the plain
    sum's overall scale: only the balance between tasks changes.
    """
    check_choice("sum weighting", weighting, SUM_WEIGHTINGS)
    T = len(losses)
    if weighting == "uniform":
        w = torch.ones(T, dtype=torch.float64)
    elif weighting == "initial-loss":
        mag = losses.detach().double().abs().cpu()
        if not bool(torch.isfinite(mag).all()):
            raise MTVAEError("'sum:initial-loss' got a non-finite initial task loss; check "
                             "the data for extreme values")
        w = 1.0 / mag.clamp_min(max(float(mag.mean()) * 1e-2, 1e-12))
    else:
        if types is None or len(types) != T:
            raise MTVAEError(f"'sum:type' needs one feature type per task ({T} tasks)")
        count = {t: list(types).count(t) for t in set(types)}
        w = torch.tensor([1.0 / (len(count) * count[t]) for t in types], dtype=torch.float64)
    return (w * T / w.sum()).float()


class SumCombiner:
    """The plain objective: back-propagate the (optionally weighted) sum of the tasks plus
    the regularisers. The weights are fixed at the first step (see :func:`static_weights`)
    and saved in the combiner's state, so a resumed run keeps them."""

    space = "activation"

    def __init__(self, weighting: str = "uniform") -> None:
        check_choice("sum weighting", weighting, SUM_WEIGHTINGS)
        self.weighting = weighting
        self.name = "sum" if weighting == "uniform" else f"sum:{weighting}"
        self.weights: Tensor | None = None

    def task_weights(self, losses: Tensor, names: Sequence[str], model: nn.Module
                     ) -> Tensor | None:
        """This run's per-task weights (``None`` for the uniform sum), fixed on first use."""
        if self.weighting == "uniform":
            return None
        if self.weights is None:
            types = task_types(model, names) if self.weighting == "type" else None
            self.weights = static_weights(self.weighting, losses, types)
        if len(self.weights) != len(losses):
            raise MTVAEError(f"{self.name!r} holds {len(self.weights)} task weights for "
                             f"{len(losses)} tasks (a checkpoint of another model?)")
        return self.weights.to(device=losses.device, dtype=losses.dtype)

    def backward(self, terms: Terms, model: nn.Module, observe: bool = False
                 ) -> GradientStats | None:
        w = None
        if self.weighting != "uniform":
            w = self.task_weights(_task_losses(terms), list(terms.tasks), model)
        stats = None
        if observe and terms.shared is not None and len(terms.tasks) > 1:
            G = task_gradients(terms)
            stats = gradient_stats(G, G.sum(dim=0) if w is None else w.to(G.dtype) @ G)
        if w is None:
            total = terms.total()
        else:
            total = (w * torch.stack(list(terms.tasks.values()))).sum()
            if terms.regularizers:
                total = total + torch.stack(list(terms.regularizers.values())).sum()
        total.backward()
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {} if self.weights is None else {"weights": self.weights.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("weights") is not None:
            self.weights = torch.tensor(state["weights"], dtype=torch.float32)


def _task_losses(terms: Terms) -> torch.Tensor:
    if len(terms.tasks) < 2:
        raise MTVAEError(
            f"a MOO method needs at least two tasks to balance, but this model returns "
            f"{len(terms.tasks)} ({', '.join(terms.tasks) or 'none'}); use 'sum'"
        )
    return torch.stack([t.detach() for t in terms.tasks.values()])


class _ChainCombiner:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.name = spec.name
        self.space = spec.space
        self.chain = Chain(spec)
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return self.chain.state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state  # restored on the first step, when sizes and device are known

    def _restore(self, n_tasks: int, device: torch.device) -> None:
        if self._pending:
            self.chain.load_state(self._pending, n_tasks, device)
        self._pending = None

    def prepared_chain(self, losses: Tensor, observe: bool) -> Chain:
        """The chain, with its checkpointed state restored and this step's losses set (the
        stacked engine's entry point: one combiner per member)."""
        self._restore(len(losses), losses.device)
        self.chain.losses, self.chain.record = losses, observe
        return self.chain


def block_coefficients(chain: Chain, K: Tensor) -> Tensor:
    """Coefficients ``c`` with ``c @ G = update - plain`` for the Gramian ``K = G G^T``.

    ``update = s * (a @ G)`` for the chain's coefficients ``a``, rescaled by ``s`` to the norm
    of the plain sum ``1 @ G`` (``||a @ G||^2 = a K a``). The finiteness of ``s`` is noted for
    the chain's deferred check (:meth:`Chain.check_finite`).
    """
    a = chain.weights_from_gramian(K)
    scale = (K.sum().clamp_min(0) / (a @ K @ a).clamp_min(1e-24)).sqrt()
    chain.note_finite(scale)
    return scale * a - 1.0


def block_correction(chain: Chain, G: Tensor) -> Tensor:
    """``update - plain`` (``[N]``) for one member's task gradients ``G`` (``[T, N]``)."""
    if chain.uses_gramian:
        return block_coefficients(chain, G @ G.T).to(G.dtype) @ G
    plain = G.sum(dim=0)
    update = chain(G)
    return update * (plain.norm() / update.norm().clamp_min(1e-12)) - plain


def stacked_corrections(chains: Sequence[Chain], G: Tensor) -> Tensor:
    """:func:`block_correction` of ``S`` members at once: ``G`` is ``[S, T, N]``, the result
    ``[S, N]`` (add row ``s`` to the gradient at member ``s``'s shared representation).

    The Gramians come from one batched product and the updates from another; only the
    ``T x T`` weight problems run member by member. Set each chain's ``losses`` and
    ``record`` before, and call its ``check_finite()`` after the backward pass.
    """
    if len(chains) != len(G):
        raise MTVAEError(f"got {len(chains)} chains for {len(G)} members' gradients")
    if all(c.uses_gramian for c in chains):
        K = torch.bmm(G, G.transpose(1, 2))
        C = torch.stack([block_coefficients(c, K[s]) for s, c in enumerate(chains)])
        return torch.bmm(C.to(G.dtype).unsqueeze(1), G).squeeze(1)
    return torch.stack([block_correction(c, G[s]) for s, c in enumerate(chains)])


class ActivationCombiner(_ChainCombiner):
    """Aggregate per-task gradients at the shared representation; keep the plain norm.

    With ``Terms.task_inputs`` the whole step is one backward pass: hooks on the per-task
    aliases of ``h`` collect the rows of ``G`` as the pass goes through the heads, and a hook
    on ``h`` replaces its gradient (the plain sum) by the aggregated one before the pass goes
    on into the trunk and the encoder. Without them, ``G`` takes one backward per task first.
    Methods that need only the Gramian (see :mod:`mtvae.moo.methods`) work on ``K = G G^T``
    (``T x T``); the update is then ``a @ G`` for the coefficients ``a`` they return.
    """

    def backward(self, terms: Terms, model: nn.Module, observe: bool = False
                 ) -> GradientStats | None:
        losses = _task_losses(terms)
        h = terms.shared
        if h is None or not h.requires_grad or terms.task_inputs is None:
            G = task_gradients(terms)  # raises the clear error when h is missing
            assert h is not None
            self._restore(len(G), G.device)
            self.chain.losses, self.chain.record = losses, observe
            total = terms.total()
            torch.autograd.backward(
                [total, h], [torch.ones_like(total), block_correction(self.chain, G).view_as(h)])
        else:
            self._one_pass(terms, h, losses, observe)
        self.chain.check_finite()
        return self.chain.last

    def _one_pass(self, terms: Terms, h: Tensor, losses: Tensor, observe: bool) -> None:
        inputs = terms.task_inputs
        assert inputs is not None
        if len(inputs) != len(losses):
            raise MTVAEError(f"Terms.task_inputs has {len(inputs)} entries for "
                             f"{len(losses)} tasks; give one alias of 'shared' per task")
        self._restore(len(losses), h.device)
        self.chain.losses, self.chain.record = losses, observe
        rows: list[Tensor | None] = [None] * len(inputs)

        def keep(i: int) -> Callable[[Tensor], None]:
            def hook(grad: Tensor) -> None:
                rows[i] = grad
            return hook

        def replace(grad: Tensor) -> Tensor:
            G = torch.stack([torch.zeros_like(grad) if r is None else r for r in rows])
            return grad + block_correction(self.chain, G.reshape(len(rows), -1)).view_as(grad)

        handles = [t.register_hook(keep(i)) for i, t in enumerate(inputs)]
        handles.append(h.register_hook(replace))
        try:
            terms.total().backward()
        finally:
            for handle in handles:
                handle.remove()


def rescale_factor(chain: Chain, plain_norm: Tensor, update_norm: Tensor) -> Tensor:
    """The factor that gives a parameter-space update the norm of the plain summed gradient
    (``@parameter-rescaled``, as the activation block keeps the plain norm at ``h``); its
    finiteness is noted for the chain's deferred check."""
    scale = (plain_norm.double() / update_norm.double().clamp_min(1e-24)).float()
    chain.note_finite(scale)
    return scale


def jacobian_through_aliases(total: Tensor, inputs: Sequence[Tensor], h: Tensor,
                             params: Iterable[Tensor], heads: list[Tensor] | None = None
                             ) -> list[Tensor]:
    """Store the task Jacobian w.r.t. the shared parameters in their ``.jac`` with two
    backward passes whatever the number of tasks, and give the heads their gradient.

    ``inputs`` are per-task aliases of ``h`` (task ``t``'s head reads ``inputs[t]`` only),
    so one ``autograd.grad`` of the summed task losses w.r.t. the aliases gives every task's
    row at ``h``; torchjd's ``backward`` carries those rows into the leaves of ``h``'s graph
    (the shared parameters: ``.jac`` of shape ``[T, ...]``). The other trainable ``params``
    (the heads, outside ``h``'s graph) receive the summed losses' gradient in ``.grad``.
    Pass the ``heads`` an earlier call returned (same model) to skip the search for them
    and one backward pass; the function returns them.
    """
    wanted = [*inputs, *(heads or [])]
    grads = torch.autograd.grad(total, wanted, retain_graph=True, allow_unused=True)
    rows = [torch.zeros_like(x) if g is None else g
            for x, g in zip(inputs, grads[:len(inputs)], strict=True)]
    torchjd_backward(h, jac_tensors=torch.stack(rows), retain_graph=True)
    head_grads: Sequence[Tensor | None] = grads[len(inputs):]
    if heads is None:  # the heads are the trainable parameters outside h's graph
        heads = [p for p in params if p.requires_grad and getattr(p, "jac", None) is None]
        head_grads = (torch.autograd.grad(total, heads, retain_graph=True, allow_unused=True)
                      if heads else ())
    for p, g in zip(heads, head_grads, strict=True):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g
    return heads


class ParameterCombiner(_ChainCombiner):
    """Jacobian descent over the shared parameters with torchjd.

    With ``Terms.task_inputs`` the Jacobian takes two backward passes instead of one per
    task: one through the heads gives every task's gradient at ``h`` (the rows of ``G_h``,
    through the per-task aliases) and torchjd's ``backward`` carries them into the shared
    parameters (``J = G_h dh/dθ``, the same rows ``mtl_backward`` computes task by task);
    the task-specific parameters get the summed loss's gradient, which is each task's own
    gradient where a head serves one task (``mtl_backward`` accumulates the same sum).
    """

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self._heads: weakref.WeakKeyDictionary[nn.Module, list[Tensor]] = (
            weakref.WeakKeyDictionary())

    def _jacobian_from_aliases(self, terms: Terms, h: Tensor, model: nn.Module) -> None:
        inputs = terms.task_inputs
        assert inputs is not None
        if len(inputs) != len(terms.tasks):
            raise MTVAEError(f"Terms.task_inputs has {len(inputs)} entries for "
                             f"{len(terms.tasks)} tasks; give one alias of 'shared' per task")
        total = torch.stack(list(terms.tasks.values())).sum()
        self._heads[model] = jacobian_through_aliases(total, inputs, h, model.parameters(),
                                                      self._heads.get(model))

    def backward(self, terms: Terms, model: nn.Module, observe: bool = False
                 ) -> GradientStats | None:
        losses = _task_losses(terms)
        h = terms.shared
        if h is None:
            raise MTVAEError(
                "parameter-space MOO needs Terms.shared (the representation that separates "
                "shared from task-specific parameters); this model returns none"
            )
        self._restore(len(losses), h.device)
        if terms.regularizers:
            torch.stack(list(terms.regularizers.values())).sum().backward(retain_graph=True)
        if terms.task_inputs is None or not h.requires_grad:
            # retain_graph: task losses may share nodes after h (e.g. columns of one tensor)
            mtl_backward(list(terms.tasks.values()), features=h, retain_graph=True)
        else:
            self._jacobian_from_aliases(terms, h, model)
        shared = [p for p in model.parameters() if getattr(p, "jac", None) is not None]
        self.chain.losses, self.chain.record = losses, observe
        if self.space == "parameter":
            jac_to_grad(shared, self.chain)
            return self.chain.last
        # parameter-rescaled: the aggregate rescaled to the norm of the plain summed gradient
        # over the shared parameters, as the activation block does at h
        plain = torch.sqrt(sum((p.jac.sum(0).double() ** 2).sum() for p in shared))
        before = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in shared]
        jac_to_grad(shared, self.chain)
        update = [p.grad - g0 for p, g0 in zip(shared, before, strict=True)]
        norm = torch.sqrt(sum((u.double() ** 2).sum() for u in update))
        scale = rescale_factor(self.chain, plain, norm)
        for p, g0, u in zip(shared, before, update, strict=True):
            p.grad = g0 + scale * u
        self.chain.check_finite()
        return self.chain.last


def available() -> list[str]:
    """Every method name accepted by :func:`get_combiner` (chain them with ``+``); the sum's
    static weightings (``sum:initial-loss``, ``sum:type``) are :data:`SUM_WEIGHTINGS`."""
    return ["sum", *method_names()]


def get_combiner(name: str | Combiner) -> Combiner:
    """A combiner from a spec such as ``"sum"``, ``"mgda"``, ``"gradnorm+pcgrad@parameter"``.

    An instance is passed through; unknown names raise an error that lists the valid ones.
    """
    if not isinstance(name, str):
        return name
    base, colon, weighting = name.strip().lower().partition(":")
    if base == "sum":
        if colon and weighting not in SUM_WEIGHTINGS[1:]:
            raise MTVAEError(f"unknown weighting {weighting!r} of the sum in {name!r}; valid: "
                             + ", ".join(f"sum:{w}" for w in SUM_WEIGHTINGS[1:]))
        return SumCombiner(weighting or "uniform")
    spec = parse_spec(name)
    return ActivationCombiner(spec) if spec.space == "activation" else ParameterCombiner(spec)
