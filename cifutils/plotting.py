"""Plot helpers shared by the book's chapters (matplotlib and seaborn).

Every function draws on an ``ax`` it is given (or a new one) and returns it, so chapters can
lay out their own figures. Each chapter's helpers live in a section of their own below;
append new helpers at the end, in a section headed with your chapter(s).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

__all__ = [
    "grid_points",
    "evaluate_on_grid",
    "plot_density",
    "plot_samples",
    "plot_history",
    "rq_spline_knots",
    "plot_rq_spline",
    "plot_validation_curves",
    "plot_continued_runs",
    "plot_order_ablation",
]

Bounds = tuple[float, float, float, float]


def _ax(ax):
    return ax if ax is not None else plt.gca()


def _finish_plane(ax, bounds: Bounds | None, title: str | None):
    """Common finish of a 2-D panel: limits and equal aspect (when ``bounds`` is given),
    ``z_1``/``z_2`` labels and an optional title. Returns the axes."""
    if bounds is not None:
        ax.set_xlim(bounds[0], bounds[1])
        ax.set_ylim(bounds[2], bounds[3])
        ax.set_aspect("equal")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    if title:
        ax.set_title(title)
    return ax


# --- chapters 1-2 (variational inference, normalizing flows) ---------------------------------


def grid_points(
    bounds: Bounds = (-4.0, 4.0, -4.0, 4.0), n: int = 200, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor, Tensor]:
    """An ``n x n`` grid over ``(xmin, xmax, ymin, ymax)``: ``(xs, ys, points)`` with
    ``xs`` ``(n,)``, ``ys`` ``(n,)`` and ``points`` ``(n * n, 2)`` of ``dtype``, row-major in
    ``y`` (``points.reshape(n, n, 2)[i, j] = (xs[j], ys[i])``)."""
    xmin, xmax, ymin, ymax = bounds
    if not (xmax > xmin and ymax > ymin):
        raise ValueError(f"bounds must be (xmin, xmax, ymin, ymax) with min < max, got {bounds}")
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    xs = torch.linspace(xmin, xmax, n, dtype=dtype)
    ys = torch.linspace(ymin, ymax, n, dtype=dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return xs, ys, torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


@torch.no_grad()
def evaluate_on_grid(
    log_prob: Callable[[Tensor], Tensor],
    bounds: Bounds = (-4.0, 4.0, -4.0, 4.0),
    n: int = 200,
    chunk_size: int = 20_000,
    dtype: torch.dtype = torch.float32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``log_prob`` (``(m, 2) -> (m,)``) on the :func:`grid_points` grid, in chunks:
    ``(xs, ys, values)`` as NumPy arrays with ``values`` of shape ``(n, n)`` (rows: ``y``).
    The grid points have ``dtype`` (float64 for a flow evaluated through its inverse); the
    values keep the dtype ``log_prob`` returns."""
    xs, ys, pts = grid_points(bounds, n, dtype)
    values = torch.cat([log_prob(chunk).detach().cpu() for chunk in pts.split(chunk_size)])
    if values.shape != (pts.shape[0],):
        raise ValueError(f"log_prob must map (m, 2) to (m,), got {tuple(values.shape)}")
    return xs.numpy(), ys.numpy(), values.reshape(n, n).numpy()


