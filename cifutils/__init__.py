"""cifutils: variational inference with continuously-indexed normalizing flows.

The core library, one concept per module:

* :mod:`cifutils.flows` -- rational-quadratic spline flows (nflows), LU-linear layers;
* :mod:`cifutils.cif` -- CIF layers ``z = G(w; u)`` and their ``q(u | w)``, ``r(u | z)``;
* :mod:`cifutils.families` -- Gaussian, NSF and CIF-NSF variational families;
* :mod:`cifutils.objectives` -- ELBO, auxiliary ELBO, importance-weighted bounds, ESS;
* :mod:`cifutils.targets` -- 2-D targets with known normalizing constants;
* :mod:`cifutils.exact` -- small CIFs computed exactly by quadrature;
* :mod:`cifutils.fast` -- faster, equal-valued spline layers;
* :mod:`cifutils.training` -- seeding, devices, the fit loop, checkpoints;
* :mod:`cifutils.budgets` -- the ``smoke`` / ``book`` / ``paper`` budgets;
* :mod:`cifutils.data` -- binarized MNIST and Fashion-MNIST, checksummed;
* :mod:`cifutils.results` -- JSON results with provenance, and glue for the book;
* :mod:`cifutils.runcard` -- the chapters' run cards: execution times and what they read;
* :mod:`cifutils.cli` -- argument checks shared by the command lines;
* :mod:`cifutils.plotting` -- the core chapters' figures.

The book's two experiments are built on top, in :mod:`cifutils.experiments` (the core never
imports from there).
"""

__version__ = "0.1.0"  # set before the imports: cifutils.results reads it

from .budgets import Budget, get_budget
from .families import VariationalFlow, make_family
from .objectives import auxiliary_elbo, elbo, iw_bound
from .targets import get_target
from .training import fit, fit_vi, get_device, seed_everything

__all__ = [
    "Budget",
    "get_budget",
    "VariationalFlow",
    "make_family",
    "elbo",
    "auxiliary_elbo",
    "iw_bound",
    "get_target",
    "fit",
    "fit_vi",
    "get_device",
    "seed_everything",
]
