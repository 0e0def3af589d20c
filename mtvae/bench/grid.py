"""``python -m mtvae bench grid``: runs per minute of one small grid of real runs.

It runs one small grid of real ``hetero`` runs (three tables x two methods x seeds, 200
steps each) into a temporary results folder, first with one worker and then with N workers
on the same device, and reports runs per minute for each, pool start-up included.
"""

from __future__ import annotations

import tempfile
from typing import Any

from mtvae.device import device_name, resolve_device
from mtvae.errors import MTVAEError


def bench_grid(workers: int = 2, device: str = "auto", quick: bool = False) -> list[dict[str, Any]]:
    """Rows ``{workers, runs, wall_seconds, runs_per_minute, speedup, device, ...}``."""
    from mtvae.experiments import LocalExecutor, grid_of, run_grid
    from mtvae.profiles import get_profile

    if not isinstance(workers, int) or workers < 2:
        raise MTVAEError(f"bench grid compares 1 with N workers: N must be ≥ 2, got {workers!r}")
    dev = resolve_device(device)
    g = get_profile("smoke").grid
    fixed = {"max_rows": 1000, "hidden": g.hidden, "depth": g.depth, "batch_size": g.batch_size,
             "lr": g.lr, "steps": 100 if quick else 200, "patience_steps": 1000,
             "monitor_every": 10, "missing_rate": 0.3}
    seeds = (0, 1) if quick else (0, 1, 2, 3)
    spec = grid_of("bench-grid", "hetero", {"seed": seeds, "dataset": ("wine", "hi", "labour"),
                                            "method": ("sum", "pcgrad")}, fixed)
    rows: list[dict[str, Any]] = []
    for n in (1, workers):
        executor = LocalExecutor(n)
        with tempfile.TemporaryDirectory(prefix="mtvae-bench-") as root:
            summary = run_grid(spec, executor=executor, device=dev.type, root=root,
                               progress="none")
        if summary.failed:
            raise MTVAEError(f"bench grid: {summary.failed} runs failed: {summary.failures}")
        rows.append({"workers": n, "runs": summary.done,
                     "wall_seconds": round(summary.wall_seconds, 2),
                     "runs_per_minute": round(summary.runs_per_minute, 2),
                     "threads_per_worker": executor.threads_for(dev.type),
                     "device": device_name(dev), "steps_per_run": fixed["steps"]})
    for row in rows:
        row["speedup"] = round(row["runs_per_minute"] / rows[0]["runs_per_minute"], 3)
    return rows