def plot_density(
    log_prob: Callable[[Tensor], Tensor],
    ax=None,
    bounds: Bounds = (-4.0, 4.0, -4.0, 4.0),
    n: int = 200,
    kind: str = "heatmap",
    log: bool = False,
    levels: int = 8,
    cmap: str = "viridis",
    colorbar: bool = False,
    title: str | None = None,
    dtype: torch.dtype = torch.float32,
    **kwargs,
):
    """Draw ``exp(log_prob)`` (or ``log_prob`` itself with ``log=True``) on a grid.

    Args:
        log_prob: ``(m, 2) -> (m,)`` (unnormalized is fine: the picture is the same).
        kind: ``"heatmap"`` (pcolormesh), ``"contour"`` (line contours) or ``"contourf"``.
        log: plot the log-density (floored at 12 nats below its maximum) instead.
        levels: number of contour levels (evenly spaced strictly between the minimum and
            the maximum for ``"contour"``), or explicit levels (contour kinds only).
        colorbar: add a colorbar.
        dtype: dtype of the grid points given to ``log_prob``.
        kwargs: passed to the matplotlib call.

    Returns:
        The axes.
    """
    if kind not in {"heatmap", "contour", "contourf"}:
        raise ValueError(f"kind must be 'heatmap', 'contour' or 'contourf', got {kind!r}")
    ax = _ax(ax)
    xs, ys, lp = evaluate_on_grid(log_prob, bounds, n, dtype=dtype)
    finite = np.isfinite(lp)
    top = lp[finite].max() if finite.any() else 0.0
    if log:
        values = np.where(finite, np.maximum(lp, top - 12.0), top - 12.0)
    else:
        values = np.where(finite, np.exp(lp - top), 0.0)
    if kind == "heatmap":
        mappable = ax.pcolormesh(xs, ys, values, shading="auto", cmap=cmap, **kwargs)
    elif kind == "contour":
        if isinstance(levels, int):  # interior levels only: no spurious line at the floor
            levels = np.linspace(values.min(), values.max(), levels + 2)[1:-1]
        mappable = ax.contour(xs, ys, values, levels=levels, cmap=cmap, **kwargs)
    else:
        mappable = ax.contourf(xs, ys, values, levels=levels, cmap=cmap, **kwargs)
    if colorbar:
        label = "log-density (+ const)" if log else "density / max"
        ax.figure.colorbar(mappable, ax=ax, label=label)
    return _finish_plane(ax, bounds, title)


def plot_samples(
    z: Tensor | np.ndarray,
    ax=None,
    bounds: Bounds | None = (-4.0, 4.0, -4.0, 4.0),
    kde: bool = True,
    max_points: int = 2_000,
    color: str = "C0",
    title: str | None = None,
    s: float = 2.0,
    alpha: float = 0.3,
    kde_levels: int = 6,
):
    """Scatter 2-D samples ``z`` (``(n, 2)``) with an optional seaborn KDE on top.

    At most ``max_points`` points are scattered (the first ones) and used for the KDE, so
    the figure stays light; points outside ``bounds`` are drawn clipped by the axes limits.

    Returns:
        The axes.
    """
    import seaborn as sns

    arr = z.detach().cpu().numpy() if isinstance(z, Tensor) else np.asarray(z)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"z must have shape (n, 2), got {arr.shape}")
    arr = arr[:max_points]
    ax = _ax(ax)
    ax.scatter(arr[:, 0], arr[:, 1], s=s, alpha=alpha, color=color, linewidths=0)
    if kde and len(arr) > 2:
        sns.kdeplot(x=arr[:, 0], y=arr[:, 1], ax=ax, levels=kde_levels, color=color, linewidths=0.8)
    return _finish_plane(ax, bounds, title)


def plot_history(
    history,
    ax=None,
    label: str | None = None,
    negate: bool = True,
    smooth: int = 1,
    reference: float | None = None,
    reference_label: str = r"$\log Z$",
    ylabel: str = "ELBO",
    ylim: tuple[float, float] | None = None,
    **kwargs,
):
    """Plot a training curve from a :class:`cifutils.training.History` (or anything with
    ``steps`` and ``loss`` lists).

    Args:
        negate: plot ``-loss`` (the ELBO when the loss is ``-ELBO``).
        smooth: moving-average window in recorded points (1: raw).
        reference: draw a horizontal dashed line at this value (e.g. ``log Z``).
        ylim: y-limits, e.g. to cut off the first noisy steps.

    Returns:
        The axes.
    """
    if smooth < 1:
        raise ValueError(f"smooth must be >= 1, got {smooth}")
    steps = np.asarray(history.steps, dtype=float)
    values = np.asarray(history.loss, dtype=float) * (-1.0 if negate else 1.0)
    if len(values) == 0:
        raise ValueError("history is empty")
    if smooth > 1 and len(values) >= smooth:
        kernel = np.ones(smooth) / smooth
        values = np.convolve(values, kernel, mode="valid")
        steps = steps[smooth - 1 :]
    ax = _ax(ax)
    ax.plot(steps, values, label=label, **kwargs)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=reference_label)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    return ax


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

    ax = _ax(ax)
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


