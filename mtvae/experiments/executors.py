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
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from mtvae.device import resolve_device, seed_everything
from mtvae.errors import MTVAEError, check_choice
from mtvae.experiments.kinds import Kind
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


def _write(task: Task, body: dict[str, Any], seconds: float, device: str) -> None:
    record = new_record(task.grid, task.run.kind, dict(task.run.config), body,
                        seconds=seconds, device=device)
    record |= {"threads": torch.get_num_threads(), "host": platform.node()}
    write_record(task.path, record)


def execute(task: Task) -> Outcome:
    """Run one task and write its record; a failing kind gives a ``failed`` record."""
    started = time.time()
    device = task.device
    try:
        device = resolve_device(task.device).type
        seed_everything(int(task.run.config.get("seed", 0)))
        body: dict[str, Any] = {"status": "ok",
                                "metrics": task.kind(dict(task.run.config), device)}
        _write(task, body, time.time() - started, device)
        return Outcome(task.run.id, task.run.label, "ok", time.time() - started)
    except Exception as err:  # any failure of a run is recorded, not raised
        return record_failure(task, err, started=started, device=device)


def record_failure(task: Task, err: BaseException, *, started: float | None = None,
                   device: str | None = None, where: str = "") -> Outcome:
    """Write a ``failed`` record for ``task`` (also used by the parent for lost workers)."""
    seconds = time.time() - (started or time.time())
    info = _error(err, where)
    _write(task, {"status": "failed", "error": info}, seconds, device or task.device)
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

    def map(self, tasks: list[Task]) -> Iterator[Outcome]: ...


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

    def map(self, tasks: list[Task]) -> Iterator[Outcome]:
        if not tasks:
            return
        threads = self.threads_for(resolve_device(tasks[0].device).type)
        if self.workers == 1:
            with torch_threads(threads):
                for task in tasks:
                    yield execute(task)
            return
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)),
                                   mp_context=mp.get_context("spawn"),
                                   initializer=_init_worker, initargs=(threads, os.getpid()))
        try:
            futures: dict[Future[Outcome], Task] = {pool.submit(execute, t): t for t in tasks}
            for fut in as_completed(futures):
                try:
                    yield fut.result()
                except BrokenProcessPool as err:  # not a run's error: a worker process died
                    raise MTVAEError(
                        f"a worker process died ({err}) near run {futures[fut].run.label!r}: "
                        "out of memory, a crash, or a script without an "
                        "`if __name__ == '__main__':` guard (spawned workers import it). "
                        "Finished runs are recorded; run again to resume, with workers=1 to "
                        "see the error") from err
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def run_chunk(tasks: list[Task], workers: int, threads: int | None) -> list[Outcome]:
    """One Slurm job: its chunk of runs through a local pool."""
    return list(LocalExecutor(workers, threads).map(tasks))


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

    def map(self, tasks: list[Task]) -> Iterator[Outcome]:
        if not tasks:
            return
        import submitit

        executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        executor.update_parameters(**self.params)
        n = self.runs_per_job
        chunks = [tasks[i:i + n] for i in range(0, len(tasks), n)]
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
    def _lost(chunk: list[Task], err: BaseException, job_id: str) -> Iterator[Outcome]:
        """Runs of a dead job that left no record get a failure record from here."""
        for task in chunk:
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
