"""Plot helpers of the core chapters (matplotlib).

Every plot function draws on an ``ax`` it is given (or the current one) and returns it, so
chapters can lay out their own figures; the animations build their own figures.

* :mod:`~cifutils.plotting.densities` -- densities, samples and training curves on the plane;
* :mod:`~cifutils.plotting.splines` -- rational-quadratic splines and a flow's log-stretch;
* :mod:`~cifutils.plotting.indexed` -- continuously-indexed flows and their posteriors;
* :mod:`~cifutils.plotting.fits` -- small numerical helpers of chapters 1 and 2;
* :mod:`~cifutils.plotting.animation` -- samples moving through a flow layer by layer, as a
  player for the web pages and a strip of key frames for the PDF (chapters 2 and 3).

Every name is also importable from this package. The experiments' figures live beside them:
:mod:`cifutils.experiments.mog.figures` and :mod:`cifutils.experiments.vae.figures`.
"""

from .animation import *  # noqa: F403
from .animation import __all__ as _animation
from .densities import *  # noqa: F403
from .densities import __all__ as _densities
from .fits import *  # noqa: F403
from .fits import __all__ as _fits
from .indexed import *  # noqa: F403
from .indexed import __all__ as _indexed
from .splines import *  # noqa: F403
from .splines import __all__ as _splines

__all__ = [*_densities, *_fits, *_splines, *_indexed, *_animation]
