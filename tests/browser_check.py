"""Helpers of tests/test_browser.py: open pages of the built book in headless Chromium.

Everything here works on whatever the table of contents lists when it runs: `toc_pages` reads
`_toc.yml`, `serve` serves a built HTML folder on localhost, `check_page` opens one page with
every non-localhost request blocked and returns a list of problems, each naming the page and
the element. Nothing here downloads a browser: it drives the system Chromium.

The layout checks ("pages that fit") are split in two: JavaScript in the page only measures
(`_LAYOUT_JS`: boxes of tables, figures, outputs, code and display math, and of their ancestors
that clip or scroll), and pure functions here decide (`layout_problems`, `image_transparency`),
so the decisions are unit-tested without a browser (tests/test_browser_layout.py).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import io
import os
import re
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
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


# --------------------------------------------------------------------------- the browser

#: In CI a missing browser or build fails the tests; elsewhere it skips them.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str):
    """Skip outside CI; in CI a missing browser or build is a failure."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)")
    pytest.skip(reason)


def chromium(executable: str) -> Iterator:
    """The system Chromium at ``executable``, launched headless through playwright, for a
    pytest fixture to yield from (closed afterwards); :func:`unavailable` when playwright or
    the browser is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install -e '.[test]')")
    if not Path(executable).exists():
        unavailable(f"no Chromium at {executable} (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


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


# --------------------------------------------------------------------------- layout decisions

# Viewport widths at which every page is laid out and checked: a laptop and a phone.
LAYOUT_WIDTHS = (1280, 400)
# Sub-pixel rounding: a box may stick out of its container by this much (CSS pixels).
LAYOUT_TOLERANCE = 1.0
SCROLLING = ("auto", "scroll")


@dataclass(frozen=True)
class Clip:
    """An ancestor (below the text column) whose computed `overflow-x` is not `visible`."""

    left: float
    right: float
    overflow: str
    what: str = "an ancestor"


@dataclass(frozen=True)
class Block:
    """A checked element (table, figure, image, cell output, code, display math) as measured.

    `clips` lists its clipping or scrolling ancestors, innermost first; `parent` is the index
    of the nearest checked ancestor in the same measurement (-1 for none); `scrolls` says
    that the block is itself a scroll box with content wider than it.
    """

    left: float
    right: float
    what: str
    clips: tuple[Clip, ...] = ()
    parent: int = -1
    scrolls: bool = False


def _inside(left: float, right: float, outer_left: float, outer_right: float) -> bool:
    return left >= outer_left - LAYOUT_TOLERANCE and right <= outer_right + LAYOUT_TOLERANCE


def layout_problem(block: Block, column: tuple[float, float]) -> str | None:
    """Why `block` does not fit the text column `(left, right)`, or None when it fits.

    A block fits when its box lies within the column, or when the part that sticks out lies
    inside an ancestor that scrolls horizontally (`overflow-x: auto | scroll`) and that scroll
    box lies within the column (it may hold wider content: that is what it is for). A block
    wider than an ancestor with `overflow-x: hidden | clip` is cut off, whatever the column.
    """
    left, right, outer = block.left, block.right, None
    for clip in block.clips:
        if _inside(left, right, clip.left, clip.right):
            continue
        if clip.overflow in SCROLLING:
            # The block scrolls inside `clip`: from here on it is the scroll box that must fit.
            left, right, outer = clip.left, clip.right, clip
            continue
        return (
            f"cut off on the {'right' if right > clip.right else 'left'} by {clip.what}"
            f" (overflow-x: {clip.overflow}; x {left:.0f}-{right:.0f} in {clip.left:.0f}-"
            f"{clip.right:.0f})"
        )
    if _inside(left, right, *column):
        return None
    where = f"its scroll box {outer.what} spans" if outer else "spans"
    return (
        f"wider than the text column and not in a horizontal scroll box of its own: {where}"
        f" x {left:.0f}-{right:.0f}, the column {column[0]:.0f}-{column[1]:.0f}"
    )


def needs_scrolling(block: Block) -> bool:
    """Whether part of `block` is seen only by scrolling sideways (it fits, but not whole).

    True when it is a scroll box with wider content, or sticks out of a scroll box around it.
    Not a problem; `scrolling_blocks` lists these for a person to judge.
    """
    return block.scrolls or any(
        c.overflow in SCROLLING and not _inside(block.left, block.right, c.left, c.right)
        for c in block.clips
    )


def _blocks(measured: dict) -> list[Block]:
    return [_block(raw) for raw in measured["blocks"]]


def scrolling_blocks(measured: dict) -> list[str]:
    """The blocks of one measurement that fit only by scrolling sideways, outermost only.

    Code blocks (`<pre>`) are left out: long code lines are expected to scroll.
    """
    column = (measured["column"]["left"], measured["column"]["right"])
    found: list[str] = []
    listed: set[int] = set()
    for index, block in enumerate(_blocks(measured)):
        if block.parent in listed:
            listed.add(index)
        elif block.what.startswith("<pre"):
            continue
        elif needs_scrolling(block) and layout_problem(block, column) is None:
            listed.add(index)
            found.append(block.what)
    return found


def layout_problems(measured: dict) -> list[str]:
    """Every offender of one measurement by `_LAYOUT_JS`, outermost only, each with its element.

    A block inside a block already reported (a table in a cell output that sticks out) is
    not reported again. A page wider than the viewport (it scrolls sideways) is reported too.
    """
    column = (measured["column"]["left"], measured["column"]["right"])
    problems: list[str] = []
    reported: set[int] = set()
    for index, block in enumerate(_blocks(measured)):
        if block.parent in reported:
            reported.add(index)
            continue
        why = layout_problem(block, column)
        if why:
            reported.add(index)
            problems.append(f"{block.what}: {why}")
    page = measured.get("page")
    if page and page["scrollWidth"] > page["clientWidth"] + LAYOUT_TOLERANCE:
        culprits = "; ".join(page.get("culprits") or [])
        problems.append(
            f"the page is {page['scrollWidth']} px wide in a {page['clientWidth']} px viewport:"
            " it scrolls sideways" + (f"; sticking out: {culprits}" if culprits else "")
        )
    return problems


def _block(raw: dict) -> Block:
    clips = tuple(Clip(c["left"], c["right"], c["overflow"], c["what"]) for c in raw["clips"])
    return Block(raw["left"], raw["right"], raw["what"], clips, raw["parent"], raw["scrolls"])


# --------------------------------------------------------------------------- figure backgrounds


def image_transparency(data: bytes) -> float | None:
    """The fraction of an image's pixels that are not fully opaque (alpha < 255).

    0.0 for an opaque image, None when Pillow cannot decode it (an SVG, for one). A figure
    with transparent pixels takes the page's background: dark text on the dark theme.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return None
    with image:
        if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and (
            "transparency" not in image.info
        ):
            return 0.0
        histogram = image.convert("RGBA").getchannel("A").histogram()
    return 1.0 - histogram[255] / sum(histogram)


