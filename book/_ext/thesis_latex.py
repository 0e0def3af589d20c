"""Sphinx extension for the thesis PDF: no code, and the bibliography where the book puts it.

The HTML book folds every code cell behind a toggle; the printed thesis shows no code at all.
For the LaTeX builder this removes, from the assembled doctree, the source part of each
myst-nb code cell and the cells' stderr streams (warnings and progress logs), so that only
prose, equations, figures, tables and glued numbers reach the PDF.

Sphinx's LaTeX builder gathers every citation into one ``thebibliography`` node at the very
end of the document, after the appendix, and would leave the book's bibliography page as an
empty chapter. Here that node replaces the bibliography page (``thesis_bibliography_doc``),
so the PDF has one bibliography, in the place the table of contents gives it.

LaTeX never breaks a word at an underscore, so a name such as ``breast_cancer`` in a narrow
table column ran into the next column and was clipped; in tables a break is allowed after
each underscore.
"""

from __future__ import annotations

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx


def _is_code_source(node: nodes.Node) -> bool:
    return isinstance(node, nodes.container) and (
        node.get("nb_element") == "cell_code_source" or "cell_input" in node.get("classes", [])
    )


def _is_stderr(node: nodes.Node) -> bool:
    return isinstance(node, nodes.literal_block) and "stderr" in node.get("classes", [])


def strip_code(doctree: nodes.document) -> None:
    for node in list(doctree.findall(lambda n: _is_code_source(n) or _is_stderr(n))):
        node.parent.remove(node)


def place_bibliography(doctree: nodes.document, docname: str) -> None:
    from sphinx.builders.latex.nodes import thebibliography

    bib = next(iter(doctree.findall(thebibliography)), None)
    page = next((n for n in doctree.findall(addnodes.start_of_file)
                 if n.get("docname") == docname), None)
    if bib is None or page is None:
        return
    bib.parent.remove(bib)
    page.children = []
    page += bib


def breakable_underscores(doctree: nodes.document) -> None:
    """Allow a line break after every ``_`` in the text of tables (LaTeX only)."""
    for table in list(doctree.findall(nodes.table)):
        for text in list(table.findall(nodes.Text)):
            if "_" not in text or isinstance(text.parent, nodes.raw):
                continue
            pieces: list[nodes.Node] = []
            for i, part in enumerate(str(text).split("_")):
                if i:
                    pieces += [nodes.Text("_"), nodes.raw("", r"\allowbreak{}", format="latex")]
                if part:
                    pieces.append(nodes.Text(part))
            text.parent.replace(text, pieces)


def on_resolved(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    if app.builder.format != "latex":
        return
    strip_code(doctree)
    breakable_underscores(doctree)
    place_bibliography(doctree, app.config.thesis_bibliography_doc)


def setup(app: Sphinx) -> dict[str, object]:
    app.add_config_value("thesis_bibliography_doc", "book/bibliography", "env")
    app.connect("doctree-resolved", on_resolved)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
