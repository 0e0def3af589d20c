"""Open every page of the built book in a real (headless) Chromium and check what a reader sees.

For each page: MathJax typeset all math (no TeX errors), every image loaded, the console has
no SEVERE messages, nothing was fetched from outside the local server, and the text a reader
sees has no unrendered MyST role and no number with more than six decimals, every table has
a caption, every output image sits in a captioned figure and no "mean ± sd" cell wraps.
A screenshot of each page is saved under ``<build>/_build/screenshots/`` for a human to look at.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``) and the ``selenium`` package; the test is skipped without them.
The driver path is given explicitly, so Selenium Manager never downloads anything.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from test_book import AWAITING_REEXECUTION

CHROMIUM = Path(os.environ.get("MTVAE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("MTVAE_CHROMEDRIVER", "/usr/bin/chromedriver"))

pytestmark = [
    pytest.mark.browser,
    pytest.mark.book,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason=f"headless browser check needs {CHROMIUM} and {CHROMEDRIVER}: "
        "apt-get install chromium chromium-driver",
    ),
]

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]
WIDTH, MAX_HEIGHT = 1280, 8000
PAGE_TIMEOUT_S = 30

# Waits for MathJax to appear (its script is deferred and loads components on demand), then
# for its startup promise, which resolves once the initial typesetting pass has finished.
WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
const deadline = Date.now() + arguments[0] * 1000;
(function poll() {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) {
    mj.startup.promise.then(
      () => done({ok: true}),
      (err) => done({ok: false, error: String(err)}));
  } else if (Date.now() > deadline) {
    done({ok: false, error: "MathJax did not start"});
  } else {
    setTimeout(poll, 50);
  }
})();
"""

# Forces lazy images to load and waits until every <img> has either loaded or failed.
WAIT_FOR_IMAGES = """
const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images);
imgs.forEach((img) => { img.loading = "eager"; });
Promise.all(imgs.map((img) => img.complete ? null : new Promise((resolve) => {
  img.addEventListener("load", resolve, {once: true});
  img.addEventListener("error", resolve, {once: true});
}))).then(() => done(imgs.map((img) => ({
  src: img.currentSrc || img.src, complete: img.complete, width: img.naturalWidth}))));
"""

MATH_STATE = """
const math = Array.from(document.querySelectorAll(".math"));
return {
  math: math.length,
  untypeset: math.filter((el) => !el.querySelector("mjx-container")).length,
  containers: document.querySelectorAll("mjx-container").length,
  // TeX syntax errors become <mjx-merror>; undefined macros (noundefined extension) are shown
  // as red text: report both, with the TeX source when available.
  errors: Array.from(document.querySelectorAll(
      "mjx-merror, mjx-container [data-mjx-error], mjx-container mjx-mtext[style*='color: red']"))
    .map((el) => el.getAttribute("data-mjx-error")
      || (el.closest("mjx-container").querySelector("mtext[mathcolor='red'], merror") || el)
        .textContent || "undefined TeX macro"),
};
"""

PAGE_HEIGHT = """
const footer = document.querySelector("footer.bd-footer-content, footer");
const bottom = footer ? footer.getBoundingClientRect().bottom + window.scrollY : 0;
const page = Math.max(document.body.scrollHeight, document.documentElement.scrollHeight, bottom);
return [Math.ceil(page), Math.max(0, window.outerHeight - window.innerHeight)];
"""

RESOURCES = "return performance.getEntriesByType('resource').map((e) => e.name);"

# What the reader sees of the article: its rendered text (collapsed code is not rendered, so
# it is not in innerText), tables without a caption, and output images outside a captioned
# figure.
READER_VIEW = """
const main = document.querySelector("main") || document.body;
return {
  text: main.innerText,
  uncaptioned_tables: Array.from(main.querySelectorAll("table"))
    .filter((t) => !t.querySelector("caption") && !t.closest(".cell_input")).length,
  loose_images: Array.from(main.querySelectorAll(".cell_output img"))
    .filter((img) => !(img.closest("figure") && img.closest("figure").querySelector("figcaption")))
    .length,
  wide_tables: Array.from(main.querySelectorAll("table.mtvae-table td"))
    .filter((td) => td.textContent.includes("±") && td.getClientRects().length > 1).length,
};
"""
# a role left as text, a directive fence, or Markdown backticks printed literally
UNRENDERED = re.compile(r"\{(glue|cite|numref|ref|doc|eq|term|download|math)(:[a-z]+)?\}"
                        r"|```\{|`[^`\s]+`")
