"""Helpers of tests/test_browser.py: open pages of the built book in headless Chromium.

Everything here works on whatever the table of contents lists when it runs: `toc_pages` reads
`_toc.yml`, `serve` serves a built HTML folder on localhost, `check_page` opens one page with
every non-localhost request blocked and returns a list of problems, each naming the page and
the element. Nothing here downloads a browser: it drives the system Chromium.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import yaml

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


# --------------------------------------------------------------------------- table of contents


def toc_pages(toc_path: Path) -> list[str]:
    """Every document of a jb-book table of contents, root first, without file suffixes."""
    toc = yaml.safe_load(Path(toc_path).read_text())
    pages = [toc["root"]]

    def walk(entries) -> None:
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key))

    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    walk(toc.get("sections"))
    return [re.sub(r"\.(md|ipynb|rst)$", "", p) for p in pages]


# --------------------------------------------------------------------------- serving


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no access log in the test output
        pass


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve `folder` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- static link check


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs) -> None:
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)


@functools.cache
def html_ids(path: Path) -> frozenset[str]:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


def check_link(root: Path, base_url: str, page_url: str, href: str) -> str | None:
    """None if `href` (as resolved on `page_url`) is fine, else why not. External: "external"."""
    url = urllib.parse.urljoin(page_url, href)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("mailto", "javascript", "data", "tel"):
        return None
    if parts.scheme not in ("http", "https") or parts.hostname not in LOCAL_HOSTS:
        return "external"
    rel = urllib.parse.unquote(parts.path)[len(urllib.parse.urlsplit(base_url).path) :]
    target = root / rel
    if rel == "" or target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return f"target file {rel or '/'} does not exist"
    fragment = urllib.parse.unquote(parts.fragment)
    if fragment and target.suffix == ".html" and fragment not in html_ids(target):
        return f"anchor #{fragment} not found in {target.relative_to(root)}"
    return None


# --------------------------------------------------------------------------- in the browser

# Visible text outside code and typeset math that still looks like TeX: an unrendered
# formula. Inline math is only flagged when the dollars enclose a TeX command, so prices
# and shell prompts in prose do not trip it.
_RAW_TEX_JS = r"""
() => {
  const skip = new Set(["PRE", "CODE", "SCRIPT", "STYLE", "TEXTAREA", "MJX-CONTAINER",
                        "MJX-ASSISTIVE-MML", "NOSCRIPT", "TEMPLATE"]);
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let el = node.parentElement; el; el = el.parentElement) {
        if (skip.has(el.tagName)) return NodeFilter.FILTER_REJECT;
      }
      return NodeFilter.FILTER_ACCEPT;
    }
  });
  const patterns = [/\$\$/, /\\begin\{/, /\\end\{/, /\$[^$\n]*\\[A-Za-z]+[^$\n]*\$/,
                    /\\\(.*\\\)/, /\\\[.*\\\]/];
  while (walker.nextNode()) {
    const text = walker.currentNode.textContent;
    if (patterns.some(p => p.test(text))) {
      const el = walker.currentNode.parentElement;
      const where = el.closest("[id]");
      found.push(`<${el.tagName.toLowerCase()}> in #${where ? where.id : "?"}: `
                 + JSON.stringify(text.trim().slice(0, 80)));
    }
  }
  return found;
}
"""

# Each .math element (Sphinx's output for $...$ and $$...$$) must hold a typeset formula
# without a TeX error.
_MATH_JS = r"""
() => [...document.querySelectorAll(".math")].flatMap((el, i) => {
  const where = (el.closest("[id]") || {}).id || "?";
  const tex = JSON.stringify(el.textContent.trim().slice(0, 60));
  if (!el.querySelector("mjx-container")) return [`math #${i} in #${where} not typeset: ${tex}`];
  const err = el.querySelector("mjx-merror");
  if (err) return [`math #${i} in #${where} has a TeX error (${err.textContent}): ${tex}`];
  return [];
})
"""

_IMAGES_JS = r"""
async () => {
  const images = [...document.images];
  images.forEach(img => { img.loading = "eager"; });
  await Promise.all(images.map(img => img.complete ? null : new Promise(resolve => {
    img.addEventListener("load", resolve); img.addEventListener("error", resolve);
    setTimeout(resolve, 10000);
  })));
  return images.filter(img => !(img.complete && img.naturalWidth > 0))
               .map(img => `image ${img.getAttribute("src")} (alt ${JSON.stringify(img.alt)})`);
}
"""

# Wait until MathJax (when the page loads it) has typeset the page.
_MATHJAX_READY_JS = r"""
async () => {
  if (!document.querySelector(".math")) return "no math";
  for (let i = 0; i < 300 && !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++) {
    await new Promise(r => setTimeout(r, 50));
  }
  const ready = window.MathJax && MathJax.startup && MathJax.startup.promise;
  if (!ready) return "MathJax did not load";
  await MathJax.startup.promise;
  if (MathJax.typesetPromise) await MathJax.typesetPromise();
  return "typeset";
}
"""


@dataclass
class PageReport:
    page: str
    problems: list[str] = field(default_factory=list)
    external_links: set[str] = field(default_factory=set)
    blocked: list[str] = field(default_factory=list)
    colab: str | None = None


def check_page(
    context,
    root: Path,
    base_url: str,
    page: str,
    screenshot: Path | None = None,
    colab_expected: str | None = None,
) -> PageReport:
    """Open `page` (a toc entry, e.g. "notebooks/01_x") and collect what is wrong with it.

    `context` is a Playwright browser context whose every non-localhost request is aborted
    (see `offline_context`). `colab_expected`, when given, is the exact URL the page's Colab
    launch button must have.
    """
    report = PageReport(page)
    problems = report.problems
    html_file = root / f"{page}.html"
    if not html_file.is_file():
        problems.append(f"{page}: no {page}.html in the build (stale or failed build?)")
        return report

    page_obj = context.new_page()
    blocked_before = len(context.blocked)
    console_errors: list[str] = []
    page_obj.on(
        "console",
        lambda msg: (
            console_errors.append(f"console error: {msg.text}") if msg.type == "error" else None
        ),
    )
    page_obj.on("pageerror", lambda exc: console_errors.append(f"uncaught exception: {exc}"))
    page_obj.on(
        "response",
        lambda r: (
            console_errors.append(f"HTTP {r.status} for {r.url}") if r.status >= 400 else None
        ),
    )
    url = base_url + f"{page}.html"
    try:
        page_obj.goto(url, wait_until="load", timeout=60_000)
        state = page_obj.evaluate(_MATHJAX_READY_JS)
        if state == "MathJax did not load":
            problems.append("MathJax did not load (the page has math)")
        problems.extend(page_obj.evaluate(_MATH_JS))
        problems.extend(f"raw TeX in visible text: {t}" for t in page_obj.evaluate(_RAW_TEX_JS))
        problems.extend(f"not loaded: {t}" for t in page_obj.evaluate(_IMAGES_JS))

        hrefs = page_obj.evaluate(
            "() => [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))"
        )
        for href in dict.fromkeys(hrefs):
            why = check_link(root, base_url, url, href)
            if why == "external":
                report.external_links.add(href)
            elif why:
                problems.append(f"broken link <a href={href!r}>: {why}")

        colab = [h for h in hrefs if "colab.research.google.com" in h]
        report.colab = colab[0] if colab else None
        if colab_expected is not None:
            if not colab:
                problems.append(f"no Colab launch button (expected {colab_expected})")
            elif colab_expected not in colab:
                problems.append(f"Colab launch button {colab[0]} != expected {colab_expected}")

        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page_obj.screenshot(path=str(screenshot), full_page=True)
    finally:
        page_obj.close()
    report.blocked = context.blocked[blocked_before:]
    problems.extend(
        f"requested a non-local resource (blocked, offline): {u}" for u in report.blocked
    )
    problems.extend(console_errors)
    report.problems = [f"{page}: {p}" for p in problems]
    return report


def offline_context(browser, **kwargs):
    """A browser context in which every request to a host other than localhost is aborted.

    The aborted URLs are kept in `context.blocked`, so a page that needs the network (a CDN
    script, a web font) is reported rather than silently rendered from the internet.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **kwargs)
    context.blocked = []

    def route(r) -> None:
        host = urllib.parse.urlsplit(r.request.url).hostname
        if host in LOCAL_HOSTS:
            r.continue_()
        else:
            context.blocked.append(r.request.url)
            r.abort("internetdisconnected")

    context.route("**/*", route)
    return context


def colab_url(config_path: Path, page: str) -> str:
    """The URL the Colab launch button of notebook page `page` must have, from _config.yml."""
    config = yaml.safe_load(Path(config_path).read_text())
    repo = config["repository"]
    owner_name = urllib.parse.urlsplit(repo["url"]).path.strip("/")
    book = (repo.get("path_to_book") or "").strip("/")
    path = "/".join(p for p in (book, f"{page}.ipynb") if p)
    base = config["launch_buttons"]["colab_url"].rstrip("/")
    return f"{base}/github/{owner_name}/blob/{repo.get('branch', 'main')}/{path}"
