"""Sphinx extension for the thesis PDF: no code, and the bibliography where the book puts it.

The HTML book folds every code cell behind a toggle; the printed thesis shows no code at all.
For the LaTeX builder this removes, from the assembled doctree, the source part of each
myst-nb code cell and the cells' stderr streams (warnings and progress logs), so that only
prose, equations, figures, tables and glued numbers reach the PDF.

Sphinx's LaTeX builder gathers every citation into one ``thebibliography`` node at the very
end of the document, after the appendix, and would leave the book's bibliography page as an
empty chapter. Here that node replaces the bibliography page (``thesis_bibliography_doc``),
so the PDF has one bibliography, in the place the table of contents gives it.
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


def on_resolved(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    if app.builder.format != "latex":
        return
    strip_code(doctree)
    place_bibliography(doctree, app.config.thesis_bibliography_doc)


def setup(app: Sphinx) -> dict[str, object]:
    app.add_config_value("thesis_bibliography_doc", "book/bibliography", "env")
    app.connect("doctree-resolved", on_resolved)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
