"""Task weightings: stateful rescalings of the per-task gradients before aggregation.

A weighting multiplies row ``i`` of the gradient matrix ``G`` by a weight ``w_i`` that it
learns as training goes. It can stand alone (the update is then the weighted sum) or come
first in a chain, e.g. ``gradnorm+pcgrad`` (Javaloy et al. 2022 chain GradNorm with
direction-changing methods in this way).

* ``gradnorm`` — GradNorm (Chen et al. 2018): learns ``w`` so that every weighted gradient
  norm ``w_i ||g_i||`` approaches ``mean_j(w_j ||g_j||) * r_i ** alpha``, where ``r_i`` is
  task ``i``'s relative inverse training rate. The paper uses loss ratios ``L_i(t)/L_i(0)``,
  which are meaningless for log-likelihood losses that can be negative; we use the ratio of
  per-example perplexities ``exp(L_i(t) - L_i(0))`` instead (equal to 1 at the start, smaller
  as the task learns, defined for any sign).
* ``gradnorm-grad`` — the variant of Javaloy et al. (2022) that measures training progress
  with gradient norms ``||g_i(t)|| / ||g_i(0)||`` instead of losses.
* ``nsgd`` — normalised gradients: every task gradient scaled to unit norm (as in Javaloy
  et al.'s experiments), so that no task dominates by magnitude alone.
* ``uncertainty`` — homoscedastic uncertainty weighting (Kendall et al. 2018) through
  torchjd's ``UW`` scalariser: weights ``exp(-s_i) / 2`` with learned log-variances ``s_i``.

The weights of GradNorm and uncertainty weighting are learned by their own Adam optimiser
inside the weighting, so the training loop stays unaware of them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchjd.scalarization import UW

from mtvae.errors import check_positive


class Weighting:
    """Base class: ``weights(G, losses)`` returns the weight of every row of ``G``.

    Every weighting here reads ``G`` only through its row norms, so subclasses implement
    :meth:`from_norms`; the Gramian path of a chain passes ``sqrt(diag(G G^T))``.
    """

    name = "weighting"

    def weights(self, G: Tensor, losses: Tensor) -> Tensor:
        return self.from_norms(G.norm(dim=1), losses)

    def from_norms(self, norms: Tensor, losses: Tensor) -> Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


class NSGD(Weighting):
    """Unit-norm task gradients."""

    name = "nsgd"

    def from_norms(self, norms: Tensor, losses: Tensor) -> Tensor:
        return 1.0 / norms.clamp_min(1e-12)


class GradNorm(Weighting):
    """GradNorm (Chen et al. 2018) with losses or gradient norms as the progress measure."""

    def __init__(self, alpha: float = 1.0, lr: float = 0.025, progress: str = "loss") -> None:
        check_positive("GradNorm alpha", alpha, allow_zero=True)
        check_positive("GradNorm lr", lr)
        self.alpha, self.lr, self.progress = alpha, lr, progress
        self.name = "gradnorm" if progress == "loss" else "gradnorm-grad"
        self.w: Tensor | None = None
        self.reference: Tensor | None = None
        self.opt: torch.optim.Optimizer | None = None

    def _init(self, n: int, like: Tensor, reference: Tensor) -> None:
        self.w = torch.ones(n, dtype=like.dtype, device=like.device, requires_grad=True)
        self.opt = torch.optim.Adam([self.w], lr=self.lr)
        self.reference = reference.detach().clone()

    def from_norms(self, norms: Tensor, losses: Tensor) -> Tensor:
        norms = norms.detach()
        measure = losses.detach() if self.progress == "loss" else norms
        if self.w is None or self.reference is None or self.opt is None:
            self._init(len(norms), norms, measure)
        assert self.w is not None and self.reference is not None and self.opt is not None
        w = self.w.detach().clone()
        if self.progress == "loss":
            inverse_rate = torch.exp(measure - self.reference)
        else:
            inverse_rate = measure / self.reference.clamp_min(1e-12)
        r = inverse_rate / inverse_rate.mean().clamp_min(1e-12)
        weighted = w * norms
        target = weighted.mean() * r.pow(self.alpha)
        # d/dw_i of sum_j |w_j n_j - target_j| with the target held fixed (as in the paper)
        self.opt.zero_grad()
        self.w.grad = torch.sign(weighted - target) * norms
        self.opt.step()
        with torch.no_grad():
            self.w.clamp_(min=1e-3)
            self.w.mul_(len(self.w) / self.w.sum())
        return w

    def state_dict(self) -> dict[str, Any]:
        if self.w is None or self.opt is None:
            return {}
        return {"w": self.w.detach().clone(), "reference": self.reference,
                "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self._init(len(state["w"]), state["w"], state["reference"])
        assert self.w is not None and self.opt is not None
        with torch.no_grad():
            self.w.copy_(state["w"])
        self.opt.load_state_dict(state["opt"])


class Uncertainty(Weighting):
    """Uncertainty weighting (Kendall et al. 2018) via torchjd's ``UW`` scalariser."""

    name = "uncertainty"

    def __init__(self, lr: float = 0.025) -> None:
        check_positive("uncertainty-weighting lr", lr)
        self.lr = lr
        self.uw: UW | None = None
        self.opt: torch.optim.Optimizer | None = None

    def _init(self, n: int, like: Tensor) -> None:
        self.uw = UW(n).to(device=like.device, dtype=like.dtype)
        self.opt = torch.optim.Adam(self.uw.parameters(), lr=self.lr)

    def from_norms(self, norms: Tensor, losses: Tensor) -> Tensor:
        if self.uw is None or self.opt is None:
            self._init(len(norms), norms)
        assert self.uw is not None and self.opt is not None
        w = 0.5 * torch.exp(-self.uw.log_var.detach())
        self.opt.zero_grad()
        with torch.enable_grad():  # may run inside a backward hook, where grad mode is off
            self.uw(losses.detach()).backward()
        self.opt.step()
        return w

    def state_dict(self) -> dict[str, Any]:
        if self.uw is None or self.opt is None:
            return {}
        return {"uw": self.uw.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self._init(len(state["uw"]["log_var"]), state["uw"]["log_var"])
        assert self.uw is not None and self.opt is not None
        self.uw.load_state_dict(state["uw"])
        self.opt.load_state_dict(state["opt"])


WEIGHTINGS = {
    "gradnorm": (lambda **kw: GradNorm(progress="loss", **kw), "chen2018gradnorm",
                 "learns weights equalising weighted gradient norms by training rate (losses)"),
    "gradnorm-grad": (lambda **kw: GradNorm(progress="grad", **kw), "javaloy2022mitigating",
                      "GradNorm with training rates measured by gradient norms"),
    "nsgd": (NSGD, "javaloy2022mitigating", "every task gradient scaled to unit norm"),
    "uncertainty": (Uncertainty, "kendall2018uncertainty",
                    "weights exp(-s)/2 with a learned log-variance s per task"),
}

#: Options a weighting accepts in a spec, e.g. ``"gradnorm[alpha=0.5,lr=0.01]"``.
OPTIONS: dict[str, tuple[str, ...]] = {
    "gradnorm": ("alpha", "lr"), "gradnorm-grad": ("alpha", "lr"), "nsgd": (),
    "uncertainty": ("lr",),
}
