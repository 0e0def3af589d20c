"""Run a grid: skip what is recorded, execute the rest, report progress and a summary.

:func:`run_grid` expands a :class:`~mtvae.experiments.spec.GridSpec`, looks up each run's
record under ``<results>/<grid>/<run_id>.json`` and executes only the runs without one
(and, with ``retry_failed=True``, those whose record says ``failed``). Records are written
by the process that did the run, atomically, so an interruption at any moment loses at
most the runs in flight, and the same call resumes where it stopped. Each run it executes is
claimed first (:mod:`~mtvae.experiments.claims`), so a second process working on the same
results folder at the same time skips it instead of running it twice. :func:`plan` is the
dry run; :func:`load_results` reads a grid's records for analysis.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mtvae.errors import MTVAEError, check_choice
from mtvae.experiments import claims
from mtvae.experiments.carry import carry_superseded, superseded_pool
from mtvae.experiments.executors import Executor, Job, LocalExecutor, Outcome, Task
from mtvae.experiments.kinds import get_kind, stack_group, stackable
from mtvae.experiments.spec import GridSpec, Run
from mtvae.progress import MODES, _configure_logger, batch_mode
from mtvae.results import read_record, results_dir

logger = logging.getLogger("mtvae")


def _root(root: str | Path | None) -> Path:
    return Path(root if root is not None else results_dir()).absolute()


def record_status(path: Path) -> str:
    """``pending`` (no record), ``failed`` or ``done``."""
    if not path.exists():
        return "pending"
    return "failed" if read_record(path).get("status") == "failed" else "done"


def _stamp(path: Path) -> tuple[int, int] | None:
    """Which version of a record is on disk (``None``: none): records are replaced whole."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _claimed_by(path: Path, status: str) -> str:
    info = None if status == "done" else claims.holder(path)
    return "" if info is None else claims.describe(info)


def plan(spec: GridSpec, root: str | Path | None = None) -> pd.DataFrame:
    """The dry run: one row per run with its kind, label, id, status and ``claimed_by``
    (``pid 1234 on host``: a run without an ok record that another live process is
    executing now; else empty)."""
    folder = _root(root) / spec.name
    rows = []
    for r in spec.runs():
        path = folder / f"{r.id}.json"
        status = record_status(path)
        rows.append({"kind": r.kind, "run": r.label.removeprefix(f"{r.kind} "), "id": r.id,
                     "status": status, "claimed_by": _claimed_by(path, status)})
    return pd.DataFrame(rows, columns=["kind", "run", "id", "status", "claimed_by"])


@dataclass
class GridSummary:
    """What one call of :func:`run_grid` did."""

    grid: str
    total: int
    done: int = 0  # ran now, recorded ok
    failed: int = 0  # ran now, recorded failed
    skipped: int = 0  # had an ok record
    kept_failed: int = 0  # had a failed record and was not retried
    carried: int = 0  # recorded from the same run under a lower cap (experiments.carry)
    left: int = 0  # pending when the time limit (max_minutes) stopped this call
    claimed: int = 0  # to run, but claimed by another live process: not started here
    claimed_by: str = ""  # one of those processes, e.g. "pid 1234 on host-a"
    wall_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def runs_per_minute(self) -> float:
        ran = self.done + self.failed
        return 60 * ran / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"runs_per_minute": round(self.runs_per_minute, 2)}

    def __str__(self) -> str:
        text = (f"grid {self.grid}: {self.total} runs: {self.done} done, {self.skipped} "
                f"skipped (recorded), {self.failed} failed; {self.wall_seconds:.1f} s wall, "
                f"{self.runs_per_minute:.1f} runs/min")
        if self.left:
            text += (f"; stopped at the time limit with {self.left} runs left: run the same "
                     "command again to continue")
        if self.claimed:
            runs = "1 run is" if self.claimed == 1 else f"{self.claimed} runs are"
            text += (f"; {runs} being run by another process ({self.claimed_by}): not "
                     f"started here ({claims.CLEAR_HINT})")
        if self.carried:
            text += (f"; {self.carried} carried over from a lower cap (stopped by patience "
                     "before it)")
        if self.kept_failed:
            text += (f"; {self.kept_failed} earlier failures kept (retry_failed=True / "
                     "--retry-failed reruns them)")
        return text + "".join(f"\n  failed: {f}" for f in self.failures)


