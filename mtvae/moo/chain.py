"""Method specs such as ``"gradnorm+pcgrad@parameter"`` and the aggregator they denote.

A spec is a ``+``-separated chain of zero or more task *weightings* (GradNorm, NSGD,
uncertainty weighting) followed by at most one *aggregator* from torchjd, optionally
suffixed with the space where it acts: ``@activation`` (default; the gradients w.r.t. the
shared representation, as in Javaloy et al. 2022) or ``@parameter`` (the Jacobian w.r.t.
the shared parameters, torchjd's ``mtl_backward`` + ``jac_to_grad``). Without an aggregator
the weighted gradients are summed. Options go in brackets, e.g. ``gradnorm[alpha=0.5]``,
``nashmtl[update_weights_every=50]`` or ``mgda[crmogm=0.9]``.

:class:`Chain` is the aggregator itself. Besides torchjd's ``Aggregator`` interface
(``chain(G)`` returns the update) it has a Gramian entry point,
:meth:`Chain.weights_from_gramian`: given ``K = G G^T`` (``T x T``) it returns the
coefficients ``a`` such that the update is ``a @ G`` — for every method whose ``path`` is not
``"matrix"`` (see :mod:`mtvae.moo.methods`). ``chain(G)`` uses it whenever it can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchjd import Stateful
from torchjd import aggregation as A

from mtvae.errors import MTVAEError
from mtvae.moo.diagnostics import GradientStats, gradient_stats, gramian_stats
from mtvae.moo.methods import AGGREGATORS, Method
from mtvae.moo.weighting import OPTIONS, WEIGHTINGS, Weighting

SPACES = ("activation", "parameter", "parameter-rescaled")


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


def _options_of(name: str) -> tuple[str, ...]:
    if name in OPTIONS:
        return OPTIONS[name]
    return tuple(AGGREGATORS[name].options) if name in AGGREGATORS else ()


def _all_options() -> str:
    named = {n: _options_of(n) for n in method_names()}
    return "; ".join(f"{k}: {', '.join(v)}" for k, v in named.items() if v)


def split_options(step: str, spec: str = "") -> tuple[str, dict[str, float]]:
    """``"gradnorm[alpha=0.5]"`` -> ``("gradnorm", {"alpha": 0.5})``, validated."""
    spec = spec or step
    name, bracket, rest = step.partition("[")
    if not bracket:
        return step, {}
    if not rest.endswith("]") or not _options_of(name):
        raise MTVAEError(
            f"bad options {step!r} in {spec!r}: {name!r} takes no options; options are "
            f"written like 'gradnorm[alpha=0.5,lr=0.01]' ({_all_options()})"
        )
    options: dict[str, float] = {}
    for item in filter(None, rest[:-1].split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in _options_of(name):
            raise MTVAEError(f"{name!r} has no option {key!r} (in {spec!r}); valid options "
                             f"are: {', '.join(_options_of(name))}")
        try:
            options[key] = float(value)
        except ValueError:
            raise MTVAEError(f"option {key!r} of {name!r} must be a number, got {value!r} "
                             f"(in {spec!r})") from None
    return name, options


def build_weighting(step: str, spec: str = "") -> Weighting:
    """The weighting a chain step denotes, with its options."""
    name, options = split_options(step, spec or step)
    return WEIGHTINGS[name][0](**options)


def build_aggregator(step: str, n_tasks: int, spec: str = "") -> A.Aggregator:
    """The torchjd aggregator a final chain step denotes, with its options."""
    name, options = split_options(step, spec or step)
    try:
        return AGGREGATORS[name].build(n_tasks, **options)
    except ValueError as err:  # torchjd's own validation of a value
        raise MTVAEError(f"bad option value in {step!r}: {err}") from None


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
        if split_options(step, spec)[0] not in valid:
            raise MTVAEError(
                f"unknown MOO method {step!r} in {spec!r}; valid methods are: sum, "
                f"{', '.join(valid)} (chain them with '+', e.g. 'gradnorm+pcgrad')"
            )
    *head, last = steps
    for step in head:
        if split_options(step, spec)[0] in AGGREGATORS:
            raise MTVAEError(
                f"{step!r} in {spec!r} reduces the task gradients to one direction, so it must "
                "come last in a chain; put weightings (" + ", ".join(sorted(WEIGHTINGS)) +
                ") before it"
            )
    aggregator = last if split_options(last, spec)[0] in AGGREGATORS else None
    weightings = tuple(head if aggregator else steps)
    for step in weightings:
        build_weighting(step, spec)  # validates the options' values too
    if aggregator is not None:
        build_aggregator(aggregator, 2, spec)  # likewise
    return Spec(weightings, aggregator, space)


def gramian_factor(K: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``F`` with ``F F^T = K`` (``T x T``), and the eigenpairs it came from.

    Solved in float64 on the CPU (the matrix is tiny); ``F`` has ``K``'s dtype and device.
    """
    lam, V = torch.linalg.eigh(K.detach().to("cpu", torch.float64))
    lam = lam.clamp_min(0.0)
    F = (V * lam.sqrt()).to(K.device, K.dtype)
    return F, lam, V


