"""Named grids, built from a profile: ``python -m mtvae grid NAME --profile P``.

A named grid's records live in ``results/<NAME>-<profile>/``. ``hetero`` (Chapter 5) is
Chapter 3's heterogeneous-VAE imputation protocol crossed over tables x methods x missing
rates x seeds (:class:`mtvae.profiles.GridStudy`), plus the mean/mode baseline for every
table, rate and seed. The seed is the slowest axis, so a grid stopped half-way already
holds complete comparisons for its first seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from mtvae.data.tables import TABLES
from mtvae.errors import check_choice
from mtvae.experiments.spec import Block, GridSpec
from mtvae.moo import get_combiner
from mtvae.profiles import Profile, get_profile

BASELINE_METHOD = "mean imputation"


def hetero_grid(profile: Profile) -> GridSpec:
    g = profile.grid
    for name in g.datasets:  # bad names fail here, not in every run
        check_choice("table", name, TABLES)
    for method in g.methods:
        get_combiner(method)
    train = {k: v for k, v in asdict(g).items()
             if k not in ("datasets", "methods", "missing_rates", "seeds")}
    axes = {"seed": g.seeds, "missing_rate": g.missing_rates, "dataset": g.datasets}
    return GridSpec(f"hetero-{profile.name}", (
        Block("baseline", axes, {"max_rows": g.max_rows, "method": BASELINE_METHOD}),
        Block("hetero", axes | {"method": g.methods}, train),
    ), description="HeteroVAE imputation: tables x methods x missing rates x seeds")


GRIDS: dict[str, Callable[[Profile], GridSpec]] = {"hetero": hetero_grid}


def available() -> list[str]:
    return sorted(GRIDS)


def get_grid(name: str, profile: str = "smoke") -> GridSpec:
    """The named grid under ``profile``; unknown names raise an error listing valid ones."""
    check_choice("grid", name, GRIDS)
    return GRIDS[name](get_profile(profile))
