"""``python -m mtvae bench grid``: runs per minute of one fixed grid, stacked or not.

One fixed grid of real ``hetero`` runs (two tables x the plain sum x as many seeds as the
largest stack, a fixed number of steps, no early stopping, so every configuration does the
same work) is run into a temporary results folder for {1, N workers} x {unstacked, stacked
S = 5, 10} on the CPU (S = 5, 25, 100 on a GPU). Each row
gives ``{device, workers, stack, runs, seconds, runs_per_min, ratio}``, ``ratio`` being
runs per minute over the unstacked row with the same workers (pool start-up included).
Absolute times are context; ratios are measured in one call.
"""

from __future__ import annotations

import tempfile
from typing import Any

from mtvae.device import device_name, resolve_device
from mtvae.errors import MTVAEError

STACKS = {"cpu": (1, 5, 10), "cuda": (1, 5, 25, 100)}


def bench_grid(workers: int = 2, device: str = "auto", quick: bool = False,
               stacks: tuple[int, ...] | None = None) -> list[dict[str, Any]]:
    """Rows ``{device, workers, stack, runs, seconds, runs_per_min, ratio, ...}``."""
    from mtvae.experiments import LocalExecutor, grid_of, run_grid
    from mtvae.profiles import get_profile

    if not isinstance(workers, int) or workers < 2:
        raise MTVAEError(f"bench grid compares 1 with N workers: N must be ≥ 2, got {workers!r}")
    dev = resolve_device(device)
    stacks = stacks or STACKS[dev.type]
    if any(not isinstance(s, int) or s < 1 for s in stacks) or 1 not in stacks:
        raise MTVAEError(f"bench grid stacks must be positive integers including 1 (the "
                         f"unstacked reference), got {list(stacks)}")
    g = get_profile("smoke").grid
    fixed = {"max_rows": 1000, "hidden": g.hidden, "depth": g.depth, "batch_size": g.batch_size,
             "lr": g.lr, "steps": 60 if quick else 200, "patience_steps": 100000,
             "monitor_every": 10, "missing_rate": 0.3, "method": "sum"}
    spec = grid_of("bench-grid", "hetero", {"seed": tuple(range(max(stacks))),
                                            "dataset": ("hi", "labour")}, fixed)
    rows: list[dict[str, Any]] = []
    for n in (1, workers):
        base = None
        for stack in stacks:
            executor = LocalExecutor(n)
            with tempfile.TemporaryDirectory(prefix="mtvae-bench-") as root:
                summary = run_grid(spec, executor=executor, device=dev.type, root=root,
                                   progress="none", stack=stack)
            if summary.failed:
                raise MTVAEError(f"bench grid: {summary.failed} runs failed: "
                                 f"{summary.failures}")
            rpm = summary.runs_per_minute
            base = rpm if stack == 1 else base
            rows.append({"device": device_name(dev), "workers": n, "stack": stack,
                         "runs": summary.done, "seconds": round(summary.wall_seconds, 2),
                         "runs_per_min": round(rpm, 2),
                         "ratio": round(rpm / base, 3) if base else None,
                         "threads_per_worker": executor.threads_for(dev.type),
                         "steps_per_run": fixed["steps"]})
    return rows
