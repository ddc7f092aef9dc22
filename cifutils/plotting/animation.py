"""Samples moving through a flow, layer by layer (chapters 2 and 3).

:func:`layer_positions` pushes seeded base samples through a
:class:`~cifutils.families.VariationalFlow` and keeps where they are after every layer (for a
CIF, optionally with several fixed indices ``u`` per base point); :func:`animate_layers` turns
that into a :class:`FlowAnimation`, one object with two rich representations: an interactive
JavaScript player (``text/html``, from matplotlib's ``to_jshtml``, frames embedded, nothing
fetched from the network) for the web pages, and a static strip of the key frames
(``image/png``) for the PDF. The book's ``nb_mime_priority_overrides`` (``_config.yml``)
picks one per builder.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
import torch
from matplotlib.animation import FuncAnimation
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from nflows.transforms.permutations import Permutation
from torch import Tensor

from ..cif import CIFLayer
from .densities import Bounds, evaluate_on_grid

__all__ = ["LayerPositions", "FlowAnimation", "layer_positions", "animate_layers"]


@dataclass
class LayerPositions:
    """Where samples are after each layer of a flow (see :func:`layer_positions`).

    Attributes:
        frames: the key frames, ``(K, n, d)``: the base samples, then the samples after each
            layer that is not a permutation, drawn in the coordinates of the flow's output
            (the permutations still to come are applied, so they never show as moves).
        labels: one short title per key frame.
        states: the positions as the flow computes them: the base samples ``w_0``, then the
            output of every layer module in order (permutations included; a split CIF layer
            adds its inner point before its output), each ``(n, d)``.
        index: the fixed index ``u`` of each row when pushed with fixed ``us``, ``(n,)``,
            else None.
        us: those fixed indices, in order (row ``i * len(us) + k`` used ``us[k]``), or None.
    """

    frames: Tensor
    labels: list[str]
    states: list[Tensor]
    index: Tensor | None = None
    us: list[float] | None = None


def _check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _cif_inner(layer: CIFLayer, w: Tensor, v: Tensor) -> tuple[Tensor, str] | None:
    """The point between the two parts of a CIF layer's ``G`` and the name of the first
    part: ``g(w)`` (spline first) or the indexed affine's output ``v`` (affine first)."""
    order = getattr(layer.transform, "order", None)
    if order == "spline-first":
        return layer.transform.flow(w)[0], "$g$"
    if order == "affine-first":
        return v, "affine"
    return None


