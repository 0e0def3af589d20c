"""Sphinx extension: figures and tables of an appendix are numbered A.1, A.2, … in HTML.

The appendix sits in an unnumbered part of the table of contents, so Sphinx numbers its tables
with one counter shared by every unnumbered page ("Table 1", "Table 2"), next to Chapter 1's
"Table 1.1". After Sphinx has assigned the numbers, this gives each page listed in
``thesis_appendix_docs`` its letter (A, B, … in that order) and numbers its figures and tables
from 1 within it, as the PDF does (the LaTeX preamble in ``_config.yml``). ``{numref}``
references read the same numbers, since they come from the same table.
"""

from __future__ import annotations

from string import ascii_uppercase

from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment


def letter_appendix_numbers(app: Sphinx, env: BuildEnvironment) -> list[str]:
    for letter, docname in zip(ascii_uppercase, app.config.thesis_appendix_docs, strict=False):
        for numbers in env.toc_fignumbers.get(docname, {}).values():
            for i, figure_id in enumerate(numbers, start=1):  # dicts keep document order
                numbers[figure_id] = (letter, i)  # type: ignore[assignment]  # joined by str()
    return []


def setup(app: Sphinx) -> dict[str, object]:
    app.add_config_value("thesis_appendix_docs", [], "env")
    # after Sphinx's own toctree collector (priority 500) has assigned the numbers
    app.connect("env-get-updated", letter_appendix_numbers, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
