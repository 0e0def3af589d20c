"""The gradient aggregators that ``mtvae.moo`` offers, all taken from torchjd.

An aggregator maps the matrix of per-task gradients ``G`` (one row per task) to a single
update direction. Every method here is torchjd's implementation (Quinton & Rey 2024,
pinned exactly); this module only names them, sets the hyper-parameters we use, records
the paper each comes from (so that the book can cite it) and says how the method can be
evaluated from the ``T x T`` Gramian ``K = G G^T`` instead of ``G`` itself (``path``):

* ``"gramian"`` — a torchjd ``GramianWeightedAggregator``: its ``gramian_weighting`` maps
  ``K`` to weights ``w`` and the update is ``w @ G`` (exactly what torchjd does with ``G``).
* ``"shape"`` — a weighting that reads only the number of rows (``Mean``, ``Random``): it is
  given ``K``, which has as many rows as ``G``.
* ``"factor"`` — a weighting that reads ``G`` only through ``G G^T`` and ``||w @ G||``
  (Nash-MTL): it is given a ``T x T`` factor ``F`` with ``F F^T = K``, for which both are equal.
* ``"equivariant"`` — an aggregator that commutes with isometries of the gradient space and
  returns a vector in the span of the rows (ConFIG): applied to ``F``, its output is
  mapped back to the coefficients of the rows of ``G``.
* ``"matrix"`` — needs ``G`` itself (GradDrop acts on every coordinate's sign).

Every path except ``"matrix"`` is mathematically the same as calling the aggregator on ``G``
(tested on random matrices); it is much cheaper when ``G`` is ``[T, B * H]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from torchjd import aggregation as A

from mtvae.errors import MTVAEError

PATHS = ("gramian", "shape", "factor", "equivariant", "matrix")


@dataclass(frozen=True)
class Method:
    """An aggregator factory (number of tasks, options) and what to cite for it.

    ``options`` maps each option a spec may set (``"nashmtl[update_weights_every=50]"``) to its
    default; ``cost`` says, for the benchmark, why the method may stay slow.
    """

    build: Callable[..., A.Aggregator]
    cite: str
    summary: str
    path: str = "gramian"
    options: dict[str, float] = field(default_factory=dict)
    cost: str = ""


def _int_option(method: str, name: str, value: float, low: int = 1) -> int:
    if not float(value).is_integer() or value < low:
        raise MTVAEError(f"option {name!r} of {method!r} must be an integer ≥ {low}, got {value}")
    return int(value)


def _nashmtl(m: int, update_weights_every: float = 1) -> A.Aggregator:
    every = _int_option("nashmtl", "update_weights_every", update_weights_every)
    return A.NashMTL(n_tasks=m, update_weights_every=every)


def _crmogm(weighted: Callable[[], A.GramianWeightedAggregator], name: str
            ) -> Callable[..., A.Aggregator]:
    """A Gramian method whose weights may be smoothed by CR-MOGM (Zhou et al. 2022).

    ``"mgda[crmogm=0.9]"`` replaces the weights ``w_t`` by ``0.9 w_{t-1} + 0.1 w_t``
    (torchjd's ``CRMOGMWeighting``); without the option the method is unchanged.
    """

    def build(m: int, crmogm: float = 0.0) -> A.Aggregator:
        base = weighted()
        if not 0.0 <= crmogm <= 1.0:
            raise MTVAEError(f"option 'crmogm' of {name!r} is the weight of the previous "
                             f"step's weights, in [0, 1]; got {crmogm}")
        if crmogm == 0.0:
            return base
        return A.GramianWeightedAggregator(
            A.CRMOGMWeighting(base.gramian_weighting, alpha=crmogm))

    return build


_SMOOTH = {"crmogm": 0.0}

#: What to cite for an option that is a method of its own.
OPTION_CITES = {"crmogm": "zhou2022convergence", "update_weights_every": "navon2022nash"}

AGGREGATORS: dict[str, Method] = {
    "mean": Method(lambda m: A.Mean(), "caruana1997multitask",
                   "average of the task gradients (the plain objective divided by the task count)",
                   path="shape"),
    "mgda": Method(_crmogm(A.MGDA, "mgda"), "sener2018mgda",
                   "minimum-norm point of the convex hull of the task gradients",
                   options=_SMOOTH),
    "pcgrad": Method(_crmogm(A.PCGrad, "pcgrad"), "yu2020pcgrad",
                     "projects each gradient off the others it conflicts with, then sums",
                     options=_SMOOTH,
                     cost="torchjd's weighting visits the T(T-1) task pairs in a Python loop "
                          "of small tensor operations (on the T x T Gramian already)"),
    "imtl-g": Method(_crmogm(A.IMTLG, "imtl-g"), "liu2021imtl",
                     "weights such that the update has equal projections on every unit gradient",
                     options=_SMOOTH),
    "cagrad": Method(_crmogm(lambda: A.CAGrad(c=0.4), "cagrad"), "liu2021cagrad",
                     "maximises the worst task improvement near the average gradient (c = 0.4)",
                     options=_SMOOTH,
                     cost="torchjd builds and solves a cvxpy (Clarabel) program at every step; "
                          "the solver's fixed cost dominates"),
    "nashmtl": Method(_nashmtl, "navon2022nash",
                      "Nash bargaining solution between the tasks", path="factor",
                      options={"update_weights_every": 1},
                      cost="solves a sequence of cvxpy (ECOS) programs at every step, as in the "
                           "paper's main results; 'nashmtl[update_weights_every=N]' solves every "
                           "N steps and reuses the weights in between"),
    "aligned-mtl": Method(_crmogm(A.AlignedMTL, "aligned-mtl"), "senushkin2023aligned",
                          "aligns the principal components of the gradient matrix",
                          options=_SMOOTH),
    "upgrad": Method(_crmogm(A.UPGrad, "upgrad"), "quinton2024jacobian",
                     "averages the projections of the gradients onto the dual cone",
                     options=_SMOOTH),
    "dualproj": Method(_crmogm(A.DualProj, "dualproj"), "quinton2024jacobian",
                       "projects the mean gradient onto the dual cone of the gradients",
                       options=_SMOOTH),
    "graddrop": Method(lambda m: A.GradDrop(), "chen2020graddrop",
                       "randomly drops gradient components by sign purity", path="matrix",
                       cost="acts on the sign of every coordinate of G, so it needs G itself"),
    "gradvac": Method(_crmogm(A.GradVac, "gradvac"), "wang2021gradvac",
                      "moves pairwise cosine similarities towards their running targets",
                      options=_SMOOTH,
                      cost="torchjd visits the T(T-1) task pairs in a Python loop of small "
                           "tensor operations (on the T x T Gramian already)"),
    "config": Method(lambda m: A.ConFIG(), "liu2025config",
                     "conflict-free direction with equal cosine to every unit gradient",
                     path="equivariant"),
    "fairgrad": Method(_crmogm(lambda: A.FairGrad(alpha=1.0), "fairgrad"), "ban2024fairgrad",
                       "alpha-fair allocation of the improvement (alpha = 1, proportional)",
                       options=_SMOOTH,
                       cost="torchjd solves a scipy least-squares problem from the uniform "
                            "start at every step"),
    "random": Method(lambda m: A.Random(), "lin2022rlw",
                     "random positive weights drawn every step (random loss weighting)",
                     path="shape"),
}

for _name, _method in AGGREGATORS.items():
    assert _method.path in PATHS, _name

# torchjd's NashMTL solves a cvxpy problem that is not DPP-compliant; cvxpy warns on every
# new problem, which would flood chapter outputs. The result is unaffected.
warnings.filterwarnings("ignore", message="You are solving a parameterized problem that is not DPP")