@torch.no_grad()
def layer_positions(
    family,
    num_samples: int,
    us: Sequence[float] | None = None,
    seed: int = 0,
    split_cif: bool = True,
) -> LayerPositions:
    """Push ``num_samples`` seeded base samples through ``family``, recording every layer.

    The random numbers come from a private copy of torch's generator state, seeded with
    ``seed`` (the global state is left as it was): without ``us`` the positions are those of
    ``family.forward_sample(num_samples)`` run right after ``torch.manual_seed(seed)``.

    Args:
        family: a :class:`~cifutils.families.VariationalFlow` whose base needs no context.
        num_samples: number of base points.
        us: fixed index values for the CIF layers, instead of drawing ``u ~ q(u | w)``: each
            base point is pushed once per value, with that value at every CIF layer (and in
            every coordinate of ``u``). Row ``i * len(us) + k`` is base point ``i`` with
            ``us[k]``.
        seed: seed of the base samples (and of the indices drawn without ``us``).
        split_cif: show each CIF layer as two moves, its ``u``-free flow step and its
            indexed affine, in the layer's order.

    Returns:
        A :class:`LayerPositions`.
    """
    _check_positive_int("num_samples", num_samples)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    base = getattr(family, "base", None)
    if base is None or getattr(base, "amortized", False):
        raise ValueError("family must be a VariationalFlow whose base needs no context")
    layers = list(family.layers)
    if us is not None:
        us = [float(u) for u in us]
        if not us or not all(math.isfinite(u) for u in us):
            raise ValueError(f"us must be a non-empty sequence of finite numbers, got {us!r}")
        if not any(isinstance(layer, CIFLayer) for layer in layers):
            raise ValueError("us is only for families with CIF layers; this one has none")
    # (position, label, permutation module or None); label None marks a permutation
    records: list[tuple[Tensor, str | None, Permutation | None]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        w, _ = base.rsample_and_log_prob(num_samples)
        index = None
        if us is not None:
            w = w.repeat_interleave(len(us), dim=0)
            index = torch.tensor(us, dtype=w.dtype, device=w.device).repeat(num_samples)
        records.append((w, "base $w_0$", None))
        number = 0
        for layer in layers:
            if isinstance(layer, Permutation):
                w = layer(w)[0]
                records.append((w, None, layer))
                continue
            number += 1
            label = f"layer {number}"
            if isinstance(layer, CIFLayer):
                if index is None:
                    step = layer.sample_forward(w)
                    z, v = step.z, step.v
                else:
                    u = index[:, None].expand(-1, layer.dim_u)
                    z, _, v = layer.transform.forward_parts(w, u)
                inner = _cif_inner(layer, w, v) if split_cif else None
                if inner is not None:
                    records.append((inner[0], f"{label}: {inner[1]}", None))
                    label = f"{label}: $G(\\cdot\\,; u)$"
                w = z
            else:
                w = layer(w)[0]
            records.append((w, label, None))
    frames, labels = [], []
    for j, (position, label, _) in enumerate(records):
        if label is None:
            continue
        for _, _, perm in records[j + 1 :]:
            if perm is not None:  # draw in the output's coordinates
                position = perm(position)[0]
        frames.append(position)
        labels.append(label)
    states = [position for position, _, _ in records]
    return LayerPositions(torch.stack(frames), labels, states, index, us)


# ------------------------------------------------------------------------------ the animation

# Inline SVG for the player's buttons: matplotlib's template draws them with Font Awesome
# from a CDN, which an offline page cannot load (16 x 16 shapes, in the template's order).
_ICONS = {
    "fa-minus": "M2 7h12v2H2z",
    "fa-fast-backward": "M1 2h2v12H1zM9 2 3 8l6 6zM15 2 9 8l6 6z",
    "fa-step-backward": "M3 2h2v12H3zM13 2 5 8l8 6z",
    "fa-play fa-flip-horizontal": "M12 2 4 8l8 6z",
    "fa-pause": "M3 2h4v12H3zM9 2h4v12H9z",
    "fa-play": "M4 2l8 6-8 6z",
    "fa-step-forward": "M3 2l8 6-8 6zM11 2h2v12h-2z",
    "fa-fast-forward": "M1 2l6 6-6 6zM7 2l6 6-6 6zM13 2h2v12h-2z",
    "fa-plus": "M2 7h12v2H2zM7 2h2v12H7z",
}


@dataclass(repr=False)
class FlowAnimation:
    """An animation with two rich representations, for IPython and Jupyter Book.

    Attributes:
        html: the JavaScript player (``text/html``): the frames are embedded as PNG data, the
            buttons are inline SVG, and the element ids are derived from the content, so the
            same frames give the same HTML.
        png: the static strip of key frames (``image/png``): one row per panel of the
            animation, one column per key frame.
        num_frames: frames of the player.
        strip_shape: ``(rows, columns)`` of the strip.
    """

    html: str
    png: bytes
    num_frames: int
    strip_shape: tuple[int, int]

    def _repr_html_(self) -> str:
        return self.html

    def _repr_png_(self) -> bytes:
        return self.png

    def __repr__(self) -> str:
        rows, cols = self.strip_shape
        return f"<FlowAnimation: {self.num_frames} frames, a strip of {rows} x {cols} key frames>"


@dataclass
class _Panel:
    """One panel's data as NumPy arrays, its limits, colours and background."""

    name: str | None
    frames: np.ndarray  # (K, n, d)
    colours: np.ndarray  # (n, 4) RGBA
    lanes: np.ndarray | None  # (n,): the height of each row in 1-D, else None
    ticks: tuple | None  # y ticks and labels of a 1-D panel
    limits: tuple[float, float, float, float]
    legend: list[Line2D]
    background: tuple | None


def _limits(frames: np.ndarray, bounds: Bounds | None, lanes: np.ndarray | None) -> Bounds:
    """Axis limits: ``bounds`` when given (2-D), else what the key frames cover."""
    if bounds is not None:
        return tuple(float(b) for b in bounds)
    lo = np.quantile(frames, 0.005, axis=1).min(0)
    hi = np.quantile(frames, 0.995, axis=1).max(0)
    pad = 0.08 * np.maximum(hi - lo, 1e-6)
    lo, hi = lo - pad, hi + pad
    if lanes is None:
        return (lo[0], hi[0], lo[1], hi[1])
    span = max(lanes.max() - lanes.min(), 1e-6)
    # the bottom of a 1-D panel holds the target's profile, under the lanes
    return (lo[0], hi[0], lanes.min() - 0.45 * span, lanes.max() + 0.1 * span)


def _lanes(base: np.ndarray, copies: int) -> tuple[np.ndarray, tuple | None]:
    """Heights of the rows of a 1-D panel and its y ticks. A few base points (at most 12)
    get evenly spaced lanes in their order, labelled with their values, and the copies of a
    base point (one per fixed index) are stacked a little apart within its lane; more are
    drawn at the height of their value."""
    points = base[::copies]
    if len(points) > 12:
        return base.copy(), None
    rank = np.argsort(np.argsort(points, kind="stable"), kind="stable")
    offset = (np.arange(len(base)) % copies - (copies - 1) / 2) * (0.7 / max(copies, 2))
    lanes = rank.repeat(copies).astype(float) + offset
    return lanes, (np.arange(len(points)), [f"{v:.2f}" for v in np.sort(points)])


def _panel(name: str | None, positions: LayerPositions, log_prob, bounds) -> _Panel:
    frames = positions.frames.detach().double().cpu().numpy()
    dim = frames.shape[2]
    if dim not in (1, 2):
        raise ValueError(f"only 1-D and 2-D flows can be drawn, got dimension {dim}")
    legend: list[Line2D] = []
    lanes, ticks, copies = None, None, 1
    if positions.index is not None:
        us = positions.us or sorted(set(positions.index.tolist()))
        copies = len(us)
        palette = mpl.colormaps["coolwarm"](np.linspace(0, 1, copies))
        colours = palette[np.arange(frames.shape[1]) % copies]
        legend = [
            Line2D([], [], ls="", marker="o", color=c, label=f"{u:+.2f}")
            for u, c in zip(us, palette)
        ]
    else:
        start = frames[0, :, 0]
        lo, hi = np.quantile(start, [0.02, 0.98])
        colours = mpl.colormaps["viridis"](np.clip((start - lo) / max(hi - lo, 1e-12), 0, 1))
    if dim == 1:
        lanes, ticks = _lanes(frames[0, :, 0], copies)
    limits = _limits(frames, bounds if dim == 2 else None, lanes)
    background = None
    if log_prob is not None:
        dtype = positions.frames.dtype
        if dim == 2:
            background = evaluate_on_grid(log_prob, limits, n=120, dtype=dtype)
        else:
            x = torch.linspace(limits[0], limits[1], 400, dtype=dtype)
            with torch.no_grad():
                values = log_prob(x[:, None]).detach().double().cpu().numpy()
            background = (x.double().numpy(), values)
    return _Panel(name, frames, colours, lanes, ticks, limits, legend, background)


def _setup_axes(ax, panel: _Panel, small: bool) -> None:
    """Background, limits and labels of one panel (drawn once; the points move)."""
    ax.set_xlim(panel.limits[0], panel.limits[1])
    ax.set_ylim(panel.limits[2], panel.limits[3])
    ax.tick_params(labelsize=6 if small else 7)
    if panel.background is not None:
        if panel.lanes is None:
            xs, ys, values = panel.background
            finite = np.isfinite(values)
            top = values[finite].max() if finite.any() else 0.0
            density = np.where(finite, np.exp(values - top), 0.0)
            levels = np.linspace(0, 1, 7)[1:-1] * density.max()
            ax.contour(xs, ys, density, levels=levels, colors="0.7", linewidths=0.6)
        else:
            x, values = panel.background
            profile = np.exp(values - np.max(values))
            ax.fill_between(x, 0, 0.2 * profile, transform=ax.get_xaxis_transform(), color="0.85")
    if panel.lanes is None:
        ax.set_aspect("equal", adjustable="box")
    else:
        ax.set_ylabel("base point $w_0$", fontsize=6 if small else 8)
        if panel.ticks is not None:
            ax.set_yticks(*panel.ticks)


def _scatter(ax, panel: _Panel, points: np.ndarray, small: bool):
    size = (4 if small else 6) if panel.lanes is None else (8 if small else 14)
    return ax.scatter(*_offsets(panel, points).T, s=size, c=panel.colours, linewidths=0, zorder=2)


def _offsets(panel: _Panel, points: np.ndarray) -> np.ndarray:
    if panel.lanes is None:
        return points[:, :2]
    return np.column_stack([points[:, 0], panel.lanes])


def _player_html(animation: FuncAnimation, alt: str) -> str:
    """``to_jshtml`` made self-contained and reproducible: no Font Awesome from a CDN
    (inline SVG buttons instead), ids from a hash of the content instead of a random UUID,
    and the first frame as the image's ``src`` (shown even before the script runs)."""
    html = animation.to_jshtml(default_mode="once")
    html = re.sub(r'<link rel="stylesheet"\s+href="[^"]*font-awesome[^"]*">\s*', "", html)

    def icon(match: re.Match) -> str:
        shapes = _ICONS.get(match.group(1))
        if shapes is None:
            raise RuntimeError(f"unknown icon {match.group(1)!r} in matplotlib's player")
        return (
            '<svg viewBox="0 0 16 16" width="12" height="12" fill="currentColor" '
            f'aria-hidden="true"><path d="{shapes}"/></svg>'
        )

    html = re.sub(r'<i class="fa ([a-z -]+?)"></i>', icon, html)
    uid = re.search(r'id="_anim_img([0-9a-f]+)"', html).group(1)
    stable = hashlib.sha256(html.replace(uid, "").encode()).hexdigest()[:16]
    html = html.replace(uid, stable)
    first = re.search(r'frames\[0\] = "(data:image/[a-z+]+;base64,[^"]*)"', html).group(1)
    first = first.replace("\\\n", "")
    alt = alt.replace('"', "&quot;")
    tag = f'<img id="_anim_img{stable}">'
    return html.replace(tag, f'<img id="_anim_img{stable}" src="{first}" alt="{alt}">')


def _frame(keys: int, f: int, per_layer: int) -> tuple[int, float]:
    """Key frame ``k`` (of ``keys``) and the fraction ``a`` of the way to the next one at
    player frame ``f``."""
    k, r = divmod(f, per_layer)
    return (keys - 1, 0.0) if k >= keys - 1 else (k, r / per_layer)


def animate_layers(
    positions: LayerPositions | Mapping[str, LayerPositions],
    frames_per_layer: int = 5,
    log_prob: Callable[[Tensor], Tensor] | None = None,
    bounds: Bounds | None = None,
    size: float = 3.4,
    dpi: int = 70,
    interval: int = 200,
    strip_size: float = 1.6,
    strip_dpi: int = 110,
    alt: str = "Samples pushed through the flow, layer by layer",
) -> FlowAnimation:
    """An animation of samples moving from the base through each layer of a flow.

    Each point moves in a straight line from one key frame to the next, in
    ``frames_per_layer`` frames; 2-D samples are coloured by their horizontal position in the
    first frame, so that each can be followed. A 1-D flow is drawn with the position on the
    horizontal axis and the base point ``w_0`` on the vertical one (the copies of a base point
    pushed with different fixed ``us`` stacked a little apart, one colour per index).

    Args:
        positions: from :func:`layer_positions`; or several, by panel title, with the same
            number of key frames (drawn side by side).
        frames_per_layer: player frames from one key frame to the next (1: key frames only).
        log_prob: a target log-density (``(m, d) -> (m,)``, unnormalized is fine) drawn
            under the points: contours in 2-D, a profile at the bottom in 1-D.
        bounds: ``(xmin, xmax, ymin, ymax)`` of 2-D panels (default: what the frames cover).
        size, dpi: panel size (inches) and resolution of the player's frames.
        interval: milliseconds between player frames.
        strip_size, strip_dpi: panel size and resolution of the static strip.
        alt: the player image's alternative text.

    Returns:
        A :class:`FlowAnimation`; displayed in a notebook, it carries both the player
        (``text/html``) and the strip (``image/png``).
    """
    _check_positive_int("frames_per_layer", frames_per_layer)
    for name, value in (("size", size), ("strip_size", strip_size)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    for name, value in (("dpi", dpi), ("interval", interval), ("strip_dpi", strip_dpi)):
        _check_positive_int(name, value)
    if isinstance(positions, LayerPositions):
        named = {None: positions}
    elif isinstance(positions, Mapping) and positions:
        named = dict(positions)
    else:
        raise ValueError("positions must be a LayerPositions or a non-empty mapping of them")
    if not all(isinstance(p, LayerPositions) for p in named.values()):
        raise ValueError("positions must be a LayerPositions or a non-empty mapping of them")
    counts = {len(p.labels) for p in named.values()}
    if len(counts) != 1:
        raise ValueError(f"the panels have different numbers of key frames: {sorted(counts)}")
    dims = {p.frames.shape[-1] for p in named.values()}
    if len(dims) != 1:
        raise ValueError(f"the panels have different dimensions: {sorted(dims)}")
    panels = [_panel(name, p, log_prob, bounds) for name, p in named.items()]
    labels = next(iter(named.values())).labels
    keys = len(labels)
    num_frames = (keys - 1) * frames_per_layer + 1
    one_d = panels[0].lanes is not None

    height = size * (0.8 if one_d else 1.0) + 0.45
    legend_room = 0.7 if any(p.legend for p in panels) else 0.0
    fig = Figure(figsize=((size + legend_room) * len(panels), height), dpi=dpi)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    points = []
    for ax, panel in zip(axes, panels):
        _setup_axes(ax, panel, small=False)
        if panel.name:
            ax.set_title(panel.name, fontsize=9)
        if panel.legend:
            ax.legend(
                handles=panel.legend, title="$u$", fontsize=7, title_fontsize=8,
                loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
            )  # fmt: skip
        points.append(_scatter(ax, panel, panel.frames[0], small=False))
    title = fig.suptitle(labels[0], fontsize=9)

    def update(f: int):
        k, a = _frame(keys, f, frames_per_layer)
        for scatter, panel in zip(points, panels):
            now = panel.frames[k] if a == 0 else (1 - a) * panel.frames[k] + a * panel.frames[k + 1]
            scatter.set_offsets(_offsets(panel, now))
        title.set_text(labels[k] if a == 0 else f"{labels[k]} \u2192 {labels[k + 1]}")
        return [*points, title]

    with mpl.rc_context({"animation.frame_format": "png"}):
        player = FuncAnimation(fig, update, frames=num_frames, interval=interval, repeat=False)
        html = _player_html(player, alt)

    strip = Figure(
        figsize=(
            strip_size * keys + 0.3,
            (strip_size * (0.8 if one_d else 1.0) + 0.3) * len(panels),
        ),
        dpi=strip_dpi,
    )
    strip.set_layout_engine("constrained")
    grid = strip.subplots(len(panels), keys, squeeze=False)
    for row, panel in zip(grid, panels):
        for k, ax in enumerate(row):
            _setup_axes(ax, panel, small=True)
            _scatter(ax, panel, panel.frames[k], small=True)
            ax.set_title(labels[k] if panel is panels[0] else "", fontsize=7)
            if k > 0:
                ax.set_ylabel("")
        if panel.name:
            row[0].set_ylabel(panel.name, fontsize=7)
    buffer = io.BytesIO()
    strip.savefig(buffer, format="png", dpi=strip_dpi, metadata={"Software": None})
    return FlowAnimation(html, buffer.getvalue(), num_frames, (len(panels), keys))
