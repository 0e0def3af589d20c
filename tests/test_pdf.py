"""The thesis PDF: builds with LaTeX, has the thesis's parts, resolves every reference.

Builds ``jupyter-book build . --builder pdflatex`` (XeLaTeX) into a temporary folder once per
session, then reads the PDF with poppler: ``pdftotext`` for the text, ``pdffonts`` for font
embedding, ``pdftoppm`` for page images that are saved for a person to look at (their folder
is listed in the pytest summary under "artifacts"). Skipped, with the packages to install,
where TeX or poppler is missing (``.ci/run`` installs them when it runs as root).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mtvae import plots

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("xelatex", "latexmk", "pdftotext", "pdffonts", "pdftoppm")
MISSING = [t for t in TOOLS if shutil.which(t) is None]

pytestmark = [
    pytest.mark.pdf,
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"the thesis PDF needs {', '.join(MISSING)}: apt-get install "
        "--no-install-recommends "
        "texlive-xetex texlive-latex-extra latexmk texlive-fonts-recommended tex-gyre "
        "poppler-utils",
    ),
]

# What the printed thesis must contain, in this order (chapter titles as LaTeX sets them).
TITLE_PAGE = ("University of Bergen", "Department of Informatics",
              "Multitask variational autoencoders", "Edvards Zakovskis",
              "Supervisors: Nello Blaser and Kristian Gundersen")
FRONT_MATTER = ("Abstract", "Contents", "List of Figures", "List of Tables")
CHAPTERS = ("Introduction", "Variational autoencoders", "Vector-quantised VAEs",
            "Multitask VAEs", "Heterogeneous data", "Auxiliary tasks", "Multimodal VAEs",
            "Hierarchical VAEs", "Methodology", "Results", "Discussion", "Bibliography",
            "Reproducibility")
PLACEHOLDERS = re.compile(r"lorem ipsum|TODO|placeholder|<Set title|projectnamenotset",
                          re.IGNORECASE)
CODE = re.compile(r"^\s*(import \w+|from mtvae|glue\(|plt\.show\(\))", re.MULTILINE)


@dataclass(frozen=True)
class PdfBuild:
    returncode: int
    log: str
    pdf: Path
    seconds: float


@pytest.fixture(scope="session")
def pdf_build(tmp_path_factory: pytest.TempPathFactory) -> PdfBuild:
    out = tmp_path_factory.mktemp("pdf")
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(REPO_ROOT),
           "--path-output", str(out), "--builder", "pdflatex"]
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep
           + os.environ.get("PATH", "")}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=1200, check=False)
    return PdfBuild(proc.returncode, proc.stdout, out / "_build" / "latex" / "thesis.pdf",
                    time.perf_counter() - started)


@pytest.fixture(scope="session")
def pdf(pdf_build: PdfBuild) -> Path:
    if pdf_build.returncode != 0 or not pdf_build.pdf.is_file():
        tail = "\n".join(pdf_build.log.splitlines()[-60:])
        pytest.fail(f"make pdf failed (exit {pdf_build.returncode}):\n{tail}")
    return pdf_build.pdf


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout


@pytest.fixture(scope="session")
def pdf_text(pdf: Path) -> str:
    return _run("pdftotext", "-layout", str(pdf), "-")


def test_pdf_builds_and_saves_page_images(pdf: Path, pdf_build: PdfBuild,
                                          artifacts: dict[str, Path]) -> None:
    pages_dir = pdf.parent.parent / "pdf-pages"
    pages_dir.mkdir(exist_ok=True)
    _run("pdftoppm", "-png", "-r", "60", str(pdf), str(pages_dir / "page"))
    images = sorted(pages_dir.glob("page-*.png"))
    artifacts["thesis PDF"] = pdf
    artifacts["thesis PDF page images"] = pages_dir
    n_pages = int(re.search(r"Pages:\s+(\d+)", _run("pdfinfo", str(pdf))).group(1))
    print(f"thesis PDF: {n_pages} pages, built in {pdf_build.seconds:.0f} s: {pdf}")
    assert len(images) == n_pages > 40


def test_pdf_has_title_page_front_matter_and_chapters_in_order(pdf_text: str) -> None:
    first_page = pdf_text.split("\f", 1)[0]
    missing = [t for t in TITLE_PAGE if t not in first_page]
    assert not missing, f"title page lacks {missing}:\n{first_page}"
    flat = re.sub(r"\s+", " ", pdf_text).lower()  # headings may be set in capitals
    position = 0
    for title in (*FRONT_MATTER, *CHAPTERS):
        found = flat.find(title.lower(), position)
        assert found >= 0, f"{title!r} is missing from the PDF, or out of order"
        position = found


def test_pdf_resolves_every_reference_and_has_no_placeholders(pdf_text: str) -> None:
    assert "??" not in pdf_text, "unresolved references (??) in the PDF"
    assert not PLACEHOLDERS.search(pdf_text), PLACEHOLDERS.search(pdf_text).group(0)
    assert not re.search(r"\{(glue|cite|numref|ref|doc)(:[a-z]+)?\}", pdf_text)


def test_pdf_shows_no_code(pdf_text: str) -> None:
    found = CODE.findall(pdf_text)
    assert not found, f"code cells reached the PDF: {found[:5]}"


def test_pdf_embeds_every_font(pdf: Path) -> None:
    rows = _run("pdffonts", str(pdf)).splitlines()[2:]
    assert rows, "pdffonts lists no fonts"
    not_embedded = [r for r in rows if r.split()[-5] != "yes"]
    assert not not_embedded, "fonts not embedded:\n" + "\n".join(not_embedded)


def test_pdf_text_width_is_the_width_figures_are_drawn_for(pdf: Path) -> None:
    """``mtvae.plots`` sizes every figure (and checks its printed font size) for this width."""
    log = pdf.with_suffix(".log").read_text(encoding="utf8", errors="replace")
    found = re.search(r"mtvae textwidth: ([\d.]+)pt", log)
    assert found, "the LaTeX preamble in _config.yml no longer reports \\textwidth"
    assert float(found.group(1)) / 72.27 == pytest.approx(plots.TEXT_WIDTH_IN, abs=0.01)


def test_pdf_numbers_appendix_tables_by_the_appendix_letter(pdf_text: str) -> None:
    appendix = re.search(r"^\s*APPENDIX\s*\n\s*\n*\s*A\s*$", pdf_text, re.MULTILINE)
    assert appendix, "no Appendix A heading in the PDF"
    captions = re.findall(r"Table ([0-9A-Z]+)\.\d+:", pdf_text[appendix.end():])
    assert captions and set(captions) == {"A"}, f"appendix tables numbered {captions}"


def test_pdf_front_matter_running_heads_name_their_own_page(pdf_text: str) -> None:
    """The running foot of each contents / list page names that list, not a chapter."""
    pages = [p.strip() for p in pdf_text.split("\f")]
    titles = ("Contents", "List of Figures", "List of Tables", "Introduction")
    starts = [next(i for i, p in enumerate(pages) if p.lower().startswith(t.lower()))
              for t in titles]
    for title, first, end in zip(titles, starts, starts[1:], strict=False):
        for page in pages[first:end]:
            foot = " ".join(w for w in page.splitlines()[-1].split()
                            if not re.fullmatch(r"[ivxlc]+", w))  # the page number
            assert not foot or foot.lower() == title.lower(), (
                f"a page of the {title} has the running foot {foot!r}")
