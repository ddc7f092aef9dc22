"""The animation players of chapters 2 and 3 in a real browser, with the network off.

The chapters display `cifutils.plotting.animate_layers` objects, whose web representation is
matplotlib's JavaScript player (`to_jshtml`) with the frames embedded. Each page is opened in
headless Chromium from a localhost server with every other request aborted (the helpers of
tests/browser_check.py); the player must be there, its first frame must have loaded
(`naturalWidth > 0`), its script must have started (the slider knows the number of frames), a
click on "Next frame" must show the next frame, and nothing may come from the network. A PNG
of each player is written to `_build/screenshots/` for a person to look at.

Run after building: `make book test-browser`. Environment: BOOK_HTML, BOOK_TOC and
BOOK_SCREENSHOTS override the folders, CHROMIUM the browser. Without Chromium or the built book
the tests are skipped, except with CI=true where they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import browser_check as bc
import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK_HTML = Path(os.environ.get("BOOK_HTML", ROOT / "_build" / "html"))
TOC = Path(os.environ.get("BOOK_TOC", ROOT / "_toc.yml"))
SHOTS = Path(os.environ.get("BOOK_SCREENSHOTS", ROOT / "_build" / "screenshots"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

# The pages with an animation, one player each.
PLAYER_PAGES = ["notebooks/02_normalizing_flows", "notebooks/03_continuously_indexed_flows"]

# The state of every player on the page, once its first frame has loaded (or 10 s passed).
_PLAYERS_JS = r"""
async () => {
  const images = [...document.querySelectorAll(".animation img[id^='_anim_img']")];
  await Promise.all(images.map(img => new Promise(resolve => {
    const done = () => img.complete && img.naturalWidth > 0;
    const start = Date.now();
    const poll = () => (done() || Date.now() - start > 10000) ? resolve() : setTimeout(poll, 50);
    poll();
  })));
  return images.map(img => {
    const player = img.closest(".animation");
    const slider = player.querySelector("input.anim-slider");
    return {
      id: img.id, src: img.getAttribute("src") || "", complete: img.complete,
      naturalWidth: img.naturalWidth, sliderMax: slider ? Number(slider.max) : -1,
      buttons: player.querySelectorAll(".anim-buttons button").length,
      icons: player.querySelectorAll(".anim-buttons button svg").length,
    };
  });
}
"""


unavailable = bc.unavailable


@pytest.fixture(scope="module")
def browser():
    yield from bc.chromium(CHROMIUM)


@pytest.fixture(scope="module")
def book(browser):
    if not (BOOK_HTML / "index.html").is_file():
        unavailable(f"no built book in {BOOK_HTML} (run make book first)")
    with bc.serve(BOOK_HTML) as base_url:
        context = bc.offline_context(browser)
        yield context, base_url
        context.close()


def check_players(
    context, base_url: str, page: str, expected: int = 1, screenshot: Path | None = None
) -> list[str]:
    """Open `page` and return what is wrong with its animation players (empty: nothing)."""
    problems: list[str] = []
    tab = context.new_page()
    blocked_before = len(context.blocked)
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda exc: errors.append(f"uncaught exception: {exc}"))
    try:
        tab.goto(base_url + f"{page}.html", wait_until="load", timeout=60_000)
        players = tab.evaluate(_PLAYERS_JS)
        if len(players) != expected:
            problems.append(f"{len(players)} animation players, expected {expected}")
        for player in players:
            name = player["id"]
            if not (player["complete"] and player["naturalWidth"] > 0):
                problems.append(f"{name}: the first frame did not load")
            if not player["src"].startswith("data:image/png;base64,"):
                problems.append(f"{name}: the first frame is not embedded as PNG data")
            if player["sliderMax"] < 1:
                problems.append(f"{name}: the player's script did not start (slider max)")
            if player["buttons"] != 9 or player["icons"] != 9:
                problems.append(f"{name}: {player['icons']} of {player['buttons']} buttons drawn")
            before = player["src"]
            tab.click(f"#{name} ~ .anim-controls button[title='Next frame']")
            after = tab.evaluate(
                """async (id) => { const img = document.getElementById(id);
                   await img.decode().catch(() => null);
                   return [img.getAttribute("src"), img.naturalWidth,
                           document.getElementById(id.replace("img", "slider")).value]; }""",
                name,
            )
            if after[0] == before or after[1] <= 0 or after[2] != "1":
                problems.append(f"{name}: 'Next frame' did not show frame 1 (slider {after[2]})")
            tab.click(f"#{name} ~ .anim-controls button[title='First frame']")
        if screenshot is not None and players:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            tab.locator(".animation").first.screenshot(path=str(screenshot))
    finally:
        tab.close()
    problems.extend(f"network request (blocked): {u}" for u in context.blocked[blocked_before:])
    problems.extend(f"console error: {e}" for e in errors)
    return [f"{page}: {p}" for p in problems]


@pytest.mark.parametrize("page", PLAYER_PAGES)
def test_player_in_browser(book, page):
    assert page in bc.toc_pages(TOC), f"{page} is not in the table of contents"
    context, base_url = book
    shot = SHOTS / ("player__" + page.replace("/", "__") + ".png")
    problems = check_players(context, base_url, page, screenshot=shot)
    assert not problems, "\n".join(problems)
    print(f"{page}: player ok, screenshot {shot}")


BROKEN_PLAYER = """<!DOCTYPE html><html><head><title>broken</title>
<link rel="stylesheet" href="https://cdn.example.org/font-awesome.css"></head><body>
<div class="animation"><img id="_anim_img0"><div class="anim-controls">
<input id="_anim_slider0" type="range" class="anim-slider" min="0" max="0" value="0">
<div class="anim-buttons"><button title="Next frame"><i class="fa fa-step-forward"></i></button>
<button title="First frame"><i class="fa fa-fast-backward"></i></button></div></div></div>
</body></html>
"""


def test_checker_reports_a_broken_player(browser, tmp_path):
    """The checks can fail: a player without frames, script or icons, which fetches its
    icon font from a CDN, is reported on each count."""
    (tmp_path / "index.html").write_text("<html><body>index</body></html>")
    (tmp_path / "broken.html").write_text(BROKEN_PLAYER)
    with bc.serve(tmp_path) as base_url:
        context = bc.offline_context(browser)
        problems = "\n".join(check_players(context, base_url, "broken"))
        context.close()
    expected = [
        "_anim_img0: the first frame did not load",
        "not embedded as PNG data",
        "script did not start",
        "0 of 2 buttons drawn",
        "'Next frame' did not show frame 1",
        "network request (blocked): https://cdn.example.org/font-awesome.css",
    ]
    missing = [e for e in expected if e not in problems]
    assert not missing, f"not reported: {missing}\nreport:\n{problems}"
