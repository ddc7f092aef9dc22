"""The repository address is set once, in _config.yml; everything else must agree with it:
the package (which fetches committed results on Colab) and every notebook's install cell."""

from __future__ import annotations

import json
from pathlib import Path

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
