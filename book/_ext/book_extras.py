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
"""

from __future__ import annotations

from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform


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
        from docutils import nodes

        for block in list(self.document.findall(nodes.literal_block)):
            text = block.astext()
            if not any(marker in text for marker in NBVAL_MARKERS):
                continue
            kept = [line for line in text.splitlines() if line.strip() not in NBVAL_MARKERS]
            cleaned = "\n".join(kept)
            block.rawsource = cleaned
            block[:] = [nodes.Text(cleaned)]


def _configure(app: Sphinx, config) -> None:
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
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
