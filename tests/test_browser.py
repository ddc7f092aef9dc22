"""The built book in a real browser, with the network off.

Every page `_toc.yml` lists (read when the tests run, so new chapters are covered without
edits here) is opened in headless Chromium from a localhost server, with every request to
another host aborted. Each page must show no console error, load all its images, typeset all
its math (no raw `$$` or `\\begin{`), have internal links and anchors that resolve, and, for
notebook pages, a Colab launch button pointing at the notebook in the configured repository.

Pages that fit: each page is laid out at 1280 px and at a phone's 400 px, in the theme's light
and dark modes. Every table, figure, image, cell output, code block and display formula must
fit the text column or scroll sideways inside a box of its own (not be cut off, not push the
page sideways), and every image of the text must be opaque, so that no figure shows the dark
theme's background through it.

Full-page PNGs of each page are written to `_build/screenshots/` for a person to look at:
`<page>.png` (1280 px), `<page>-dark.png` (1280 px, dark mode) and `<page>-400.png` (400 px).
External links are listed in `_build/screenshots/external-links.txt`, never fetched; the
tables, figures and formulas that fit only by scrolling sideways (allowed, but worth a look)
in `_build/screenshots/sideways-scroll.txt`.

The student edition (`make book-student`) is checked to hold no solution.

Run after building: `make book book-student test-browser` (or `make test`). Environment:
BOOK_HTML, STUDENT_HTML, BOOK_TOC, BOOK_SCREENSHOTS override the folders; CHROMIUM the browser.
Without Chromium or the built book the tests are skipped, except with CI=true where they fail.
"""

from __future__ import annotations

import base64
import io
import os
import re
import time
from pathlib import Path

