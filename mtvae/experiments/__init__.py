"""Experiment grids: a declarative spec expanded into runs, resumable, on a pool or Slurm.

``GridSpec`` / ``Block`` describe the runs (:mod:`.spec`), a registry of run kinds does the
work of one run (:mod:`.kinds`), executors decide where it happens (:mod:`.executors`) and
:func:`run_grid` skips what is recorded and runs the rest (:mod:`.runner`). Named grids
come from the profiles (:mod:`.grids`): ``python -m mtvae grid hetero --profile full``.
"""

from mtvae.experiments.executors import (
    EXECUTORS,
    LocalExecutor,
    Outcome,
    SlurmExecutor,
    Task,
    execute,
    get_executor,
)
from mtvae.experiments.grids import available as available_grids
from mtvae.experiments.grids import get_grid
from mtvae.experiments.kinds import available as available_kinds
from mtvae.experiments.kinds import get_kind, register
from mtvae.experiments.runner import GridSummary, load_results, plan, record_status, run_grid
from mtvae.experiments.spec import Block, GridSpec, Run, grid_of

__all__ = [
    "EXECUTORS",
    "Block",
    "GridSpec",
    "GridSummary",
    "LocalExecutor",
    "Outcome",
    "Run",
    "SlurmExecutor",
    "Task",
    "available_grids",
    "available_kinds",
    "execute",
    "get_executor",
    "get_grid",
    "get_kind",
    "grid_of",
    "load_results",
    "plan",
    "record_status",
    "register",
    "run_grid",
]
