"""Run records: one JSON file per experiment run, written atomically.

A record holds the run's full config, seed, metrics, timings, device and library
version. Writing goes to a temporary file in the same folder followed by ``os.replace``,
so a record is never half-written; a run whose record exists is not run again
(train-or-load), which makes every batch of runs resumable after an interruption.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from mtvae.errors import MTVAEError, check_deadline


def repo_root() -> Path | None:
    """The checkout that holds this package (``pyproject.toml`` + ``notebooks/`` beside
    ``mtvae/``), or ``None`` when mtvae is installed elsewhere (e.g. site-packages)."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir():
        return root
    return None


def _default(relative: str) -> Path:
    root = repo_root()
    return root / relative if root is not None else Path(relative).absolute()


def results_dir() -> Path:
    """Root folder for records: ``$MTVAE_RESULTS``, else ``results/`` at the repository root.

    The root is found from the package's location, so a notebook opened from
    ``notebooks/`` (Jupyter's working directory) reads and writes the same records as the
    command line run at the root; outside a checkout it is ``./results``.
    """
    env = os.environ.get("MTVAE_RESULTS")
    return Path(env) if env else _default("results")


def cache_dir() -> Path:
    """Root folder for checkpoints (not committed): ``$MTVAE_CACHE``, else ``.cache/mtvae``
    at the repository root (as :func:`results_dir`)."""
    env = os.environ.get("MTVAE_CACHE")
    return Path(env) if env else _default(".cache/mtvae")


def logs_dir() -> Path:
    """Folder of the per-chapter training logs: ``$MTVAE_LOGS``, else ``.cache/logs`` at
    the repository root (as :func:`results_dir`)."""
    env = os.environ.get("MTVAE_LOGS")
    return Path(env) if env else _default(".cache/logs")


OUTPUT_VARS = {"MTVAE_RESULTS": "results", "MTVAE_CACHE": "cache", "MTVAE_LOGS": "logs"}


@contextmanager
def outputs_under(folder: str | os.PathLike[str]) -> Iterator[dict[str, str]]:
    """Send records, checkpoints and logs to ``folder/{results,cache,logs}`` inside the block.

    Used by ``regenerate --output-dir DIR`` so that a quick check leaves the checkout as it
    was. A variable the caller has already set (e.g. ``MTVAE_CACHE``) is kept: it is an
    explicit choice. The environment is restored afterwards; the mapping in effect is
    yielded.
    """
    before = {var: os.environ.get(var) for var in OUTPUT_VARS}
    for var, sub in OUTPUT_VARS.items():
        if not before[var]:
            os.environ[var] = str(Path(folder).absolute() / sub)
    try:
        yield {var: os.environ[var] for var in OUTPUT_VARS}
    finally:
        for var, value in before.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def files_written_since(folder: str | os.PathLike[str], since: float,
                        pattern: str = "*.pt") -> int:
    """How many files matching ``pattern`` under ``folder`` were modified at or after
    ``since`` (a ``time.time()``): e.g. checkpoints saved by training."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.rglob(pattern) if p.stat().st_mtime >= since)


def run_id(name: str, config: dict[str, Any]) -> str:
    """A stable id: ``name`` plus a hash of the canonical JSON of ``config``."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return f"{name}-{hashlib.sha1(blob).hexdigest()[:10]}"


def write_record(path: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Write ``record`` as JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as fh:
            json.dump(record, fh, indent=1, sort_keys=True, default=float)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a crash mid-dump leaves neither a record nor debris
        raise
    return path


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A run record from ``path``; anything else is one :class:`MTVAEError` naming the file.

    A run record is a JSON object with a string ``id``, a ``config`` object and either a
    ``metrics`` object or ``"status": "failed"`` (see :func:`new_record`). Invalid JSON, or
    valid JSON of another shape (a list, ``{"id": 3}``), is malformed: it is never counted
    as a finished run, and the message says to delete it so that the run is repeated.
    """
    try:
        with open(path) as fh:
            record = json.load(fh)
    except json.JSONDecodeError as err:
        raise MTVAEError(
            f"run record {path} is not valid JSON ({err}); delete it to rerun"
        ) from err
    problem = record_problem(record)
    if problem:
        raise MTVAEError(f"run record {path} is malformed ({problem}); delete it to rerun")
    return record


def record_problem(record: object) -> str:
    """Why ``record`` is not a run record (empty string when it is one)."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    if not isinstance(record.get("id"), str):
        return "no string 'id'"
    if not isinstance(record.get("config"), dict):
        return "no 'config' object"
    if record.get("status") == "failed":
        return ""
    if not isinstance(record.get("metrics"), dict):
        return "no 'metrics' object and no 'status': 'failed'"
    return ""


def environment() -> dict[str, str]:
    """Library and platform versions stored with every record."""
    from mtvae import __version__

    return {"mtvae": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda or "none"}


def cached_run(
    grid: str,
    name: str,
    config: dict[str, Any],
    compute: Callable[[], dict[str, Any]],
    *,
    device: str = "cpu",
    root: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Return the record of a run, computing and writing it only if it does not exist.

    ``compute()`` returns the metrics (a JSON-serialisable dict). The record is stored at
    ``<root>/<grid>/<run_id>.json``.
    """
    path = Path(root or results_dir()) / grid / f"{run_id(name, config)}.json"
    if path.exists():
        return read_record(path)
    check_deadline(f"run {name} of {grid}")
    started = time.time()
    metrics = compute()
    record = new_record(grid, name, config, {"metrics": metrics},
                        seconds=time.time() - started, device=device)
    write_record(path, record)
    return record


def new_record(grid: str, name: str, config: dict[str, Any], body: dict[str, Any], *,
               seconds: float, device: str) -> dict[str, Any]:
    """A run record: id, name, grid, config, seed, ``body`` (e.g. metrics), timings, env."""
    return {
        "id": run_id(name, config), "name": name, "grid": grid, "config": config,
        "seed": config.get("seed"), **body,
        "timings": {"seconds": seconds, "finished": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "device": device, "env": environment(),
    }


def compute_seconds(records: Iterable[Mapping[str, Any]]) -> float:
    """Training time of ``records`` in seconds, counting every job once.

    The members of a stacked job (``engine.name == "stacked"``) each repeat the job's wall
    time in ``timings.seconds``; summing them would count a stack of 30 thirty times, so a
    stacked job's time is counted once per (stack size, seconds)."""
    total, seen = 0.0, set()
    for record in records:
        seconds = float(record.get("timings", {}).get("seconds", 0.0))
        engine = record.get("engine") or {}
        if engine.get("name") == "stacked":
            key = (engine.get("stack"), seconds)
            if key in seen:
                continue
            seen.add(key)
        total += seconds
    return total


def load_records(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """All records under ``folder`` as a flat DataFrame (``config.*``, ``metrics.*``)."""
    paths = sorted(Path(folder).rglob("*.json"))
    if not paths:
        raise MTVAEError(f"no run records under {folder}; run the experiments first")
    return pd.json_normalize([read_record(p) for p in paths])