import browser_check as bc
import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK_HTML = Path(os.environ.get("BOOK_HTML", ROOT / "_build" / "html"))
STUDENT_HTML = Path(os.environ.get("STUDENT_HTML", ROOT / "_build" / "student" / "_build" / "html"))
TOC = Path(os.environ.get("BOOK_TOC", ROOT / "_toc.yml"))
CONFIG = ROOT / "_config.yml"
SHOTS = Path(os.environ.get("BOOK_SCREENSHOTS", ROOT / "_build" / "screenshots"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

PAGES = bc.toc_pages(TOC)


unavailable = bc.unavailable


@pytest.fixture(scope="module")
def browser():
    yield from bc.chromium(CHROMIUM)


def served(folder: Path, what: str):
    if not (folder / "index.html").is_file():
        unavailable(f"no built {what} in {folder} (run make book / make book-student first)")
    return bc.serve(folder)


@pytest.fixture(scope="module")
def book(browser):
    with served(BOOK_HTML, "book") as base_url:
        context = bc.offline_context(browser)
        yield context, base_url
        context.close()


@pytest.fixture(scope="module")
def external_links():
    links: dict[str, set[str]] = {}
    yield links
    if links:
        SHOTS.mkdir(parents=True, exist_ok=True)
        lines = [f"{href}\t{page}" for href in sorted(links) for page in sorted(links[href])]
        (SHOTS / "external-links.txt").write_text(
            "# External links of the book (listed, not fetched): URL<TAB>page\n"
            + "\n".join(lines)
            + "\n"
        )


@pytest.fixture(scope="module")
def sideways_scroll():
    found: dict[str, list[str]] = {}
    yield found
    if found:
        SHOTS.mkdir(parents=True, exist_ok=True)
        lines = [f"{page}\t{what}" for page in found for what in found[page]]
        (SHOTS / "sideways-scroll.txt").write_text(
            "# Tables, figures and formulas that fit the text column only by scrolling sideways"
            " in a box of their own (code blocks left out): page<TAB>viewport: element\n"
            + "\n".join(lines)
            + "\n"
        )


def is_notebook(page: str) -> bool:
    return (ROOT / f"{page}.ipynb").is_file()


@pytest.mark.parametrize("page", PAGES)
def test_page_in_browser(book, external_links, sideways_scroll, page):
    context, base_url = book
    expected = bc.colab_url(CONFIG, page) if is_notebook(page) else None
    shot = SHOTS / (page.replace("/", "__") + ".png")
    start = time.perf_counter()
    report = bc.check_page(context, BOOK_HTML, base_url, page, shot, colab_expected=expected)
    for href in report.external_links:
        external_links.setdefault(href, set()).add(page)
    if report.scrolling:
        sideways_scroll[page] = report.scrolling
    assert not report.problems, "\n".join(report.problems)
    print(f"{page}: ok in {time.perf_counter() - start:.1f} s, screenshot {shot}")


def test_mathjax_is_served_locally():
    """The offline copy is wired in: pages load MathJax from _static, not from a CDN."""
    pages_with_math = [
        p
        for p in PAGES
        if (BOOK_HTML / f"{p}.html").is_file()
        and 'class="math' in (BOOK_HTML / f"{p}.html").read_text(encoding="utf-8")
    ]
    if not pages_with_math:
        unavailable("no built page with math to check")
    for p in pages_with_math:
        html = (BOOK_HTML / f"{p}.html").read_text(encoding="utf-8")
        scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', html, flags=re.I)
        assert scripts, f"{p}: no MathJax script"
        for src in scripts:
            assert "://" not in src, f"{p}: MathJax from the network: {src}"
            assert (BOOK_HTML / p).parent.joinpath(src.split("?")[0]).resolve().is_file(), src
    assert (BOOK_HTML / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_every_chapter_has_its_run_card():
    """Each chapter shows its run card (book/_ext/run_cards.py) right under its title, with
    CPU times at the smoke and book budgets, read from results/execution.json."""
    chapters = [p for p in PAGES if is_notebook(p) and (BOOK_HTML / f"{p}.html").is_file()]
    if not chapters:
        unavailable("no built chapter to check")
    for p in chapters:
        html = (BOOK_HTML / f"{p}.html").read_text(encoding="utf-8")
        card = re.search(r'</h1>\s*<div class="[^"]*\brun-card\b[^"]*">(.*?)</table>', html, re.S)
        assert card, f"{p}: no run card right under the title"
        rows = {
            m.group(1): m.group(2)
            for m in re.finditer(
                r"<tr[^>]*>\s*<td><p><code[^>]*><span class=\"pre\">(\w+)</span></code></p></td>"
                r"\s*<td><p>([^<]*)</p></td>",
                card.group(1),
            )
        }
        assert set(rows) == {"smoke", "book", "paper"}, f"{p}: run card rows {sorted(rows)}"
        for budget in ("smoke", "book"):
            assert re.fullmatch(r"[\d.]+ (s|min|h)", rows[budget]), f"{p}: {budget} {rows[budget]}"


# ----------------------------------------------------------------------------- student build

SOLUTION_MARKERS = re.compile(r'class="[^"]*\bsolution\b|solution-start|solution-end|Solution to')


def test_student_build_has_no_solutions(browser):
    """The student edition keeps every exercise and drops every solution, gated ones too."""
    if not (STUDENT_HTML / "index.html").is_file():
        unavailable(f"no student build in {STUDENT_HTML} (make book-student)")
    if not (BOOK_HTML / "index.html").is_file():
        unavailable(f"no built book in {BOOK_HTML} (make book)")
    problems: list[str] = []
    total_solutions = 0
    with bc.serve(BOOK_HTML) as full_url, bc.serve(STUDENT_HTML) as student_url:
        context = bc.offline_context(browser)
        for page in PAGES:
            student_file = STUDENT_HTML / f"{page}.html"
            if not student_file.is_file():
                problems.append(f"{page}: missing from the student build")
                continue
            html = student_file.read_text(encoding="utf-8")
            problems.extend(
                f"{page}: solution markup in the student HTML: {m.group(0)!r}"
                for m in SOLUTION_MARKERS.finditer(html)
            )
            tab = context.new_page()
            tab.goto(full_url + f"{page}.html", wait_until="domcontentloaded")
            solutions = tab.evaluate(
                "() => [...document.querySelectorAll('.solution')].map(e => e.innerText)"
            )
            exercises = tab.evaluate("() => document.querySelectorAll('.exercise').length")
            tab.goto(student_url + f"{page}.html", wait_until="domcontentloaded")
            student_text = tab.evaluate("() => document.body.innerText")
            student_exercises = tab.evaluate("() => document.querySelectorAll('.exercise').length")
            tab.close()
            total_solutions += len(solutions)
            if student_exercises != exercises:
                problems.append(
                    f"{page}: {student_exercises} exercises in the student build, {exercises} in"
                    " the full one"
                )
            # No line of any solution (code or prose, long enough to be distinctive) survives.
            for solution in solutions:
                for line in solution.splitlines():
                    line = line.strip()
                    if len(line) >= 30 and line in student_text:
                        problems.append(f"{page}: solution text in the student build: {line!r}")
        context.close()
    sources = STUDENT_HTML / "_sources"
    if sources.exists() and any(sources.rglob("*.ipynb")):
        problems.append("the student build ships notebook sources (_sources/*.ipynb)")
    assert not problems, "\n".join(problems)
    print(f"{total_solutions} solutions in the full build, none in the student build")


# ----------------------------------------------------------------------------- self-test

BROKEN_PAGE = r"""<!DOCTYPE html><html><head><title>broken</title>
<script src="https://cdn.example.org/lib.js"></script></head><body>
<section id="main"><p>Raw display math: $$x^2$$ and \begin{align} a \end{align}.</p>
<p>Unrendered inline: $\mathcal{L}(\theta)$.</p>
<div class="math notranslate nohighlight">\[ y = x \]</div>
<img src="_images/missing.png" alt="a missing figure">
<a href="other.html">missing page</a> <a href="#nowhere">missing anchor</a>
<a href="#main">fine anchor</a> <a href="https://example.org/">external</a>
<a href="https://colab.research.google.com/github/someone/else/blob/main/x.ipynb">colab</a>
<script>undefinedFunction();</script></section></body></html>
"""


def test_checker_reports_a_broken_page(browser, tmp_path):
    """The checks can fail: a deliberately broken page is reported, element by element."""
    (tmp_path / "index.html").write_text("<html><body>index</body></html>")
    (tmp_path / "broken.html").write_text(BROKEN_PAGE)
    with bc.serve(tmp_path) as base_url:
        context = bc.offline_context(browser)
        report = bc.check_page(
            context, tmp_path, base_url, "broken", colab_expected="https://colab.example/x.ipynb"
        )
        context.close()
    text = "\n".join(report.problems)
    expected = [
        "requested a non-local resource (blocked, offline): https://cdn.example.org/lib.js",
        "uncaught exception",
        "raw TeX in visible text",
        "\\\\begin{align}",
        "mathcal",
        "not typeset",
        "not loaded: image _images/missing.png",
        "HTTP 404",
        "broken link <a href='other.html'>: target file other.html does not exist",
        "broken link <a href='#nowhere'>: anchor #nowhere not found",
        "Colab launch button https://colab.research.google.com/github/someone/else",
    ]
    missing = [e for e in expected if e not in text]
    assert not missing, f"not reported: {missing}\nreport:\n{text}"
    assert all(p.startswith("broken: ") for p in report.problems)
    assert "anchor #main" not in text  # the one anchor that exists is not reported
    assert report.external_links == {
        "https://example.org/",
        "https://colab.research.google.com/github/someone/else/blob/main/x.ipynb",
    }


def _png(rgba: tuple[int, int, int, int], size=(40, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", size, rgba).save(buffer, format="PNG")
    return buffer.getvalue()


LAYOUT_PAGE = """<!DOCTYPE html><html><head><title>layout</title><style>
body { margin: 0; } main { max-width: 600px; margin: 0 auto; padding: 0 20px; }
.scroll { overflow-x: auto; } .clip { overflow: hidden; width: 150px; }
table { border-collapse: collapse; } td { padding: 0; }
</style></head><body><main>
<p>A text column of at most 600 px.</p>
<table id="too-wide"><tr><td style="min-width: 900px">a table wider than the column</td></tr>
</table>
<div class="scroll"><table id="scrolls"><tr><td style="min-width: 900px">a wide table in its
own scroll box</td></tr></table></div>
<div class="clip"><img id="cut" src="opaque.png" width="300" height="30" alt="cut off"></div>
<img src="opaque.png" alt="an opaque figure">
<img src="DATA_URI" alt="a transparent figure">
<pre style="overflow: visible; white-space: pre">a code line with no scroll box: WIDE_LINE</pre>
</main></body></html>
"""


def test_checker_reports_layout_offenders(browser, tmp_path):
    """The layout and figure checks can fail: each offender of a synthetic page is named."""
    transparent = "data:image/png;base64," + base64.b64encode(_png((0, 0, 0, 0))).decode()
    (tmp_path / "opaque.png").write_bytes(_png((255, 255, 255, 255)))
    page = LAYOUT_PAGE.replace("DATA_URI", transparent).replace("WIDE_LINE", "x" * 150)
    (tmp_path / "index.html").write_text("<html><body>index</body></html>")
    (tmp_path / "layout.html").write_text(page)
    shot = tmp_path / "shots" / "layout.png"
    with bc.serve(tmp_path) as base_url:
        context = bc.offline_context(browser)
        report = bc.check_page(context, tmp_path, base_url, "layout", shot)
        context.close()
    text = "\n".join(report.problems)
    expected = ["is not opaque: 100.0% of its pixels are transparent"]
    for width in bc.LAYOUT_WIDTHS:
        for mode in ("light and dark",):
            prefix = f"layout: {width} px, {mode} mode: "
            expected += [
                prefix + '<table id="too-wide"> "a table wider than the column": wider than the'
                " text column and not in a horizontal scroll box of its own",
                prefix + '<img id="cut"> "opaque.png": cut off on the right by <div class="clip">',
                prefix + '<pre> "a code line with no scroll box: xxx',
            ]
    expected.append("layout: 400 px, light and dark mode: the page is")
    missing = [e for e in expected if e not in text]
    assert not missing, f"not reported: {missing}\nreport:\n{text}"
    assert 'id="scrolls"' not in text  # it scrolls in a box of its own: fine
    assert text.count("is not opaque") == 1  # the opaque PNG passes
    assert [s for s in report.scrolling if 'id="scrolls"' in s] == [
        f'{w} px: <table id="scrolls"> "a wide table in its own scroll box"'
        for w in bc.LAYOUT_WIDTHS
    ]
    for name in ("layout.png", "layout-dark.png", "layout-400.png"):
        assert (shot.parent / name).is_file(), name


def test_toc_pages_cover_the_book():
    """Sanity of the page list: the root first, and only files that exist in the repository."""
    assert PAGES[0] == bc.toc_pages(TOC)[0]
    for page in PAGES:
        assert any((ROOT / f"{page}{s}").is_file() for s in (".md", ".ipynb", ".rst")), page
