"""Local Sphinx extension of the book: the student edition, and one fix for the browser.

1. The student edition: every solution removed from the pages.

sphinx-exercise's own ``hide_solutions`` option drops ``{solution}`` directives, but for a
*gated* solution (``{solution-start}`` ... ``{solution-end}``) it drops only the opening
directive: the solution's code cells between the two markers stay on the page. This extension
instead lets sphinx-exercise assemble every solution (gated or not) into one solution node, then
removes those nodes when ``student_build`` is true; ``make book-student`` sets it
(book/student.yml).

With ``student_build`` on it also turns off copying the page sources (``_sources/``, which holds
each notebook in full), since those would hand the solutions back.

2. Jupyter Book 1.x registers sphinx-thebe's inline configuration script twice, so every page
declares `const THEBE_JS_URL` twice and the browser logs "Identifier 'THEBE_JS_URL' has already
been declared". Identical script entries are dropped from each page (tests/test_browser.py
fails on any console error).

3. The ``# NBVAL_CHECK_OUTPUT`` markers that tell nbval which cells to compare are test
plumbing, not reading matter: their lines are removed from the displayed code.

4. The release the book was built with, never typed by hand: the MyST substitutions
``{{ cifutils_version }}`` (``cifutils.__version__``) and ``{{ cifutils_install_ref }}``
(``repository.install_ref`` of ``_config.yml``, the ref the notebooks' install cells pin; see
pin_install.py beside this file) are set when the configuration is read.

5. The ``{citation-bibtex}`` directive shows ``CITATION.cff`` as a BibTeX entry, and warns
(an error in the strict build) when its version is not ``cifutils.__version__`` or its
``repository-code`` is not the configured repository.
"""

from __future__ import annotations

from pathlib import Path

from docutils import nodes
from pin_install import ROOT, read_pin  # beside this file: book/_ext is on sys.path
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)
CITATION = ROOT / "CITATION.cff"


class RemoveSolutions(SphinxTransform):
    """Remove solution nodes after sphinx-exercise has merged the gated ones (priority 10)."""

    default_priority = 11

    def apply(self, **kwargs) -> None:
        if not self.config.student_build:
            return
        from sphinx_exercise.nodes import solution_end_node, solution_node, solution_start_node

        for cls in (solution_node, solution_start_node, solution_end_node):
            for node in list(self.document.findall(cls)):
                node.parent.remove(node)


NBVAL_MARKERS = ("# NBVAL_CHECK_OUTPUT", "# NBVAL_IGNORE_OUTPUT", "# NBVAL_SKIP")


class HideTestMarkers(SphinxTransform):
    """Drop nbval marker lines from code blocks (source and highlighted text alike)."""

    default_priority = 500

    def apply(self, **kwargs) -> None:
        for block in list(self.document.findall(nodes.literal_block)):
            text = block.astext()
            if not any(marker in text for marker in NBVAL_MARKERS):
                continue
            kept = [line for line in text.splitlines() if line.strip() not in NBVAL_MARKERS]
            cleaned = "\n".join(kept)
            block.rawsource = cleaned
            block[:] = [nodes.Text(cleaned)]


def release_substitutions() -> dict[str, str]:
    """The MyST substitutions that name the release the book is built with."""
    import cifutils

    _, ref = read_pin()
    return {"cifutils_version": cifutils.__version__, "cifutils_install_ref": ref}


def _bibtex_name(author: dict) -> str:
    if "name" in author:  # an entity: braced, so BibTeX does not split it into name parts
        return "{" + author["name"] + "}"
    given = author.get("given-names")
    return author["family-names"] + (f", {given}" if given else "")


def cff_to_bibtex(cff: dict) -> str:
    """A BibTeX ``@misc`` entry for the work that ``cff`` (a parsed CITATION.cff) describes,
    keyed by the repository's name."""
    url = cff["repository-code"].rstrip("/")
    fields = [
        ("author", " and ".join(_bibtex_name(a) for a in cff["authors"])),
        ("title", cff["title"]),
        ("year", str(cff["date-released"])[:4]),
        ("note", f"Version {cff['version']}"),
        ("url", url),
    ]
    width = max(len(name) for name, _ in fields)
    body = ",\n".join(f"  {name.ljust(width)} = {{{value}}}" for name, value in fields)
    return f"@misc{{{url.rsplit('/', 1)[-1]},\n{body}\n}}"


def citation_problems(cff: dict) -> list[str]:
    """How ``cff`` disagrees with cifutils.__version__ and the configured repository URL."""
    import cifutils

    url, _ = read_pin()
    problems = []
    if str(cff.get("version")) != cifutils.__version__:
        problems.append(f"version {cff.get('version')!r} is not cifutils {cifutils.__version__}")
    if str(cff.get("repository-code", "")).rstrip("/") != url:
        problems.append(f"repository-code {cff.get('repository-code')!r} is not {url}")
    return problems


class CitationBibtex(SphinxDirective):
    """``{citation-bibtex}``: CITATION.cff at the repository root, as a BibTeX code block."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        import yaml

        self.env.note_dependency(str(CITATION))
        cff = yaml.safe_load(Path(CITATION).read_text(encoding="utf-8"))
        for problem in citation_problems(cff):
            logger.warning("CITATION.cff: %s", problem, location=self.get_location())
        text = cff_to_bibtex(cff)
        block = nodes.literal_block(text, text, language="bibtex")
        self.set_source_info(block)
        return [block]


def _configure(app: Sphinx, config) -> None:
    # Merged over any substitutions set under `parse:` in _config.yml.
    config.myst_substitutions = {**(config.myst_substitutions or {}), **release_substitutions()}
    if config.student_build:
        config.html_copy_source = False
        config.html_show_sourcelink = False
        options = dict(config.html_theme_options or {})
        options["use_download_button"] = False
        config.html_theme_options = options


def _dedupe_scripts(app: Sphinx, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        # The same file or inline body, whatever its priority (the copy has filename "" where
        # the original has None).
        attributes = getattr(js, "attributes", {}) or {}
        body = tuple(sorted((k, str(v)) for k, v in attributes.items()))
        key = (getattr(js, "filename", str(js)) or "", body)
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    app.add_config_value("student_build", False, "env", [bool])
    app.connect("config-inited", _configure, priority=900)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.add_transform(RemoveSolutions)
    app.add_transform(HideTestMarkers)
    app.add_directive("citation-bibtex", CitationBibtex)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
