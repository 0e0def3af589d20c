"""Regenerate the book's executed chapters: jupytext -> papermill -> ``book/chapters``.

Each ``notebooks/NN_name.md`` (MyST text notebook, the only source of truth) is converted
with jupytext and executed by papermill with the parameters ``profile``, ``device`` and
``seed`` into ``<output-dir>/NN_name.ipynb``. A chapter is executed into a temporary file
first and moved into place only when it succeeded, so a failure never leaves a broken
chapter behind. After each chapter the manifest (``manifest.json`` beside the chapters) is
updated: git commit and dirty flag, profile, device, package versions and the wall time of
every chapter, with whether that execution trained anything (``cold``) and the latest cold
and cached wall times kept apart. With an output folder other than ``book/chapters`` every
write (records, checkpoints, logs) stays under that folder. Heavy work inside chapters goes
through cached runs and checkpoints, so an interrupted regeneration continues where it
stopped when it is started again; ``max_minutes`` stops it on purpose at a run boundary.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mtvae.device import DEVICES, device_name, resolve_device
from mtvae.errors import DEADLINE_ENV, MTVAEError, TimeLimitReached, check_choice, check_deadline
from mtvae.experiments.carry import SUPERSEDED
from mtvae.profiles import get_profile
from mtvae.provenance import git_state, package_versions
from mtvae.results import (
    cache_dir,
    compute_seconds,
    files_written_since,
    logs_dir,
    outputs_under,
    repo_root,
    results_dir,
    write_record,
)
from mtvae.staleness import snapshot

CHAPTER_RE = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.md$")
PART_RE = re.compile(r"^\d\d_\d_")  # a page of a chapter split over several sources


@dataclass(frozen=True)
class Chapter:
    number: str
    source: Path

    @property
    def stem(self) -> str:
        return self.source.stem


def discover(notebooks: Path) -> list[Chapter]:
    """All ``NN_name.md`` chapter sources, in order."""
    if not notebooks.is_dir():
        raise MTVAEError(f"notebook folder {notebooks} does not exist; run from the repo root")
    found = [Chapter(m.group(1), p) for p in sorted(notebooks.iterdir())
             if (m := CHAPTER_RE.match(p.name))]
    if not found:
        raise MTVAEError(f"no chapter sources NN_name.md in {notebooks}")
    return found


def select(chapters: list[Chapter], only: list[str] | None) -> list[Chapter]:
    """Chapters whose number (``01``) or stem (``01_vaes``) is listed in ``only``."""
    if not only:
        return chapters
    valid = {c.number for c in chapters} | {c.stem for c in chapters}
    keys = {item: item.zfill(2) if item.isdigit() else item for item in only}
    for item, key in keys.items():
        if key not in valid:
            raise MTVAEError(f"unknown chapter {item!r}; valid chapters are: "
                             + ", ".join(dict.fromkeys(c.number for c in chapters))
                             + " (or a page's name, e.g. " + chapters[-1].stem + ")")
    wanted = set(keys.values())
    return [c for c in chapters if c.number in wanted or c.stem in wanted]


def _mark_injected_parameters_removed(path: Path) -> None:
    """Hide papermill's injected-parameters cell from readers (myst-nb ``remove-cell``)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(nb, path)


