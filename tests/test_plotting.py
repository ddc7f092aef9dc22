"""Tests of cifutils.plotting (chapters 1-2 helpers), on the non-interactive Agg backend."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from nflows.transforms.splines.rational_quadratic import (  # noqa: E402
    unconstrained_rational_quadratic_spline,
)

from cifutils import get_target  # noqa: E402
from cifutils import plotting as P  # noqa: E402
from cifutils.training import History  # noqa: E402


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_grid_points_layout():
    xs, ys, pts = P.grid_points((-1.0, 1.0, 0.0, 2.0), n=5)
    assert xs.shape == (5,) and ys.shape == (5,) and pts.shape == (25, 2)
    grid = pts.reshape(5, 5, 2)
    assert torch.equal(grid[2, 3], torch.stack([xs[3], ys[2]]))


@pytest.mark.parametrize("bounds,n", [((1.0, 0.0, 0.0, 1.0), 5), ((0.0, 1.0, 0.0, 1.0), 1)])
def test_grid_points_rejects_bad_input(bounds, n):
    with pytest.raises(ValueError):
        P.grid_points(bounds, n)


def test_evaluate_on_grid_matches_direct_call_and_chunks():
    target = get_target("banana")
    xs, ys, values = P.evaluate_on_grid(target.log_prob, (-2, 2, -1, 3), n=30, chunk_size=7)
    assert values.shape == (30, 30)
    direct = target.log_prob(torch.tensor([[xs[4], ys[9]]], dtype=torch.float32)).item()
    assert values[9, 4] == pytest.approx(direct, rel=1e-5)


def test_evaluate_on_grid_checks_output_shape():
    with pytest.raises(ValueError, match="must map"):
        P.evaluate_on_grid(lambda z: z, n=4)


@pytest.mark.parametrize("kind", ["heatmap", "contour", "contourf"])
@pytest.mark.parametrize("log", [False, True])
def test_plot_density_kinds(ax, kind, log):
    out = P.plot_density(get_target("mog9").log_prob, ax, n=40, kind=kind, log=log, colorbar=True)
    assert out is ax
    assert ax.get_xlabel() == "$z_1$" and ax.get_xlim() == (-4.0, 4.0)


def test_plot_density_handles_minus_infinity(ax):
    def log_prob(z):
        out = -z.pow(2).sum(1)
        out[z[:, 0] > 0] = -float("inf")
        return out

    P.plot_density(log_prob, ax, n=20, log=True)
    P.plot_density(log_prob, ax, n=20)


def test_plot_density_rejects_unknown_kind(ax):
    with pytest.raises(ValueError, match="kind"):
        P.plot_density(get_target("banana").log_prob, ax, kind="surface")


def test_plot_samples_scatter_and_kde(ax):
    z = get_target("mog9").sample(500, generator=torch.Generator().manual_seed(0))
    P.plot_samples(z, ax, title="samples", max_points=300)
    assert ax.get_title() == "samples"
    assert len(ax.collections[0].get_offsets()) == 300
    assert len(ax.collections) > 1  # KDE contours were drawn


def test_plot_samples_accepts_numpy_and_rejects_bad_shape(ax):
    P.plot_samples(np.random.default_rng(0).normal(size=(50, 2)), ax, kde=False, bounds=None)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        P.plot_samples(np.zeros((5, 3)), ax)


def test_plot_history_negates_and_smooths(ax):
    history = History(steps=[0, 1, 2, 3], loss=[4.0, 3.0, 2.0, 1.0])
    P.plot_history(history, ax, smooth=2, reference=0.0, label="run")
    line = ax.lines[0]
    np.testing.assert_allclose(line.get_ydata(), [-3.5, -2.5, -1.5])
    np.testing.assert_allclose(line.get_xdata(), [1, 2, 3])
    with pytest.raises(ValueError):
        P.plot_history(History(), ax)
    with pytest.raises(ValueError):
        P.plot_history(history, ax, smooth=0)


def test_rq_spline_knots_agree_with_nflows():
    g = torch.Generator().manual_seed(1)
    uw, uh, ud = (
        torch.randn(6, generator=g),
        torch.randn(6, generator=g),
        torch.randn(5, generator=g),
    )
    x, y, d = P.rq_spline_knots(uw, uh, ud, tail_bound=2.5)
    assert x.shape == y.shape == d.shape == (7,)
    assert x[0] == -2.5 and x[-1] == 2.5 and torch.all(x.diff() > 0) and torch.all(y.diff() > 0)
    assert d[0] == 1 and d[-1] == 1 and torch.all(d > 0)
    # The spline maps every knot x_k to y_k, with slope d_k there.
    inner = x[1:-1].clone().requires_grad_(True)
    n = inner.shape[0]
    out, logdet = unconstrained_rational_quadratic_spline(
        inner,
        uw.double().expand(n, -1),
        uh.double().expand(n, -1),
        ud.double().expand(n, -1),
        tails="linear",
        tail_bound=2.5,
    )
    torch.testing.assert_close(out.detach(), y[1:-1], atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(logdet.detach().exp(), d[1:-1], atol=1e-6, rtol=1e-6)


def test_rq_spline_knots_rejects_bad_shapes():
    with pytest.raises(ValueError, match="K - 1"):
        P.rq_spline_knots(torch.zeros(4), torch.zeros(4), torch.zeros(4))


def test_plot_rq_spline_draws_knots_and_tails(ax):
    g = torch.Generator().manual_seed(0)
    P.plot_rq_spline(
        torch.randn(5, generator=g),
        torch.randn(5, generator=g),
        torch.randn(4, generator=g),
        3.0,
        ax,
    )
    knots = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(knots) == 1 and len(knots[0].get_xdata()) == 6
    labels = ax.get_legend_handles_labels()[1]
    assert "knots" in labels and "linear (identity) tails" in labels
    assert ax.get_xlim() == (-4.5, 4.5)


def test_grid_in_float64_reaches_log_prob(ax):
    seen = []

    def log_prob(z):
        seen.append(z.dtype)
        return -z.pow(2).sum(1)

    xs, ys, values = P.evaluate_on_grid(log_prob, n=6, dtype=torch.float64)
    assert seen == [torch.float64] and values.dtype == np.float64
    P.plot_density(log_prob, ax, n=6, dtype=torch.float64)


def test_plot_density_contour_levels_are_interior(ax):
    P.plot_density(lambda z: -z.pow(2).sum(1) * 10, ax, n=50, kind="contour", levels=4)
    levels = ax.collections[-1].levels if hasattr(ax.collections[-1], "levels") else None
    if levels is not None:
        assert len(levels) == 4 and levels.min() > 0 and levels.max() < 1