def image_bytes(root: Path, base_url: str, src: str) -> bytes | None:
    """The bytes behind an image's resolved `src`: a data URI or a file of the served `root`.

    None for anything else (another host is already reported as blocked, a missing file as
    not loaded).
    """
    if src.startswith("data:"):
        header, _, payload = src.partition(",")
        if header.endswith(";base64"):
            return base64.b64decode(payload)
        return urllib.parse.unquote_to_bytes(payload)
    parts = urllib.parse.urlsplit(src)
    base_path = urllib.parse.urlsplit(base_url).path
    if parts.hostname not in LOCAL_HOSTS or not parts.path.startswith(base_path):
        return None
    path = root / urllib.parse.unquote(parts.path)[len(base_path) :]
    return path.read_bytes() if path.is_file() else None


def figure_problems(root: Path, base_url: str, srcs: list[str]) -> list[str]:
    """A problem for each image (by resolved `src`) that has transparent pixels."""
    problems = []
    for src in dict.fromkeys(srcs):
        data = image_bytes(root, base_url, src)
        share = image_transparency(data) if data else None
        if share:
            name = src.removeprefix(base_url)
            name = name if len(name) < 100 else name[:60] + "..."
            problems.append(
                f"figure {name} is not opaque: {share:.1%} of its pixels are transparent, so"
                " it shows the page background (unreadable in dark mode); save it with an"
                " opaque facecolor"
            )
    return problems


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