class _Progress:
    """A tqdm bar over runs interactively; one log line per run in batch mode."""

    def __init__(self, total: int, desc: str, mode: str) -> None:
        mode = check_choice("progress mode", mode, MODES)
        self.mode = ("log" if batch_mode() else "bar") if mode == "auto" else mode
        self.total, self.desc, self.n, self.bar = total, desc, 0, None
        if self.mode == "bar" and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="run")
        elif self.mode == "log":
            _configure_logger()

    def update(self, out: Outcome, summary: GridSummary) -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"ok={summary.done} failed={summary.failed}", refresh=False)
        elif self.mode == "log":
            extra = f" ({out.error})" if out.error else ""
            logger.info("%s [%d/%d] %s %s %.1fs%s", self.desc, self.n, self.total, out.status,
                        out.label, out.seconds, extra)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def default_stack(device: str) -> int:
    """Members per stacked job when ``--stack`` is not given: measured with ``bench grid``
    (CPU: 10; a GPU has room for many more small models at once)."""
    from mtvae.device import resolve_device

    return 25 if resolve_device(device).type == "cuda" else 10


def make_jobs(runs: list[Run], stack: int) -> list[list[Run]]:
    """Group runs that differ only in ``seed`` (see :func:`~mtvae.experiments.kinds.stack_group`)
    into chunks of ``stack`` (stackable kinds and methods only); every other run is a job of
    its own. Jobs keep the grid's order (by their
    first run), so the slowest axis still finishes first."""
    position = {r.id: i for i, r in enumerate(runs)}
    jobs: list[list[Run]] = []
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if stack > 1 and stackable(run.kind, dict(run.config)):
            groups.setdefault(stack_group(run.kind, dict(run.config)), []).append(run)
        else:
            jobs.append([run])
    for group in groups.values():
        jobs += [group[i:i + stack] for i in range(0, len(group), stack)]
    return sorted(jobs, key=lambda j: position[j[0].id])


def parse_where(items: list[str] | None) -> dict[str, str] | None:
    """``["dataset=wine", "kind=tables"]`` -> ``{"dataset": "wine", "kind": "tables"}``."""
    if not items:
        return None
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise MTVAEError(f"--where takes KEY=VALUE (e.g. dataset=wine), got {item!r}")
        out[key.strip()] = value.strip()
    return out


def select(runs: list[Run], where: dict[str, str] | None) -> list[Run]:
    """The runs whose config (or ``kind``) matches every ``where`` item, compared as text."""
    if not where:
        return runs
    keys = {k for r in runs for k in r.config} | {"kind"}
    unknown = sorted(set(where) - keys)
    if unknown:
        raise MTVAEError(f"--where names {unknown}, which no run of this grid has; valid keys: "
                         + ", ".join(sorted(keys)))

    def value(run: Run, key: str) -> str:
        return run.kind if key == "kind" else str(run.config.get(key))

    return [r for r in runs if all(value(r, k) == v for k, v in where.items())]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (1 ≤ i ≤ n) -> ``(i, n)``; ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        i = n = 0
    if not 1 <= i <= n:
        raise MTVAEError(f"--shard must look like i/n with 1 ≤ i ≤ n (e.g. 2/4), got {text!r}")
    return i, n


def run_grid(
    spec: GridSpec,
    *,
    executor: Executor | None = None,
    device: str = "auto",
    root: str | Path | None = None,
    retry_failed: bool = False,
    progress: str = "auto",
    on_result: Callable[[Outcome], None] | None = None,
    stack: int | None = None,
    max_minutes: float | None = None,
    shard: tuple[int, int] | None = None,
    where: dict[str, str] | None = None,
) -> GridSummary:
    """Execute the runs of ``spec`` that have no record yet; return a summary.

    Args:
        executor: where runs execute (default: one worker in this process).
        device: ``auto``, ``cpu`` or ``cuda``; resolved where the runs execute.
        root: the results root (default ``$MTVAE_RESULTS`` or ``./results``).
        retry_failed: also rerun the runs whose record says ``failed``.
        progress: ``auto`` (bar interactively, log lines in batch mode), ``bar``, ``log``,
            ``none``.
        on_result: called with each run's :class:`Outcome` as it arrives.
        stack: members per stacked job (runs differing only in seed); 1 trains every run
            on its own; ``None`` picks :func:`default_stack` for the device.
        max_minutes: start no new job after this many minutes; jobs in flight finish, and
            ``GridSummary.left`` says what remains for the next call.
        shard: ``(i, n)``: only the i-th of n disjoint parts of the grid's jobs (stable
            whatever is already recorded, so n machines never overlap).
        where: only the runs whose config has these values (compared as text), e.g.
            ``{"dataset": "wine"}`` to finish one table before the next.
    """
    executor = executor or LocalExecutor()
    executor.check(device)
    if stack is None:
        stack = default_stack(device)
    if not isinstance(stack, int) or stack < 1:
        raise MTVAEError(f"stack must be a positive integer (1 = unstacked), got {stack!r}")
    if max_minutes is not None and not max_minutes > 0:
        raise MTVAEError(f"max_minutes must be > 0, got {max_minutes!r}")
    started = time.perf_counter()
    deadline = None if max_minutes is None else time.time() + 60 * max_minutes
    folder = _root(root)
    runs = select(spec.runs(), where)
    kinds = {r.kind: get_kind(r.kind) for r in runs}  # unknown kinds fail before any run
    jobs = make_jobs(runs, stack)
    if shard is not None:
        i, n = shard
        jobs = [j for k, j in enumerate(jobs) if k % n == i - 1]
    summary = GridSummary(spec.name, sum(len(j) for j in jobs))
    held: set[Path] = set()  # the records whose runs this call has claimed
    bar: _Progress | None = None
    n_todo = 0
    outcomes: Iterator[Outcome] = iter(())
    try:
        work: list[Job] = []
        pool = superseded_pool(folder / spec.name)  # empty unless a cap was raised
        for job in jobs:
            todo = [r for r in job if _claim(folder / spec.name / f"{r.id}.json", retry_failed,
                                             summary, held)]
            if pool:  # under its claim, so no other process trains it meanwhile
                kept = []
                for r in todo:
                    if carry_superseded(pool, r, folder / spec.name):
                        _release(folder / spec.name / f"{r.id}.json", held)
                        summary.carried += 1
                    else:
                        kept.append(r)
                todo = kept
            if todo:  # a stack keeps its engine when claims elsewhere leave one member
                work.append(Job(tuple(Task(r, kinds[r.kind], spec.name, str(folder), device)
                                      for r in todo), stacked=len(job) > 1 or (
                    stack > 1 and stackable(todo[0].kind, dict(todo[0].config)))))
        n_todo = sum(len(j.tasks) for j in work)
        bar = _Progress(n_todo, spec.name, progress)
        outcomes = executor.map(work, deadline=deadline)
        for out in outcomes:
            _release(folder / spec.name / f"{out.id}.json", held)  # its record is written
            if out.status == "ok":
                summary.done += 1
            else:
                summary.failed += 1
                summary.failures.append(f"{out.label} [{out.id}]: {out.error}")
            summary.wall_seconds = time.perf_counter() - started
            bar.update(out, summary)
            if on_result is not None:
                on_result(out)
    finally:
        try:  # stop the executor first (it waits for its runs in flight): then none is running
            close = getattr(outcomes, "close", None)
            if close is not None:
                close()
        finally:  # the time limit, an exception, Ctrl-C: the runs not run are free again
            for path in list(held):
                _release(path, held)
            if bar is not None:
                bar.close()
            summary.wall_seconds = time.perf_counter() - started
    summary.left = n_todo - summary.done - summary.failed
    if bar is not None and bar.mode == "log":
        logger.info("%s", summary)
    return summary


