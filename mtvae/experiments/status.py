"""Where every named grid of a profile stands: ``python -m mtvae status --profile full``.

One row per grid: the chapters that read it (:data:`mtvae.experiments.grids.READ_BY`), the
runs it plans now and how many are recorded (``done``), ``failed``,
``pending`` and ``claimed`` (pending runs a live grid process holds: running or queued in
it); of the trained runs recorded, the share stopped by patience rather than by their cap;
the compute the records took (a stacked job counted once,
:func:`mtvae.results.compute_seconds`); and ``left_h``, what the pending runs need: each at
the median cost of the recorded runs of its kind whose configs share the most values with
its own (:func:`estimate_seconds`). ``left_h`` is an estimate on the records' own devices,
and for a staged grid (:data:`mtvae.experiments.grids.STAGED`) a floor: its evaluation runs
join the plan once its tuning is recorded.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mtvae.experiments.grids import READ_BY, STAGED, available, get_grid
from mtvae.experiments.runner import plan
from mtvae.results import compute_seconds, read_record, results_dir

COLUMNS = ["grid", "read_by", "planned", "done", "failed", "pending", "claimed",
           "stopped_by_patience", "compute_h", "left_h", "staged"]


def run_cost(record: dict[str, Any]) -> float:
    """Seconds one run of ``record`` took: a stacked job's wall time over its members."""
    seconds = float(record.get("timings", {}).get("seconds", 0.0))
    engine = record.get("engine") or {}
    if engine.get("name") == "stacked":
        return seconds / max(int(engine.get("stack") or 1), 1)
    return seconds


def estimate_seconds(config: dict[str, Any], kind: str,
                     recorded: Sequence[tuple[str, dict[str, Any], float]]) -> float:
    """Seconds a pending run of ``kind`` with ``config`` should take: the median cost of the
    recorded runs (``(kind, config, seconds)``) of its kind whose configs share the most
    values with ``config``; NaN without a recorded run of the kind."""
    mine = [(sum(c.get(k) == v for k, v in config.items()), s)
            for k_, c, s in recorded if k_ == kind]
    if not mine:
        return float("nan")
    best = max(n for n, _ in mine)
    return statistics.median(s for n, s in mine if n == best)


def grid_status(name: str, profile: str, root: str | Path | None = None) -> dict[str, Any]:
    """The status row of grid ``name`` under ``root`` (see the module docstring)."""
    spec = get_grid(name, profile, root)
    table = plan(spec, root)
    folder = Path(root if root is not None else results_dir()) / spec.name
    runs = {r.id: r for r in spec.runs()}
    records = [read_record(folder / f"{i}.json") for i in table.id[table.status != "pending"]]
    ok = [r for r in records if r.get("status") != "failed"]
    stopped = [bool(m["stopped_early"]) for r in ok
               if (m := r.get("metrics") or {}).get("stopped_early") is not None]
    recorded = [(runs[r["id"]].kind, runs[r["id"]].config, run_cost(r)) for r in ok
                if r.get("id") in runs and run_cost(r) > 0]
    pending = table[table.status == "pending"]
    left = sum(estimate_seconds(runs[i].config, runs[i].kind, recorded) for i in pending.id)
    return {"grid": spec.name, "read_by": ", ".join(READ_BY.get(name, ())) or "no chapter",
            "planned": len(table),
            "done": int((table.status == "done").sum()),
            "failed": int((table.status == "failed").sum()), "pending": len(pending),
            "claimed": int((pending.claimed_by != "").sum()),
            "stopped_by_patience": sum(stopped) / len(stopped) if stopped else float("nan"),
            "compute_h": compute_seconds(records) / 3600,
            "left_h": left / 3600 if len(pending) else 0.0, "staged": name in STAGED}


def status_table(profile: str, root: str | Path | None = None,
                 grids: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`grid_status` of every named grid (or of ``grids``), one row each."""
    return pd.DataFrame([grid_status(g, profile, root) for g in (grids or available())],
                        columns=COLUMNS)


def render(table: pd.DataFrame) -> str:
    """The table as the command prints it, with a total line and what ``left_h`` means."""
    shown = table.assign(
        stopped_by_patience=[f"{100 * s:.0f} %" if s == s else "–"
                             for s in table.stopped_by_patience],
        compute_h=table.compute_h.map(lambda h: f"{h:.1f}"),
        left_h=[("unknown" if h != h else f"{h:.1f}") + ("+" if st and p else "")
                for h, st, p in zip(table.left_h, table.staged, table.pending, strict=True)],
    ).drop(columns="staged")
    total_left = table.left_h.fillna(0).sum()
    return (shown.to_string(index=False)
            + f"\n{int(table.planned.sum())} runs planned, {int(table.done.sum())} recorded, "
            f"{int(table.pending.sum())} pending; {table.compute_h.sum():.1f} h of compute "
            f"recorded, about {total_left:.1f} h left at the recorded cost per run"
            " (grids with no record yet not counted)\nleft_h: each pending run at the median "
            "cost of the recorded runs most like it; '+': a staged grid, whose evaluation runs "
            "join the plan once its tuning is recorded")