def execute_chapter(chapter: Chapter, out_dir: Path, parameters: dict[str, object],
                    cwd: Path, timeout: int | None = None) -> float:
    """Execute one chapter into ``out_dir``; returns its wall time in seconds."""
    import jupytext
    import papermill as pm

    nb = jupytext.read(chapter.source)
    if not any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
        raise MTVAEError(
            f"chapter {chapter.stem} has no cell tagged 'parameters'; add one that sets "
            "profile, device and seed (see notebooks/01_vaes.md)"
        )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    with tempfile.TemporaryDirectory(prefix="mtvae-regen-") as tmp:
        src = Path(tmp) / f"{chapter.stem}.ipynb"
        dst = Path(tmp) / f"{chapter.stem}.out.ipynb"
        jupytext.write(nb, src, fmt="ipynb")
        started = time.perf_counter()
        try:
            pm.execute_notebook(str(src), str(dst), parameters=parameters,
                                kernel_name="python3", cwd=str(cwd), progress_bar=False,
                                log_output=False, execution_timeout=timeout)
        except pm.PapermillExecutionError as err:
            if err.ename == "TimeLimitReached":
                raise TimeLimitReached(f"chapter {chapter.stem}: {err.evalue}") from None
            raise MTVAEError(
                f"chapter {chapter.stem} failed in cell {err.exec_count}: {err.ename}: "
                f"{err.evalue}".strip()
            ) from None
        wall = time.perf_counter() - started
        _mark_injected_parameters_removed(dst)
        out_dir.mkdir(parents=True, exist_ok=True)
        os.replace(dst, out_dir / f"{chapter.stem}.ipynb")
    return wall


GRID_CHAPTER = "05"  # the chapter that reports the experiment grids


def record_compute(results: Path, chapter: Chapter, profile: str) -> dict[str, float]:
    """Run records a chapter read (``results/chNN-<profile>/``) and the compute they took.

    A re-executed chapter loads finished runs instead of repeating them, so its wall time
    alone would hide what the numbers cost; the records keep each run's own time. A chapter
    split over several pages (``03_multitask_vaes``, ``03_1_...``) shares one records folder,
    which is counted once, on the page without a part number.
    """
    if PART_RE.match(chapter.stem):
        return {"run_records": 0, "run_records_seconds": 0.0}
    folders = [results / f"ch{chapter.number}-{profile}"]
    if chapter.number == GRID_CHAPTER:  # the results chapter reads the named grids too
        from mtvae.experiments import available_grids

        folders += [results / f"{name}-{profile}" for name in available_grids()]
    paths = [p for f in folders if f.is_dir() for p in f.rglob("*.json")
             if SUPERSEDED not in p.relative_to(f).parts[:-1]]  # replaced runs: never read
    records = [json.loads(p.read_text()) for p in paths]
    return {"run_records": len(records),
            "run_records_seconds": round(compute_seconds(records), 1)}


def load_manifest(path: Path) -> dict[str, object]:
    if path.exists():
        with open(path) as fh:
            return json.load(fh)
    return {"chapters": {}}


def check_output_dir(output_dir: str | os.PathLike[str]) -> Path:
    """``output_dir`` as a Path, or a clear error when it exists and is not a folder."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise MTVAEError(f"--output-dir {out} is a file, not a folder; pass a folder (it is "
                         "created if missing), e.g. --output-dir /tmp/mtvae-check")
    return out


def is_book_dir(out_dir: Path) -> bool:
    """True when ``out_dir`` is the book's own chapter folder (``book/chapters``)."""
    root = repo_root() or Path.cwd()
    return out_dir.resolve() == (root / "book" / "chapters").resolve()


def timing_entry(previous: dict[str, object], wall: float, cold: bool,
                 profile: str, device: str) -> dict[str, object]:
    """Wall-time fields of a manifest entry: this execution's ``wall_seconds`` and whether
    it was ``cold`` (it trained something), plus the latest cold and cached (nothing
    trained) wall times of this chapter for the same profile and device."""
    same = previous.get("profile") == profile and previous.get("device") == device
    out: dict[str, object] = {"wall_seconds": round(wall, 2), "cold": cold}
    for key in ("cold_wall_seconds", "cached_wall_seconds"):
        if same and key in previous:
            out[key] = previous[key]
    out["cold_wall_seconds" if cold else "cached_wall_seconds"] = round(wall, 2)
    return out


