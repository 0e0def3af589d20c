"""Method specs such as ``"gradnorm+pcgrad@parameter"`` and the aggregator they denote.

A spec is a ``+``-separated chain of zero or more task *weightings* (GradNorm, NSGD,
uncertainty weighting; options in brackets, e.g. ``gradnorm[alpha=0.5]``) followed by at
most one *aggregator* from torchjd, optionally
suffixed with the space where it acts: ``@activation`` (default; the gradients w.r.t. the
shared representation, as in Javaloy et al. 2022) or ``@parameter`` (the Jacobian w.r.t.
the shared parameters, torchjd's ``mtl_backward`` + ``jac_to_grad``). Without an aggregator
the weighted gradients are summed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchjd import aggregation as A

from mtvae.errors import MTVAEError
from mtvae.moo.diagnostics import GradientStats, gradient_stats
from mtvae.moo.methods import AGGREGATORS
from mtvae.moo.weighting import OPTIONS, WEIGHTINGS, Weighting

SPACES = ("activation", "parameter")


@dataclass(frozen=True)
class Spec:
    """A parsed method spec."""

    weightings: tuple[str, ...]
    aggregator: str | None
    space: str

    @property
    def method(self) -> str:
        return "+".join([*self.weightings, *([self.aggregator] if self.aggregator else [])])

    @property
    def name(self) -> str:
        return self.method if self.space == "activation" else f"{self.method}@{self.space}"


def method_names() -> list[str]:
    """Every weighting and aggregator name (each usable alone or in a chain)."""
    return sorted([*AGGREGATORS, *WEIGHTINGS])


def _split_options(step: str, spec: str) -> tuple[str, dict[str, float]]:
    """``"gradnorm[alpha=0.5]"`` -> ``("gradnorm", {"alpha": 0.5})``, validated."""
    name, bracket, rest = step.partition("[")
    if not bracket:
        return step, {}
    if not rest.endswith("]") or name not in OPTIONS:
        allowed = "; ".join(f"{k}: {', '.join(v) or 'none'}" for k, v in OPTIONS.items())
        raise MTVAEError(
            f"bad options {step!r} in {spec!r}: only the weightings take options, written "
            f"like 'gradnorm[alpha=0.5,lr=0.01]' ({allowed})"
        )
    options: dict[str, float] = {}
    for item in filter(None, rest[:-1].split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in OPTIONS[name]:
            raise MTVAEError(f"{name!r} has no option {key!r} (in {spec!r}); valid options "
                             f"are: {', '.join(OPTIONS[name]) or 'none'}")
        try:
            options[key] = float(value)
        except ValueError:
            raise MTVAEError(f"option {key!r} of {name!r} must be a number, got {value!r} "
                             f"(in {spec!r})") from None
    return name, options


def build_weighting(step: str, spec: str = "") -> Weighting:
    """The weighting a chain step denotes, with its options."""
    name, options = _split_options(step, spec or step)
    return WEIGHTINGS[name][0](**options)


def parse_spec(spec: str) -> Spec:
    """Parse and validate ``"[weighting+...][aggregator][@space]"``."""
    if not isinstance(spec, str) or not spec.strip():
        raise MTVAEError(f"a MOO method must be a non-empty string, got {spec!r}")
    text, _, space = spec.strip().lower().partition("@")
    space = space or "activation"
    if space not in SPACES:
        raise MTVAEError(f"unknown space {space!r} in {spec!r}; valid spaces are: "
                         f"{', '.join(SPACES)}")
    steps = [s.strip() for s in text.split("+")]
    valid = method_names()
    for step in steps:
        if _split_options(step, spec)[0] not in valid:
            raise MTVAEError(
                f"unknown MOO method {step!r} in {spec!r}; valid methods are: sum, "
                f"{', '.join(valid)} (chain them with '+', e.g. 'gradnorm+pcgrad')"
            )
    *head, last = steps
    for step in head:
        if step in AGGREGATORS:
            raise MTVAEError(
                f"{step!r} in {spec!r} reduces the task gradients to one direction, so it must "
                "come last in a chain; put weightings (" + ", ".join(sorted(WEIGHTINGS)) +
                ") before it"
            )
    aggregator = last if last in AGGREGATORS else None
    weightings = tuple(head if aggregator else steps)
    for step in weightings:
        build_weighting(step, spec)  # validates the options' values too
    return Spec(weightings, aggregator, space)


class Chain(A.Aggregator):
    """The aggregator a :class:`Spec` denotes: weightings, then the final aggregation.

    Before each call, set :attr:`losses` (the task losses, needed by GradNorm and uncertainty
    weighting) and :attr:`record` (compute :class:`GradientStats` into :attr:`last`).
    """

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        self.spec = spec
        self.weightings: list[Weighting] = [build_weighting(w) for w in spec.weightings]
        self.final: A.Aggregator | None = None
        self.losses: Tensor | None = None
        self.record = False
        self.last: GradientStats | None = None

    def forward(self, matrix: Tensor, /) -> Tensor:
        G = matrix
        losses = self.losses if self.losses is not None else torch.zeros(len(G))
        losses = losses.to(G.device, G.dtype)
        total_w: Tensor | None = None
        for weighting in self.weightings:
            w = weighting.weights(G, losses).to(G.dtype)
            G = G * w.unsqueeze(1)
            total_w = w if total_w is None else total_w * w
        if self.spec.aggregator is None:
            update = G.sum(dim=0)
        else:
            if self.final is None:
                self.final = AGGREGATORS[self.spec.aggregator].build(len(G)).to(G.device)
            update = self.final(G)
        if not torch.isfinite(update).all():
            raise MTVAEError(
                f"the MOO method {self.spec.name!r} returned a non-finite update; this happens "
                "when task gradients are huge or degenerate — lower the learning rate or use "
                "batch-mean task losses"
            )
        self.last = gradient_stats(matrix, update, total_w) if self.record else None
        return update

    def state(self) -> dict[str, Any]:
        return {"weightings": [w.state_dict() for w in self.weightings],
                "final": None if self.final is None else self.final.state_dict()}

    def load_state(self, state: dict[str, Any], n_tasks: int, device: torch.device) -> None:
        for weighting, s in zip(self.weightings, state["weightings"], strict=True):
            weighting.load_state_dict(s)
        if state["final"] is not None and self.spec.aggregator is not None:
            self.final = AGGREGATORS[self.spec.aggregator].build(n_tasks).to(device)
            self.final.load_state_dict(state["final"], strict=False)
