"""Regenerate the book's executed chapters: jupytext -> papermill -> ``book/chapters``.

Each ``notebooks/NN_name.md`` (MyST text notebook, the only source of truth) is converted
with jupytext and executed by papermill with the parameters ``profile``, ``device`` and
``seed`` into ``<output-dir>/NN_name.ipynb``. A chapter is executed into a temporary file
first and moved into place only when it succeeded, so a failure never leaves a broken
chapter behind. After each chapter the manifest (``manifest.json`` beside the chapters) is
updated: git commit and dirty flag, profile, device, package versions and the wall time of
every chapter. Heavy work inside chapters goes through cached runs and checkpoints, so an
interrupted regeneration continues where it stopped when it is started again.
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
from mtvae.errors import MTVAEError, check_choice
from mtvae.profiles import get_profile
from mtvae.provenance import git_state, package_versions
from mtvae.results import results_dir, write_record

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
    seconds, count = 0.0, 0
    paths = [p for f in folders if f.is_dir() for p in f.rglob("*.json")]
    for path in paths:
        with open(path) as fh:
            seconds += float(json.load(fh).get("timings", {}).get("seconds", 0.0))
        count += 1
    return {"run_records": count, "run_records_seconds": round(seconds, 1)}


def load_manifest(path: Path) -> dict[str, object]:
    if path.exists():
        with open(path) as fh:
            return json.load(fh)
    return {"chapters": {}}


def regenerate(
    profile: str = "smoke",
    device: str = "auto",
    only: list[str] | None = None,
    output_dir: str | os.PathLike[str] = "book/chapters",
    notebooks: str | os.PathLike[str] = "notebooks",
    seed: int = 0,
    timeout: int | None = None,
) -> dict[str, object]:
    """Execute the selected chapters and update the manifest; returns the manifest."""
    get_profile(profile)
    check_choice("device", device, DEVICES)
    dev = resolve_device(device)
    root = Path.cwd()
    out_dir = Path(output_dir)
    chapters = select(discover(Path(notebooks)), only)
    manifest_path = out_dir / "manifest.json"
    logs = root / ".cache" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    os.environ["MTVAE_BATCH"] = "1"
    code_state = git_state()  # the code that runs, before any chapter output is rewritten
    for chapter in chapters:
        os.environ["MTVAE_LOG"] = str(logs / f"{chapter.stem}.log")
        print(f"[mtvae] executing {chapter.stem} (profile={profile}, device={dev.type}) ...",
              flush=True)
        wall = execute_chapter(chapter, out_dir, {"profile": profile, "device": device,
                                                  "seed": seed}, root, timeout)
        print(f"[mtvae] {chapter.stem} done in {wall:.1f} s", flush=True)
        manifest = load_manifest(manifest_path)
        manifest["chapters"][chapter.stem] = {
            "profile": profile, "device": dev.type, "device_name": device_name(dev),
            "wall_seconds": round(wall, 2), "seed": seed,
            "executed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git": code_state,
        } | record_compute(results_dir(), chapter, profile)
        manifest["updated_at"] = manifest["chapters"][chapter.stem]["executed_at"]
        manifest["git"] = code_state
        manifest["versions"] = package_versions()
        write_record(manifest_path, manifest)
    return load_manifest(manifest_path)
