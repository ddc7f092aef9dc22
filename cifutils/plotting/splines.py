"""Rational-quadratic splines drawn: the knots and the curve of one spline, its derivative, and
the log-stretch of a flow over the plane.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .densities import Bounds, axes_or_current, evaluate_on_grid
from .fits import pull_back

__all__ = ["rq_spline_knots", "plot_rq_spline", "plot_rq_spline_derivative", "plot_log_stretch"]


def rq_spline_knots(
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    tail_bound: float = 3.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[Tensor, Tensor, Tensor]:
    """The knots of an nflows rational-quadratic spline with linear tails.

    Mirrors the parameterization of
    :func:`nflows.transforms.splines.unconstrained_rational_quadratic_spline`: ``K`` bins
    from ``K`` widths and heights (softmax), ``K - 1`` interior derivatives (softplus), and
    derivative 1 at both ends so the spline meets the identity tails smoothly.

    Args:
        unnormalized_widths, unnormalized_heights: ``(K,)``.
        unnormalized_derivatives: ``(K - 1,)``.

    Returns:
        ``(x, y, d)``, each ``(K + 1,)``: knot positions on the input and output axes
        (both from ``-tail_bound`` to ``tail_bound``) and the derivative at each knot.
    """
    uw = torch.as_tensor(unnormalized_widths, dtype=torch.float64)
    uh = torch.as_tensor(unnormalized_heights, dtype=torch.float64)
    ud = torch.as_tensor(unnormalized_derivatives, dtype=torch.float64)
    k = uw.shape[-1]
    if uw.shape != (k,) or uh.shape != (k,) or ud.shape != (k - 1,):
        raise ValueError(
            "expected widths (K,), heights (K,), derivatives (K - 1,); got "
            f"{tuple(uw.shape)}, {tuple(uh.shape)}, {tuple(ud.shape)}"
        )

    def edges(u: Tensor, minimum: float) -> Tensor:
        w = minimum + (1 - minimum * k) * torch.softmax(u, dim=-1)
        c = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(w, dim=-1)])
        c = 2 * tail_bound * c - tail_bound
        c[0], c[-1] = -tail_bound, tail_bound
        return c

    x = edges(uw, min_bin_width)
    y = edges(uh, min_bin_height)
    inner = min_derivative + torch.nn.functional.softplus(ud)
    one = torch.ones(1, dtype=torch.float64)
    return x, y, torch.cat([one, inner, one])


@torch.no_grad()
def plot_rq_spline(
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    tail_bound: float = 3.0,
    ax=None,
    extent: float | None = None,
    show_bins: bool = True,
    show_derivatives: bool = True,
    color: str = "C0",
    n: int = 600,
):
    """Draw a rational-quadratic spline with linear tails: the curve, its knots, the bins
    (shaded alternately on the input axis, lines on the output axis), the knot derivatives
    as short tangent segments, and the identity tails outside ``[-B, B]``.

    Arguments as for :func:`rq_spline_knots`; ``extent`` (default ``1.5 * B``) is the
    half-width of the plotted input range.

    Returns:
        The axes.
    """
    from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

    ax = axes_or_current(ax)
    bound = float(tail_bound)
    extent = 1.5 * bound if extent is None else float(extent)
    kx, ky, kd = rq_spline_knots(
        unnormalized_widths, unnormalized_heights, unnormalized_derivatives, bound
    )
    xs = torch.linspace(-extent, extent, n, dtype=torch.float64)

    def rep(t):
        return torch.as_tensor(t, dtype=torch.float64).expand(n, -1)

    ys, _ = unconstrained_rational_quadratic_spline(
        xs,
        rep(unnormalized_widths),
        rep(unnormalized_heights),
        rep(unnormalized_derivatives),
        tails="linear",
        tail_bound=bound,
    )
    if show_bins:
        for i in range(len(kx) - 1):
            if i % 2 == 0:
                ax.axvspan(kx[i].item(), kx[i + 1].item(), color="0.92", zorder=0)
        for v in ky.tolist():
            ax.axhline(v, color="0.8", lw=0.6, zorder=0)
    for b in (-bound, bound):
        ax.axvline(b, color="0.4", ls=":", lw=1)
    inside = xs.abs() <= bound
    ax.plot(xs[inside], ys[inside], color=color, lw=2, label="spline on $[-B, B]$")
    for side in (xs < -bound, xs > bound):
        ax.plot(xs[side], ys[side], color=color, lw=2, ls="--")
    ax.plot([], [], color=color, lw=2, ls="--", label="linear (identity) tails")
    ax.plot(kx, ky, "o", color="k", ms=4, label="knots", zorder=3)
    if show_derivatives:
        half = 0.12 * bound
        for x0, y0, d0 in zip(kx.tolist(), ky.tolist(), kd.tolist()):
            dx = half / math.sqrt(1 + d0 * d0)
            ax.plot([x0 - dx, x0 + dx], [y0 - d0 * dx, y0 + d0 * dx], color="C3", lw=1.2)
        ax.plot([], [], color="C3", lw=1.2, label="knot derivatives")
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xlabel("input $x$")
    ax.set_ylabel("output $y = g(x)$")
    return ax


@torch.no_grad()
def plot_rq_spline_derivative(
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    tail_bound: float = 3.0,
    ax=None,
    extent: float | None = None,
    n: int = 901,
):
    """The derivative ``g'(x)`` (log axis) of the spline of :func:`plot_rq_spline` on
    ``[-extent, extent]`` (default ``1.5 * B``), with ``[-B, B]`` shaded.

    Returns:
        The axes.
    """
    from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

    ax = axes_or_current(ax)
    bound = float(tail_bound)
    extent = 1.5 * bound if extent is None else float(extent)
    x = torch.linspace(-extent, extent, n, dtype=torch.float64)
    params = [
        torch.as_tensor(t, dtype=torch.float64).expand(n, -1)
        for t in (unnormalized_widths, unnormalized_heights, unnormalized_derivatives)
    ]
    _, logabsdet = unconstrained_rational_quadratic_spline(x, *params, tail_bound=bound)
    ax.plot(x, logabsdet.exp())
    ax.axvspan(-bound, bound, color="0.92", zorder=0)
    ax.set(xlabel="input $x$", ylabel="derivative $g'(x)$", yscale="log")
    return ax


def plot_log_stretch(flow, bounds: Bounds, ax=None, n: int = 141, cmap: str = "magma"):
    """The log volume stretch ``log|det J_g(w)|`` at ``w = g^{-1}(z)`` of an explicit
    ``flow`` (see :func:`~cifutils.plotting.fits.pull_back`; float64 recommended) over the
    ``bounds`` window, as an image with a colour bar.

    Returns:
        The axes.
    """
    ax = axes_or_current(ax)
    dtype = next(flow.parameters()).dtype
    _, _, stretch = evaluate_on_grid(lambda z: -pull_back(flow, z)[1], bounds, n, dtype=dtype)
    image = ax.imshow(stretch, origin="lower", extent=bounds, cmap=cmap)
    label = r"$\log|\det J_g(w)|$ at $w = g^{-1}(z)$"
    ax.figure.colorbar(image, ax=ax, label=label)
    ax.set(xlabel="$z_1$", ylabel="$z_2$", title="log volume stretch of the flow")
    return ax
