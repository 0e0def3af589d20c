"""A page executed on records or a source that changed since is found and says so."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import jupytext
import nbformat
import pytest
from docutils import nodes

from mtvae.experiments import get_grid
from mtvae.staleness import (
    changes,
    grids_read,
    notice,
    snapshot,
    source_changed,
    stale_pages,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _record(folder: Path, name: str, finished: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(
        {"id": name, "config": {}, "metrics": {}, "timings": {"finished": finished}}))


def _entry(executed_at: str, **extra: object) -> dict[str, object]:
    return {"profile": "smoke", "executed_at": executed_at, "wall_seconds": 60.0, **extra}


def test_grids_read_follow_the_chapter_numbers():
    assert grids_read("03_4_hierarchical") == ["hier"]
    assert grids_read("01_vaes") == ["beta"]
    assert set(grids_read("05_results")) == {"tables", "aux", "multimodal", "hier", "vqhead"}
    assert grids_read("03_multitask_vaes") == []  # "03_1" etc. name pages, not the chapter
    assert grids_read("06_discussion") == []


def test_records_finished_after_the_execution_make_a_page_stale(tmp_path):
    folder = tmp_path / "hier-smoke"
    _record(folder, "a", "2026-12-01T10:00:00Z")
    entry = _entry("2026-12-01T12:00:00Z")
    assert changes("03_4_hierarchical", entry, tmp_path) == []
    _record(folder, "b", "2026-12-01T13:00:00Z")
    (found,) = changes("03_4_hierarchical", entry, tmp_path)
    planned = len(get_grid("hier", "smoke", tmp_path).runs())
    assert (found.name, found.folder, found.records_then, found.records_now, found.newer) == (
        "hier", "hier-smoke", None, 2, 1)
    assert found.done == 0 and found.planned == planned  # the fake records are no planned run


def test_the_snapshot_also_sees_records_that_were_moved_away(tmp_path):
    folder = tmp_path / "hier-smoke"
    _record(folder, "a", "2026-12-01T10:00:00Z")
    _record(folder, "b", "2026-12-01T11:00:00Z")
    entry = _entry("2026-12-01T12:00:00Z",
                   grids=snapshot("03_4_hierarchical", "smoke", tmp_path))
    assert entry["grids"] == {"hier": {"records": 2, "latest": "2026-12-01T11:00:00Z"}}
    assert changes("03_4_hierarchical", entry, tmp_path) == []
    (folder / "b.json").rename(tmp_path / "b.json")  # superseded: no record is newer
    (found,) = changes("03_4_hierarchical", entry, tmp_path)
    assert (found.records_then, found.records_now, found.newer) == (2, 1, 0)


def test_the_notice_names_what_changed_and_the_commands(tmp_path):
    _record(tmp_path / "hier-smoke", "b", "2026-12-01T13:00:00Z")
    entry = _entry("2026-12-01T12:00:00Z")
    text = notice("03_4_hierarchical", entry, changes("03_4_hierarchical", entry, tmp_path))
    assert "executed on 01 December 2026, 11:59 UTC" in text  # the start: end less wall time
    assert "`hier-smoke` (1 finished since; 0 of" in text
    assert text.endswith("run `python -m mtvae grid hier --profile smoke`, then "
                         "`python -m mtvae regenerate --profile smoke --only "
                         "03_4_hierarchical`.")


def _source(folder: Path, prose: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "01_tiny.md"
    path.write_text(textwrap.dedent(f"""\
        ---
        jupytext:
          text_representation: {{extension: .md, format_name: myst}}
        kernelspec: {{display_name: Python 3, language: python, name: python3}}
        ---

        # Tiny

        {prose}

        ```{{code-cell}} ipython3
        x = 1
        ```
        """))
    return path


def test_a_revised_source_prose_or_code_makes_a_page_stale(tmp_path):
    src, out = tmp_path / "notebooks", tmp_path / "chapters"
    out.mkdir()
    nb = jupytext.read(_source(src, "Some prose."))
    injected = nbformat.v4.new_code_cell("profile = 'full'",
                                         metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(1, injected)  # papermill's cell is not part of the source
    nbformat.write(nb, out / "01_tiny.ipynb")
    assert not source_changed("01_tiny", out, src)
    _source(src, "Revised prose.")
    assert source_changed("01_tiny", out, src)
    assert not source_changed("02_missing", out, src)

    (out / "manifest.json").write_text(json.dumps(
        {"chapters": {"01_tiny": _entry("2026-12-01T12:00:00Z")}}))
    pages = stale_pages(out, root=tmp_path / "results", notebooks_dir=src)
    assert list(pages) == ["01_tiny"]
    assert "its source (`notebooks/01_tiny.md`) has been revised" in pages["01_tiny"]
    assert "it now reads `beta-smoke` (0 of" in pages["01_tiny"]  # and its grid is pending
    assert stale_pages(out, root=tmp_path / "results") == {}  # sources not compared


def _extension():
    spec = importlib.util.spec_from_file_location(
        "stale_pages", REPO_ROOT / "book" / "_ext" / "stale_pages.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_box_sets_commands_as_code():
    para = _extension().paragraph("run `python -m mtvae grid hier`, then read.")
    assert [type(n) for n in para.children] == [nodes.Text, nodes.literal, nodes.Text]
    assert para.children[1].astext() == "python -m mtvae grid hier"


@pytest.mark.book
def test_the_book_marks_exactly_the_stale_pages(built_html: Path):
    """Each page the staleness check finds carries the box, and no other page does."""
    expected = set(stale_pages(REPO_ROOT / "book" / "chapters",
                               notebooks_dir=REPO_ROOT / "notebooks"))
    marked = {p.stem for p in (built_html / "book" / "chapters").glob("*.html")
              if "mtvae-stale" in p.read_text(encoding="utf8")}
    assert marked == expected


def test_the_compute_a_chapter_read_leaves_superseded_records_out(tmp_path):
    """A replaced run (``superseded/``) is read by no chapter, so it is not counted as read."""
    from mtvae.regenerate import Chapter, record_compute
    from mtvae.results import write_record

    for sub, seconds in (("", 30.0), ("superseded", 90.0)):
        write_record(tmp_path / "ch01-full" / sub / f"r{seconds:.0f}.json",
                     {"id": "r", "config": {}, "timings": {"seconds": seconds}})
    got = record_compute(tmp_path, Chapter("01", Path("01_vaes.md")), "full")
    assert got == {"run_records": 1, "run_records_seconds": 30.0}
