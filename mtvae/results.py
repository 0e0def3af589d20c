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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from mtvae.errors import MTVAEError, check_deadline


def results_dir() -> Path:
    """Root folder for records: ``$MTVAE_RESULTS`` or ``./results``."""
    return Path(os.environ.get("MTVAE_RESULTS", "results"))


def cache_dir() -> Path:
    """Root folder for checkpoints (not committed): ``$MTVAE_CACHE`` or ``./.cache/mtvae``."""
    return Path(os.environ.get("MTVAE_CACHE", ".cache/mtvae"))


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
    try:
        with open(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise MTVAEError(
            f"run record {path} is not valid JSON ({err}); delete it to rerun"
        ) from err


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


def load_records(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """All records under ``folder`` as a flat DataFrame (``config.*``, ``metrics.*``)."""
    paths = sorted(Path(folder).rglob("*.json"))
    if not paths:
        raise MTVAEError(f"no run records under {folder}; run the experiments first")
    return pd.json_normalize([read_record(p) for p in paths])
