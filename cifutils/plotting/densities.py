"""Densities, samples and training curves on the plane: grids, contour and sample plots, the
figure assemblies of chapters 1 and 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Bounds",
    "axes_or_current",
    "grid_points",
    "evaluate_on_grid",
    "plot_density",
    "plot_samples",
    "plot_history",
    "plot_fits",
    "plot_histories",
    "plot_amortized_posterior",
    "plot_curves",
    "plot_kde",
]


Bounds = tuple[float, float, float, float]


def axes_or_current(ax):
    """``ax``, or the current axes when it is None."""
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
    ax = axes_or_current(ax)
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
    ax = axes_or_current(ax)
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
    ax = axes_or_current(ax)
    ax.plot(steps, values, label=label, **kwargs)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=reference_label)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    return ax


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
    ax = axes_or_current(ax)
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
    ax = axes_or_current(ax)
    xs = torch.linspace(-limit, limit, n)
    mean, log_std = base.params(torch.stack([xs, torch.zeros_like(xs)], dim=1))
    mean, std = mean[:, 0], log_std[:, 0].exp()
    ax.plot(xs, exact_slope * xs, "k--", label="exact posterior mean")
    ax.plot(xs, mean, label="encoder mean")
    ax.fill_between(xs, mean - std, mean + std, alpha=0.3, label="encoder mean ± std")
    ax.set(xlabel="$x_1$ (with $x_2 = 0$)", ylabel="$z_1$")
    ax.legend()
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
    ax = axes_or_current(ax)
    x = torch.as_tensor(x).detach().cpu()
    for (label, values), style in zip(curves.items(), styles):
        ax.plot(x, torch.as_tensor(values).detach().cpu(), style, label=label)
    ax.legend(fontsize=fontsize)
    return ax


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

    ax = axes_or_current(ax)
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
