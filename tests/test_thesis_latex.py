"""The PDF extension's doctree changes, on hand-made doctrees (no LaTeX run needed)."""

import sys
from pathlib import Path

import pytest

docutils = pytest.importorskip("docutils")
from docutils import nodes  # noqa: E402
from docutils.frontend import get_default_settings  # noqa: E402
from docutils.utils import new_document  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))
import thesis_latex  # noqa: E402


def _doc_with_table(cell_text: str, prose: str) -> nodes.document:
    doc = new_document("test", get_default_settings())
    entry = nodes.entry("", nodes.paragraph("", cell_text))
    table = nodes.table("", nodes.tgroup("", nodes.tbody("", nodes.row("", entry))))
    doc += [nodes.paragraph("", prose), table]
    return doc


def test_underscores_in_tables_become_break_points_and_prose_is_untouched():
    doc = _doc_with_table("breast_cancer_x", "breast_cancer in prose")
    thesis_latex.breakable_underscores(doc)
    cell = next(iter(doc.findall(nodes.entry)))
    raws = list(cell.findall(nodes.raw))
    assert len(raws) == 2 and all(r.astext() == r"\allowbreak{}" for r in raws)
    assert all(r["format"] == "latex" for r in raws)
    # the visible text is unchanged
    assert "".join(t for t in cell.findall(nodes.Text) if not isinstance(t.parent, nodes.raw)) \
        == "breast_cancer_x"
    prose = doc.children[0]
    assert prose.astext() == "breast_cancer in prose" and not list(prose.findall(nodes.raw))


def test_text_without_underscores_is_left_alone():
    doc = _doc_with_table("wine", "wine")
    thesis_latex.breakable_underscores(doc)
    assert not list(doc.findall(nodes.raw))
