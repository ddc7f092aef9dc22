"""The book's two experiments, built on the core library (which never imports from here).

* :mod:`cifutils.experiments.mog` -- Experiment 1, the Gaussian mixture (Figure 1);
* :mod:`cifutils.experiments.vae` -- Experiment 2, VAEs on MNIST and Fashion-MNIST (Table 1).

Each experiment is a package split by role: configuration, training, evaluation, the tables
the chapter prints, figures and the command line. The command line::

    python -m cifutils.experiments mog --help
    python -m cifutils.experiments vae --help
    python -m cifutils.experiments vae-many --help
    python -m cifutils.experiments sweep --help
    python -m cifutils.experiments params

Each subcommand lives in its own module (:data:`COMMANDS`), which defines ``main(argv)``;
this module only dispatches.
"""

from __future__ import annotations

import importlib
import sys

from cifutils.training import CheckpointError

__all__ = ["main", "COMMANDS"]

#: Subcommand name -> module defining ``main(argv: list[str]) -> int``.
COMMANDS = {
    "mog": "cifutils.experiments.mog.cli",
    "vae": "cifutils.experiments.vae.cli",
    "vae-many": "cifutils.experiments.vae.multi",
    "sweep": "cifutils.experiments.vae.sweep",
    "params": "cifutils.experiments.vae.params",
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
