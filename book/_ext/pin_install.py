"""Pin the notebooks' Colab install cells to the configured repository and ref.

The first code cell of every notebook in ``notebooks/`` installs cifutils on Colab::

    %pip install --quiet "cifutils @ git+<url>@<ref>"

``<url>`` and ``<ref>`` come from ``_config.yml`` (``repository.url`` and
``repository.install_ref``), so a reader who opens a notebook long after the book was built
still gets the cifutils that produced its outputs. After changing either, run::

    python book/_ext/pin_install.py            # rewrite the install cells
    python book/_ext/pin_install.py --check    # exit 1 if any cell is out of date

Only the requirement string of the first code cell changes: outputs, metadata and every other
cell stay as they are, and the file keeps Jupyter's layout (one-space indent, UTF-8, final
newline). A notebook in any other layout is refused rather than reformatted.

The Sphinx extension next to this file (``book_extras``) reads the same ref for the landing
page; tests/test_repository.py checks every notebook against it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "_config.yml"
NOTEBOOKS = ROOT / "notebooks"

#: The quoted requirement in an install cell, whatever URL and ref it names now.
REQUIREMENT = re.compile(r'"cifutils @ git\+[^"\s]*"')


def read_pin(config: Path = CONFIG) -> tuple[str, str]:
    """The repository URL (without a trailing slash) and the install ref of ``config``."""
    repository = (yaml.safe_load(config.read_text()) or {}).get("repository") or {}
    url = str(repository.get("url") or "").rstrip("/")
    ref = str(repository.get("install_ref") or "")
    if not url or not ref:
        raise ValueError(f"{config}: repository.url and repository.install_ref must both be set")
    if not re.fullmatch(r"https://[^\s\"'@#]+", url):
        raise ValueError(f"{config}: repository.url {url!r} is not an https URL")
    if any(c.isspace() or c in "\"'@#" for c in ref):
        raise ValueError(f"{config}: install_ref {ref!r} is not a git tag or commit")
    return url, ref


def requirement(url: str, ref: str) -> str:
    """The pip requirement that installs cifutils from ``url`` at ``ref``."""
    return f"cifutils @ git+{url}@{ref}"


def install_cell(nb: dict) -> dict:
    """The notebook's first code cell (its Colab install cell)."""
    try:
        return next(c for c in nb["cells"] if c["cell_type"] == "code")
    except StopIteration:
        raise ValueError("the notebook has no code cell") from None


def _canonical(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def pin_text(text: str, url: str, ref: str, name: str = "notebook") -> str:
    """``text`` (a notebook's JSON) with its install cell pinned to ``url`` at ``ref``."""
    nb = json.loads(text)
    if _canonical(nb) != text:
        raise ValueError(f"{name}: not in Jupyter's JSON layout; refusing to reformat it")
    cell = install_cell(nb)
    source = cell["source"]
    lines = [source] if isinstance(source, str) else list(source)
    found = sum(len(REQUIREMENT.findall(line)) for line in lines)
    if found != 1:
        raise ValueError(
            f'{name}: {found} "cifutils @ git+..." requirements in the first code cell'
        )
    quoted = f'"{requirement(url, ref)}"'
    lines = [REQUIREMENT.sub(lambda _: quoted, line) for line in lines]
    cell["source"] = lines[0] if isinstance(source, str) else lines
    return _canonical(nb)


def pin_notebooks(paths: Sequence[Path], url: str, ref: str, check: bool = False) -> list[Path]:
    """Pin each notebook of ``paths``; return those that were (or, with ``check``, would be)
    changed. With ``check`` nothing is written."""
    changed = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        pinned = pin_text(text, url, ref, name=str(path))
        if pinned != text:
            changed.append(path)
            if not check:
                path.write_text(pinned, encoding="utf-8")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--config", type=Path, default=CONFIG, help="default: %(default)s")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a cell is out of date"
    )
    args = parser.parse_args(argv)
    url, ref = read_pin(args.config)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    changed = pin_notebooks(paths, url, ref, check=args.check)
    verb = "out of date" if args.check else "pinned"
    for path in changed:
        print(f"{verb}: {path}")
    if not changed:
        print(f"all {len(paths)} install cells install {requirement(url, ref)!r}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
