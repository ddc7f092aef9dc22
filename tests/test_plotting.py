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


# --- chapters 1-2: figure assembly and notebook helpers ---------------------------------------


def test_as_gaussian_matches_full_gaussian_family():
    from cifutils import make_family

    torch.manual_seed(0)
    family = make_family("full-gaussian", 2)
    with torch.no_grad():
        for p in family.parameters():
            p.normal_()
    z, log_q = family.sample_and_log_prob(7)
    assert torch.allclose(P.as_gaussian(family).log_prob(z), log_q.detach(), atol=1e-5)


def test_monte_carlo_kl_of_two_gaussians():
    d = torch.distributions
    p, q = d.Normal(0.0, 1.0), d.Normal(1.0, 1.0)  # KL = 1/2 both ways
    torch.manual_seed(0)
    assert abs(P.monte_carlo_kl(p, q, 20_000) - 0.5) < 0.03
    assert P.monte_carlo_kl(p, p, 100) == 0.0


def test_fit_family_is_seeded_and_improves_the_elbo():
    target = get_target("banana")
    a, history = P.fit_family("gaussian", target.log_prob, 60, 64, 2e-2, seed=3)
    b, _ = P.fit_family("gaussian", target.log_prob, 60, 64, 2e-2, seed=3)
    assert len(history.loss) > 0 and history.loss[-1] < history.loss[0]
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_pull_back_inverts_the_flow_and_rejects_cifs():
    from cifutils import make_family

    torch.manual_seed(0)
    flow = make_family("nsf", 2, layers=2, hidden=8).double()
    with torch.no_grad():
        z, log_q = flow.sample_and_log_prob(16)
        w, logdet = P.pull_back(flow, z)
    assert torch.allclose(flow.base.log_prob(w) + logdet, log_q, atol=1e-8)
    cif = make_family("cif-nsf", 2, layers=1, hidden=8)
    with pytest.raises(ValueError):
        P.pull_back(cif, torch.zeros(2, 2))


def test_off_mode_fraction():
    means = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    z = torch.tensor([[0.1, 0.0], [4.0, 0.5], [2.0, 0.0], [0.0, 3.0]])
    assert P.off_mode_fraction(z, means, radius=1.0) == 0.5


def test_grid_mass_of_a_normalized_density():
    normal = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
    mass = P.grid_mass(normal.log_prob, (-6.0, 6.0, -6.0, 6.0), n=121)
    assert abs(mass - 1.0) < 0.05


def test_plot_fits_contours_and_samples():
    from cifutils import make_family

    target = get_target("banana")
    gauss = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
    axes = P.plot_fits(target.log_prob, {"a": gauss, "b": gauss}, (-3, 3, -2, 4), figsize=(6, 3))
    assert len(axes) == 2 and axes[1].get_title() == "b" and axes[0].collections
    plt.close(axes[0].figure)
    fig, axes = plt.subplots(1, 3)
    family = make_family("gaussian", 2)
    P.plot_fits(target.log_prob, {"q": family}, (-3, 3, -2, 4), axes[:1], samples=50)
    assert axes[0].get_title() == "q" and not axes[1].has_data()
    plt.close(fig)


def test_plot_histories_draws_curves_and_references(ax):
    h1, h2 = History(), History()
    for step in range(30):
        h1.steps.append(step)
        h1.loss.append(-float(step))
        h2.steps.append(step)
        h2.loss.append(-0.5 * step)
    P.plot_histories({"one": h1, "two": h2}, ax, {"ref": 3.0, "other": 1.0}, smooth=5)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["one", "two", "ref", "other"]
    assert ax.lines[0].get_ydata()[-1] == pytest.approx(np.mean(range(25, 30)))
    assert ax.lines[1].get_linestyle() == "--" and ax.lines[3].get_linestyle() == ":"


def test_plot_amortized_posterior(ax):
    from cifutils.families import AmortizedGaussianBase

    encoder = torch.nn.Linear(2, 4)
    with torch.no_grad():
        encoder.weight.zero_()
        encoder.bias.zero_()
        encoder.weight[0, 0] = 0.5
    P.plot_amortized_posterior(AmortizedGaussianBase(encoder, 2), 0.5, ax, n=11)
    exact, learned = ax.lines[0].get_ydata(), ax.lines[1].get_ydata()
    assert np.allclose(exact, learned) and len(exact) == 11
    assert ax.get_xlabel().startswith("$x_1$")


def test_plot_rq_spline_derivative_matches_nflows(ax):
    torch.manual_seed(1)
    w, h, d = torch.randn(4), torch.randn(4), torch.randn(3)
    P.plot_rq_spline_derivative(w, h, d, 2.0, ax, n=101)
    x, y = ax.lines[0].get_data()
    params = [t.double().expand(101, -1) for t in (w, h, d)]
    _, logdet = unconstrained_rational_quadratic_spline(torch.as_tensor(x), *params, tail_bound=2.0)
    assert np.allclose(y, logdet.exp().numpy()) and x.min() == pytest.approx(-3.0)
    assert np.allclose(y[np.abs(x) > 2.0], 1.0) and ax.get_yscale() == "log"


def test_plot_curves_styles_and_legend(ax):
    t = torch.linspace(0, 1, 5)
    P.plot_curves(t, {"a": t, "b": 2 * t.requires_grad_(True)}, ax)
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
    assert matplotlib.colors.same_color(ax.lines[1].get_color(), "C1")
    assert ax.get_legend() is not None


def test_plot_log_stretch_of_an_affine_flow(ax):
    from cifutils import make_family

    torch.manual_seed(0)
    flow = make_family("full-gaussian", 2).double()
    with torch.no_grad():
        flow.layers[0].shift.zero_()
    P.plot_log_stretch(flow, (-1.0, 1.0, -1.0, 1.0), ax, n=9)
    image = ax.images[0].get_array()
    expected = torch.linalg.slogdet(flow.layers[0].matrix().detach())[1].item()
    assert image.shape == (9, 9) and np.allclose(image, expected)
