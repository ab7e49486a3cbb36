#!/usr/bin/env python3
"""Open every page of the built book in headless Chromium, offline, and check it.

    make book
    .venv/bin/python scripts/browser_check.py                  # every page in _toc.yml
    .venv/bin/python scripts/browser_check.py notebooks/01_crn # some pages

The book in _build/html is served on 127.0.0.1 and opened in a headless
Chromium whose network is cut off: every host name other than 127.0.0.1 fails
to resolve, and any other connection would go to a dead proxy. The browser is
driven through the Chrome DevTools Protocol (a websocket, websocket-client).
For each page listed in _toc.yml it checks that

  * the page loads (document.readyState is "complete", it has a title) and
    makes no request to a host other than 127.0.0.1, and no request fails;
  * every <img> has loaded (naturalWidth > 0), and the page shows at least as
    many output images as the notebook's committed outputs hold image/png
    outputs; every cell with a figure caption (mystnb.figure metadata) has
    become a numbered figure, and every labelled display equation
    ($$ ... $$ (label)) a numbered one;
  * where the notebook has widget outputs, RequireJS and the ipywidgets
    html-manager were loaded from _static/vendor and every widget view was
    rendered into the page (the html-manager put widget elements next to each
    widget-view script tag);

and saves a full-page screenshot as _build/screenshots/<page>.png (the page's
path with "/" replaced by "__"). Exit status 1 if any check fails.

Chromium: /usr/bin/chromium (Debian's chromium package: `make browser`
installs it), or the program named by $CHROMIUM or --chromium.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import websocket  # websocket-client
import yaml

ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
VENDOR_SCRIPTS = ("_static/vendor/requirejs/require.js", "_static/vendor/html-manager/embed-amd.js")
# a labelled display equation in MyST dollarmath: $$ ... $$ (label) at the end of a line
EQUATION_LABEL = re.compile(r"\$\$[ \t]*\([^()\s]+\)[ \t]*$", re.MULTILINE)
INSTALL_HINT = ("install Debian's chromium: `make browser` "
                "(= apt-get update && apt-get install -y --no-install-recommends chromium, as root)")


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium executable: explicit, $CHROMIUM, /usr/bin/chromium, or one on PATH."""
    for candidate in (explicit, os.environ.get("CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


# --- what each page should show -------------------------------------------------


@dataclass
class Expected:
    """What a page's source says the built page must contain."""

    images: int = 0          # image/png outputs in the committed notebook
    captions: int = 0        # code cells with mystnb.figure metadata and an image output
    equations: int = 0       # labelled display equations in markdown cells
    widgets: bool = False    # has widget-view outputs


def toc_pages(toc_path: Path) -> list[str]:
    """Every file of a jb-book _toc.yml, in reading order (root, then parts/chapters/sections)."""
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            for key in ("sections", "chapters", "parts"):
                walk(entry.get(key))

    for key in ("chapters", "parts", "sections"):
        walk(toc.get(key))
    return [re.sub(r"\.(ipynb|md|rst)$", "", page) for page in pages]


def expected_for(source_root: Path, page: str) -> Expected:
    notebook = source_root / f"{page}.ipynb"
    markdown = source_root / f"{page}.md"
    expected = Expected()
    if notebook.is_file():
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        for cell in cells:
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            if cell["cell_type"] == "markdown":
                expected.equations += len(EQUATION_LABEL.findall(source))
            if cell["cell_type"] != "code":
                continue
            data = [output.get("data", {}) for output in cell.get("outputs", [])]
            images = sum("image/png" in d for d in data)
            expected.images += images
            expected.widgets |= any(WIDGET_VIEW in d for d in data)
            if images and cell.get("metadata", {}).get("mystnb", {}).get("figure"):
                expected.captions += 1
    elif markdown.is_file():
        expected.equations = len(EQUATION_LABEL.findall(markdown.read_text(encoding="utf-8")))
    return expected


# --- a static file server and the browser -----------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@dataclass
class Server:
    root: Path
    httpd: http.server.ThreadingHTTPServer = field(init=False)

    def __enter__(self) -> "Server":
        handler = functools.partial(QuietHandler, directory=str(self.root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Browser:
    """Headless Chromium with the network cut off, and one page driven over CDP."""

    def __init__(self, executable: str, width: int = 1280, height: int = 900, timeout: float = 60.0):
        self.executable, self.width, self.height, self.timeout = executable, width, height, timeout
        self.process: subprocess.Popen | None = None
        self.profile: str | None = None
        self.ws: websocket.WebSocket | None = None
        self.browser_ws: websocket.WebSocket | None = None
        self._next_id = 0
        self.events: list[dict] = []

    def __enter__(self) -> "Browser":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="book-chromium-")
        args = [
            self.executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions",
            "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
            "--disable-dev-shm-usage",  # containers often have a small /dev/shm
            f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
            f"--window-size={self.width},{self.height}",
            # network off: no name resolves but 127.0.0.1, and any other connection
            # goes to a proxy on the discard port, where nothing listens
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
            "about:blank",
        ]
        # a session of its own, so that close() can end Chromium and all its helpers
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, start_new_session=True)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"{self.executable} exited with {self.process.returncode}:\n{stderr}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.executable} wrote no DevToolsActivePort in {self.timeout:.0f} s")
            time.sleep(0.1)
        port, browser_path = port_file.read_text().splitlines()[:2]
        # stderr is no longer needed; stop it from filling the pipe
        threading.Thread(target=self.process.stderr.read, daemon=True).start()
        # the browser's own connection: open a page, and close the browser at the end
        self.browser_ws = self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}{browser_path}", timeout=self.timeout, suppress_origin=True)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/devtools/page/{target}",
                                              timeout=self.timeout, suppress_origin=True)
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable")
        self.call("Network.setCacheDisabled", cacheDisabled=True)

    def close(self) -> None:
        """End Chromium: Browser.close, then SIGTERM, then SIGKILL to its whole session."""
        if self.browser_ws is not None:
            try:  # a clean exit, in which Chromium ends and reaps its own helpers
                self.ws = self.browser_ws
                self.ws.settimeout(5)
                self.ws.send(json.dumps({"id": self._next_id + 1, "method": "Browser.close"}))
                self.process.wait(5)
            except Exception:
                pass
        for connection in {id(c): c for c in (self.ws, self.browser_ws) if c is not None}.values():
            try:
                connection.close()
            except Exception:
                pass
        self.ws = self.browser_ws = None
        if self.process is not None and self.process.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.process is not None:
            try:  # helpers left in the session after the main process ended
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.process.wait()
            self.process = None
        if self.profile is not None:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None

    # -- CDP ----------------------------------------------------------------------

    def call(self, method: str, **params) -> dict:
        """Send one command, keep the events that arrive meanwhile, return its result."""
        self._next_id += 1
        message_id = self._next_id
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)
        raise TimeoutError(f"{method}: no answer in {self.timeout:.0f} s")

    def pump(self, seconds: float) -> None:
        """Collect events for a while."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.ws.settimeout(left)
            try:
                message = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                break
            finally:
                self.ws.settimeout(self.timeout)
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str, await_promise: bool = False):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=await_promise)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error in {expression[:80]!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, seconds: float, interval: float = 0.25):
        """Poll a JavaScript expression until it is truthy; return its last value."""
        deadline = time.monotonic() + seconds
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            self.pump(interval)

    def screenshot(self, path: Path, max_height: int = 30000) -> None:
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        width, height = max(1, int(size["width"])), max(1, min(int(size["height"]), max_height))
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))


# --- one page -------------------------------------------------------------------

PAGE_STATE = """(() => {
  const content = document.querySelector('.bd-article') || document.body;
  const images = [...document.images].map(img => ({
    src: img.currentSrc.startsWith('data:') ? img.currentSrc.slice(0, 40) + '...' : img.currentSrc,
    ok: img.complete && img.naturalWidth > 0, inContent: content.contains(img)}));
  const views = [...document.querySelectorAll('script[type="%(view)s"]')];
  const rendered = views.filter(tag => {
    const parent = tag.parentElement;
    return parent && [...parent.querySelectorAll('*')].some(
      el => el !== tag && typeof el.className === 'string' && /widget/i.test(el.className));
  });
  return {
    readyState: document.readyState,
    title: document.title,
    heading: (document.querySelector('.bd-article h1') || {}).textContent || '',
    images,
    outputImages: content.querySelectorAll('.cell_output img').length,
    numberedFigures: content.querySelectorAll('figure figcaption .caption-number').length,
    numberedEquations: content.querySelectorAll('div.math .eqno').length,
    widgetViews: views.length,
    renderedViews: rendered.length,
    widgetElements: content.querySelectorAll('.jupyter-widgets, .widget-inline-hbox, .widget-vbox').length,
    height: document.documentElement.scrollHeight,
  };
})()""" % {"view": WIDGET_VIEW}

MATHJAX_DONE = """(window.MathJax && MathJax.startup && MathJax.startup.promise)
  ? MathJax.startup.promise.then(() => true) : Promise.resolve(false)"""


@dataclass
class PageResult:
    page: str
    url: str
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    screenshot: str = ""
    state: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_page(browser: Browser, base_url: str, page: str, expected: Expected, screenshot_dir: Path | None,
               settle: float = 1.0) -> PageResult:
    url = f"{base_url}/{page}.html"
    result = PageResult(page, url)
    start = time.monotonic()
    browser.events.clear()
    browser.call("Page.navigate", url=url)
    deadline = time.monotonic() + browser.timeout
    while not any(e["method"] == "Page.loadEventFired" for e in browser.events):
        if time.monotonic() > deadline:
            result.problems.append(f"no load event in {browser.timeout:.0f} s")
            break
        browser.pump(0.2)
    browser.evaluate(MATHJAX_DONE, await_promise=True)
    if expected.widgets:  # the html-manager renders after RequireJS has loaded it
        browser.wait_for(f"(() => {{ const s = {PAGE_STATE}; return s.renderedViews >= s.widgetViews; }})()", 20)
    browser.pump(settle)  # late requests (fonts, widget images)
    state = browser.evaluate(PAGE_STATE)
    result.state = state
    result.seconds = time.monotonic() - start

    # network: every request local, none failed
    requests = {}
    for event in browser.events:
        method, params = event["method"], event.get("params", {})
        if method == "Network.requestWillBeSent":
            requests[params["requestId"]] = params["request"]["url"]
        elif method == "Network.loadingFailed":
            failed = requests.get(params["requestId"], "?")
            if urlsplit(failed).path != "/favicon.ico":
                result.problems.append(f"request failed ({params.get('errorText')}): {failed}")
        elif method == "Network.responseReceived":
            status = params["response"]["status"]
            # the browser asks for /favicon.ico by itself; the book has no favicon
            if status >= 400 and urlsplit(params["response"]["url"]).path != "/favicon.ico":
                result.problems.append(f"HTTP {status}: {params['response']['url']}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = (details.get("exception") or {}).get("description") or details.get("text")
            result.problems.append(f"JavaScript exception: {str(text)[:300]}")
    for request_url in sorted(set(requests.values())):
        parts = urlsplit(request_url)
        if parts.scheme in ("data", "blob", "about"):
            continue
        if parts.hostname not in LOCAL_HOSTS:
            result.problems.append(f"request to another host: {request_url}")
    loaded = {urlsplit(u).path.lstrip("/") for u in requests.values()}

    if state["readyState"] != "complete":
        result.problems.append(f"document.readyState is {state['readyState']!r}")
    if not state["title"].strip():
        result.problems.append("the page has no title")
    broken = [image["src"] for image in state["images"] if not image["ok"]]
    if broken:
        result.problems.append(f"{len(broken)} image(s) did not load: {broken[:5]}")
    if state["outputImages"] < expected.images:
        result.problems.append(f"{state['outputImages']} output images, the notebook's committed outputs "
                               f"have {expected.images}")
    if state["numberedFigures"] < expected.captions:
        result.problems.append(f"{state['numberedFigures']} numbered figures, {expected.captions} captioned cells")
    if state["numberedEquations"] < expected.equations:
        result.problems.append(f"{state['numberedEquations']} numbered equations, {expected.equations} labelled")
    if expected.widgets:
        missing = [script for script in VENDOR_SCRIPTS if script not in loaded]
        if missing:
            result.problems.append(f"widget scripts not loaded from _static/vendor: {missing}")
        if state["widgetViews"] == 0:
            result.problems.append("the notebook has widget outputs, the page no widget views")
        elif state["renderedViews"] < state["widgetViews"]:
            result.problems.append(f"{state['renderedViews']} of {state['widgetViews']} widget views rendered")
    result.notes.append(
        f"{len(state['images'])} images, {state['outputImages']} in outputs (≥ {expected.images}), "
        f"{state['numberedFigures']} numbered figures (≥ {expected.captions}), "
        f"{state['numberedEquations']} numbered equations (≥ {expected.equations}), "
        f"{state['renderedViews']}/{state['widgetViews']} widget views rendered, {len(requests)} requests")

    if screenshot_dir is not None:
        path = screenshot_dir / (page.replace("/", "__") + ".png")
        try:
            browser.screenshot(path)
            result.screenshot = str(path)
        except Exception as error:  # a screenshot that fails is a problem, not a crash
            result.problems.append(f"screenshot failed: {error}")
    return result


def check_book(html_dir: Path, pages: list[str], source_root: Path = ROOT, screenshot_dir: Path | None = None,
               chromium: str | None = None, timeout: float = 60.0) -> list[PageResult]:
    """Check each page (a path of _toc.yml, without suffix) of a built book."""
    executable = find_chromium(chromium)
    if executable is None:
        raise FileNotFoundError(f"no Chromium found; {INSTALL_HINT}")
    results = []
    with Server(html_dir) as server, Browser(executable, timeout=timeout) as browser:
        for page in pages:
            if not (html_dir / f"{page}.html").is_file():
                results.append(PageResult(page, f"{server.url}/{page}.html",
                                          problems=[f"{page}.html was not built"]))
                continue
            results.append(check_page(browser, server.url, page, expected_for(source_root, page), screenshot_dir))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", help="pages as in _toc.yml (default: all of them)")
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html", help="the built book")
    parser.add_argument("--toc", type=Path, default=ROOT / "_toc.yml")
    parser.add_argument("--screenshots", type=Path, default=ROOT / "_build" / "screenshots",
                        help="folder for the full-page screenshots")
    parser.add_argument("--no-screenshots", action="store_true")
    parser.add_argument("--chromium", help="Chromium executable (default: $CHROMIUM, /usr/bin/chromium)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per browser operation")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    pages = args.pages or toc_pages(args.toc)
    try:
        results = check_book(args.html, pages, ROOT, None if args.no_screenshots else args.screenshots,
                             args.chromium, args.timeout)
    except FileNotFoundError as error:
        print(f"browser_check: {error}", file=sys.stderr)
        return 2
    for result in results:
        print(f"{'ok  ' if result.ok else 'FAIL'} {result.page} ({result.seconds:.1f} s): {'; '.join(result.notes)}")
        for problem in result.problems:
            print(f"       {problem}")
        if result.screenshot:
            print(f"       screenshot {os.path.relpath(result.screenshot)}")
    if args.json:
        args.json.write_text(json.dumps([result.__dict__ for result in results], indent=1, default=str))
    failed = [result.page for result in results if not result.ok]
    print(f"browser_check: {len(results) - len(failed)} of {len(results)} pages pass"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
