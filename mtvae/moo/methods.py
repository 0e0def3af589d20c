"""The gradient aggregators that ``mtvae.moo`` offers, all taken from torchjd.

An aggregator maps the matrix of per-task gradients ``G`` (one row per task) to a single
update direction. Every method here is torchjd's implementation (Quinton & Rey 2024,
pinned exactly); this module only names them, sets the hyper-parameters we use and records
the paper each comes from, so that the book can cite it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

from torchjd import aggregation as A


@dataclass(frozen=True)
class Method:
    """An aggregator factory (given the number of tasks) and what to cite for it."""

    build: Callable[[int], A.Aggregator]
    cite: str
    summary: str


AGGREGATORS: dict[str, Method] = {
    "mean": Method(lambda m: A.Mean(), "caruana1997multitask",
                   "average of the task gradients (the plain objective divided by the task count)"),
    "mgda": Method(lambda m: A.MGDA(), "sener2018mgda",
                   "minimum-norm point of the convex hull of the task gradients"),
    "pcgrad": Method(lambda m: A.PCGrad(), "yu2020pcgrad",
                     "projects each gradient off the others it conflicts with, then sums"),
    "imtl-g": Method(lambda m: A.IMTLG(), "liu2021imtl",
                     "weights such that the update has equal projections on every unit gradient"),
    "cagrad": Method(lambda m: A.CAGrad(c=0.4), "liu2021cagrad",
                     "maximises the worst task improvement near the average gradient (c = 0.4)"),
    "nashmtl": Method(lambda m: A.NashMTL(n_tasks=m), "navon2022nash",
                      "Nash bargaining solution between the tasks"),
    "aligned-mtl": Method(lambda m: A.AlignedMTL(), "senushkin2023aligned",
                          "aligns the principal components of the gradient matrix"),
    "upgrad": Method(lambda m: A.UPGrad(), "quinton2024jacobian",
                     "averages the projections of the gradients onto the dual cone"),
    "dualproj": Method(lambda m: A.DualProj(), "quinton2024jacobian",
                       "projects the mean gradient onto the dual cone of the gradients"),
    "graddrop": Method(lambda m: A.GradDrop(), "chen2020graddrop",
                       "randomly drops gradient components by sign purity"),
    "gradvac": Method(lambda m: A.GradVac(), "wang2021gradvac",
                      "moves pairwise cosine similarities towards their running targets"),
    "config": Method(lambda m: A.ConFIG(), "liu2025config",
                     "conflict-free direction with equal cosine to every unit gradient"),
    "fairgrad": Method(lambda m: A.FairGrad(alpha=1.0), "ban2024fairgrad",
                       "alpha-fair allocation of the improvement (alpha = 1, proportional)"),
    "random": Method(lambda m: A.Random(), "lin2022rlw",
                     "random positive weights drawn every step (random loss weighting)"),
}

# torchjd's NashMTL solves a cvxpy problem that is not DPP-compliant; cvxpy warns on every
# new problem, which would flood chapter outputs. The result is unaffected.
warnings.filterwarnings("ignore", message="You are solving a parameterized problem that is not DPP")