class Chain(A.Aggregator):
    """The aggregator a :class:`Spec` denotes: weightings, then the final aggregation.

    Before each call, set :attr:`losses` (the task losses, needed by GradNorm and uncertainty
    weighting) and :attr:`record` (compute :class:`GradientStats` into :attr:`last`).

    A non-finite update raises :class:`MTVAEError`. The check reads one flag from the device
    every :attr:`check_every` calls (1 on the CPU, where reading it costs nothing; more on an
    accelerator, where each read waits for the device), so it fires at most that many steps
    late.
    """

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        self.spec = spec
        self.weightings: list[Weighting] = [build_weighting(w) for w in spec.weightings]
        self.method: Method | None = (
            AGGREGATORS[split_options(spec.aggregator)[0]] if spec.aggregator else None)
        self.final: A.Aggregator | None = None
        self.losses: Tensor | None = None
        self.record = False
        self.last: GradientStats | None = None
        self.check_every: int | None = None  # None: 1 on the CPU, 16 elsewhere
        self._finite: Tensor | None = None
        self._unchecked = 0

    # -- the Gramian entry point ------------------------------------------------------
    @property
    def uses_gramian(self) -> bool:
        """Whether :meth:`weights_from_gramian` applies (the method does not need ``G``)."""
        return self.method is None or self.method.path != "matrix"

    def _home(self, device: torch.device) -> torch.device:
        """Where the final aggregator lives: the solvers of Gramian methods run on the CPU
        (one copy of a T x T matrix per step instead of a device sync per solver iteration);
        ``"shape"`` and ``"matrix"`` methods stay on the device of ``G``."""
        host = self.method is not None and self.method.path in ("gramian", "factor",
                                                                "equivariant")
        return torch.device("cpu") if host else device

    def _final(self, n_tasks: int, device: torch.device) -> A.Aggregator:
        if self.final is None:
            assert self.spec.aggregator is not None
            self.final = build_aggregator(self.spec.aggregator, n_tasks).to(self._home(device))
        return self.final

    def _row_weights(self, norms: Tensor) -> Tensor | None:
        """The product of the chain's weightings (each sees the rows the previous scaled)."""
        losses = self.losses if self.losses is not None else torch.zeros(len(norms))
        losses = losses.to(norms.device, norms.dtype)
        total_w: Tensor | None = None
        for weighting in self.weightings:
            w = weighting.from_norms(norms, losses).to(norms.dtype)
            norms = norms * w
            total_w = w if total_w is None else total_w * w
        return total_w

    def weights_from_gramian(self, gramian: Tensor, /) -> Tensor:
        """Coefficients ``a`` (``[T]``) of the update ``a @ G``, from ``K = G G^T`` alone.

        This is the cheap entry point: ``K`` is ``T x T`` whatever the width of ``G``. With
        :attr:`record` set, :attr:`last` gets the step's diagnostics (from ``K`` too).
        """
        K = gramian.detach()
        if not self.uses_gramian:
            raise MTVAEError(f"{self.spec.name!r} needs the gradient matrix itself, not its "
                             "Gramian; call the chain on G")
        w = self._row_weights(K.diagonal().clamp_min(0).sqrt())
        Kw = K if w is None else K * torch.outer(w, w)
        if self.method is None:
            a = w if w is not None else torch.ones(len(K), dtype=K.dtype, device=K.device)
        else:
            af = self._final_weights(Kw)
            a = af if w is None else w * af
        self.last = gramian_stats(K, a, w) if self.record else None
        return a

    def _final_weights(self, K: Tensor) -> Tensor:
        assert self.method is not None
        final = self._final(len(K), K.device)
        path = self.method.path
        if path == "shape":
            assert isinstance(final, A.WeightedAggregator)
            return final.weighting(K).to(K.dtype)
        Kh = K.to(self._home(K.device))
        if path == "gramian":
            assert isinstance(final, A.GramianWeightedAggregator)
            weighting = final.gramian_weighting
            if isinstance(weighting, Stateful):
                w = weighting(Kh)
            else:
                # a stateless solver of small tensor operations: inference mode skips
                # autograd's bookkeeping (~20% of its time); the clone leaves it behind
                with torch.inference_mode():
                    w = weighting(Kh)
                w = w.clone()
            return w.to(K.device, K.dtype)
        F, lam, V = gramian_factor(Kh)
        if path == "factor":
            assert isinstance(final, A.WeightedAggregator)
            return final.weighting(F).to(K.device, K.dtype)
        # "equivariant": agg(G) = agg(F) Q^T with G = F Q^T, Q = G^T V diag(lam^-1/2)
        d = final(F).detach().to(torch.float64)
        keep = lam > lam.max() * len(lam) * torch.finfo(K.dtype).eps
        inv = torch.where(keep, lam.rsqrt(), torch.zeros_like(lam))
        return (V @ (inv * d)).to(K.device, K.dtype)

    # -- the aggregator interface ---------------------------------------------------------
    def forward(self, matrix: Tensor, /) -> Tensor:
        G = matrix
        if self.uses_gramian:
            a = self.weights_from_gramian(G @ G.T)
            update = a @ G
        else:
            total_w = self._row_weights(G.norm(dim=1))
            Gw = G if total_w is None else G * total_w.unsqueeze(1)
            update = self._final(len(G), G.device)(Gw)
            self.last = gradient_stats(G, update, total_w) if self.record else None
        self.note_finite(update.norm())
        self.check_finite()
        return update

    # -- deferred finiteness check --------------------------------------------------------
    def note_finite(self, value: Tensor) -> None:
        """Remember (on the device, without waiting for it) whether ``value`` is finite."""
        ok = torch.isfinite(value).all()
        self._finite = ok if self._finite is None else self._finite & ok
        self._unchecked += 1

    def check_finite(self, force: bool = False) -> None:
        """Raise if a remembered value was not finite (every :attr:`check_every` calls)."""
        if self._finite is None:
            return
        every = self.check_every or (1 if self._finite.device.type == "cpu" else 16)
        if not force and self._unchecked < every:
            return
        ok, late = bool(self._finite), self._unchecked
        self._finite, self._unchecked = None, 0
        if not ok:
            when = "" if late <= 1 else f" (in one of the last {late} steps)"
            raise MTVAEError(
                f"the MOO method {self.spec.name!r} returned a non-finite update{when}; this "
                "happens when task gradients are huge or degenerate — lower the learning rate "
                "or use batch-mean task losses"
            )

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        self.check_finite(force=True)
        return {"weightings": [w.state_dict() for w in self.weightings],
                "final": None if self.final is None else self.final.state_dict()}

    def load_state(self, state: dict[str, Any], n_tasks: int, device: torch.device) -> None:
        for weighting, s in zip(self.weightings, state["weightings"], strict=True):
            weighting.load_state_dict(s)
        if state["final"] is not None and self.spec.aggregator is not None:
            self.final = build_aggregator(self.spec.aggregator, n_tasks).to(self._home(device))
            self.final.load_state_dict(state["final"], strict=False)
