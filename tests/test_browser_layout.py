"""The pure decisions behind the browser test's layout and figure checks, without a browser.

tests/browser_check.py measures pages in Chromium and leaves the verdicts to plain functions:
`layout_problem` (does a block fit the text column, or scroll in a box of its own?) and
`image_transparency` (does a figure have transparent pixels?). These tests feed them
synthetic boxes and images, so they run in `make test-unit` with no browser and no built book.
"""

from __future__ import annotations

import base64
import io

import browser_check as bc
import pytest
from PIL import Image

COLUMN = (100.0, 700.0)  # the text column's content box, left and right (CSS px)


def png(mode: str, size=(20, 10), color=None, **save) -> bytes:
    """A small PNG of one colour in `mode` (by default opaque white, or fully transparent)."""
    if color is None:
        color = {"RGBA": (255, 255, 255, 255), "LA": (255, 255), "RGB": (255, 255, 255)}.get(
            mode, 0
        )
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG", **save)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- fits or scrolls


def test_a_block_inside_the_column_fits():
    assert bc.layout_problem(bc.Block(100, 700, "<table>"), COLUMN) is None
    # Sub-pixel rounding is tolerated.
    assert bc.layout_problem(bc.Block(99.5, 700.8, "<table>"), COLUMN) is None


def test_a_block_wider_than_the_column_is_reported_with_its_extent():
    why = bc.layout_problem(bc.Block(100, 760, '<table class="dataframe">'), COLUMN)
    assert why and "wider than the text column" in why
    assert "x 100-760, the column 100-700" in why
    # Sticking out on the left counts too.
    assert bc.layout_problem(bc.Block(60, 500, "<img>"), COLUMN)


def test_a_wide_block_in_its_own_scroll_box_fits():
    scroll_box = bc.Clip(100, 700, "auto", '<div class="output">')
    assert bc.layout_problem(bc.Block(100, 1100, "<table>", (scroll_box,)), COLUMN) is None
    scroll_x = bc.Clip(100, 700, "scroll", "<div>")
    assert bc.layout_problem(bc.Block(100, 1100, "<table>", (scroll_x,)), COLUMN) is None


def test_a_scroll_box_that_is_itself_too_wide_is_reported():
    scroll_box = bc.Clip(100, 900, "auto", '<div class="output">')
    why = bc.layout_problem(bc.Block(100, 1100, "<table>", (scroll_box,)), COLUMN)
    assert why and '<div class="output"> spans x 100-900' in why


def test_a_block_clipped_by_a_hidden_overflow_is_cut_off():
    for overflow in ("hidden", "clip"):
        clip = bc.Clip(100, 400, overflow, '<div class="math">')
        why = bc.layout_problem(bc.Block(100, 500, "<mjx-container>", (clip,)), COLUMN)
        assert why and why.startswith('cut off on the right by <div class="math">'), why
        assert f"overflow-x: {overflow}" in why


def test_clips_are_walked_from_the_innermost_out():
    inner_scroll = bc.Clip(100, 400, "auto", "<mjx-container>")
    outer_hidden = bc.Clip(100, 700, "hidden", '<div class="math">')
    # Scrolls inside the formula's own box, which fits the hidden one: fine.
    block = bc.Block(100, 1200, "<mjx-math>", (inner_scroll, outer_hidden))
    assert bc.layout_problem(block, COLUMN) is None
    # A hidden box that does not hold the scroll box cuts it off.
    narrow_hidden = bc.Clip(100, 300, "hidden", '<div class="math">')
    block = bc.Block(100, 1200, "<mjx-math>", (inner_scroll, narrow_hidden))
    assert "cut off" in bc.layout_problem(block, COLUMN)
    # A hidden box the block does not exceed changes nothing.
    roomy_hidden = bc.Clip(0, 2000, "hidden", "<div>")
    assert bc.layout_problem(bc.Block(100, 600, "<img>", (roomy_hidden,)), COLUMN) is None


def measured(*blocks, page=None) -> dict:
    """A measurement shaped like `_LAYOUT_JS`'s result."""
    return {
        "column": {"left": COLUMN[0], "right": COLUMN[1]},
        "blocks": [
            {
                "left": b.left,
                "right": b.right,
                "what": b.what,
                "clips": [vars(c) for c in b.clips],
                "parent": b.parent,
                "scrolls": b.scrolls,
            }
            for b in blocks
        ],
        "page": page or {"scrollWidth": 800, "clientWidth": 800, "culprits": []},
        "images": [],
    }


def test_layout_problems_names_the_outermost_offender_only():
    result = bc.layout_problems(
        measured(
            bc.Block(100, 900, '<div class="cell_output">'),
            bc.Block(100, 900, '<table class="dataframe">', parent=0),
            bc.Block(100, 650, "<img>"),
            bc.Block(100, 800, "<pre>"),
        )
    )
    assert len(result) == 2
    assert result[0].startswith('<div class="cell_output">: wider than the text column')
    assert result[1].startswith("<pre>: wider")


