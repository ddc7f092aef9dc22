"""CITATION.cff, CHANGELOG.md and the landing page's version and citation agree with the one
place each fact lives: cifutils.__version__, _config.yml (repository URL, title, author) and
book/references.bib (the paper the book follows)."""

from __future__ import annotations

import datetime as dt
import importlib
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import cifutils

ROOT = Path(__file__).resolve().parent.parent
CFF_TEXT = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
CFF = yaml.safe_load(CFF_TEXT)
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def _ext(name: str):
    """A module of book/_ext, imported as Sphinx imports the book's local extensions."""
    ext = str(ROOT / "book" / "_ext")
    if ext not in sys.path:
        sys.path.insert(0, ext)
    return importlib.import_module(name)


def _bib_entry(key: str) -> dict[str, str]:
    """The fields of one entry of book/references.bib (flat ``name = {value}`` fields)."""
    text = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    match = re.search(r"@\w+\{" + re.escape(key) + r",(.*?)\n\}", text, re.S)
    assert match, f"{key} is not in book/references.bib"
    return {k.lower(): v for k, v in re.findall(r"(\w+)\s*=\s*\{(.*)\},?\s*$", match[1], re.M)}


def test_citation_has_the_required_fields():
    assert CFF["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors", "version", "date-released", "license"):
        assert CFF.get(key), f"CITATION.cff has no {key}"
    assert CFF["type"] == "software"
    assert CFF["license"] == "MIT"
    assert "CC BY 4.0" in CFF["message"]  # the text's licence; `license` is the code's
    dt.date.fromisoformat(str(CFF["date-released"]))


def test_citation_matches_the_package_and_the_book_config():
    assert CFF["version"] == cifutils.__version__  # a string, not a YAML number
    assert CFF["repository-code"] == CONFIG["repository"]["url"].rstrip("/")
    assert CFF["title"] == CONFIG["title"]
    assert CFF["authors"] == [{"name": CONFIG["author"]}]


def test_citation_references_the_paper_as_in_the_bibliography():
    (paper,) = CFF["references"]
    bib = _bib_entry("caterini2020variational")
    assert paper["type"] == "conference-paper"
    assert paper["title"] == bib["title"]
    assert paper["collection-title"] == bib["booktitle"]
    assert str(paper["year"]) == bib["year"]
    names = [f"{a['family-names']}, {a['given-names']}" for a in paper["authors"]]
    assert " and ".join(names) == bib["author"]


def test_citation_is_valid_cff():
    """Against the CFF 1.2.0 schema, where cffconvert is installed (it is not a dependency)."""
    cffconvert = pytest.importorskip("cffconvert")
    cffconvert.Citation(CFF_TEXT).validate()


def test_landing_page_bibtex_comes_from_the_citation_file():
    bibtex = _ext("book_extras").cff_to_bibtex(CFF)
    assert bibtex == (
        "@misc{cif-vi-book,\n"
        "  author = {{The cifutils authors}},\n"
        "  title  = {Variational inference with continuously-indexed flows},\n"
        f"  year   = {{{str(CFF['date-released'])[:4]}}},\n"
        f"  note   = {{Version {cifutils.__version__}}},\n"
        "  url    = {https://github.com/cif-vi-book/cif-vi-book}\n"
        "}"
    )
    person = {"family-names": "Caterini", "given-names": "Anthony"}
    assert "author = {Caterini, Anthony}" in _ext("book_extras").cff_to_bibtex(
        {**CFF, "authors": [person]}
    )


def test_build_warns_when_the_citation_file_lags_behind():
    extras = _ext("book_extras")
    assert extras.citation_problems(CFF) == []
    stale = {**CFF, "version": "0.0.1", "repository-code": "https://example.org/x"}
    problems = extras.citation_problems(stale)
    assert len(problems) == 2 and cifutils.__version__ in problems[0]


def test_landing_page_version_is_filled_in_from_the_package():
    extras = _ext("book_extras")
    ref = str(CONFIG["repository"]["install_ref"])
    expected = {"cifutils_version": cifutils.__version__, "cifutils_install_ref": ref}
    assert extras.release_substitutions() == expected
    # The config-inited hook merges them over substitutions set in _config.yml.
    config = SimpleNamespace(student_build=False, myst_substitutions={"other": "kept"})
    extras._configure(None, config)
    assert config.myst_substitutions == {"other": "kept", **expected}
    # ... which the landing page uses, with MyST's substitution extension on.
    assert "substitution" in CONFIG["parse"]["myst_enable_extensions"]
    intro = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    assert "{{ cifutils_version }}" in intro and "{{ cifutils_install_ref }}" in intro
    assert ":::{citation-bibtex}" in intro
    assert cifutils.__version__ not in intro  # never typed by hand


def test_changelog_has_a_section_for_this_version():
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog
    version = re.escape(cifutils.__version__)
    assert re.search(rf"^## \[{version}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)
    assert re.search(rf"^\[{version}\]: https://", changelog, re.M)
