"""The finished book: build it, then open every page of _toc.yml in headless Chromium, offline.

The build is scripts/build_book.py's, from the committed outputs (nbval checks
them in the same `make test`; `make book` executes them instead). The browser
checks live in scripts/browser_check.py, which also runs by hand after
`make book`. Full-page screenshots go to _build/screenshots/.

Set BOOK_TEST_REUSE_BUILD=1 to check an existing _build/html instead of building.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"


def load_browser_check():
    spec = importlib.util.spec_from_file_location("browser_check", ROOT / "scripts" / "browser_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


browser_check = load_browser_check()


def load_build_book():
    spec = importlib.util.spec_from_file_location("build_book", ROOT / "scripts" / "build_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_book() -> float:
    """The book as `make book` builds it (warnings are errors), into _build/html, but from the
    committed outputs: nbval, in the same `make test`, re-executes every notebook and checks
    those outputs, so executing them here too would only double the work."""
    start = time.monotonic()
    done = load_build_book().build(committed_outputs=True, quiet=True)
    assert done.returncode == 0, f"jupyter-book build failed:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    return time.monotonic() - start


@pytest.fixture(scope="module")
def built_book():
    if browser_check.find_chromium() is None:
        pytest.skip(f"Chromium is not installed; {browser_check.INSTALL_HINT}")
    if os.environ.get("BOOK_TEST_REUSE_BUILD") and (HTML / "index.html").is_file():
        return HTML
    build_book()
    return HTML


def test_toc_lists_the_chapters_and_the_bibliography_last():
    pages = browser_check.toc_pages(ROOT / "_toc.yml")
    assert pages[0] == "book/intro"
    assert pages[-1] == "book/bibliography"
    for page in pages:
        assert any((ROOT / f"{page}{suffix}").is_file() for suffix in (".ipynb", ".md")), page


def test_book_is_offline(built_book):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_offline_html.py"), str(built_book)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_page_renders_offline_in_chromium(built_book):
    pages = browser_check.toc_pages(ROOT / "_toc.yml")
    results = browser_check.check_book(built_book, pages, ROOT, SCREENSHOTS)
    assert [r.page for r in results] == pages
    failures = [f"{r.page}: " + "; ".join(r.problems) for r in results if r.problems]
    assert not failures, "\n".join(failures)
    for result in results:
        assert Path(result.screenshot).is_file()
