"""Whether an executed chapter still shows the records that are there now.

The book renders the outputs that ``python -m mtvae regenerate`` stored in
``book/chapters``; it never runs code. When a grid that a chapter reads
(:data:`mtvae.experiments.grids.READ_BY`) changes after the chapter was executed — runs are
added, or a raised cap moves records to ``superseded/`` to run again — the page still shows
the records as they were. :func:`changes` finds those grids: against the snapshot of each
grid's records that the manifest entry keeps (:func:`snapshot`, taken when the execution
ended, so that runs the chapter trained itself count as read), or, for an entry written
before the manifest kept one, by the records that finished after the execution ended;
:func:`source_changed` adds whether the chapter's source (``notebooks/``) differs from
what was executed. :func:`notice` says so in a sentence with the commands that bring the page up to
date; ``book/_ext/stale_pages.py`` puts it at the top of each such page, so a reader never
mistakes an earlier protocol's numbers for the current records'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mtvae.results import results_dir

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class GridChange:
    """How grid ``name`` (records under ``folder``) changed since a chapter was executed:
    its record count then (``None``: the entry kept no snapshot) and now, how many of its
    records finished after the execution ended, and how far its plan is now."""

    name: str
    folder: str
    records_then: int | None
    records_now: int
    newer: int
    done: int
    planned: int
    staged: bool


def grids_read(chapter: str) -> list[str]:
    """The grids whose records ``chapter`` (a stem, ``03_4_hierarchical``) reads."""
    from mtvae.experiments.grids import READ_BY

    return [g for g, readers in READ_BY.items()
            if any(chapter == r or chapter.startswith(f"{r}_") for r in readers)]


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, TIME_FORMAT).replace(tzinfo=UTC)


def _finished(folder: Path) -> list[str]:
    """The finish times of the records directly under ``folder`` (``superseded/`` and other
    subfolders are not read by any chapter)."""
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            out.append("")  # unreadable: counted, never newer
            continue
        out.append(str((rec.get("timings") or {}).get("finished", "")) if isinstance(rec, dict)
                   else "")
    return out


def _state(times: list[str]) -> dict[str, Any]:
    """A grid folder's record count and latest finish time (:func:`_finished`)."""
    return {"records": len(times), "latest": max(times, default="")}


def snapshot(chapter: str, profile: str, root: str | Path | None = None) -> dict[str, Any]:
    """Per grid that ``chapter`` reads: its record count and the latest finish time among
    them, as the manifest keeps them (``grids``) for :func:`changes`."""
    base = Path(root) if root is not None else results_dir()
    return {g: _state(_finished(base / f"{g}-{profile}")) for g in grids_read(chapter)}


def started_at(entry: dict[str, Any]) -> datetime | None:
    """When the execution of a manifest entry started (its end less its wall time)."""
    try:
        end = _parse(str(entry["executed_at"]))
    except (KeyError, ValueError):
        return None
    return end - timedelta(seconds=float(entry.get("wall_seconds") or 0.0))


def changes(chapter: str, entry: dict[str, Any], root: str | Path | None = None
            ) -> list[GridChange]:
    """The grids read by ``chapter`` whose records differ from those its manifest
    ``entry`` was executed on; empty when the page is up to date."""
    from mtvae.experiments import get_grid
    from mtvae.experiments.grids import STAGED
    from mtvae.experiments.runner import plan

    profile = str(entry.get("profile", ""))
    base = Path(root) if root is not None else results_dir()
    try:
        end: datetime | None = _parse(str(entry["executed_at"]))
    except (KeyError, ValueError):
        end = None
    then = entry.get("grids") or {}
    out = []
    for g in grids_read(chapter):
        times = _finished(base / f"{g}-{profile}")
        newer = sum(1 for t in times if t and end is not None and _parse(t) > end)
        old = then.get(g)
        if (old is not None and old == _state(times)) or (old is None and not newer):
            continue
        status = plan(get_grid(g, profile, base), base).status
        out.append(GridChange(g, f"{g}-{profile}", None if old is None else int(old["records"]),
                              len(times), newer, int((status == "done").sum()), len(status),
                              g in STAGED))
    return out


def _sources(cells: list[Any]) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in cells
            if "injected-parameters" not in c.metadata.get("tags", [])]


