"""Claims: a run being executed by a live process, so that no other process starts it too.

A claim is a file beside the run's record, ``<results>/<grid>/<run id>.claim``, created
atomically (``O_CREAT | O_EXCL``: of two processes claiming at once, exactly one wins) and
holding JSON ``{"pid", "host", "started"}``. :func:`claim` takes a run for this process,
:func:`release` gives it back once its record is written, :func:`holder` names the live
process that holds it for another one.

A claim outlives its process only when that process is killed outright (SIGKILL, a power
cut). Such a *stale* claim is taken over by the next :func:`claim`: on the same host when
its pid is no longer alive, anywhere when the file is unreadable (and older than
:data:`UNREADABLE_GRACE_SECONDS`, which covers the instant between creating a claim and
writing it). A claim made on another host is respected, since its pid cannot be checked
from here: once that process is known to be gone, delete the ``.claim`` file by hand.
Taking over is serialised by a lock on the stale file itself, so two processes finding the
same stale claim never remove a fresh claim of a third.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

UNREADABLE_GRACE_SECONDS = 30.0
CLEAR_HINT = ("once that process is known to be gone, delete its .claim files beside the "
              "runs' records to run them")
_ATTEMPTS = 5


def claim_path(record_path: str | os.PathLike[str]) -> Path:
    """``<grid>/<run id>.claim`` for the record ``<grid>/<run id>.json``."""
    return Path(record_path).with_suffix(".claim")


def _host() -> str:
    return socket.gethostname()


def _read(path: Path) -> tuple[dict[str, Any] | None, float] | None:
    """The claim's content (``None`` if unreadable) and age in seconds; ``None`` if absent."""
    try:
        with open(path, "rb") as fh:
            age = time.time() - os.fstat(fh.fileno()).st_mtime
            text = fh.read()
    except FileNotFoundError:
        return None
    return _parse(text), age


def _parse(text: bytes) -> dict[str, Any] | None:
    try:
        info = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    ok = (isinstance(info, dict) and isinstance(info.get("host"), str)
          and isinstance(info.get("pid"), int) and info["pid"] > 0)
    return info if ok else None


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (signal 0 probes without sending)."""
    if pid <= 0:  # 0 and negative pids address process groups, not one process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    except OSError:  # cannot tell: assume alive, a claim is never taken on a guess
        return True
    return True


def _mine(info: dict[str, Any] | None) -> bool:
    return info is not None and info["pid"] == os.getpid() and info["host"] == _host()


def _stale(info: dict[str, Any] | None, age: float) -> bool:
    if info is None:
        return age > UNREADABLE_GRACE_SECONDS
    return info["host"] == _host() and not _mine(info) and not alive(info["pid"])


def _remove_if_stale(path: Path) -> bool:
    """Remove ``path`` if it is a stale claim; ``True`` if the caller should try again to
    create the claim (removed here, or gone or replaced meanwhile)."""
    try:
        fd = os.open(path, os.O_RDWR)  # read-write: NFS needs it for an exclusive lock
    except FileNotFoundError:
        return True
    except PermissionError:  # another user's claim: leave it alone
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            now = os.stat(path)
        except FileNotFoundError:
            return True
        mine = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
            return True  # another process took it over first: look at the new claim
        with os.fdopen(os.dup(fd), "rb") as fh:
            info = _parse(fh.read())
        if not _stale(info, time.time() - mine.st_mtime):
            return False
        os.unlink(path)
        return True
    finally:
        os.close(fd)  # releases the lock


def claim(record_path: str | os.PathLike[str]) -> bool:
    """Claim the run of ``record_path`` for this process: ``True`` if this process holds
    it now (also when it held it already), ``False`` if a live process elsewhere does.
    A stale claim (see the module docstring) is taken over."""
    path = claim_path(record_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"pid": os.getpid(), "host": _host(),
                       "started": datetime.now(UTC).isoformat(timespec="seconds")})
    for _ in range(_ATTEMPTS):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            seen = _read(path)
            if seen is not None and _mine(seen[0]):
                return True
            if not _remove_if_stale(path):
                return False
            continue
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(body)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return True
    return False  # taken over by others each time: treat it as held


def release(record_path: str | os.PathLike[str]) -> None:
    """Remove this process's claim on the run of ``record_path``; anyone else's stays."""
    path = claim_path(record_path)
    seen = _read(path)
    if seen is not None and _mine(seen[0]):
        path.unlink(missing_ok=True)


def holder(record_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The claim on the run of ``record_path`` if another live process (or another host)
    holds it, else ``None`` (no claim, this process's own, or a stale one). A claim still
    being written reads as ``{"pid": None, "host": None, "started": None}``."""
    seen = _read(claim_path(record_path))
    if seen is None or _mine(seen[0]) or _stale(*seen):
        return None
    return seen[0] or {"pid": None, "host": None, "started": None}


def describe(info: dict[str, Any]) -> str:
    """``pid 1234 on host-a`` (``an unknown process`` for an unreadable claim)."""
    if info.get("pid") is None:
        return "an unknown process"
    return f"pid {info['pid']} on {info['host']}"
