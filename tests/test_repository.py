"""The repository address is set once, in _config.yml; everything else must agree with it:
the package (which fetches committed results on Colab) and every notebook's install cell."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from cifutils import results

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _configured_url() -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return config["repository"]["url"].rstrip("/")


def test_package_uses_the_configured_repository():
    url = _configured_url()
    assert results.REPOSITORY == url
    owner_name = url.removeprefix("https://github.com/")
    assert results.REPOSITORY_RAW.startswith(f"https://raw.githubusercontent.com/{owner_name}/")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_installs_from_the_configured_repository(path):
    cells = json.loads(path.read_text())["cells"]
    first = next(c for c in cells if c["cell_type"] == "code")
    source = "".join(first["source"])
    assert "google.colab" in source, f"{path.name}: the first code cell must detect Colab"
    assert f"git+{_configured_url()}" in source, f"{path.name}: install cell uses another URL"


def test_glue_stores_values_as_myst_nb_does(monkeypatch):
    """The book quotes glued values from the committed outputs; ``results.glue`` must write
    them in the layout myst-nb's own ``glue`` (not installed on Colab) writes."""
    import IPython.display

    myst_nb_glue = pytest.importorskip("myst_nb").glue
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: shown.append((a, k)))
    monkeypatch.setattr("myst_nb.ext.glue.ipy_display", lambda *a, **k: shown.append((a, k)))
    results.glue("gain_min", 1.75)
    myst_nb_glue("gain_min", 1.75, display=False)
    assert shown[0] == shown[1]
    assert shown[0][0][0] == {"application/papermill.record/text/plain": "1.75"}
    results.glue("gain_min", np.float64(1.75))  # stored as the number, not "np.float64(1.75)"
    assert shown[2] == shown[0]


def _glued_names(nb: dict) -> set[str]:
    return {
        out["metadata"]["scrapbook"]["name"]
        for cell in nb["cells"]
        for out in cell.get("outputs", [])
        if "scrapbook" in out.get("metadata", {})
    }


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_every_quoted_value_is_glued_in_the_committed_outputs(path):
    """A ``{glue:text}`` role whose name no committed output holds renders as nothing."""
    import re

    nb = json.loads(path.read_text())
    quoted = {
        m.group(1)
        for cell in nb["cells"]
        if cell["cell_type"] == "markdown"
        for m in re.finditer(r"\{glue(?::\w+)?\}`([\w-]+)", "".join(cell["source"]))
    }
    assert quoted <= _glued_names(nb)
