"""Continuously-indexed flows drawn (chapters 3 to 5): the family of bijections ``G(.; u)``, the
marginal against samples, the joint density, a path, the posterior ``q(u | z)`` against
``r``, one layer's posterior, the colouring of samples by their index.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from .densities import Bounds, _finish_plane, axes_or_current

__all__ = [
    "to_numpy",
    "plot_layer_posterior",
    "plot_index_colouring",
    "plot_indexed_family",
    "plot_marginal_vs_samples",
    "plot_joint_density",
    "plot_path",
    "plot_posterior_vs_r",
]


def plot_layer_posterior(
    u: Sequence[float],
    log_q: Sequence[float],
    log_r: Sequence[float],
    ax=None,
    title: str | None = None,
):
    """The exact ``q(u | w)`` of a CIF layer against the learned ``r(u | w)``, over ``u``."""
    ax = axes_or_current(ax)
    u = np.asarray(u)
    ax.plot(u, np.exp(log_q), label="exact $q(u \\mid w_l)$")
    ax.plot(u, np.exp(log_r), ls="--", label="learned $r(u \\mid w_l)$")
    ax.set_xlabel("$u$")
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


def plot_index_colouring(
    z: np.ndarray,
    u: np.ndarray,
    ax=None,
    title: str | None = None,
    bounds: Bounds = (-4.0, 4.0, -4.0, 4.0),
):
    """Samples ``z`` ``(n, 2)`` coloured by a scalar index ``u`` ``(n,)``, with a colour bar."""
    ax = axes_or_current(ax)
    z, u = np.asarray(z), np.asarray(u).reshape(-1)
    lo, hi = np.percentile(u, [2, 98])
    points = ax.scatter(
        z[:, 0], z[:, 1], c=u, s=2, cmap="viridis", vmin=lo, vmax=hi, rasterized=True
    )
    ax.figure.colorbar(points, ax=ax, label="$u$")
    return _finish_plane(ax, bounds, title)


def to_numpy(x) -> np.ndarray:
    """A tensor (detached, float64, on the CPU) or an array-like as a NumPy array."""
    return x.detach().double().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


@torch.no_grad()
def plot_indexed_family(transform, us: Sequence[float], w: Tensor, ax=None, cmap: str = "coolwarm"):
    """Draw ``z = G(w; u)`` against ``w`` for each fixed index in ``us`` (1-D ``w`` grid
    ``(n,)``), using :class:`~cifutils.cif.FixedIndex`; one colour per ``u``."""
    from cifutils.cif import FixedIndex

    ax = axes_or_current(ax)
    colours = plt.get_cmap(cmap)(np.linspace(0, 1, len(us)))
    dtype = next(transform.parameters()).dtype
    for u, colour in zip(us, colours):
        g = FixedIndex(transform, torch.tensor([float(u)], dtype=dtype))
        z, _ = g(w.to(dtype)[:, None])
        ax.plot(to_numpy(w), to_numpy(z[:, 0]), color=colour, label=f"$u = {u:g}$")
    ax.set_xlabel("$w$")
    ax.set_ylabel("$z = G(w; u)$")
    ax.legend(fontsize="small")
    return ax


def plot_marginal_vs_samples(
    z_grid: Tensor,
    log_q_z: Tensor,
    samples: Tensor,
    ax=None,
    bins: int = 80,
    label: str = "quadrature $q_Z(z)$",
    log_p=None,
):
    """A histogram of 1-D ``samples`` against the density ``exp(log_q_z)`` on ``z_grid``;
    optionally the normalized target ``log_p`` (a ``(n,)`` tensor on the same grid)."""
    ax = axes_or_current(ax)
    z = to_numpy(z_grid)
    ax.hist(
        to_numpy(samples).ravel(),
        bins=bins,
        range=(z.min(), z.max()),
        density=True,
        color="0.8",
        label="samples of $q$",
    )
    ax.plot(z, np.exp(to_numpy(log_q_z)), color="C0", label=label)
    if log_p is not None:
        ax.plot(z, np.exp(to_numpy(log_p)), color="C3", ls="--", label="target (normalized)")
    ax.set_xlabel("$z$")
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    return ax


def plot_joint_density(
    z_grid: Tensor, u_grid: Tensor, log_q_zu: Tensor, ax=None, cmap: str = "viridis"
):
    """The joint density ``q(z, u)`` of a one-layer 1-D CIF as an image
    (``log_q_zu`` of shape ``(len(z_grid), len(u_grid))``)."""
    ax = axes_or_current(ax)
    ax.pcolormesh(
        to_numpy(z_grid), to_numpy(u_grid), np.exp(to_numpy(log_q_zu)).T, cmap=cmap, shading="auto"
    )
    ax.set_xlabel("$z$")
    ax.set_ylabel("$u$")
    return ax


def plot_path(
    w: Tensor,
    z: Tensor,
    c: Tensor | None = None,
    ax=None,
    cmap: str = "coolwarm",
    label: str = "$u$",
):
    """Scatter of base samples ``w`` against outputs ``z`` (1-D), coloured by ``c`` (e.g.
    the index ``u``) when given, with a colour bar."""
    ax = axes_or_current(ax)
    if c is None:
        ax.scatter(to_numpy(w).ravel(), to_numpy(z).ravel(), s=2, alpha=0.5)
    else:
        sc = ax.scatter(
            to_numpy(w).ravel(), to_numpy(z).ravel(), c=to_numpy(c).ravel(), s=2, cmap=cmap
        )
        plt.colorbar(sc, ax=ax, label=label)
    ax.set_xlabel("base sample $w_0$")
    ax.set_ylabel("$z$")
    return ax


def plot_posterior_vs_r(
    u_grid: Tensor, log_post: Tensor, log_r: Tensor, ax=None, title: str | None = None
):
    """The exact posterior ``q(u | z)`` and the auxiliary ``r(u | z)`` for one ``z``."""
    ax = axes_or_current(ax)
    u = to_numpy(u_grid)
    ax.plot(u, np.exp(to_numpy(log_post)), color="C0", label="exact $q(u \\mid z)$")
    ax.plot(u, np.exp(to_numpy(log_r)), color="C1", ls="--", label="$r(u \\mid z)$")
    ax.set_xlabel("$u$")
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return ax
