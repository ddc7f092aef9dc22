"""Local Sphinx extension: a run card at the top of every chapter.

The card (time to execute at each budget on a CPU and on a GPU, whether a GPU helps, what the
chapter reads from disk) is rendered by :func:`cifutils.runcard.card_rst` from the committed
record ``results/execution.json`` that ``make execute`` writes, and inserted after the
chapter's title. A notebook under ``notebooks/`` without an entry in the record gets a warning
(an error in the strict build), so a new chapter cannot ship without its card.
"""

from __future__ import annotations

from docutils import nodes
from docutils.core import publish_doctree
from pin_install import ROOT  # beside this file: book/_ext is on sys.path
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform
from sphinx.util import logging

from cifutils.runcard import card_rst, load_record

logger = logging.getLogger(__name__)
RECORD = ROOT / "results" / "execution.json"


class InsertRunCard(SphinxTransform):
    """Insert the run card of ``notebooks/<name>`` after the page's first title."""

    default_priority = 800

    def apply(self, **kwargs) -> None:
        docname = self.env.docname
        if not docname.startswith("notebooks/"):
            return
        name = docname.split("/", 1)[1]
        entries = load_record(RECORD).get(name)
        if not entries:
            logger.warning(
                f"no run card for {docname}: {RECORD.name} has no entry (run `make execute`)",
                location=docname,
            )
            return
        section = next(iter(self.document.findall(nodes.section)), None)
        if section is None or not isinstance(section[0], nodes.title):
            logger.warning("no title to put the run card under", location=docname)
            return
        card = publish_doctree(
            card_rst(entries), settings_overrides={"report_level": 5, "halt_level": 5}
        )
        section.insert(1, card.children)
        self.env.note_dependency(str(RECORD))


def setup(app: Sphinx) -> dict:
    app.add_transform(InsertRunCard)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