LONG_DECIMAL = re.compile(r"(?<![\w.])\d+\.\d{7,}")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static file handler without request logging.

    Browsers ask every server for /favicon.ico; the book declares no favicon, so a real web
    host's 404 there is not a defect of the book. Answer 204 instead of logging a 404.
    """

    def do_GET(self) -> None:
        if self.path == "/favicon.ico" and not (Path(self.directory) / "favicon.ico").exists():
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(built_html: Path) -> Iterator[str]:
    """Serve the built HTML on 127.0.0.1 at a free port for the duration of the module."""
    handler = functools.partial(_QuietHandler, directory=str(built_html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium with a fresh profile, driven by the system chromedriver."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mtvae-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={WIDTH},900"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    driver.set_script_timeout(PAGE_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _screenshot(driver, path: Path) -> None:
    """Resize the window to the page height (capped) and save a PNG of it."""
    for _ in range(2):  # measure again after the resize: the layout reflows
        height, chrome = driver.execute_script(PAGE_HEIGHT)
        driver.set_window_size(WIDTH, max(600, min(int(height) + int(chrome), MAX_HEIGHT)))
    driver.save_screenshot(str(path))
    driver.set_window_size(WIDTH, 900)


def _check_page(driver, base: str, html_dir: Path, page: Path, shots: Path) -> list[str]:
    rel = page.relative_to(html_dir).as_posix()
    url = f"{base}/{quote(rel)}"
    problems: list[str] = []
    driver.get_log("browser")  # drop messages left over from the previous page
    driver.get(url)

    has_math = 'class="math' in page.read_text(encoding="utf8")
    if has_math:
        started = driver.execute_async_script(WAIT_FOR_MATHJAX, PAGE_TIMEOUT_S)
        if not started["ok"]:
            problems.append(f"MathJax failed: {started['error']}")
        state = driver.execute_script(MATH_STATE)
        if state["containers"] == 0:
            problems.append(f"no mjx-container although the page has {state['math']} math elements")
        if state["untypeset"]:
            problems.append(f"{state['untypeset']} of {state['math']} math elements not typeset")
        if state["errors"]:
            problems.append(f"MathJax errors: {state['errors'][:5]}")

    for img in driver.execute_async_script(WAIT_FOR_IMAGES):
        if not img["complete"] or img["width"] <= 0:
            problems.append(f"image did not load: {img['src']}")

    for entry in driver.get_log("browser"):
        if entry.get("level") == "SEVERE":
            problems.append(f"console SEVERE: {entry.get('message')}")

    view = driver.execute_script(READER_VIEW)
    if rel.removesuffix(".html") in AWAITING_REEXECUTION:  # see tests/test_book.py
        view = {"text": "", "uncaptioned_tables": 0, "loose_images": 0, "wide_tables": 0}
    for m in UNRENDERED.finditer(view["text"]):
        context = view["text"][max(0, m.start() - 50):m.end() + 30]
        problems.append(f"unrendered MyST role: …{context}…")
    problems += [f"number with more than six decimals: {m.group(0)}"
                 for m in LONG_DECIMAL.finditer(view["text"])]
    if view["uncaptioned_tables"]:
        problems.append(f"{view['uncaptioned_tables']} table(s) without a caption")
    if view["loose_images"]:
        problems.append(f"{view['loose_images']} output image(s) outside a captioned figure")
    if view["wide_tables"]:
        problems.append(f"{view['wide_tables']} 'mean ± sd' cell(s) wrap onto several lines")

    remote = [r for r in driver.execute_script(RESOURCES) if not r.startswith(base)]
    if remote:
        problems.append(f"fetched from outside the local server: {remote}")

    _screenshot(driver, shots / (rel.replace("/", "__").removesuffix(".html") + ".png"))
    return [f"{rel}: {p}" for p in problems]


def test_every_page_renders_in_chromium(
    browser, server: str, built_html: Path, artifacts: dict[str, Path]
) -> None:
    pages = sorted(p for p in built_html.rglob("*.html") if "_static" not in p.parts)
    assert pages, "the build has no HTML pages"
    shots = built_html.parent / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    artifacts["book screenshots"] = shots
    print(f"screenshots of {len(pages)} pages: {shots}")

    problems: list[str] = []
    for page in pages:
        problems += _check_page(browser, server, built_html, page, shots)
    assert not problems, "pages with problems:\n" + "\n".join(problems)
