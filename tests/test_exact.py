"""Tests of cifutils.exact: quadrature over u against Monte Carlo, with tolerances stated
from the Monte Carlo standard error (``Z`` standard errors) plus a small quadrature error."""

from __future__ import annotations

import math

import pytest
import torch

from cifutils import exact as ex
from cifutils.cif import ORDERS
from cifutils.families import cif_nsf_family, nsf_family
from cifutils.objectives import MIN_ESS, mean_and_stderr
from cifutils.training import estimate_elbo

#: Number of standard errors allowed in statistical checks (two-sided p ~ 6e-5 each).
Z = 4.0
#: Absolute quadrature error allowed on top (grids are fine and smooth; see mass checks).
QUAD = 2e-3


def _family(
    layers: int = 1,
    seed: int = 0,
    sigma0: float = 1.0,
    scale: float = 1.0,
    order: str = "spline-first",
):
    torch.manual_seed(seed)
    fam = cif_nsf_family(1, layers=layers, hidden=8, sigma0=sigma0, order=order)
    # Make the untrained networks less trivial so that q(u | w) really depends on w.
    with torch.no_grad():
        for p in fam.parameters():
            p.mul_(scale)
    return ex.as_float64(fam)


@pytest.fixture(scope="module", params=ORDERS)
def one_layer(request):
    fam = _family(1, order=request.param)
    torch.manual_seed(1)
    grids = ex.u_grids_from_samples(fam, num=300)
    z_grid = torch.linspace(-10, 10, 801, dtype=torch.float64)
    return fam, grids, z_grid


def test_trapezoid_and_log_normalizer():
    grid = torch.linspace(-8, 8, 1001, dtype=torch.float64)
    log_n = -0.5 * grid**2 - 0.5 * math.log(2 * math.pi)
    assert torch.logsumexp(log_n + ex.trapezoid_log_weights(grid), 0).item() == pytest.approx(
        0, abs=1e-9
    )
    target = ex.TwoGaussians1D(2.0, 0.3)
    assert ex.log_normalizer_1d(target, grid) == pytest.approx(target.log_normalizer, abs=1e-9)
    with pytest.raises(ValueError):
        ex.trapezoid_log_weights(torch.tensor([0.0, 0.0, 1.0]))


def test_marginal_integrates_to_one(one_layer):
    fam, grids, z_grid = one_layer
    log_qz = ex.marginal_log_prob(fam, z_grid[:, None], grids)
    mass = torch.logsumexp(log_qz + ex.trapezoid_log_weights(z_grid), 0).exp().item()
    assert mass == pytest.approx(1.0, abs=QUAD)
    log_post = ex.posterior_log_prob(fam, z_grid[::50, None], grids)
    post_mass = torch.logsumexp(log_post + ex.trapezoid_log_weights(grids[0]), 1).exp()
    assert torch.allclose(post_mass, torch.ones_like(post_mass), atol=1e-6)


def test_two_layers_with_explicit_layer_integrates_to_one():
    torch.manual_seed(3)
    fam = cif_nsf_family(1, layers=2, hidden=8)
    fam.layers.insert(1, nsf_family(1, layers=1, hidden=8).layers[0])  # explicit step between
    fam = ex.as_float64(fam)
    grids = ex.u_grids_from_samples(fam, num=90)
    z_grid = torch.linspace(-12, 12, 241, dtype=torch.float64)
    log_qz = ex.marginal_log_prob(fam, z_grid[:, None], grids)
    mass = torch.logsumexp(log_qz + ex.trapezoid_log_weights(z_grid), 0).exp().item()
    assert mass == pytest.approx(1.0, abs=5 * QUAD)


def test_marginal_matches_importance_sampling_estimator(one_layer):
    fam, grids, _ = one_layer
    # Widen r so that it is heavier-tailed than every posterior q(u | z): then the importance
    # weights have finite variance and the standard error below means what it says.
    fam = ex.as_float64(fam)
    with torch.no_grad():
        ex.cif_layers(fam)[0].r_u.net.net[-1].bias[1:] += 1.0
    torch.manual_seed(4)
    z = fam.sample(6)
    exact = ex.marginal_log_prob(fam, z, grids).exp()
    k = 20_000
    with torch.no_grad():  # exp(estimate with M = 1) is unbiased for q_Z(z)
        draws = fam.marginal_log_prob(z.repeat(k, 1), num_u_samples=1).exp().reshape(k, -1)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(k)
    assert ((mean - exact).abs() <= Z * se + QUAD * exact).all()


