"""The experiment command line.

Usage::

    python -m cifutils.experiments mog --help
    python -m cifutils.experiments vae --help
    python -m cifutils.experiments vae-many --help
    python -m cifutils.experiments sweep --help
    python -m cifutils.experiments params

Each subcommand lives in its own module (:mod:`cifutils.mog`, :mod:`cifutils.vae`, ...),
which defines ``main(argv)``; this module only dispatches.
"""

from __future__ import annotations

import importlib
import sys

from .training import CheckpointError

__all__ = ["main", "COMMANDS"]

#: Subcommand name -> module defining ``main(argv: list[str]) -> int``.
COMMANDS = {
    "mog": "cifutils.mog",
    "vae": "cifutils.vae",
    "vae-many": "cifutils.vae_multi",
    "sweep": "cifutils.vae_sweep",
    "params": "cifutils.vae_params",
}


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m cifutils.experiments <command> [options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        print(__doc__.strip())
        print("\ncommands: " + ", ".join(sorted(COMMANDS)))
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    module = importlib.import_module(COMMANDS[argv[0]])
    try:
        return int(module.main(argv[1:]) or 0)
    except CheckpointError as err:  # a damaged checkpoint: say which and how to go on
        print(f"{argv[0]}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
