"""``python -m cifutils.experiments <command> [options]``: see :mod:`cifutils.experiments`."""

import sys

from . import main

sys.exit(main())
