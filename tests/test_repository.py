"""The repository address and the install ref are set once, in _config.yml; everything else
must agree with them: the package (which fetches committed results on Colab) and every
notebook's install cell, which book/_ext/pin_install.py rewrites."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import cifutils
from cifutils import results

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REQUIREMENT = re.compile(r'"cifutils @ git\+([^"]*)"')


def _configured_url() -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return config["repository"]["url"].rstrip("/")


def _configured_ref() -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return str(config["repository"]["install_ref"])


def _pin_install():
    """book/_ext/pin_install.py, imported as Sphinx imports the book's local extensions."""
    ext = str(ROOT / "book" / "_ext")
    if ext not in sys.path:
        sys.path.insert(0, ext)
    return importlib.import_module("pin_install")


def test_package_uses_the_configured_repository():
    url = _configured_url()
    assert results.REPOSITORY == url
    owner_name = url.removeprefix("https://github.com/")
    assert results.REPOSITORY_RAW.startswith(f"https://raw.githubusercontent.com/{owner_name}/")


def test_results_are_fetched_at_the_release_of_this_version():
    """Outside a checkout, load_result reads the results committed at this version's tag, not
    main's newer ones: the same ref as the install cells when install_ref is the tag."""
    assert results.REPOSITORY_REF == f"v{cifutils.__version__}"
    assert results.REPOSITORY_RAW.endswith(f"/{results.REPOSITORY_REF}")
    ref = _configured_ref()
    assert ref == results.REPOSITORY_REF or re.fullmatch(r"[0-9a-f]{40}", ref)


def test_install_ref_is_the_release_tag_or_a_commit():
    """The install cells pin the release of this version (its tag, pushed when the release is
    cut: see README, "Colab, pinned installs and releases") or one exact commit; a tag of
    another version means __version__ or install_ref was bumped without the other."""
    ref = _configured_ref()
    assert ref == f"v{cifutils.__version__}" or re.fullmatch(r"[0-9a-f]{40}", ref), (
        f"_config.yml install_ref {ref!r}: expected v{cifutils.__version__} or a commit hash"
    )
    assert _pin_install().read_pin() == (_configured_url(), ref)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_installs_from_the_configured_repository(path):
    cells = json.loads(path.read_text())["cells"]
    first = next(c for c in cells if c["cell_type"] == "code")
    source = "".join(first["source"])
    assert "google.colab" in source, f"{path.name}: the first code cell must detect Colab"
    assert REQUIREMENT.findall(source) == [f"{_configured_url()}@{_configured_ref()}"], (
        f"{path.name}: the install cell must install exactly the configured URL and ref; "
        "run `python book/_ext/pin_install.py`"
    )
    assert "%pip install" in source


def test_pin_install_check_passes_on_the_committed_notebooks(capsys):
    assert NOTEBOOKS
    assert _pin_install().main(["--check"]) == 0
    assert f"all {len(NOTEBOOKS)} install cells" in capsys.readouterr().out


def _repinned(tmp_path, ref: str, source_as_str: bool = False) -> tuple[dict, dict, str, str]:
    """A copy of chapter 1 (its install cell's source a string if asked), pinned to ``ref``
    through the command line: the notebooks before and after, and their texts."""
    pin = _pin_install()
    nb = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    if source_as_str:
        cell = pin.install_cell(nb)
        cell["source"] = "".join(cell["source"])
    text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    path = tmp_path / NOTEBOOKS[0].name
    path.write_text(text, encoding="utf-8")
    config = tmp_path / "_config.yml"
    config.write_text(
        (ROOT / "_config.yml")
        .read_text()
        .replace(f"install_ref: {_configured_ref()}", f"install_ref: {ref}")
    )
    assert pin.main([str(path), "--config", str(config), "--check"]) == 1
    assert path.read_text(encoding="utf-8") == text  # --check writes nothing
    assert pin.main([str(path), "--config", str(config)]) == 0
    assert pin.main([str(path), "--config", str(config), "--check"]) == 0
    after = path.read_text(encoding="utf-8")
    return nb, json.loads(after), text, after


@pytest.mark.parametrize("source_as_str", [False, True], ids=["list", "str"])
def test_pin_install_changes_only_the_requirement(tmp_path, source_as_str):
    sha = "0123456789abcdef0123456789abcdef01234567"
    before, after, text, new_text = _repinned(tmp_path, sha, source_as_str)
    pin = _pin_install()
    old_cell, new_cell = pin.install_cell(before), pin.install_cell(after)
    assert type(new_cell["source"]) is type(old_cell["source"])
    old_source, new_source = "".join(old_cell["source"]), "".join(new_cell["source"])
    url = _configured_url()
    assert REQUIREMENT.findall(new_source) == [f"{url}@{sha}"]
    assert new_source == old_source.replace(f"{url}@{_configured_ref()}", f"{url}@{sha}")
    # The layout is Jupyter's, and everything else (outputs, metadata) is unchanged.
    assert new_text == json.dumps(after, indent=1, ensure_ascii=False) + "\n"
    new_cell["source"] = old_cell["source"]
    assert after == before
    changed = [(a, b) for a, b in zip(text.splitlines(), new_text.splitlines()) if a != b]
    assert len(changed) == 1 and len(text.splitlines()) == len(new_text.splitlines())


def test_pin_install_refuses_what_it_cannot_rewrite_faithfully(tmp_path):
    pin = _pin_install()
    url, ref = _configured_url(), _configured_ref()
    text = NOTEBOOKS[0].read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="layout"):
        pin.pin_text(json.dumps(json.loads(text), indent=2) + "\n", url, ref)
    nb = json.loads(text)
    pin.install_cell(nb)["source"].append('%pip install "cifutils @ git+https://example.org"\n')
    with pytest.raises(ValueError, match="2 "):
        pin.pin_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", url, ref)
    config = tmp_path / "_config.yml"
    for bad in ("", "v1 2", '"v1"', "main@x"):
        config.write_text(yaml.safe_dump({"repository": {"url": url, "install_ref": bad}}))
        with pytest.raises(ValueError, match="install_ref"):
            pin.read_pin(config)


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


@pytest.mark.parametrize(
    "env, args, message",
    [
        ({}, ["fast"], "BUDGET must be smoke, book or paper, not 'fast'"),
        ({}, ["smoke", "notebooks/missing.ipynb"], "no notebook notebooks/missing.ipynb"),
        ({"COLAB_PATH_SITE": "cloud"}, ["smoke"], "COLAB_PATH_SITE must be fresh or system"),
    ],
)
def test_colab_path_refuses_bad_input_before_any_work(tmp_path, env, args, message):
    """.ci/colab-path names the bad argument and exits before it builds an environment."""
    run = subprocess.run(
        [str(ROOT / ".ci" / "colab-path"), *args],
        cwd=ROOT,
        env={**os.environ, "COLAB_PATH_OUT": str(tmp_path / "out"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert "fresh environment" not in run.stdout
    assert not (tmp_path / "out").exists()


def test_gpu_colab_path_refuses_to_start_unprepared(tmp_path):
    """benchmarks/gpu_colab_path.sh stops before launching anything when the wheels or the
    data it must carry are missing (here: run from a copy without them)."""
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(ROOT / "benchmarks" / "gpu_colab_path.sh", tmp_path / "benchmarks")
    run = subprocess.run(
        ["bash", "benchmarks/gpu_colab_path.sh", "start"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "missing .whl: prepare it first" in run.stderr
    assert not (tmp_path / "_build").exists()
