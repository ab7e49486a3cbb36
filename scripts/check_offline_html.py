#!/usr/bin/env python3
"""Fail if the built book would load anything from the network.

    python scripts/check_offline_html.py [_build/html]

Checks, for every built page (*.html):
  * elements that make the browser fetch a resource — <script src>, <link href>
    with a loading rel (stylesheet, preload, icon, ...), <img>/<source>/<video>/
    <audio>/<iframe>/<embed>/<object>/<track>, and url()/@import inside
    <style> blocks and style="" attributes — must not point at an http(s) or
    protocol-relative (//host) URL;
  * the page text, inline scripts included, must not mention a known CDN host
    (jsdelivr, cdnjs, unpkg, googleapis, ...), since inline loaders such as
    Thebe's or MathJax's build such URLs at run time; the attributes of <a>
    tags are left out of this scan, so launch links to Binder or Colab pass.
and for every stylesheet under _static/: no url()/@import of a remote URL.
Plain links (<a href="https://...">) are fine: following one is the reader's choice.
Exit status 1 lists every offending page and reference.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

REMOTE = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)
CDN_HOSTS = re.compile(
    r"cdn\.jsdelivr\.net|cdnjs\.cloudflare\.com|unpkg\.com|"
    r"(?:fonts|ajax|www)\.googleapis\.com|fonts\.gstatic\.com|"
    r"use\.fontawesome\.com|kit\.fontawesome\.com|code\.jquery\.com|"
    r"cdn\.plot\.ly|cdn\.bokeh\.org|stackpath\.bootstrapcdn\.com|"
    r"maxcdn\.bootstrapcdn\.com|polyfill\.io|mybinder\.org|"
    r"hypothes\.is|utteranc\.es|plausible\.io|googletagmanager\.com|"
    r"google-analytics\.com",
    re.IGNORECASE,
)
ANCHOR_TAG = re.compile(r"<a\s[^>]*>", re.IGNORECASE)
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""", re.IGNORECASE)

# attributes that fetch a resource, per tag
FETCHING = {
    "script": ("src",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "video": ("src", "poster"),
    "audio": ("src",),
    "iframe": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "track": ("src",),
    "input": ("src",),
}
# <link rel=...> values that make the browser fetch href
LOADING_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon",
                "shortcut", "apple-touch-icon", "manifest", "mask-icon"}


class PageScanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name.lower(): value or "" for name, value in attrs}
        urls = []
        if tag == "link":
            rels = set(values.get("rel", "").lower().split())
            if rels & LOADING_RELS:
                urls.append(values.get("href", ""))
        for name in FETCHING.get(tag, ()):
            value = values.get(name, "")
            # srcset: "a.png 1x, b.png 2x"
            urls += [part.strip().split(" ")[0] for part in value.split(",")] if name == "srcset" else [value]
        if "style" in values:
            urls += CSS_URL.findall(values["style"])
        for url in urls:
            if url and REMOTE.match(url):
                self.problems.append(f"<{tag}> loads {url}")
        if tag == "style":
            self._in_style = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            for url in CSS_URL.findall(data):
                if REMOTE.match(url):
                    self.problems.append(f"<style> loads {url}")


def scan_page(text: str) -> list[str]:
    scanner = PageScanner()
    scanner.feed(text)
    scanner.close()
    problems = scanner.problems
    # launch links (Binder, Colab) are plain <a href> links: the reader's choice, not a fetch
    without_links = ANCHOR_TAG.sub("<a>", text)
    for match in sorted(set(m.group(0).lower() for m in CDN_HOSTS.finditer(without_links))):
        problems.append(f"mentions CDN host {match}")
    return problems


def scan_css(text: str) -> list[str]:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)  # licence headers cite URLs
    return [f"stylesheet loads {url}" for url in CSS_URL.findall(text) if REMOTE.match(url)]


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "_build/html")
    pages = sorted(root.rglob("*.html"))
    if not pages:
        print(f"check_offline_html: no HTML pages under {root}", file=sys.stderr)
        return 1
    failures = {}
    for page in pages:
        problems = scan_page(page.read_text(encoding="utf-8", errors="replace"))
        if problems:
            failures[page] = problems
    for sheet in sorted((root / "_static").rglob("*.css")):
        problems = scan_css(sheet.read_text(encoding="utf-8", errors="replace"))
        if problems:
            failures[sheet] = problems
    if failures:
        print("check_offline_html: the built book would need the network:", file=sys.stderr)
        for path, problems in failures.items():
            for problem in problems:
                print(f"  {path.relative_to(root)}: {problem}", file=sys.stderr)
        return 1
    print(f"check_offline_html: {len(pages)} pages, no remote scripts, stylesheets or fonts")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