def _claim(path: Path, retry_failed: bool, summary: GridSummary, held: set[Path]) -> bool:
    """Whether this call runs the run of record ``path``: it needs running and this process
    now holds its claim. Counts it in ``summary`` otherwise."""
    stamp = _stamp(path)
    state = record_status(path)
    if state == "pending" or (state == "failed" and retry_failed):
        if not claims.claim(path):
            summary.claimed += 1
            if not summary.claimed_by:
                info = claims.holder(path)
                summary.claimed_by = claims.describe(info) if info else "a process now gone"
            return False
        held.add(path)
        if _stamp(path) == stamp:
            return True
        # another process recorded it between our look and our claim: never run it twice
        _release(path, held)
        state = record_status(path)
        if state == "pending":  # its record was deleted meanwhile: nobody else runs it
            return _claim(path, retry_failed, summary, held)
    if state == "failed":
        summary.kept_failed += 1
    else:
        summary.skipped += 1
    return False


def _release(path: Path, held: set[Path]) -> None:
    if path in held:
        claims.release(path)
        held.discard(path)


def run_staged(build: Callable[[], GridSpec], *, max_minutes: float | None = None,
               once: bool = False, **kwargs: Any) -> GridSummary:
    """:func:`run_grid` on a grid whose later blocks depend on earlier records: rebuild the
    spec with ``build()`` after each pass until a pass finds nothing new to run (or the time
    limit stops it). Returns the summary of all passes together (``left`` and ``claimed``
    as the last pass found them); ``once`` runs one pass (a grid with fixed blocks). A pass
    whose runs are all claimed by another process runs nothing, so it is the last."""
    started = time.perf_counter()
    total: GridSummary | None = None
    while True:
        left = None if max_minutes is None else max_minutes - (time.perf_counter() - started) / 60
        spec = build()
        if left is not None and left <= 0:  # out of time before this pass: count, run nothing
            ids = {r.id for r in select(spec.runs(), kwargs.get("where"))}
            table = plan(spec, kwargs.get("root"))
            mine = table[table.id.isin(ids)]
            held = mine[(mine.status == "pending") & (mine.claimed_by != "")]
            summary = GridSummary(spec.name, len(mine),
                                  skipped=int((mine.status == "done").sum()),
                                  kept_failed=int((mine.status == "failed").sum()),
                                  left=int((mine.status == "pending").sum()) - len(held),
                                  claimed=len(held), claimed_by=next(iter(held.claimed_by), ""))
        else:
            summary = run_grid(spec, max_minutes=left, **kwargs)
        if total is None:
            total = summary
        else:  # specs only grow: the runs this call recorded earlier are skipped now
            total.skipped = summary.skipped - total.done - total.failed - total.carried
            total.total = summary.total
            total.done += summary.done
            total.failed += summary.failed
            total.carried += summary.carried
            total.failures += summary.failures
            total.left = summary.left
            total.kept_failed = summary.kept_failed
            total.claimed, total.claimed_by = summary.claimed, summary.claimed_by
        total.wall_seconds = time.perf_counter() - started
        if once or summary.done + summary.failed + summary.carried == 0 or summary.left:
            return total


def load_results(grid: str | GridSpec, root: str | Path | None = None,
                 status: str = "ok") -> pd.DataFrame:
    """A grid's records, one row each: config keys, scalar metrics, dict-valued metrics.

    ``status`` selects ``ok`` records (default), ``failed`` ones (with ``error_*``
    columns) or ``all``.
    """
    check_choice("status", status, ("ok", "failed", "all"))
    name = grid.name if isinstance(grid, GridSpec) else grid
    folder = _root(root) / name
    paths = sorted(folder.glob("*.json"))
    if not paths:
        raise MTVAEError(f"no run records under {folder}; run `python -m mtvae grid "
                         f"{name.rsplit('-', 1)[0]}` first")
    rows = []
    for path in paths:
        rec = read_record(path)
        state = "failed" if rec.get("status") == "failed" else "ok"
        if status not in ("all", state):
            continue
        engine = rec.get("engine") or {"name": "single", "stack": 1}  # older records
        row = {"id": rec["id"], "kind": rec["name"], "status": state,
               "engine": engine["name"], "stack": engine["stack"],
               "seconds": rec["timings"]["seconds"], "device": rec["device"],
               **rec["config"], **rec.get("metrics", {})}
        row |= {f"error_{k}": v for k, v in rec.get("error", {}).items()}
        if "carried_from" in rec:  # stopped by patience under a lower cap (experiments.carry)
            row["carried_from_cap"] = rec["carried_from"]["epoch_cap"]
        rows.append(row)
    return pd.DataFrame(rows)