def source_changed(chapter: str, chapters_dir: str | Path,
                   notebooks_dir: str | Path) -> bool:
    """Whether ``notebooks_dir/<chapter>.md`` (the MyST source) has other cells, prose or
    code, than the executed ``chapters_dir/<chapter>.ipynb``; ``False`` without a source."""
    import jupytext
    import nbformat

    source = Path(notebooks_dir) / f"{chapter}.md"
    executed = Path(chapters_dir) / f"{chapter}.ipynb"
    if not source.is_file() or not executed.is_file():
        return False
    return (_sources(jupytext.read(source).cells)
            != _sources(nbformat.read(executed, as_version=4).cells))


def _progress(c: GridChange) -> str:
    plus = "+" if c.staged and c.done < c.planned else ""
    return f"{c.done} of {c.planned}{plus} planned runs recorded"


def notice(chapter: str, entry: dict[str, Any], found: list[GridChange],
           source: bool = False, pending: list[GridChange] | None = None) -> str:
    """One paragraph (plain text, commands in backquotes) telling the reader that the page
    shows earlier records (``found``: :func:`changes`) or an earlier source (``source``),
    what changed and how to bring it up to date; ``pending``: the incomplete grids the
    chapter reads (only said where the source changed)."""
    profile = str(entry.get("profile", ""))
    when = started_at(entry)
    date = when.strftime("%d %B %Y, %H:%M UTC") if when else "an earlier date"
    said = []
    if source:
        said.append(f"its source (`notebooks/{chapter}.md`) has been revised")
    if found:
        parts = []
        for c in found:
            then = ("" if c.records_then is None
                    else f"{c.records_then} records when it ran, {c.records_now} now; ")
            parts.append(f"`{c.folder}` ({then}{c.newer} finished since; {_progress(c)})")
        said.append(f"the grid{'s' if len(found) > 1 else ''} it reads changed: "
                    + "; ".join(parts))
    names = {c.name for c in found}
    extra = [c for c in pending or [] if c.name not in names and c.done < c.planned]
    if extra:
        said.append("it now reads " + "; ".join(f"`{c.folder}` ({_progress(c)})"
                                                for c in extra))
    incomplete = [c for c in [*found, *extra] if c.done < c.planned]
    todo = [f"`python -m mtvae grid {c.name} --profile {profile}`" for c in incomplete]
    return (f"This chapter was executed on {date}, and since then " + "; ".join(said)
            + ". Its numbers are those of that execution, not of the current code and "
            "records" + (", and will be replaced once the grid is complete" if incomplete
                         else "") + ": run " + (" and ".join(todo) + ", then " if todo else "")
            + f"`python -m mtvae regenerate --profile {profile} --only {chapter}`.")


def pending_grids(chapter: str, profile: str, root: str | Path | None = None
                  ) -> list[GridChange]:
    """The grids read by ``chapter`` whose plan under ``profile`` is not fully recorded."""
    from mtvae.experiments import get_grid
    from mtvae.experiments.grids import STAGED
    from mtvae.experiments.runner import plan

    base = Path(root) if root is not None else results_dir()
    out = []
    for g in grids_read(chapter):
        status = plan(get_grid(g, profile, base), base).status
        done = int((status == "done").sum())
        if done < len(status):
            n = len(_finished(base / f"{g}-{profile}"))
            out.append(GridChange(g, f"{g}-{profile}", None, n, 0, done, len(status),
                                  g in STAGED))
    return out


def stale_pages(chapters_dir: str | Path, root: str | Path | None = None,
                notebooks_dir: str | Path | None = None) -> dict[str, str]:
    """Per chapter of ``chapters_dir``'s manifest whose records changed, or whose source in
    ``notebooks_dir`` (default: none compared) differs from what was executed: its
    :func:`notice`."""
    path = Path(chapters_dir) / "manifest.json"
    if not path.is_file():
        return {}
    entries = json.loads(path.read_text()).get("chapters", {})
    out = {}
    for chapter, entry in entries.items():
        found = changes(chapter, entry, root)
        source = (notebooks_dir is not None
                  and source_changed(chapter, chapters_dir, notebooks_dir))
        if found or source:
            pending = (pending_grids(chapter, str(entry.get("profile", "")), root)
                       if source else None)
            out[chapter] = notice(chapter, entry, found, source, pending)
    return out
