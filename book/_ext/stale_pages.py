"""Sphinx extension: a page executed on records or a source that has changed since says so.

The book renders the stored outputs of each chapter (``book/chapters``) and never runs code.
When a grid the chapter reads has changed since its execution, or its source
(``notebooks/``) differs from what was executed, the page would show an earlier protocol's
numbers as if they were current. :func:`mtvae.staleness.stale_pages` finds such pages from
the regeneration manifest, the run records and the sources; this puts its notice in a
warning box under the page's title, in the HTML book and in the PDF. The pages whose notice
changed since the last build are read again, so an incremental build does not keep an
outdated box (or lose a due one).
"""

from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

CHAPTERS = "book/chapters"
BACKQUOTED = re.compile(r"`([^`]+)`")


def _notices(app: Sphinx) -> dict[str, str]:
    from mtvae.staleness import stale_pages

    src = Path(app.srcdir)
    return {f"{CHAPTERS}/{stem}": text
            for stem, text in stale_pages(src / CHAPTERS, notebooks_dir=src / "notebooks").items()}


def mark_outdated(app: Sphinx, env: BuildEnvironment, added: set[str], changed: set[str],
                  removed: set[str]) -> list[str]:
    """Store this build's notices on ``env``; the pages whose notice differs from the last
    build's are read again."""
    before: dict[str, str] = getattr(env, "mtvae_stale", {})
    now = _notices(app)
    env.mtvae_stale = now  # type: ignore[attr-defined]
    return sorted(d for d in set(before) | set(now)
                  if before.get(d) != now.get(d) and d in env.found_docs)


def paragraph(text: str) -> nodes.paragraph:
    """``text`` as a paragraph, each backquoted part as inline code."""
    para = nodes.paragraph()
    for i, part in enumerate(BACKQUOTED.split(text)):
        if part:
            para += nodes.literal(part, part) if i % 2 else nodes.Text(part)
    return para


def add_notice(app: Sphinx, doctree: nodes.document) -> None:
    text = getattr(app.env, "mtvae_stale", {}).get(app.env.docname)
    section = next(iter(doctree.findall(nodes.section)), None)
    if not text or section is None:
        return
    box = nodes.admonition(classes=["warning", "mtvae-stale"])
    box += nodes.title("", "Out of date")
    box += paragraph(text)
    titles = [i for i, child in enumerate(section.children) if isinstance(child, nodes.title)]
    section.insert(titles[0] + 1 if titles else 0, box)


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("env-get-outdated", mark_outdated)
    app.connect("doctree-read", add_notice)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
