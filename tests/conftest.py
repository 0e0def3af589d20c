"""Shared pytest configuration for mtvae: test markers and the session-wide book build.

Markers (select with ``-m``, e.g. ``pytest -m "not browser"``):

- ``book``: builds the Jupyter Book (HTML, ``-W``) from the executed chapters.
- ``browser``: opens the built book in headless Chromium (needs Debian's
  ``chromium`` and ``chromium-driver`` and the ``selenium`` package; skipped otherwise).
- ``nbval``: executes the notebook sources with nbval (smoke profile).
- ``pdf``: builds the thesis PDF with LaTeX (needs xelatex, latexmk and poppler; skipped
  otherwise).
- ``slow``: takes more than a few seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

MARKERS = {
    "book": "builds the Jupyter Book to HTML with -W (warnings are errors)",
    "browser": "opens the built book in headless Chromium via selenium",
    "nbval": "executes the chapter notebooks with nbval (smoke profile)",
    "pdf": "builds the thesis PDF with jupyter-book's LaTeX builder",
    "slow": "takes more than a few seconds",
}

# Files that tests leave for a human to look at (e.g. screenshots), listed in the terminal
# summary so their location is visible even when test output is captured.
ARTIFACTS_KEY = pytest.StashKey[dict[str, Path]]()


def pytest_configure(config: pytest.Config) -> None:
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    config.stash[ARTIFACTS_KEY] = {}


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    artifacts = config.stash.get(ARTIFACTS_KEY, {})
    if artifacts:
        terminalreporter.section("artifacts")
        for what, where in artifacts.items():
            terminalreporter.write_line(f"{what}: {where}")


@pytest.fixture(scope="session")
def artifacts(pytestconfig: pytest.Config) -> dict[str, Path]:
    """Register ``{description: path}`` of files left for a human to inspect."""
    return pytestconfig.stash[ARTIFACTS_KEY]


# --------------------------------------------------------------------------- book build


@dataclass(frozen=True)
class BookBuild:
    """Result of one ``jupyter-book build`` of the repository into a temporary folder."""

    returncode: int
    log: str
    out_dir: Path  # the --path-output folder
    html_dir: Path  # out_dir / "_build" / "html"
    seconds: float

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.splitlines()[-n:])


def jupyter_book_executable() -> str:
    """The ``jupyter-book`` script of the running interpreter's environment."""
    candidate = Path(sys.executable).with_name("jupyter-book")  # no resolve(): keep the venv
    if candidate.exists():
        return str(candidate)
    found = shutil.which("jupyter-book")
    if found is None:
        pytest.skip("jupyter-book is not installed in this environment")
    return found


@pytest.fixture(scope="session")
def book_build(tmp_path_factory: pytest.TempPathFactory) -> BookBuild:
    """Build the book once per test session: HTML builder, warnings as errors."""
    out_dir = tmp_path_factory.mktemp("book")
    cmd = [
        jupyter_book_executable(),
        "build",
        str(REPO_ROOT),
        "--path-output",
        str(out_dir),
        "--builder",
        "html",
        "-W",
        "--keep-going",
    ]
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    started = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
        check=False,
    )
    return BookBuild(
        returncode=proc.returncode,
        log=proc.stdout,
        out_dir=out_dir,
        html_dir=out_dir / "_build" / "html",
        seconds=time.perf_counter() - started,
    )


@pytest.fixture(scope="session")
def built_html(book_build: BookBuild) -> Path:
    """The HTML folder of a successful build; fails (not errors) the test otherwise."""
    if book_build.returncode != 0:
        pytest.fail(
            f"jupyter-book build failed (exit {book_build.returncode}):\n{book_build.log_tail()}"
        )
    return book_build.html_dir