def test_marginal_matches_histogram_of_samples(one_layer):
    fam, grids, _ = one_layer
    torch.manual_seed(5)
    n = 40_000
    samples = fam.sample(n)[:, 0]
    fine = torch.linspace(-4, 4, 1601, dtype=torch.float64)
    dens = ex.marginal_log_prob(fam, fine[:, None], grids).exp()
    cdf = torch.cat([dens.new_zeros(1), torch.cumulative_trapezoid(dens, fine)])
    probs = cdf[::100].diff()  # mass of each of the 16 bins
    freq = torch.histc(samples, bins=16, min=-4, max=4) / n
    se = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() <= Z * se + QUAD / 16).all()


def test_bounds_and_gap(one_layer):
    fam, grids, z_grid = one_layer
    target = ex.TwoGaussians1D(2.0, 0.3)
    s = ex.exact_summary(fam, target, z_grid, grids)
    assert s.mass == pytest.approx(1.0, abs=QUAD)
    assert s.log_z == pytest.approx(target.log_normalizer, abs=1e-9)
    assert s.aux_elbo <= s.elbo <= s.log_z
    assert s.kl_q_r >= 0 and s.kl_r_q >= 0
    torch.manual_seed(6)
    with torch.no_grad():
        # the auxiliary ELBO by Monte Carlo agrees with quadrature
        aux, se = estimate_elbo(fam, target, 40_000)
        assert abs(aux - s.aux_elbo) <= Z * se + QUAD
        # per sample, log q_aux(z, u) - log q_Z(z) = log q(u | z) - log r(u | z): its mean
        # is the gap E_q[KL(q(u|z) || r(u|z))]
        out = fam.forward_sample(20_000)
        gap, se = mean_and_stderr(out.log_q - ex.marginal_log_prob(fam, out.z, grids))
        assert abs(gap - s.kl_q_r) <= Z * se + QUAD


def test_one_sample_marginal_estimator_bias(one_layer):
    """With M = 1 and u ~ r(u | z), E[log p - log q_hat] = ELBO + E_q[KL(r || q(u | z))]."""
    fam, grids, z_grid = one_layer
    target = ex.TwoGaussians1D(2.0, 0.3)
    s = ex.exact_summary(fam, target, z_grid, grids)
    torch.manual_seed(7)
    with torch.no_grad():
        z = fam.sample(40_000)
        est = target(z) - fam.marginal_log_prob(z, num_u_samples=1)
    mean, se = mean_and_stderr(est)
    assert abs(mean - (s.elbo + s.kl_r_q)) <= Z * se + QUAD


def test_posterior_marginalizes_to_prior_of_u(one_layer):
    """int q_Z(z) q(u | z) dz = q_U(u) = int q0(w) q(u | w) dw (two different quadratures)."""
    fam, grids, z_grid = one_layer
    layer = ex.cif_layers(fam)[0]
    log_post = ex.posterior_log_prob(fam, z_grid[:, None], grids)
    log_qz = ex.marginal_log_prob(fam, z_grid[:, None], grids)
    lhs = torch.logsumexp(log_post + (log_qz + ex.trapezoid_log_weights(z_grid))[:, None], 0)
    w = torch.linspace(-8, 8, 801, dtype=torch.float64)[:, None]
    u = grids[0]
    with torch.no_grad():
        log_qu_w = layer.q_u.log_prob(
            u.repeat(w.shape[0])[:, None], w.repeat_interleave(u.numel(), 0)
        ).reshape(w.shape[0], -1)
        rhs = torch.logsumexp(
            log_qu_w + (fam.base.log_prob(w) + ex.trapezoid_log_weights(w[:, 0]))[:, None], 0
        )
    assert torch.allclose(lhs.exp(), rhs.exp(), atol=QUAD)


