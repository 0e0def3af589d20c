"""The Jupyter Book builds warning-free (-W) and is self-contained (no CDN scripts)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:
    from conftest import BookBuild

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.book, pytest.mark.slow]

REMOTE = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)


def toc_docnames() -> list[str]:
    """Every document listed in _toc.yml (root, chapters, sections), without suffix."""
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text(encoding="utf8"))
    names = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries or []:
            if "file" in entry:
                names.append(entry["file"])
            walk(entry.get("sections", []))
            walk(entry.get("chapters", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    walk(toc.get("chapters", []))
    return [str(Path(n).with_suffix("")) for n in names]


class _AssetCollector(HTMLParser):
    """Collects the URLs a page would fetch on load: scripts, stylesheets, images, ..."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.links: list[str] = []
        self.media: list[str] = []
        self.anchors: list[str] = []
        self.math_elements = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        elif tag == "link" and a.get("href"):
            rel = a.get("rel", "").lower()
            if any(r in rel for r in ("stylesheet", "preload", "modulepreload", "icon")):
                self.links.append(a["href"])
        elif tag in {"img", "iframe", "video", "audio", "source", "embed"} and a.get("src"):
            self.media.append(a["src"])
        elif tag == "a" and a.get("href"):
            self.anchors.append(a["href"])
        if tag in {"span", "div"} and "math" in a.get("class", "").split():
            self.math_elements += 1


def parse(page: Path) -> _AssetCollector:
    collector = _AssetCollector()
    collector.feed(page.read_text(encoding="utf8"))
    return collector


def html_pages(html_dir: Path) -> list[Path]:
    return sorted(p for p in html_dir.rglob("*.html") if "_static" not in p.parts)


def test_build_is_warning_free(book_build: BookBuild) -> None:
    assert book_build.returncode == 0, (
        f"jupyter-book build -W failed (exit {book_build.returncode}):\n{book_build.log_tail()}"
    )
    problems = [
        line
        for line in book_build.log.splitlines()
        if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line)
    ]
    assert not problems, "build log has warnings/errors:\n" + "\n".join(problems)
    print(f"book built in {book_build.seconds:.1f} s into {book_build.html_dir}")


def test_every_toc_page_is_built(built_html: Path) -> None:
    assert (built_html / "index.html").is_file()
    missing = [d for d in toc_docnames() if not (built_html / f"{d}.html").is_file()]
    assert not missing, f"pages listed in _toc.yml but not built: {missing}"


def test_no_remote_scripts_or_styles(built_html: Path) -> None:
    """Every script, stylesheet and image is served from the build itself (works offline)."""
    offenders = []
    for page in html_pages(built_html):
        assets = parse(page)
        for url in assets.scripts + assets.links + assets.media:
            if REMOTE.match(url):
                offenders.append(f"{page.relative_to(built_html)}: {url}")
    assert not offenders, "pages load remote resources:\n" + "\n".join(offenders)


def test_local_links_resolve(built_html: Path) -> None:
    """Every relative link, script, stylesheet and image points at a file in the build."""
    broken = []
    for page in html_pages(built_html):
        assets = parse(page)
        for url in assets.anchors + assets.scripts + assets.links + assets.media:
            if REMOTE.match(url) or re.match(r"^(#|mailto:|data:|javascript:)", url):
                continue
            path = url.split("#")[0].split("?")[0]
            if path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(built_html)}: {url}")
    assert not broken, "broken local links:\n" + "\n".join(broken)


def test_mathjax_is_served_locally(built_html: Path) -> None:
    """Pages with math load MathJax from _static/mathjax, and that file exists."""
    assert (built_html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    pages_with_math = 0
    for page in html_pages(built_html):
        assets = parse(page)
        mathjax = [s for s in assets.scripts if "mathjax" in s.lower()]
        for src in mathjax:
            assert not REMOTE.match(src), f"{page.name}: MathJax from a CDN: {src}"
            target = (page.parent / src.split("?")[0]).resolve()
            assert target.is_file(), f"{page.name}: MathJax script {src} is not in the build"
            assert "_static/mathjax/" in target.as_posix()
        if assets.math_elements:
            pages_with_math += 1
            assert mathjax, f"{page.name} has math but does not load MathJax"
    assert pages_with_math > 0, "no page contains math: is dollarmath enabled?"


def test_chapters_render_their_outputs(built_html: Path) -> None:
    """Executed chapters carry their outputs into the book (figures, glued values)."""
    chapters = [d for d in toc_docnames() if d.startswith("book/chapters/")]
    assert chapters, "no chapters in _toc.yml"
    for doc in chapters:
        text = (built_html / f"{doc}.html").read_text(encoding="utf8")
        assert "cell_output" in text or "pasted-" in text, f"{doc}: no rendered outputs"


def test_bibliography_renders(built_html: Path) -> None:
    text = (built_html / "book" / "bibliography.html").read_text(encoding="utf8")
    assert text.count('role="doc-biblioentry"') + text.count("citation") > 0
