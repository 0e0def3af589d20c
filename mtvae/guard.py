"""The divergence guard: stop a run whose loss or weights explode, naming where and why.

The rule (checked by :meth:`DivergenceGuard.check`):

1. the loss (or any of its terms) is not finite (NaN or ±inf); or
2. ``|loss| > loss_factor × max(|first loss|, 1)`` — the first loss the guard sees (the
   first training step) sets the scale; ``loss_factor`` defaults to ``1e6``: a healthy run
   lowers its loss or moves it by a few times its first value, never a million-fold; or
3. the global L2 norm of the parameters exceeds ``param_factor × max(|initial norm|, 1)``
   (``param_factor`` defaults to ``1e4``; healthy runs grow their weights a few-fold).

Any of them raises :class:`~mtvae.errors.TrainingDivergedError` naming the epoch, the step,
the offending value, the loss terms and the fix. The check accepts tensors on any device and
synchronises with the host once per call, so a training loop may call it every ``k`` steps
with accumulated values (e.g. the running maximum of ``|loss|`` built with
``torch.maximum``, which propagates NaN) instead of after every step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from mtvae.errors import MTVAEError, TrainingDivergedError

LOSS_FACTOR = 1e6
PARAM_FACTOR = 1e4
FIX = "Lower the learning rate{lr}, set grad_clip, or check the data for extreme values."


def parameter_norm(params: Iterable[Tensor] | nn.Module) -> Tensor:
    """Global L2 norm of ``params`` as a 0-d tensor on their device (no host sync)."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    tensors = [p.detach() for p in params]
    if not tensors:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def _value(v: Tensor | float) -> float:
    return float(v.detach()) if isinstance(v, Tensor) else float(v)


def _describe(terms: Mapping[str, Tensor | float]) -> str:
    return ", ".join(f"{k}={_value(v):.4g}" for k, v in terms.items())


class DivergenceGuard:
    """Stateful check of one run (see the module docstring for the rule).

    Args:
        loss_factor: how many times the first ``|loss|`` (at least 1) the loss may reach.
        param_factor: how many times the initial parameter norm (at least 1) it may reach.
        lr: the learning rate, only quoted in the message's fix.
    """

    def __init__(self, loss_factor: float = LOSS_FACTOR, param_factor: float = PARAM_FACTOR,
                 lr: float | None = None) -> None:
        for name, value in (("loss_factor", loss_factor), ("param_factor", param_factor)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 1):
                raise MTVAEError(f"{name} must be a finite number > 1, got {value!r}")
        self.loss_factor, self.param_factor, self.lr = float(loss_factor), float(param_factor), lr
        self.loss_scale: float | None = None
        self.param_scale: float | None = None

    def start(self, model: nn.Module | Iterable[Tensor]) -> None:
        """Record the initial parameter norm (call once, before the first step)."""
        self.param_scale = max(_value(parameter_norm(model)), 1.0)

    def _fail(self, what: str, epoch: int, step: int,
              terms: Mapping[str, Tensor | float] | None) -> None:
        detail = f" ({_describe(terms)})" if terms else ""
        lr = f" (now {self.lr})" if self.lr is not None else ""
        raise TrainingDivergedError(
            f"training stopped: {what} at epoch {epoch}, step {step}{detail}. "
            + FIX.format(lr=lr)
        )

    def check(self, loss: Tensor | float, epoch: int, step: int, *,
              terms: Mapping[str, Tensor | float] | None = None,
              param_norm: Tensor | float | None = None) -> None:
        """Raise :class:`TrainingDivergedError` if the rule is broken; otherwise return.

        ``loss`` may be one step's loss or the largest ``|loss|`` since the last check;
        ``terms`` (named loss terms) are only evaluated for the message or when non-finite.
        """
        value = _value(loss)
        if not math.isfinite(value):
            self._fail(f"the loss became {value}", epoch, step, terms)
        if terms and not all(math.isfinite(_value(v)) for v in terms.values()):
            self._fail(f"a loss term became non-finite (loss {value:.4g})", epoch, step, terms)
        if self.loss_scale is None:
            self.loss_scale = max(abs(value), 1.0)
        elif abs(value) > self.loss_factor * self.loss_scale:
            self._fail(f"the loss exploded to {value:.4g}, over {self.loss_factor:.0e} × its "
                       f"first value's scale {self.loss_scale:.4g}", epoch, step, terms)
        if param_norm is None:
            return
        norm = _value(param_norm)
        if self.param_scale is None:
            self.param_scale = max(norm, 1.0) if math.isfinite(norm) else 1.0
        if not math.isfinite(norm) or norm > self.param_factor * self.param_scale:
            self._fail(f"the parameter norm exploded to {norm:.4g}, over {self.param_factor:.0e}"
                       f" × its initial {self.param_scale:.4g}", epoch, step, terms)