def regenerate(
    profile: str = "smoke",
    device: str = "auto",
    only: list[str] | None = None,
    output_dir: str | os.PathLike[str] = "book/chapters",
    notebooks: str | os.PathLike[str] = "notebooks",
    seed: int = 0,
    timeout: int | None = None,
    max_minutes: float | None = None,
) -> dict[str, object]:
    """Execute the selected chapters and update the manifest; returns the manifest.

    With ``max_minutes`` no new training run (and no new chapter) starts after that many
    minutes: the chapter in progress stops at a run boundary and keeps its previous
    executed version, finished runs stay recorded, and the manifest's ``left`` lists the
    chapters still to execute; the same call again continues from there.

    With an ``output_dir`` other than the book's ``book/chapters``, every write (records,
    checkpoints, logs) goes under it (:func:`mtvae.results.outputs_under`), so a quick
    check leaves the checkout clean.
    """
    get_profile(profile)
    if max_minutes is not None and not max_minutes > 0:
        raise MTVAEError(f"--max-minutes must be > 0, got {max_minutes!r}")
    if max_minutes is not None:
        os.environ[DEADLINE_ENV] = str(time.time() + 60 * max_minutes)
    check_choice("device", device, DEVICES)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)
                                or timeout < 1):
        raise MTVAEError(f"timeout must be a positive number of seconds per cell, got "
                         f"{timeout!r}; leave it out for no limit")
    out_dir = check_output_dir(output_dir)
    if is_book_dir(out_dir):
        return _regenerate(profile, device, only, out_dir, notebooks, seed, timeout)
    with outputs_under(out_dir):
        return _regenerate(profile, device, only, out_dir, notebooks, seed, timeout)


def _regenerate(profile: str, device: str, only: list[str] | None, out_dir: Path,
                notebooks: str | os.PathLike[str], seed: int,
                timeout: int | None) -> dict[str, object]:
    dev = resolve_device(device)
    root = Path.cwd()
    chapters = select(discover(Path(notebooks)), only)
    manifest_path = out_dir / "manifest.json"
    logs = logs_dir()
    logs.mkdir(parents=True, exist_ok=True)
    os.environ["MTVAE_BATCH"] = "1"
    code_state = git_state()  # the code that runs, before any chapter output is rewritten
    for k, chapter in enumerate(chapters):
        os.environ["MTVAE_LOG"] = str(logs / f"{chapter.stem}.log")
        try:
            check_deadline(f"chapter {chapter.stem}")
            print(f"[mtvae] executing {chapter.stem} (profile={profile}, "
                  f"device={dev.type}) ...", flush=True)
            records_before = record_compute(results_dir(), chapter, profile)["run_records"]
            since = time.time()
            wall = execute_chapter(chapter, out_dir, {"profile": profile, "device": device,
                                                      "seed": seed}, root, timeout)
        except TimeLimitReached as err:
            left = [c.stem for c in chapters[k:]]
            print(f"[mtvae] stopped at the time limit ({err}); left: {', '.join(left)}. "
                  "Run the same command again to continue.", flush=True)
            os.environ.pop(DEADLINE_ENV, None)
            manifest = load_manifest(manifest_path)
            manifest["left"] = left
            return manifest
        print(f"[mtvae] {chapter.stem} done in {wall:.1f} s", flush=True)
        computed = record_compute(results_dir(), chapter, profile)
        trained = {"runs_recorded": computed["run_records"] - records_before,
                   "checkpoints_written": files_written_since(cache_dir(), since)}
        manifest = load_manifest(manifest_path)
        previous = manifest["chapters"].get(chapter.stem, {})
        manifest["chapters"][chapter.stem] = {
            "profile": profile, "device": dev.type, "device_name": device_name(dev),
            **timing_entry(previous, wall, any(trained.values()), profile, dev.type),
            **trained, "seed": seed,
            "executed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git": code_state, "grids": snapshot(chapter.stem, profile, results_dir()),
        } | computed
        manifest["updated_at"] = manifest["chapters"][chapter.stem]["executed_at"]
        manifest["git"] = code_state
        manifest["versions"] = package_versions()
        write_record(manifest_path, manifest)
    os.environ.pop(DEADLINE_ENV, None)
    return load_manifest(manifest_path)
