"""Named grids, built from a profile: ``python -m mtvae grid NAME --profile P``.

A named grid's records live in ``results/<NAME>-<profile>/``. ``hetero`` is the
single-stage heterogeneous-VAE imputation grid, tables x methods x missing rates x seeds
(:class:`mtvae.profiles.GridStudy`), plus the mean/mode baseline for every table, rate and
seed; no chapter reads its records (it is the CLI's small example grid). The seed is the
slowest axis, so a grid stopped half-way already holds complete comparisons for its first
seeds. ``tables`` (Chapters 3-5) is the converged, tuned successor that the book reads:
every shipped table, equal tuning budgets per method family (:mod:`mtvae.experiments.tuning`),
both evaluation protocols and four classical references from scikit-learn
(:func:`tables_grid`). ``aux``, ``multimodal``, ``hier``, ``vqhead`` and ``beta`` are the
other multitask settings (Chapters 1-3, issue 13), built the same way
(:mod:`mtvae.experiments.setting_grids`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from mtvae.data.tables import TABLES
from mtvae.errors import check_choice
from mtvae.experiments.runner import load_results
from mtvae.experiments.setting_grids import (
    STAGED_SETTINGS,
    aux_grid,
    beta_grid,
    cvae_grid,
    hier_grid,
    multimodal_grid,
    vqhead_grid,
)
from mtvae.experiments.spec import Block, GridSpec
from mtvae.experiments.tuning import Config, choose, configs, default
from mtvae.moo import get_combiner
from mtvae.profiles import Profile, TablesStudy, get_profile
from mtvae.results import results_dir

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


REFERENCE_IMPUTERS = ("mean", "knn", "mice", "missforest")


def _row_cap(study: TablesStudy, dataset: str) -> int | None:
    return dict(study.row_caps).get(dataset)


def tables_seeds(study: TablesStudy, dataset: str) -> tuple[int, ...]:
    """The evaluation seeds of ``dataset``: the first ``seed_caps[dataset]`` of ``seeds``."""
    cap = dict(study.seed_caps).get(dataset)
    return study.seeds if cap is None else study.seeds[:cap]


def _tuning_records(name: str, root: str | Path | None) -> pd.DataFrame:
    """The grid's ``tables`` records so far (empty when there are none)."""
    folder = (Path(root) if root is not None else results_dir()) / name
    if not any(folder.glob("tables-*.json")):
        return pd.DataFrame(columns=["kind", "dataset", "method", "lr", "seed", "missing_rate",
                                     "status", "val"])
    runs = load_results(name, root, status="all")
    return runs[runs.kind == "tables"]


def tables_families(study: TablesStudy, dataset: str) -> tuple[str, ...]:
    """The method families run on ``dataset`` (parameter space on the small tables only)."""
    extra = study.parameter_families if dataset in study.parameter_datasets else ()
    return (*study.families, *extra)


def tables_choices(profile: Profile, root: str | Path | None = None
                   ) -> dict[tuple[str, str], Config]:
    """(table, family) -> the configuration chosen on validation, for every pair whose
    tuning runs are all recorded."""
    t = profile.tables
    runs = _tuning_records(f"tables-{profile.name}", root)
    runs = runs[runs.missing_rate == t.tuning_rate] if len(runs) else runs
    out = {}
    for ds in t.datasets:
        mine = runs[runs.dataset == ds] if len(runs) else runs
        for fam in tables_families(t, ds):
            picked = choose(mine, fam, t.lrs, t.tuning_seeds) if len(mine) else None
            if picked is not None:
                out[(ds, fam)] = picked[0]
    return out


def tables_grid(profile: Profile, root: str | Path | None = None) -> GridSpec:
    """The tables grid: references, tuning, then the evaluation of the chosen and the
    default configuration of every family (see :class:`mtvae.profiles.TablesStudy`).

    The evaluation blocks of a (table, family) appear once its tuning runs are recorded,
    so ``python -m mtvae grid tables`` rebuilds the spec after each pass
    (:func:`mtvae.experiments.runner.run_staged`).
    """
    t = profile.tables
    for name in t.datasets:
        check_choice("table", name, TABLES)
    train = {"hidden": t.hidden, "depth": t.depth, "batch_size": t.batch_size,
             "steps": t.steps, "patience_steps": t.patience_steps,
             "val_every_steps": t.val_every_steps, "monitor_every": t.monitor_every}
    blocks = []
    for ds in t.datasets:
        cap = _row_cap(t, ds)
        for fam in tables_families(t, ds):
            for cfg in configs(fam, t.lrs):
                blocks.append(Block("tables", {"seed": t.tuning_seeds},
                                    train | {"dataset": ds, "max_rows": cap, "method": cfg.method,
                                             "lr": cfg.lr, "missing_rate": t.tuning_rate}))
    chosen = tables_choices(profile, root)
    for ds in t.datasets:
        cap = _row_cap(t, ds)
        for fam in tables_families(t, ds):
            seeds, rates = tables_seeds(t, ds), t.missing_rates
            if fam in t.parameter_families:  # the narrower question: one rate, fewer seeds
                seeds, rates = seeds[:t.parameter_seeds], (t.tuning_rate,)
            base = default(fam, t.lrs)
            blocks.append(Block("tables", {"seed": seeds},
                                train | {"dataset": ds, "max_rows": cap, "method": base.method,
                                         "lr": base.lr, "missing_rate": t.tuning_rate}))
            pick = chosen.get((ds, fam))
            if pick is not None:
                blocks.append(Block("tables", {"seed": seeds, "missing_rate": rates},
                                    train | {"dataset": ds, "max_rows": cap,
                                             "method": pick.method, "lr": pick.lr}))
    for ds in t.datasets:
        blocks.append(Block("reference", {"seed": tables_seeds(t, ds),
                                          "missing_rate": t.missing_rates,
                                          "imputer": REFERENCE_IMPUTERS},
                            {"dataset": ds, "max_rows": _row_cap(t, ds)}))
    return GridSpec(f"tables-{profile.name}", tuple(blocks),
                    description="HeteroVAE imputation on every shipped table: equal tuning "
                                "budgets, both protocols, classical references")


GRIDS: dict[str, Callable[..., GridSpec]] = {
    "hetero": hetero_grid, "tables": tables_grid, "aux": aux_grid,
    "multimodal": multimodal_grid, "hier": hier_grid, "vqhead": vqhead_grid,
    "beta": beta_grid, "cvae": cvae_grid}
STAGED = ("tables", *STAGED_SETTINGS)
"""Grids whose later blocks depend on earlier records: rebuilt after every pass."""
READ_BY: dict[str, tuple[str, ...]] = {
    "hetero": (), "tables": ("03_1", "05"), "aux": ("03_2", "05"), "cvae": ("03_2",),
    "multimodal": ("03_3", "05"), "hier": ("03_4", "05"), "vqhead": ("02", "05"),
    "beta": ("01",)}
"""The chapters (by number) that read each grid's records; ``hetero``: none (the grid of the
earlier single-stage protocol, kept as the benchmark's workload)."""


def available() -> list[str]:
    return sorted(GRIDS)


def get_grid(name: str, profile: str = "smoke", root: str | Path | None = None) -> GridSpec:
    """The named grid under ``profile``; unknown names raise an error listing valid ones.

    A staged grid (:data:`STAGED`) reads its records under ``root`` to build its later blocks.
    """
    check_choice("grid", name, GRIDS)
    if name in STAGED:
        return GRIDS[name](get_profile(profile), root)
    return GRIDS[name](get_profile(profile))