@pytest.mark.parametrize("order", ORDERS)
def test_multilayer_posterior_factorizes(order):
    """q(u_1 | z, u_2) = q(u_1 | w_1) with w_1 = G_2^{-1}(z; u_2): the exact posterior has the
    conditioning structure of the CIF's own r(u_1 | w_1) r(u_2 | z)."""
    fam = _family(2, seed=8, order=order)
    grids = ex.u_grids_from_samples(fam, num=60)
    z = fam.sample(3)
    log_post = ex.posterior_log_prob(fam, z, grids)  # (3, m1, m2)
    log_cond = log_post - torch.logsumexp(
        log_post + ex.trapezoid_log_weights(grids[0])[:, None], 1, keepdim=True
    )
    first = ex.as_float64(fam)
    first.layers = first.layers[:1]
    second = ex.cif_layers(fam)[1]
    for j in (10, 30, 50):
        u2 = grids[1][j].expand(3, 1)
        with torch.no_grad():
            w1, _ = second.transform.inverse(z, u2)
        one = ex.posterior_log_prob(first, w1, grids[:1])  # (3, m1)
        assert torch.allclose(log_cond[:, :, j], one, atol=1e-8)


def test_path_logabsdet():
    torch.manual_seed(9)
    nsf = ex.as_float64(nsf_family(1, layers=2, hidden=8))
    torch.manual_seed(10)
    z, ld = ex.path_logabsdet(nsf, 50)
    torch.manual_seed(10)
    out = nsf.forward_sample(50)
    assert torch.allclose(ld, out.log_q0 - out.log_q)
    fam = _family(1)
    torch.manual_seed(11)
    z, ld = ex.path_logabsdet(fam, 50)
    torch.manual_seed(11)
    out = fam.forward_sample(50)
    assert torch.allclose(ld, out.steps[0].logabsdet) and torch.allclose(z, out.z)


@pytest.mark.parametrize("order", ORDERS)
def test_ess_flags_the_marginal_estimate_in_the_tail_and_not_in_the_bulk(order):
    """Far in the tails of q_Z the proposal r misses where q(u | z) puts its mass: the
    estimate of log q_Z is off by nats (tens of nats for a wider family) even at
    M = 100,000, with an ESS near 1, which flags it. In the bulk (between q's 10% and 90%
    quantiles) the ESS clears MIN_ESS and the error is within Z delta-method standard
    errors sqrt(1 / ESS) of the quadrature value."""
    fam = _family(order=order)
    torch.manual_seed(1)
    grids = ex.u_grids_from_samples(fam, num=300)
    torch.manual_seed(3)
    ordered = fam.sample(2_000)[:, 0].sort().values
    bulk = ordered[200:1_800:32, None]  # 50 points
    torch.manual_seed(2)
    plain = fam.marginal_log_prob(bulk, num_u_samples=2_000)
    torch.manual_seed(2)
    est, ess = fam.marginal_log_prob(bulk, num_u_samples=2_000, return_ess=True)
    assert torch.equal(est, plain)  # the ESS changes nothing in the estimate
    err = est - ex.marginal_log_prob(fam, bulk, grids)
    assert (ess >= MIN_ESS).all()
    assert (err.abs() <= Z * ess.rsqrt() + QUAD).all()
    for family, off_by in ((fam, 2.0), (_family(order=order, scale=2.0), 20.0)):
        torch.manual_seed(1)
        tail = torch.tensor([[30.0]], dtype=torch.float64)
        exact = ex.marginal_log_prob(family, tail, ex.u_grids_from_samples(family, num=300))
        for m in (1_000, 100_000):
            torch.manual_seed(2)
            est, ess = family.marginal_log_prob(tail, num_u_samples=m, return_ess=True)
            assert ess.item() < MIN_ESS
            assert exact.item() - est.item() > off_by


def test_explicit_families_report_an_infinite_ess():
    torch.manual_seed(0)
    fam = ex.as_float64(nsf_family(1, layers=1, hidden=8))
    z = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    log_q, ess = fam.marginal_log_prob(z, return_ess=True)
    assert torch.equal(log_q, fam.marginal_log_prob(z)) and torch.isinf(ess).all()
