"""The chapter sources: structure checks and an nbval run of every chapter (smoke profile).

The sources carry no outputs, so for cells tagged ``nbval-check-output`` the expected
output is taken from the committed, executed chapter: a deterministic cell must print in
CI exactly what the book shows.
"""

import os
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.md"))


def _tags(cell):
    return cell.metadata.get("tags", [])


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_source_structure(source):
    text = source.read_text()
    assert "cell_metadata_filter: -all" not in text, "that filter drops the parameters tag"
    nb = jupytext.read(source)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    params = [c for c in nb.cells if "parameters" in _tags(c)]
    assert len(params) == 1, "exactly one cell must be tagged 'parameters'"
    for line in ('profile = "smoke"', 'device = "auto"', "seed = 0"):
        assert line in params[0].source
    assert "remove-cell" in _tags(params[0])
    executed = REPO / "book" / "chapters" / f"{source.stem}.ipynb"
    assert executed.exists(), f"run `python -m mtvae regenerate --only {source.stem[:2]}`"
    toc = (REPO / "_toc.yml").read_text()
    assert f"book/chapters/{source.stem}" in toc


def _toc_files(entries):
    for entry in entries or []:
        if "file" in entry:
            yield entry["file"]
        yield from _toc_files(entry.get("sections"))


def test_every_toc_chapter_has_a_source():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"], *(f for part in toc["parts"] for f in _toc_files(part["chapters"]))]
    for f in files:
        if f.startswith("book/chapters/"):
            assert (REPO / "notebooks" / f"{Path(f).name}.md").exists(), f


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_one_code_visibility_rule_and_captioned_figures(source):
    """Every code cell is either plumbing (``remove-cell``) or shows its output with the code
    folded (``hide-input``); a cell that draws a figure gives it a caption and a ``fig-`` name
    (myst-nb ``mystnb.figure`` metadata), so the figure is numbered and can be referenced.

    Figures are shown with ``plots.show(fig)``, never ``plt.show()``: it refuses a figure whose
    text would print below 8 pt at the thesis text width, so every execution of a chapter (the
    nbval run below, ``mtvae regenerate``) checks every figure it draws; and a chapter that
    draws figures sets the house style (``plots.set_style()``) that they are sized for."""
    cells = [c for c in jupytext.read(source).cells if c.cell_type == "code"]
    draws = any("plots.show(" in c.source for c in cells)
    assert not draws or any("plots.set_style()" in c.source for c in cells), (
        "call plots.set_style() in the setup cell")
    for i, cell in enumerate(cells):
        tags = _tags(cell)
        assert "remove-input" not in tags, f"cell {i}: use hide-input, not remove-input"
        assert "remove-cell" in tags or "hide-input" in tags, f"cell {i}: tag it hide-input"
        assert "plt.show(" not in cell.source, (
            f"cell {i}: show figures with plots.show(fig), which checks their printed text size")
        if "plots.show(" in cell.source:
            figure = cell.metadata.get("mystnb", {}).get("figure", {})
            assert figure.get("caption") and str(figure.get("name", "")).startswith("fig-"), (
                f"cell {i} draws a figure without mystnb.figure caption and fig- name")


def _with_reference_outputs(source: Path) -> nbformat.NotebookNode:
    nb = jupytext.read(source)
    executed = REPO / "book" / "chapters" / f"{source.stem}.ipynb"
    reference = {}
    if executed.exists():
        for cell in nbformat.read(executed, as_version=4).cells:
            if cell.cell_type == "code":
                reference[cell.source.strip()] = cell.outputs
    for cell in nb.cells:
        if cell.cell_type == "code" and "nbval-check-output" in _tags(cell):
            cell.outputs = reference.get(cell.source.strip(), [])
            cell.execution_count = 1  # nbval only compares cells marked as run
            assert cell.outputs, f"{source.name}: no stored output for a checked cell"
    return nb


@pytest.mark.nbval
@pytest.mark.slow
def test_chapters_execute_with_nbval(tmp_path):
    work = tmp_path / "nb"
    work.mkdir()
    for source in SOURCES:
        nbformat.write(_with_reference_outputs(source), work / f"{source.stem}.ipynb")
    env = {**os.environ, "MTVAE_BATCH": "1", "MTVAE_RESULTS": str(tmp_path / "results"),
           "MTVAE_CACHE": str(tmp_path / "cache"), "MTVAE_LOG": str(tmp_path / "train.log"),
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(work), "--nbval-cell-timeout", "600", str(work)],
        cwd=work, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout
