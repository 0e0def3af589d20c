"""Where the runs of a grid execute: a local process pool, or Slurm through submitit.

Every run goes through :func:`execute`, in whichever process runs it: it calls the run's
kind, and writes the run's record atomically (:func:`mtvae.results.write_record`) — a
``status: ok`` record with the metrics, or a ``status: failed`` record with the error type,
message and the tail of the traceback. A kind's exception therefore never stops the grid;
an interruption (Ctrl-C, a killed job) stops it, and the records written so far stay.

* :class:`LocalExecutor` — ``workers`` processes (spawn context) sharing one device, the
  CPU or one GPU; with one worker the runs execute in the calling process. Each worker
  limits torch to ``threads`` intra-op threads: on a GPU ``cores // workers``; on the CPU
  one, because CPU results depend on the thread count (reductions split differently) and
  one thread per run makes the records independent of ``workers`` (small MLPs gain little
  from more threads; more workers use the cores better). Workers exit within about a
  second when the parent process dies, whatever killed it (:func:`die_with_parent`).
* :class:`SlurmExecutor` — chunks of runs submitted as one Slurm job array with
  ``submitit.AutoExecutor``; each job runs its chunk with a local pool of
  ``workers_per_job`` processes (several runs per GPU). ``cluster="local"`` or ``"debug"``
  runs the same path on this machine (tests).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import platform
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from mtvae.device import apply_numeric_settings, numeric_settings, resolve_device, seed_everything
from mtvae.errors import MTVAEError, check_choice
from mtvae.experiments.kinds import STACKED, Kind
from mtvae.experiments.spec import Run
from mtvae.results import new_record, read_record, write_record

TRACEBACK_LINES = 15


@dataclass(frozen=True)
class Task:
    """What a worker needs for one run (picklable: the kind is a module-level function)."""

    run: Run
    kind: Kind
    grid: str
    root: str  # absolute results root
    device: str

    @property
    def path(self) -> Path:
        return Path(self.root) / self.grid / f"{self.run.id}.json"


@dataclass(frozen=True)
class Outcome:
    """What became of one run."""

    id: str
    label: str
    status: str  # "ok" | "failed"
    seconds: float
    error: str = ""


@dataclass(frozen=True)
class Job:
    """One unit of work for a worker: a single run, or runs that train as one stack."""

    tasks: tuple[Task, ...]
    stacked: bool = False

    @property
    def label(self) -> str:
        first = self.tasks[0].run.label
        return first if len(self.tasks) == 1 else f"{first} (+{len(self.tasks) - 1} stacked)"


def cores() -> int:
    """CPU cores this process may use (respects affinity, e.g. a Slurm allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def _error(err: BaseException, where: str = "") -> dict[str, str]:
    tail = traceback.format_exception(type(err), err, err.__traceback__)
    lines = "".join(tail).splitlines()[-TRACEBACK_LINES:]
    return {"type": type(err).__name__, "message": f"{where}{err}",
            "traceback": "\n".join(lines)}


def _write(task: Task, body: dict[str, Any], seconds: float, device: str,
           stack: int = 1) -> None:
    record = new_record(task.grid, task.run.kind, dict(task.run.config), body,
                        seconds=seconds, device=device)
    record |= {"threads": torch.get_num_threads(), "host": platform.node(),
               "engine": engine_record(device, stack)}
    write_record(task.path, record)


def engine_record(device: str, stack: int) -> dict[str, Any]:
    """How a run was executed (not part of its id): engine, stack size, numeric settings."""
    return {"name": "stacked" if stack > 1 else "single", "stack": stack,
            **numeric_settings(device)}


def execute_job(job: Job) -> list[Outcome]:
    """Run a job: its single run, or its stacked runs (one record each)."""
    if not job.stacked:
        return [execute(t) for t in job.tasks]
    started = time.time()
    first = job.tasks[0]
    device = first.device
    try:
        device = resolve_device(first.device).type
        apply_numeric_settings(device)
        seed_everything(int(first.run.config.get("seed", 0)))
        fn = STACKED[first.run.kind]
        results = fn([dict(t.run.config) for t in job.tasks], device)
    except Exception as err:  # the whole stack failed: every member gets a failure record
        return [record_failure(t, err, started=started, device=device) for t in job.tasks]
    seconds = time.time() - started
    outcomes = []
    for task, res in zip(job.tasks, results, strict=True):
        if isinstance(res, BaseException):
            outcomes.append(record_failure(task, res, started=started, device=device,
                                           stack=len(job.tasks)))
        else:
            _write(task, {"status": "ok", "metrics": res}, seconds, device, len(job.tasks))
            outcomes.append(Outcome(task.run.id, task.run.label, "ok", seconds))
    return outcomes


def execute(task: Task) -> Outcome:
    """Run one task and write its record; a failing kind gives a ``failed`` record."""
    started = time.time()
    device = task.device
    try:
        device = resolve_device(task.device).type
        apply_numeric_settings(device)
        seed_everything(int(task.run.config.get("seed", 0)))
        body: dict[str, Any] = {"status": "ok",
                                "metrics": task.kind(dict(task.run.config), device)}
        _write(task, body, time.time() - started, device)
        return Outcome(task.run.id, task.run.label, "ok", time.time() - started)
    except Exception as err:  # any failure of a run is recorded, not raised
        return record_failure(task, err, started=started, device=device)


def record_failure(task: Task, err: BaseException, *, started: float | None = None,
                   device: str | None = None, where: str = "", stack: int = 1) -> Outcome:
    """Write a ``failed`` record for ``task`` (also used by the parent for lost workers)."""
    seconds = time.time() - (started or time.time())
    info = _error(err, where)
    _write(task, {"status": "failed", "error": info}, seconds, device or task.device, stack)
    return Outcome(task.run.id, task.run.label, "failed", seconds,
                   f"{info['type']}: {info['message']}")


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Limit torch's intra-op threads to ``n`` inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCHDOG_SECONDS = 0.5


def _exit_if_orphaned(parent: int) -> None:
    """Watchdog loop: end this worker as soon as its parent process is gone."""
    while True:
        if os.getppid() != parent:  # re-parented to init or a subreaper: the parent died
            os._exit(1)
        time.sleep(WATCHDOG_SECONDS)


def die_with_parent(parent: int) -> None:
    """Make this process exit when ``parent`` dies, by any signal including SIGKILL.

    On Linux the kernel sends SIGKILL to the worker when its parent exits
    (``prctl(PR_SET_PDEATHSIG)``); everywhere a daemon thread also polls the parent pid
    (:data:`WATCHDOG_SECONDS`), which covers other systems and a parent that died before
    the ``prctl`` call. A run cut short this way leaves no record (records are written
    atomically), so the next call of the grid runs it again.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl
            pass
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_exit_if_orphaned, args=(parent,), daemon=True,
                     name="mtvae-parent-watchdog").start()


def _init_worker(threads: int, parent: int | None = None) -> None:
    if parent is not None:
        die_with_parent(parent)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


class Executor(Protocol):
    name: str

    def check(self, device: str) -> None: ...

    def map(self, jobs: list[Job], deadline: float | None = None) -> Iterator[Outcome]:
        """Run ``jobs``; start no new job after ``deadline`` (``time.time()``)."""
        ...


class LocalExecutor:
    """``workers`` processes on this machine sharing one device (see module docstring)."""

    name = "local"

    def __init__(self, workers: int = 1, threads: int | None = None) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise MTVAEError(f"workers must be a positive integer, got {workers!r}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise MTVAEError(f"threads must be a positive integer or None, got {threads!r}")
        self.workers, self.threads = workers, threads

    def threads_for(self, device: str) -> int:
        if self.threads is not None:
            return self.threads
        return 1 if device == "cpu" else max(1, cores() // self.workers)

    def check(self, device: str) -> None:
        resolve_device(device)  # fails here, not in every worker, when CUDA is missing

    def map(self, jobs: list[Job], deadline: float | None = None) -> Iterator[Outcome]:
        if not jobs:
            return
        threads = self.threads_for(resolve_device(jobs[0].tasks[0].device).type)
        if self.workers == 1:
            with torch_threads(threads):
                for job in jobs:
                    if _past(deadline):
                        return
                    yield from execute_job(job)
            return
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(jobs)),
                                   mp_context=mp.get_context("spawn"),
                                   initializer=_init_worker, initargs=(threads, os.getpid()))
        pending = list(reversed(jobs))
        futures: dict[Future[list[Outcome]], Job] = {}
        try:
            while pending or futures:
                while pending and len(futures) < self.workers and not _past(deadline):
                    job = pending.pop()
                    futures[pool.submit(execute_job, job)] = job
                if not futures:
                    return
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = futures.pop(fut)
                    try:
                        yield from fut.result()
                    except BrokenProcessPool as err:  # not a run's error: a worker died
                        raise MTVAEError(
                            f"a worker process died ({err}) near run {job.label!r}: "
                            "out of memory, a crash, or a script without an "
                            "`if __name__ == '__main__':` guard (spawned workers import it). "
                            "Finished runs are recorded; run again to resume, with workers=1 "
                            "to see the error") from err
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.time() >= deadline


def run_chunk(jobs: list[Job], workers: int, threads: int | None) -> list[Outcome]:
    """One Slurm job: its chunk of jobs through a local pool."""
    return list(LocalExecutor(workers, threads).map(jobs))


class SlurmExecutor:
    """Submit the runs as a Slurm job array through ``submitit`` (see module docstring)."""

    name = "slurm"

    def __init__(self, folder: str | os.PathLike[str] = ".cache/submitit",
                 partition: str | None = None, timeout_min: int = 120, gpus_per_node: int = 1,
                 cpus_per_task: int = 4, mem_gb: float = 16, runs_per_job: int = 25,
                 workers_per_job: int = 1, array_parallelism: int = 32,
                 threads: int | None = None, cluster: str | None = None,
                 poll_seconds: float = 5.0) -> None:
        if cluster is not None:
            check_choice("submitit cluster", cluster, ("slurm", "local", "debug"))
        for name, value in (("runs_per_job", runs_per_job), ("workers_per_job", workers_per_job),
                            ("timeout_min", timeout_min), ("array_parallelism",
                                                           array_parallelism)):
            if not isinstance(value, int) or value < 1:
                raise MTVAEError(f"{name} must be a positive integer, got {value!r}")
        self.folder, self.cluster, self.poll = Path(folder), cluster, poll_seconds
        self.runs_per_job, self.workers_per_job, self.threads = (runs_per_job, workers_per_job,
                                                                 threads)
        self.params: dict[str, Any] = {
            "name": "mtvae-grid", "timeout_min": timeout_min, "gpus_per_node": gpus_per_node,
            "cpus_per_task": cpus_per_task, "mem_gb": mem_gb,
            "slurm_array_parallelism": array_parallelism}
        if partition:
            self.params["slurm_partition"] = partition

    def check(self, device: str) -> None:
        check_choice("device", device, ("auto", "cpu", "cuda"))  # resolved on the nodes
        if self.cluster in (None, "slurm") and shutil.which("sbatch") is None:
            raise MTVAEError("the slurm executor needs Slurm's 'sbatch' on PATH; run on the "
                             "cluster's login node, or use --executor local")

    def map(self, jobs: list[Job], deadline: float | None = None) -> Iterator[Outcome]:
        """Submit every job (``deadline`` applies on the nodes' side: not used here)."""
        del deadline
        if not jobs:
            return
        import submitit

        executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        executor.update_parameters(**self.params)
        n = self.runs_per_job
        chunks: list[list[Job]] = [[]]
        for job in jobs:  # about runs_per_job runs per array task; a stack is never split
            if chunks[-1] and sum(len(j.tasks) for j in chunks[-1]) + len(job.tasks) > n:
                chunks.append([])
            chunks[-1].append(job)
        jobs = executor.map_array(run_chunk, chunks, [self.workers_per_job] * len(chunks),
                                  [self.threads] * len(chunks))
        pending = dict(zip(jobs, chunks, strict=True))
        try:
            while pending:
                for job in [j for j in pending if j.done()]:
                    chunk = pending.pop(job)
                    try:
                        yield from job.result()
                    except Exception as err:  # the job died (timeout, node)
                        yield from self._lost(chunk, err, job.job_id)
                if pending:
                    time.sleep(self.poll)
        finally:
            for job in pending:
                job.cancel(check=False)

    @staticmethod
    def _lost(chunk: list[Job], err: BaseException, job_id: str) -> Iterator[Outcome]:
        """Runs of a dead job that left no record get a failure record from here."""
        for task in (t for j in chunk for t in j.tasks):
            if task.path.exists():  # the job wrote this run's record before it died
                rec = read_record(task.path)
                yield Outcome(task.run.id, task.run.label, rec.get("status", "ok"),
                              float(rec.get("timings", {}).get("seconds", 0.0)))
            else:
                yield record_failure(task, err, where=f"slurm job {job_id} failed: ")


EXECUTORS = ("local", "slurm")


def get_executor(name: str, **options: Any) -> Executor:
    """``local`` or ``slurm`` with their options; an unknown name lists the valid ones."""
    check_choice("executor", name, EXECUTORS)
    return LocalExecutor(**options) if name == "local" else SlurmExecutor(**options)
