"""Small numerical helpers of chapters 1 and 2: a fitted family as a Gaussian, a Monte Carlo
KL divergence, fitting a family in one call, pulling samples back through a flow, the share
of samples far from every mode and the mass on a grid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .densities import Bounds, evaluate_on_grid

__all__ = [
    "as_gaussian",
    "monte_carlo_kl",
    "fit_family",
    "pull_back",
    "off_mode_fraction",
    "grid_mass",
]


def as_gaussian(family) -> torch.distributions.MultivariateNormal:
    """The Gaussian ``N(b, L L^T)`` of a ``"full-gaussian"`` family (one
    :class:`~cifutils.flows.LowerTriangularAffine` layer on a standard normal base),
    detached from the graph."""
    layer = family.layers[0]
    return torch.distributions.MultivariateNormal(
        layer.shift.detach(), scale_tril=layer.matrix().detach()
    )


@torch.no_grad()
def monte_carlo_kl(p, q, num_samples: int) -> float:
    """Monte Carlo ``KL(p || q)`` from ``num_samples`` draws of ``p``; ``p`` and ``q`` are
    :mod:`torch.distributions` objects (``sample`` and ``log_prob``)."""
    z = p.sample((num_samples,))
    return (p.log_prob(z) - q.log_prob(z)).mean().item()


def fit_family(
    kind: str,
    log_p: Callable[[Tensor], Tensor],
    steps: int,
    num_samples: int,
    lr: float,
    seed: int = 0,
    dim: int = 2,
    **family_kw,
):
    """Seed, build ``make_family(kind, dim, **family_kw)`` and fit it to ``log_p`` with
    :func:`~cifutils.training.fit_vi` (no progress bar): ``(family, history)``."""
    from cifutils.families import make_family
    from cifutils.training import fit_vi, seed_everything

    seed_everything(seed)
    family = make_family(kind, dim, **family_kw)
    history = fit_vi(family, log_p, steps, num_samples=num_samples, lr=lr, progress=False)
    return family, history


@torch.no_grad()
def pull_back(flow, z: Tensor) -> tuple[Tensor, Tensor]:
    """``w = g^{-1}(z)`` and ``log|det J_{g^{-1}}(z)|`` (both per row of ``z (n, d)``) for a
    :class:`~cifutils.families.VariationalFlow` without CIF layers, through the layers'
    inverses (use float64 for autoregressive splines)."""
    if flow.is_cif:
        raise ValueError("pull_back needs an explicit flow; a CIF has no single inverse")
    w, logdet = z, torch.zeros(len(z), dtype=z.dtype, device=z.device)
    for layer in reversed(flow.layers):
        w, term = layer.inverse(w)
        logdet = logdet + term
    return w, logdet


def off_mode_fraction(z: Tensor, means: Tensor, radius: float) -> float:
    """Fraction of the samples ``z (n, d)`` farther than ``radius`` from every row of
    ``means (k, d)``."""
    distance = torch.cdist(z.detach().double(), means.double()).min(dim=1).values
    return (distance > radius).double().mean().item()


def grid_mass(
    log_prob: Callable[[Tensor], Tensor],
    bounds: Bounds,
    n: int = 200,
    dtype: torch.dtype = torch.float32,
) -> float:
    """Riemann sum of ``exp(log_prob)`` over the :func:`~cifutils.plotting.densities.grid_points`
    grid: about 1 for a normalized 2-D density whose mass lies inside ``bounds``."""
    xs, ys, values = evaluate_on_grid(log_prob, bounds, n, dtype=dtype)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    return torch.tensor(values).logsumexp((0, 1)).exp().item() * cell
