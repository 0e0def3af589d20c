"""S models of one architecture held as stacked tensors ``[S, ...]`` (Tensor-level stacking).

Mechanism: ``torch.func.stack_module_state`` stacks the members' parameters and buffers,
and ``functional_call`` + ``vmap`` run the *unchanged* model code once for all members
(:mod:`mtvae.stack.loop`). We chose this over hand-written batched layers because it keeps
one home per model: every model that draws its noise through :mod:`mtvae.rng` can be
stacked without a second implementation, and ``vmap(randomness="error")`` proves that no
member touches a shared random stream. In-place buffer updates (BatchNorm running
statistics) land in each member's own slice.

Members must be identical apart from their tensors (non-tensor attributes come from the
first member). A member that stops is *removed* from the stack (:meth:`Stack.keep`), so it
no longer changes and no longer costs compute.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import stack_module_state

from mtvae.errors import MTVAEError


def _member_slice(state: dict[str, Any], index: Tensor | int) -> dict[str, Any]:
    """Optimiser state of some members: per-member tensors sliced, shared scalars copied."""
    return {name: (t[index].clone() if torch.is_tensor(t) and t.dim() > 0 else copy.deepcopy(t))
            for name, t in state.items()}


def _signature(model: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items()]


class Stack:
    """Stacked parameters (leaves of the optimiser) and buffers of the active members."""

    def __init__(self, models: list[nn.Module], device: torch.device) -> None:
        if not models:
            raise MTVAEError("a stack needs at least one model")
        first = _signature(models[0])
        for i, m in enumerate(models[1:], 1):
            if type(m) is not type(models[0]) or _signature(m) != first:
                raise MTVAEError(
                    f"stacked members must share one architecture; member {i} "
                    f"({type(m).__name__}) differs from member 0 ({type(models[0]).__name__}); "
                    "train them unstacked (--no-stack) or group them by architecture")
        params, buffers = stack_module_state(models)  # type: ignore[arg-type]
        self.template = copy.deepcopy(models[0]).to("meta")
        self.params: dict[str, Tensor] = {
            k: v.detach().to(device).requires_grad_(True) for k, v in params.items()}
        self.buffers: dict[str, Tensor] = {k: v.detach().to(device) for k, v in buffers.items()}
        self.members: list[int] = list(range(len(models)))  # original indices, in stack order

    def __len__(self) -> int:
        return len(self.members)

    def state(self, pos: int) -> dict[str, Tensor]:
        """The member at stack position ``pos`` as a ``state_dict`` (detached clones)."""
        out = {k: v[pos].detach().clone() for k, v in self.params.items()}
        out |= {k: v[pos].clone() for k, v in self.buffers.items()}
        return out

    def load(self, pos: int, state: dict[str, Tensor]) -> None:
        """Overwrite the member at ``pos`` with a ``state_dict`` (used on resume)."""
        with torch.no_grad():
            for k, v in self.params.items():
                v[pos].copy_(state[k])
            for k, v in self.buffers.items():
                v[pos].copy_(state[k])

    def keep(self, positions: list[int],
             optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Drop every member not in ``positions``; return the optimiser for what is left.

        Adam's moments are sliced with the parameters, so the kept members continue
        exactly as if the others had never been there.
        """
        index = torch.tensor(positions, device=next(iter(self.params.values())).device)
        old = list(self.params.items())
        state = optimizer.state
        new_params = {k: v.detach()[index].clone().requires_grad_(True) for k, v in old}
        self.buffers = {k: v[index].clone() for k, v in self.buffers.items()}
        new_opt = type(optimizer)(list(new_params.values()), **optimizer.defaults)
        for (_, p), q in zip(old, new_params.values(), strict=True):
            if p in state:
                new_opt.state[q] = _member_slice(state[p], index)
        self.params = new_params
        self.members = [self.members[i] for i in positions]
        return new_opt

    def optimizer_slice(self, optimizer: torch.optim.Optimizer, pos: int) -> dict[str, Any]:
        """One member's optimiser state (for its own checkpoint)."""
        out: dict[str, Any] = {}
        for k, p in self.params.items():
            out[k] = _member_slice(optimizer.state.get(p, {}), pos)
        return out

    def load_optimizer_slice(self, optimizer: torch.optim.Optimizer, pos: int,
                             state: dict[str, Any]) -> None:
        """Put one member's optimiser state back into the stacked optimiser (on resume)."""
        for k, p in self.params.items():
            saved = state.get(k, {})
            if not saved:
                continue
            cur = optimizer.state.setdefault(p, {})
            for n, t in saved.items():
                if torch.is_tensor(t) and t.dim() > 0:
                    if n not in cur:
                        cur[n] = torch.zeros_like(p)
                    cur[n][pos].copy_(t)
                else:
                    cur[n] = copy.deepcopy(t)