# Wait until MathJax (when the page loads it) has typeset the page. A page with math but no
# MathJax script at all is answered at once rather than after the 15 s wait.
_MATHJAX_READY_JS = r"""
async () => {
  if (!document.querySelector(".math")) return "no math";
  if (!window.MathJax && ![...document.scripts].some(s => /mathjax/i.test(s.src))) {
    return "MathJax did not load";
  }
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


# The layout measurement behind `layout_problems`. The text column is the content box of the
# theme's article (sphinx-book-theme: `article.bd-article`; a bare page: `main`, then `body`),
# cut at the viewport. Blocks with no box (hidden, in a closed toggle) are left out.
LAYOUT_SELECTOR = (
    "table, figure, img, div.cell_output, pre, div.math, mjx-container[display='true']"
)
_LAYOUT_JS = r"""
(selector) => {
  const col = document.querySelector("article.bd-article") || document.querySelector("main")
              || document.body;
  const style = getComputedStyle(col);
  const box = col.getBoundingClientRect();
  const html = document.documentElement;
  const padLeft = parseFloat(style.borderLeftWidth) + parseFloat(style.paddingLeft);
  const padRight = parseFloat(style.borderRightWidth) + parseFloat(style.paddingRight);
  // Wide content can stretch the column itself past the viewport (a flex item grows to its
  // content on a phone): the column then ends where the viewport does, less its padding.
  const column = {
    left: Math.max(box.left, 0) + padLeft,
    right: Math.min(box.right, html.clientWidth) - padRight,
  };
  const describe = (el) => {
    const cls = el.getAttribute("class");
    let what = `<${el.tagName.toLowerCase()}${el.id ? ` id="${el.id}"` : ""}`
               + `${cls ? ` class="${cls.trim()}"` : ""}>`;
    const where = el.closest("[id]");
    if (where && where !== el && col.contains(where)) what += ` in #${where.id}`;
    const text = el.tagName === "IMG" ? el.getAttribute("src")
                 : el.textContent.replace(/\s+/g, " ").trim();
    if (text) what += ` ${JSON.stringify(text.length > 50 ? text.slice(0, 50) + "..." : text)}`;
    return what;
  };
  // The right edge of what an element shows: its box, or the content that spills out of it
  // when it does not clip (`overflow-x: visible`), such as a long line of a `pre` that does
  // not scroll. (scrollWidth is 0 for inline elements: their box is what counts.)
  const right = (el, r, overflow) => overflow === "visible"
    ? Math.max(r.right, r.left + el.clientLeft + el.scrollWidth) : r.right;
  const elements = [...col.querySelectorAll(selector)];
  const blocks = [];
  const kept = new Map();
  elements.forEach((el) => {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) return;
    let parent = -1;
    const clips = [];
    for (let a = el.parentElement; a && a !== col; a = a.parentElement) {
      if (parent < 0 && kept.has(a)) parent = kept.get(a);
      const overflow = getComputedStyle(a).overflowX;
      if (overflow !== "visible") {
        const b = a.getBoundingClientRect();
        clips.push({left: b.left, right: b.right, overflow, what: describe(a)});
      }
    }
    const overflow = getComputedStyle(el).overflowX;
    const scrolls = (overflow === "auto" || overflow === "scroll")
                    && el.scrollWidth > el.clientWidth + 1;
    kept.set(el, blocks.length);
    blocks.push({left: r.left, right: right(el, r, overflow), what: describe(el), clips, parent,
                 scrolls});
  });
  // When the page itself scrolls sideways: the innermost elements that stick out of the
  // viewport (outside scroll boxes and fixed elements), to name in the report.
  const width = html.clientWidth;
  const culprits = [];
  const out = (el) => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && right(el, r, getComputedStyle(el).overflowX) > width + 1;
  };
  const walk = (el) => {
    let inner = false;
    for (const child of el.children) {
      const style = getComputedStyle(child);
      if (style.position === "fixed" || style.display === "none") continue;
      if (style.overflowX !== "visible") {
        if (out(child)) { culprits.push(child); inner = true; }
      } else if (walk(child)) {
        inner = true;
      }
    }
    if (!inner && out(el)) { culprits.push(el); return true; }
    return inner;
  };
  if (html.scrollWidth > width + 1) walk(document.body);
  return {
    column, blocks,
    page: {scrollWidth: html.scrollWidth, clientWidth: width,
           culprits: culprits.slice(0, 5).map(describe)},
    images: [...col.querySelectorAll("img")].map(img => img.currentSrc || img.src),
  };
}
"""

# Switch the theme's colour mode (pydata-sphinx-theme styles `html[data-theme=...]`), then
# wait two frames so the next measurement or screenshot sees the new styles.
_SET_MODE_JS = r"""
async (mode) => {
  document.documentElement.dataset.mode = mode;
  document.documentElement.dataset.theme = mode;
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
}
"""


@dataclass
class PageReport:
    page: str
    problems: list[str] = field(default_factory=list)
    external_links: set[str] = field(default_factory=set)
    blocked: list[str] = field(default_factory=list)
    colab: str | None = None
    # Blocks that fit only by scrolling sideways ("<width> px: <element>"): not problems.
    scrolling: list[str] = field(default_factory=list)


def check_page(
    context,
    root: Path,
    base_url: str,
    page: str,
    screenshot: Path | None = None,
    colab_expected: str | None = None,
    layout_widths: tuple[int, ...] = LAYOUT_WIDTHS,
) -> PageReport:
    """Open `page` (a toc entry, e.g. "notebooks/01_x") and collect what is wrong with it.

    `context` is a Playwright browser context whose every non-localhost request is aborted
    (see `offline_context`). `colab_expected`, when given, is the exact URL the page's Colab
    launch button must have.

    The page is then laid out at each of `layout_widths` (the other checks run at the
    context's viewport, 1280 px), in the theme's light and dark modes, and every table,
    figure, cell output, code block and display formula must fit the text column or scroll
    in a box of its own (`layout_problems`); every image of the text must be opaque
    (`figure_problems`). `screenshot` (a .png path) is the full page at the first width;
    beside it go `<name>-dark.png` (the first width, dark mode) and `<name>-<width>.png`
    (each further width, light mode).
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
            if not layout_widths:
                page_obj.screenshot(path=str(screenshot), full_page=True, timeout=SHOT_TIMEOUT_MS)
        layout, report.scrolling = check_layout(page_obj, root, base_url, layout_widths, screenshot)
        problems.extend(layout)
    finally:
        page_obj.close()
    report.blocked = context.blocked[blocked_before:]
    problems.extend(
        f"requested a non-local resource (blocked, offline): {u}" for u in report.blocked
    )
    problems.extend(console_errors)
    report.problems = [f"{page}: {p}" for p in problems]
    return report


#: A full-page screenshot of a long page (the API reference at a phone's width) can take more
#: than playwright's default 30 s when the machine is busy; a slow screenshot is not a defect.
SHOT_TIMEOUT_MS = 120_000


def screenshot_path(screenshot: Path, first: bool, width: int, mode: str) -> Path | None:
    """Where the screenshot of one layout goes, beside `screenshot` (None: no screenshot).

    The first width in light mode is `screenshot` itself, in dark mode `<name>-dark.png`;
    further widths are taken in light mode only, as `<name>-<width>.png`.
    """
    if first:
        suffix = "" if mode == "light" else "-dark"
    elif mode == "light":
        suffix = f"-{width}"
    else:
        return None
    return screenshot.with_name(f"{screenshot.stem}{suffix}{screenshot.suffix}")


def by_layout(width: int, found: dict[str, list[str]]) -> list[str]:
    """Problems found at one width in each colour mode, each prefixed with where it shows.

    A problem found in every mode is reported once ("1280 px, light and dark mode: ...").
    """
    modes = list(found)
    everywhere = [p for p in found[modes[0]] if all(p in found[m] for m in modes[1:])]
    lines = [f"{width} px, {' and '.join(modes)} mode: {p}" for p in everywhere]
    for mode in modes:
        lines += [f"{width} px, {mode} mode: {p}" for p in found[mode] if p not in everywhere]
    return lines


def check_layout(
    page_obj, root: Path, base_url: str, widths: tuple[int, ...], screenshot: Path | None
) -> tuple[list[str], list[str]]:
    """The layout and figure problems of an open page at each width, light and dark mode.

    Also returns the blocks that need sideways scrolling at each width (`scrolling_blocks`,
    light mode). Screenshots are taken along the way (see `screenshot_path`). The page is
    left in the last width and mode checked.
    """
    problems: list[str] = []
    scrolling: list[str] = []
    for n, width in enumerate(widths):
        height = page_obj.viewport_size["height"]
        if width != page_obj.viewport_size["width"]:
            page_obj.set_viewport_size({"width": width, "height": height})
        found: dict[str, list[str]] = {"light": [], "dark": []}
        # Light then dark at the first width, dark then light at the next: one switch each.
        for mode in ("light", "dark") if n % 2 == 0 else ("dark", "light"):
            if page_obj.evaluate("() => document.documentElement.dataset.theme") != mode:
                page_obj.evaluate(_SET_MODE_JS, mode)
            measured = page_obj.evaluate(_LAYOUT_JS, LAYOUT_SELECTOR)
            found[mode] = layout_problems(measured)
            if mode == "light":
                scrolling.extend(f"{width} px: {w}" for w in scrolling_blocks(measured))
            if n == 0 and mode == "light":
                problems.extend(figure_problems(root, base_url, measured["images"]))
            shot = screenshot and screenshot_path(screenshot, n == 0, width, mode)
            if shot:
                page_obj.screenshot(path=str(shot), full_page=True, timeout=SHOT_TIMEOUT_MS)
        problems.extend(by_layout(width, found))
    return problems, scrolling


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
