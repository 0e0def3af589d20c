"""Gradient-conflict diagnostics: are the tasks pulling the shared representation apart?

For a batch, ``G`` holds one row per task: the gradient of that task's loss with respect to
the shared representation (activation space) or to the shared parameters (parameter
space). We record

* the norm of every row (which task dominates the plain sum by magnitude),
* the cosine similarity of every pair of rows (negative = conflicting tasks, Yu et al. 2020),
* the cosine between every row and the update that was actually applied. When it is
  negative, the step *increases* that task's loss to first order: the task is being
  overlooked (Javaloy et al. 2022). Its frequency over training is our per-feature
  "overlooking" measure.

:class:`ConflictLog` averages these per epoch and summarises them for the run record.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mtvae.errors import MTVAEError
from mtvae.terms import Terms


@dataclass
class GradientStats:
    """Diagnostics of one step (all tensors detached, on the CPU)."""

    norms: Tensor  # [T]
    cosine: Tensor  # [T, T]
    cos_update: Tensor  # [T]
    weights: Tensor | None = None  # [T] weights a weighting applied, if any


def cosine_matrix(G: Tensor) -> Tensor:
    """Pairwise cosine similarities of the rows of ``G`` (zero rows give 0)."""
    unit = G / G.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return unit @ unit.T


def gradient_stats(G: Tensor, update: Tensor, weights: Tensor | None = None) -> GradientStats:
    """Norms, pairwise cosines and cosine to the applied ``update`` of the rows of ``G``."""
    G, update = G.detach(), update.detach().reshape(-1)
    norms = G.norm(dim=1)
    cos_update = (G @ update) / (norms * update.norm()).clamp_min(1e-12)
    return GradientStats(
        norms=norms.cpu(), cosine=cosine_matrix(G).cpu(), cos_update=cos_update.cpu(),
        weights=None if weights is None else weights.detach().cpu(),
    )


def gramian_stats(K: Tensor, coef: Tensor, weights: Tensor | None = None) -> GradientStats:
    """:func:`gradient_stats` of ``G`` and the update ``coef @ G``, from ``K = G G^T`` alone."""
    K, coef = K.detach(), coef.detach().to(K.dtype)
    norms = K.diagonal().clamp_min(0).sqrt()
    Ka = K @ coef
    unorm = (coef @ Ka).clamp_min(0).sqrt()
    outer = torch.outer(norms, norms).clamp_min(1e-24)
    return GradientStats(
        norms=norms.cpu(), cosine=(K / outer).cpu(),
        cos_update=(Ka / (norms * unorm).clamp_min(1e-12)).cpu(),
        weights=None if weights is None else weights.detach().cpu(),
    )


def task_gradients(terms: Terms) -> Tensor:
    """Per-task gradients w.r.t. ``terms.shared``, flattened: ``[T, numel(shared)]``.

    With ``terms.task_inputs`` this takes one backward pass through the heads; otherwise one
    per task. The graph is retained so that the combiner can back-propagate afterwards.
    """
    h = terms.shared
    if h is None or not h.requires_grad:
        raise MTVAEError(
            "this model's loss_terms returns no shared representation (Terms.shared), so "
            "per-task gradients cannot be taken in activation space; use a parameter-space "
            "method ('<name>@parameter') or the plain 'sum'"
        )
    losses = list(terms.tasks.values())
    if terms.task_inputs is not None:
        if len(terms.task_inputs) != len(losses):
            raise MTVAEError(f"Terms.task_inputs has {len(terms.task_inputs)} entries for "
                             f"{len(losses)} tasks; give one alias of 'shared' per task")
        grads = torch.autograd.grad(torch.stack(losses).sum(), terms.task_inputs,
                                    retain_graph=True, allow_unused=True)
        return torch.stack([torch.zeros_like(h).reshape(-1) if g is None else g.reshape(-1)
                            for g in grads])
    rows = []
    for loss in losses:
        (g,) = torch.autograd.grad(loss, h, retain_graph=True, allow_unused=True)
        rows.append(torch.zeros_like(h).reshape(-1) if g is None else g.reshape(-1))
    return torch.stack(rows)


class ConflictLog:
    """Collects :class:`GradientStats` and averages them per epoch."""

    def __init__(self, tasks: list[str], space: str) -> None:
        self.tasks, self.space = tasks, space
        self.epochs: list[dict[str, object]] = []
        self._steps: list[GradientStats] = []
        self._cos_sum: Tensor | None = None
        self._n = 0

    def add(self, stats: GradientStats) -> None:
        if len(stats.norms) != len(self.tasks):
            raise MTVAEError(
                f"got gradient statistics for {len(stats.norms)} tasks, expected "
                f"{len(self.tasks)} ({', '.join(self.tasks)})"
            )
        self._steps.append(stats)

    def end_epoch(self, epoch: int) -> None:
        if not self._steps:
            return
        norms = torch.stack([s.norms for s in self._steps])
        cos_u = torch.stack([s.cos_update for s in self._steps])
        cos = torch.stack([s.cosine for s in self._steps])
        self._cos_sum = cos.sum(0) if self._cos_sum is None else self._cos_sum + cos.sum(0)
        self._n += len(self._steps)
        off = ~torch.eye(len(self.tasks), dtype=torch.bool)
        row: dict[str, object] = {
            "epoch": epoch,
            "steps": len(self._steps),
            "norm": norms.mean(0).tolist(),
            "cos_update": cos_u.mean(0).tolist(),
            "overlooked": (cos_u < 0).float().mean(0).tolist(),
            "conflicting_pairs": float((cos[:, off] < 0).float().mean()) if off.any() else 0.0,
        }
        weights = [s.weights for s in self._steps if s.weights is not None]
        if weights:
            row["weights"] = torch.stack(weights).mean(0).tolist()
        self.epochs.append(row)
        self._steps = []

    def summary(self) -> dict[str, object]:
        """JSON-friendly: per-epoch rows and the cosine matrix averaged over all steps."""
        mean_cos = (self._cos_sum / max(self._n, 1)).tolist() if self._cos_sum is not None else []
        return {"tasks": self.tasks, "space": self.space, "epochs": self.epochs,
                "mean_cosine": mean_cos, "steps_observed": self._n}