def test_a_page_that_scrolls_sideways_is_reported_with_what_sticks_out():
    page = {"scrollWidth": 487, "clientWidth": 400, "culprits": ['<span class="pre"> "x.y.z"']}
    (line,) = bc.layout_problems(measured(page=page))
    assert line == (
        "the page is 487 px wide in a 400 px viewport: it scrolls sideways;"
        ' sticking out: <span class="pre"> "x.y.z"'
    )
    assert bc.layout_problems(measured(page={"scrollWidth": 400, "clientWidth": 400})) == []


def test_scrolling_blocks_lists_what_fits_only_by_scrolling():
    scroll_box = bc.Clip(100, 700, "auto", '<div class="output">')
    result = bc.scrolling_blocks(
        measured(
            bc.Block(100, 1100, '<table class="dataframe">', (scroll_box,)),
            bc.Block(100, 700, "<mjx-container>", scrolls=True),
            bc.Block(100, 700, "<pre>", scrolls=True),  # code is expected to scroll
            bc.Block(100, 600, "<img>"),
            bc.Block(100, 900, "<table>"),  # does not fit at all: a problem, not listed here
        )
    )
    assert result == ['<table class="dataframe">', "<mjx-container>"]


def test_problems_of_both_colour_modes_are_merged():
    found = {"light": ["A", "B"], "dark": ["A", "C"]}
    assert bc.by_layout(400, found) == [
        "400 px, light and dark mode: A",
        "400 px, light mode: B",
        "400 px, dark mode: C",
    ]
    assert bc.by_layout(1280, {"light": [], "dark": []}) == []


def test_screenshot_names(tmp_path):
    base = tmp_path / "notebooks__05_x.png"
    assert bc.screenshot_path(base, True, 1280, "light") == base
    assert bc.screenshot_path(base, True, 1280, "dark") == tmp_path / "notebooks__05_x-dark.png"
    assert bc.screenshot_path(base, False, 400, "light") == tmp_path / "notebooks__05_x-400.png"
    assert bc.screenshot_path(base, False, 400, "dark") is None


# ----------------------------------------------------------------------------- figure backgrounds


def test_an_opaque_png_has_no_transparency():
    assert bc.image_transparency(png("RGBA")) == 0.0  # alpha channel, all 255
    assert bc.image_transparency(png("RGB")) == 0.0
    assert bc.image_transparency(png("L", color=0)) == 0.0


def test_a_transparent_png_is_caught():
    assert bc.image_transparency(png("RGBA", color=(0, 0, 0, 0))) == 1.0
    assert bc.image_transparency(png("LA", color=(0, 0))) == 1.0
    # Half the pixels see-through.
    image = Image.new("RGBA", (10, 10), (255, 255, 255, 255))
    image.paste((255, 255, 255, 128), (0, 0, 10, 5))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert bc.image_transparency(buffer.getvalue()) == pytest.approx(0.5)


def test_a_palette_png_with_a_transparent_index_is_caught():
    # Colour type 3 with a tRNS chunk: no alpha channel, index 0 transparent.
    data = png("P", color=0, transparency=0)
    assert bc.image_transparency(data) == 1.0


def test_matplotlib_figures_saved_transparent_are_caught():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
    ax.plot([0, 1], [0, 1])
    results = {}
    for transparent in (False, True):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", transparent=transparent)
        results[transparent] = bc.image_transparency(buffer.getvalue())
    plt.close(fig)
    assert results[False] == 0.0  # the default: an opaque white facecolor
    assert results[True] > 0.5  # transparent=True: the background shows through


def test_undecodable_images_are_not_judged():
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    assert bc.image_transparency(svg) is None


def test_image_bytes_from_data_uris_and_served_files(tmp_path):
    data = png("RGBA")
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "fig.png").write_bytes(data)
    base = "http://127.0.0.1:8000/"
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    assert bc.image_bytes(tmp_path, base, uri) == data
    assert bc.image_bytes(tmp_path, base, "data:image/svg+xml,%3Csvg%2F%3E") == b"<svg/>"
    assert bc.image_bytes(tmp_path, base, base + "_images/fig.png") == data
    assert bc.image_bytes(tmp_path, base, base + "_images/missing.png") is None
    assert bc.image_bytes(tmp_path, base, "https://example.org/_images/fig.png") is None


def test_figure_problems_name_each_transparent_figure_once(tmp_path):
    (tmp_path / "opaque.png").write_bytes(png("RGBA"))
    (tmp_path / "clear.png").write_bytes(png("RGBA", color=(0, 0, 0, 0)))
    base = "http://127.0.0.1:8000/"
    srcs = [base + "opaque.png", base + "clear.png", base + "clear.png", base + "gone.png"]
    (problem,) = bc.figure_problems(tmp_path, base, srcs)
    assert problem.startswith("figure clear.png is not opaque: 100.0% of its pixels")