# chapters 1-2, figure assembly and small numerical helpers of the notebooks

__all__ += [
    "as_gaussian",
    "monte_carlo_kl",
    "fit_family",
    "pull_back",
    "off_mode_fraction",
    "grid_mass",
    "plot_fits",
    "plot_histories",
    "plot_amortized_posterior",
    "plot_rq_spline_derivative",
    "plot_curves",
    "plot_log_stretch",
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
    from .families import make_family
    from .training import fit_vi, seed_everything

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
    """Riemann sum of ``exp(log_prob)`` over the :func:`grid_points` grid: about 1 for a
    normalized 2-D density whose mass lies inside ``bounds``."""
    xs, ys, values = evaluate_on_grid(log_prob, bounds, n, dtype=dtype)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    return torch.tensor(values).logsumexp((0, 1)).exp().item() * cell


def plot_fits(
    target_log_prob: Callable[[Tensor], Tensor],
    fits: dict,
    bounds: Bounds,
    axes=None,
    samples: int | None = None,
    max_points: int = 2_000,
    figsize: tuple[float, float] | None = None,
    sharey: bool = False,
):
    """One panel per entry ``title -> q`` of ``fits``: the target density in grey with, on
    top, either the contours of ``q.log_prob`` (``samples=None``) or ``samples`` draws of
    ``q`` (a family with ``sample(n)``) scattered in orange with a KDE.

    Draws on ``axes`` when given (the caller lays out the figure), otherwise on a new row of
    panels (``figsize``, ``sharey``), laid out tightly.

    Returns:
        The axes.
    """
    new = axes is None
    if new:
        fig, axes = plt.subplots(1, len(fits), figsize=figsize, sharey=sharey, squeeze=False)
        axes = axes[0]
    for ax, (title, q) in zip(axes, fits.items()):
        plot_density(target_log_prob, ax, bounds=bounds, cmap="Greys", title=title)
        if samples is None:
            plot_density(q.log_prob, ax, bounds=bounds, kind="contour", levels=5, cmap="autumn")
        else:
            with torch.no_grad():
                z = q.sample(samples)
            plot_samples(z, ax, bounds=bounds, color="C1", max_points=max_points, title=title)
    if new:
        fig.tight_layout()
    return axes


def plot_histories(
    histories: dict,
    ax=None,
    references: dict | None = None,
    reference_styles: Sequence[str] = ("--", ":"),
    smooth: int = 20,
    ylim: tuple[float, float] | None = None,
):
    """ELBO curves (``label -> History``; solid, dashed, dash-dotted in turn) with
    horizontal reference lines (``label -> value``; black, then red, in ``reference_styles``)
    and a legend. See :func:`plot_history` for ``smooth`` and ``ylim``.

    Returns:
        The axes.
    """
    ax = _ax(ax)
    for i, (label, history) in enumerate(histories.items()):
        style = ("-", "--", "-.")[i % 3]
        plot_history(history, ax, label=label, smooth=smooth, ylim=ylim, ls=style)
    for i, (label, value) in enumerate((references or {}).items()):
        style = reference_styles[i % len(reference_styles)]
        ax.axhline(value, color=("k", "C3", "C2")[i % 3], ls=style, lw=1, label=label)
    ax.legend()
    return ax


@torch.no_grad()
def plot_amortized_posterior(base, exact_slope: float, ax=None, limit: float = 4.0, n: int = 50):
    """The first coordinate of an amortized Gaussian ``q(z | x)`` (``base.params(x)`` gives
    mean and log-std) along ``x = (x_1, 0)``, ``x_1`` in ``[-limit, limit]``: mean +- std
    against the exact posterior mean ``exact_slope * x_1`` (dashed).

    Returns:
        The axes.
    """
    ax = _ax(ax)
    xs = torch.linspace(-limit, limit, n)
    mean, log_std = base.params(torch.stack([xs, torch.zeros_like(xs)], dim=1))
    mean, std = mean[:, 0], log_std[:, 0].exp()
    ax.plot(xs, exact_slope * xs, "k--", label="exact posterior mean")
    ax.plot(xs, mean, label="encoder mean")
    ax.fill_between(xs, mean - std, mean + std, alpha=0.3, label="encoder mean ± std")
    ax.set(xlabel="$x_1$ (with $x_2 = 0$)", ylabel="$z_1$")
    ax.legend()
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

    ax = _ax(ax)
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


def plot_curves(
    x: Tensor,
    curves: dict,
    ax=None,
    styles: Sequence[str] = ("k", "C1", "C0--", "C2:"),
    fontsize: float = 8,
):
    """Curves ``label -> values`` over a common ``x``, in the matplotlib format strings
    ``styles`` (in turn), with a legend.

    Returns:
        The axes.
    """
    ax = _ax(ax)
    x = torch.as_tensor(x).detach().cpu()
    for (label, values), style in zip(curves.items(), styles):
        ax.plot(x, torch.as_tensor(values).detach().cpu(), style, label=label)
    ax.legend(fontsize=fontsize)
    return ax


def plot_log_stretch(flow, bounds: Bounds, ax=None, n: int = 141, cmap: str = "magma"):
    """The log volume stretch ``log|det J_g(w)|`` at ``w = g^{-1}(z)`` of an explicit
    ``flow`` (see :func:`pull_back`; float64 recommended) over the ``bounds`` window, as an
    image with a colour bar.

    Returns:
        The axes.
    """
    ax = _ax(ax)
    dtype = next(flow.parameters()).dtype
    _, _, stretch = evaluate_on_grid(lambda z: -pull_back(flow, z)[1], bounds, n, dtype=dtype)
    image = ax.imshow(stretch, origin="lower", extent=bounds, cmap=cmap)
    label = r"$\log|\det J_g(w)|$ at $w = g^{-1}(z)$"
    ax.figure.colorbar(image, ax=ax, label=label)
    ax.set(xlabel="$z_1$", ylabel="$z_2$", title="log volume stretch of the flow")
    return ax


# --- chapter 5 (the Gaussian-mixture experiment) ---------------------------------------------

__all__ += [
    "plot_kde",
    "plot_mog_grid",
    "plot_estimator_study",
    "plot_estimator_differences",
    "plot_layer_posterior",
    "plot_index_colouring",
]


def plot_kde(
    samples: np.ndarray,
    ax=None,
    bounds: Bounds = (-4.0, 4.0, -4.0, 4.0),
    title: str | None = None,
    levels: int = 20,
    cmap: str = "coolwarm",
):
    """A filled seaborn KDE of 2-D ``samples`` ``(n, 2)`` (the paper's style: coolwarm,
    20 levels) on fixed axis limits.

    Only the samples inside the window (plus a margin of 0.5) enter the KDE, so that a few
    far-away samples do not inflate the bandwidth; the fraction left out is returned as
    ``ax.outside_fraction`` for the caller to report. The background takes the colour of
    zero density."""
    import seaborn as sns

    ax = _ax(ax)
    samples = np.asarray(samples, dtype=float)
    xmin, xmax, ymin, ymax = bounds
    inside = (
        (samples[:, 0] > xmin - 0.5)
        & (samples[:, 0] < xmax + 0.5)
        & (samples[:, 1] > ymin - 0.5)
        & (samples[:, 1] < ymax + 0.5)
    )
    ax.outside_fraction = 1.0 - inside.mean()
    ax.set_facecolor(plt.get_cmap(cmap)(0))
    sns.kdeplot(
        x=samples[inside, 0],
        y=samples[inside, 1],
        fill=True,
        cmap=cmap,
        levels=levels,
        thresh=0.0,
        ax=ax,
    )
    return _finish_plane(ax, bounds, title)


def plot_mog_grid(
    cells: dict,
    models: Sequence[str],
    sigma0s: Sequence[float],
    labels: dict | None = None,
    size: float = 3.2,
):
    """Figure 1 of the slides: one row per model, one column per ``sigma_0``.

    Args:
        cells: ``(model, sigma0) -> (samples (n, 2), elbo)``.
        models: row order (the slides: CIF-NSF on top, NSF below).
        sigma0s: column order.
        labels: display names of the models.

    Returns:
        The figure.
    """
    labels = labels or {}
    fig, axes = plt.subplots(
        len(models), len(sigma0s), figsize=(size * len(sigma0s), size * len(models)), squeeze=False
    )
    for i, model in enumerate(models):
        for j, s in enumerate(sigma0s):
            samples, value = cells[(model, s)]
            name = labels.get(model, model)
            ax = plot_kde(samples, axes[i, j])
            title = f"{name}, $\\sigma_0$={s:g}\nELBO = {value:.{3 if abs(value) < 100 else 1}f}"
            if ax.outside_fraction > 0.005:
                title += f", {100 * ax.outside_fraction:.0f}% outside"
            ax.set_title(title)
            if j > 0:
                axes[i, j].set_ylabel("")
    fig.tight_layout()
    return fig


def _errorbar_where_run(ax, n, study: dict, key: str, shift: float, **kwargs) -> None:
    """``study[key + "_mean"]`` +- ``study[key + "_std"]`` against ``n * shift``, leaving out
    the skipped entries (``None``)."""
    means = np.asarray(study[f"{key}_mean"], dtype=object)
    ran = means != None  # noqa: E711 (elementwise)
    stds = np.asarray(study[f"{key}_std"], dtype=object)[ran].astype(float)
    ax.errorbar(n[ran] * shift, means[ran].astype(float), yerr=stds, capsize=3, **kwargs)


def plot_estimator_study(study: dict, ax=None, reference: float | None = None):
    """Mean +- standard deviation over repetitions of the auxiliary and marginal ELBO
    estimates against the number of samples ``N`` (log axis); skipped estimates (``None``)
    are left out."""
    ax = _ax(ax)
    n = np.asarray(study["n"], dtype=float)
    series = [
        ("aux", "auxiliary ELBO", "o"),
        ("marg_N", "marginal, $M = N$", "s"),
        ("marg_sqrtN", "marginal, $M = \\lceil\\sqrt{N}\\rceil$", "^"),
    ]
    for shift, (key, label, marker) in zip((0.94, 1.0, 1.06), series):
        if f"{key}_mean" in study:
            _errorbar_where_run(ax, n, study, key, shift, marker=marker, label=label)
    if reference is not None:
        ax.axhline(reference, color="grey", ls="--", lw=1, label="$\\log Z = 0$")
    ax.set_xscale("log")
    ax.set_xlabel("number of samples $N$")
    ax.set_ylabel("estimate (nats)")
    ax.legend()
    return ax


def plot_estimator_differences(study: dict, ax=None, linthresh: float | None = 0.01):
    """Mean +- standard deviation over repetitions of the paired difference marginal minus
    auxiliary ELBO estimate (same ``z`` samples) against ``N``, for each rule for ``M``;
    skipped estimates are left out. Needs a study with ``diff_*`` entries. The y axis is
    linear within ``+-linthresh`` and logarithmic beyond (``None``: linear), so that the
    small settled values and the wide spread at small ``N`` both stay readable."""
    ax = _ax(ax)
    n = np.asarray(study["n"], dtype=float)
    series = [
        ("N", "$M = N$", "s", "C1"),
        ("sqrtN", "$M = \\lceil\\sqrt{N}\\rceil$", "^", "C2"),
    ]
    for shift, (rule, label, marker, colour) in zip((0.97, 1.03), series):
        if f"diff_{rule}_mean" in study:
            key = f"diff_{rule}"
            _errorbar_where_run(ax, n, study, key, shift, marker=marker, color=colour, label=label)
    ax.axhline(0.0, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("number of samples $N$")
    ax.set_ylabel("marginal $-$ auxiliary (nats)")
    if linthresh is not None:
        ax.set_yscale("symlog", linthresh=linthresh)
        ax.set_ylabel(f"marginal $-$ auxiliary (nats,\nlinear within $\\pm${linthresh:g})")
    ax.legend()
    return ax


def plot_layer_posterior(
    u: Sequence[float],
    log_q: Sequence[float],
    log_r: Sequence[float],
    ax=None,
    title: str | None = None,
):
    """The exact ``q(u | w)`` of a CIF layer against the learned ``r(u | w)``, over ``u``."""
    ax = _ax(ax)
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
    ax = _ax(ax)
    z, u = np.asarray(z), np.asarray(u).reshape(-1)
    lo, hi = np.percentile(u, [2, 98])
    points = ax.scatter(
        z[:, 0], z[:, 1], c=u, s=2, cmap="viridis", vmin=lo, vmax=hi, rasterized=True
    )
    ax.figure.colorbar(points, ax=ax, label="$u$")
    return _finish_plane(ax, bounds, title)


# --- chapters 3-4 (continuously-indexed flows, the auxiliary ELBO) --------------------------

__all__ += [
    "plot_indexed_family",
    "plot_marginal_vs_samples",
    "plot_joint_density",
    "plot_path",
    "plot_posterior_vs_r",
]


def _np(x) -> np.ndarray:
    return x.detach().double().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


@torch.no_grad()
def plot_indexed_family(transform, us: Sequence[float], w: Tensor, ax=None, cmap: str = "coolwarm"):
    """Draw ``z = G(w; u)`` against ``w`` for each fixed index in ``us`` (1-D ``w`` grid
    ``(n,)``), using :class:`~cifutils.cif.FixedIndex`; one colour per ``u``."""
    from .cif import FixedIndex

    ax = _ax(ax)
    colours = plt.get_cmap(cmap)(np.linspace(0, 1, len(us)))
    dtype = next(transform.parameters()).dtype
    for u, colour in zip(us, colours):
        g = FixedIndex(transform, torch.tensor([float(u)], dtype=dtype))
        z, _ = g(w.to(dtype)[:, None])
        ax.plot(_np(w), _np(z[:, 0]), color=colour, label=f"$u = {u:g}$")
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
    ax = _ax(ax)
    z = _np(z_grid)
    ax.hist(
        _np(samples).ravel(),
        bins=bins,
        range=(z.min(), z.max()),
        density=True,
        color="0.8",
        label="samples of $q$",
    )
    ax.plot(z, np.exp(_np(log_q_z)), color="C0", label=label)
    if log_p is not None:
        ax.plot(z, np.exp(_np(log_p)), color="C3", ls="--", label="target (normalized)")
    ax.set_xlabel("$z$")
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    return ax


def plot_joint_density(
    z_grid: Tensor, u_grid: Tensor, log_q_zu: Tensor, ax=None, cmap: str = "viridis"
):
    """The joint density ``q(z, u)`` of a one-layer 1-D CIF as an image
    (``log_q_zu`` of shape ``(len(z_grid), len(u_grid))``)."""
    ax = _ax(ax)
    ax.pcolormesh(_np(z_grid), _np(u_grid), np.exp(_np(log_q_zu)).T, cmap=cmap, shading="auto")
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
    ax = _ax(ax)
    if c is None:
        ax.scatter(_np(w).ravel(), _np(z).ravel(), s=2, alpha=0.5)
    else:
        sc = ax.scatter(_np(w).ravel(), _np(z).ravel(), c=_np(c).ravel(), s=2, cmap=cmap)
        plt.colorbar(sc, ax=ax, label=label)
    ax.set_xlabel("base sample $w_0$")
    ax.set_ylabel("$z$")
    return ax


def plot_posterior_vs_r(
    u_grid: Tensor, log_post: Tensor, log_r: Tensor, ax=None, title: str | None = None
):
    """The exact posterior ``q(u | z)`` and the auxiliary ``r(u | z)`` for one ``z``."""
    ax = _ax(ax)
    u = _np(u_grid)
    ax.plot(u, np.exp(_np(log_post)), color="C0", label="exact $q(u \\mid z)$")
    ax.plot(u, np.exp(_np(log_r)), color="C1", ls="--", label="$r(u \\mid z)$")
    ax.set_xlabel("$u$")
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


# --- chapter 6 (VAEs on MNIST and Fashion-MNIST) ----------------------------------------------


def plot_image_grid(images, ncols: int = 8, ax=None, title: str | None = None):
    """Show ``images (N, 1, 28, 28)`` (values in [0, 1]) as one grey-scale mosaic."""
    imgs = _np(images).reshape(-1, 28, 28)
    nrows = -(-len(imgs) // ncols)
    canvas = np.ones((nrows * 29 + 1, ncols * 29 + 1))
    for i, img in enumerate(imgs):
        r, c = divmod(i, ncols)
        canvas[1 + 29 * r : 29 * (r + 1), 1 + 29 * c : 29 * (c + 1)] = img
    ax = ax or plt.gca()
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def plot_latent_projection(z, basis, ax=None, title: str | None = None, color: str = "C0"):
    """Scatter samples ``z (S, d)`` projected on the two columns of ``basis (d, 2)``,
    centred at their mean; axes labelled as the two projection directions."""
    pts = (_np(z) - _np(z).mean(0)) @ _np(basis)
    ax = ax or plt.gca()
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.3, color=color, rasterized=True)
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    if title:
        ax.set_title(title)
    return ax


def plot_validation_curves(runs: dict, dataset: str, ax=None, first_epoch: int = 1):
    """Validation ELBO per epoch of the runs of one dataset in a ``vae-many`` summary
    (``{name: {"val_elbo": [...], ...}}``, names ``<dataset>-<posterior>-seed<s>-<budget>``):
    one colour per posterior, one line per seed, from ``first_epoch`` on."""
    ax = _ax(ax)
    colours = {"gaussian": "C0", "nsf": "C1", "cif-nsf": "C2"}
    labelled = set()
    mine = {n: r for n, r in runs.items() if n.startswith(dataset + "-")}
    kind = {n: n[len(dataset) + 1 :].rsplit("-seed", 1)[0] for n in mine}
    order = list(colours)
    for name in sorted(mine, key=lambda n: (order.index(kind[n]) if kind[n] in order else 9, n)):
        run, posterior = mine[name], kind[name]
        values = np.asarray(run["val_elbo"], dtype=float)[first_epoch - 1 :]
        epochs = np.arange(first_epoch, first_epoch + len(values))
        label = None if posterior in labelled else posterior
        labelled.add(posterior)
        ax.plot(epochs, values, color=colours.get(posterior), lw=1, alpha=0.8, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation ELBO (nats)")
    ax.set_title(dataset)
    ax.legend()
    return ax


def plot_continued_runs(
    rows: list[dict], dataset: str, ax=None, mark_epoch: int = 63, first_epoch: int = 10
):
    """Validation ELBO per epoch of the VAE runs of one dataset (rows of
    ``vae_experiment.collect_results``, with their ``val_elbo`` histories) from
    ``first_epoch`` on: one colour per posterior, one line per seed, a dot at each run's
    best-validation epoch and a dotted line at ``mark_epoch`` (where Table 1's runs stopped)."""
    ax = _ax(ax)
    colours = {"gaussian": "C0", "nsf": "C1", "cif-nsf": "C2"}
    labelled = set()
    for row in rows:
        if row["dataset"] != dataset:
            continue
        values = np.asarray(row["val_elbo"], dtype=float)
        epochs = np.arange(1, len(values) + 1)
        keep = epochs >= first_epoch
        colour = colours.get(row["posterior"])
        label = None if row["posterior"] in labelled else row["posterior"]
        labelled.add(row["posterior"])
        ax.plot(epochs[keep], values[keep], color=colour, lw=0.8, alpha=0.8, label=label)
        best = row["best_epoch"]
        ax.plot([best], [values[best - 1]], "o", color=colour, ms=4)
    ax.axvline(mark_epoch, color="grey", ls=":", label=f"epoch {mark_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation ELBO (nats)")
    ax.set_title(dataset)
    ax.legend(fontsize=7)
    return ax


# ----- Chapter 5: the order ablation -----


def plot_order_ablation(
    elbos: dict,
    inside: dict,
    models: Sequence[str],
    sigma0s: Sequence[float],
    labels: dict | None = None,
    size: float = 3.4,
):
    """The order ablation of the mixture experiment: one column per ``sigma_0``; top, the
    ELBO of every seed (dots) and their mean (bar) per model on a symmetric-log axis (the
    NSF at ``sigma_0 = 10`` is far below the others); bottom, the share of the first spline's
    inputs inside its active square.

    Args:
        elbos: ``(model, sigma0) -> list of ELBOs`` (one per seed; missing cells are left
            empty and marked "not run").
        inside: ``(model, sigma0) -> share or None``.
        models: x-axis order.
        sigma0s: column order.
        labels: display names of the models.

    Returns:
        The figure.
    """
    labels = labels or {}
    fig, axes = plt.subplots(
        2,
        len(sigma0s),
        figsize=(size * len(sigma0s), 1.45 * size),
        squeeze=False,
        sharex=True,
        gridspec_kw={"height_ratios": [2, 1]},
    )
    x = np.arange(len(models))
    for j, s in enumerate(sigma0s):
        top, bottom = axes[0, j], axes[1, j]
        for i, m in enumerate(models):
            values = elbos.get((m, s)) or []
            colour = f"C{i}"
            if values:
                top.bar(i, np.mean(values), color=colour, alpha=0.35, width=0.7)
                top.plot([i] * len(values), values, "o", color=colour, ms=4)
            else:
                top.text(i, -0.05, "not run", ha="center", va="top", rotation=90, fontsize=8)
            share = inside.get((m, s))
            if share is not None:
                bottom.bar(i, share, color=colour, alpha=0.8, width=0.7)
            else:
                bottom.text(i, 0.05, "n/a", ha="center", fontsize=8)
        top.set_yscale("symlog", linthresh=0.1)
        top.axhline(0.0, color="0.3", lw=0.8)
        top.set_title(f"$\\sigma_0$ = {s:g}")
        bottom.set_ylim(0, 1.05)
        bottom.set_xticks(x, [labels.get(m, m) for m in models], rotation=35, ha="right")
        if j == 0:
            top.set_ylabel("ELBO (aux. for CIF), nats\n(symmetric log scale)")
            bottom.set_ylabel("1st spline's inputs\nin $[-3, 3]^2$")
    fig.tight_layout()
    return fig
