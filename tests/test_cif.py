"""Known answers for CIFs: the marginal density by quadrature over u, the marginal-ELBO
estimator against it, and the ordering of the bounds on a normalized target."""

from __future__ import annotations

import math

import pytest
import torch

from cifutils.cif import ORDERS
from cifutils.families import cif_nsf_family
from cifutils.objectives import logmeanexp, mean_and_stderr
from cifutils.targets import get_target
from cifutils.training import fit_vi, seed_everything


def _perturb(module: torch.nn.Module, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.fixture(scope="module", params=ORDERS)
def cif_1d(request):
    """A one-layer, 1-D CIF with a non-trivial spline, s/t and q (float64), and a broad
    r(u | v) = N(0, 2^2), so that importance weights have finite variance; once for each
    order of the spline and the indexed affine."""
    seed_everything(3)
    family = cif_nsf_family(1, layers=1, hidden=8, bins=4, sigma0=1.0, order=request.param)
    family = family.double()
    _perturb(family, 0.2, seed=4)
    last = family.layers[0].r_u.net.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, math.log(2.0)]))
    return family


def _quadrature_log_qz(family, z: torch.Tensor, u_bound: float = 10.0, n: int = 3001):
    """log q_Z(z) = log integral q0(w) q(u | w) |d G^{-1}(z; u) / dz| du, trapezoid on u."""
    layer = family.layers[0]
    u = torch.linspace(-u_bound, u_bound, n, dtype=torch.float64)
    zz = z.repeat_interleave(n, dim=0)
    uu = u.repeat(z.shape[0])[:, None]
    with torch.no_grad():
        w, logabsdet_inv = layer.transform.inverse(zz, uu)
        log_joint = family.base.log_prob(w) + layer.q_u.log_prob(uu, w) + logabsdet_inv
    log_joint = log_joint.reshape(z.shape[0], n)
    h = 2 * u_bound / (n - 1)
    trapezoid = torch.full((n,), math.log(h), dtype=torch.float64)
    trapezoid[[0, -1]] += math.log(0.5)
    return torch.logsumexp(log_joint + trapezoid, dim=1)


def test_quadrature_marginal_integrates_to_one(cif_1d):
    """Sanity of the reference itself: q_Z is a density. (The grid is fine: the affine-first
    layer's density has a narrow peak at a spline knot that a 0.025 spacing misses by 0.3%.)"""
    z = torch.linspace(-10, 10, 3201, dtype=torch.float64)[:, None]
    qz = _quadrature_log_qz(cif_1d, z).exp()
    mass = torch.trapezoid(qz, z[:, 0]).item()
    assert abs(mass - 1.0) < 2e-3


def test_quadrature_marginal_matches_samples(cif_1d):
    """A histogram of 50k samples of z matches the quadrature density (binomial errors)."""
    torch.manual_seed(5)
    n = 50_000
    with torch.no_grad():
        z = cif_1d.sample(n)[:, 0]
    edges = torch.linspace(-3, 3, 13, dtype=torch.float64)
    counts = torch.histc(z, bins=12, min=-3, max=3)
    mids = torch.linspace(-3, 3, 2401, dtype=torch.float64)
    dens = _quadrature_log_qz(cif_1d, mids[:, None]).exp()
    for i in range(12):
        inside = (mids >= edges[i]) & (mids <= edges[i + 1])
        p = torch.trapezoid(dens[inside], mids[inside]).item()
        expected, sd = n * p, math.sqrt(n * p * (1 - p))
        assert abs(counts[i].item() - expected) < 5 * sd + 5, (i, counts[i].item(), expected)


def test_marginal_estimator_matches_quadrature(cif_1d):
    """exp of each single-path log-weight is an unbiased estimate of q_Z(z): its mean over
    M paths agrees with quadrature within 5 Monte Carlo standard errors."""
    torch.manual_seed(6)
    z = torch.tensor([[-1.5], [0.0], [0.8], [2.5]], dtype=torch.float64)
    exact = _quadrature_log_qz(cif_1d, z)
    m = 20_000
    with torch.no_grad():
        log_w = cif_1d.marginal_log_prob(z.repeat(m, 1), num_u_samples=1).reshape(m, -1)
    for j in range(z.shape[0]):
        mean, se = mean_and_stderr(log_w[:, j].exp())
        assert abs(mean - exact[j].exp().item()) < 5 * se + 1e-12, (j, mean, se, exact[j])
    # The batched estimator with M = 2000 is close to the truth in log space, too.
    with torch.no_grad():
        est = cif_1d.marginal_log_prob(z, num_u_samples=2000)
    assert torch.allclose(est, exact, atol=0.05)


def test_marginal_estimator_is_biased_low_and_improves_with_m(cif_1d):
    """log of an unbiased estimate is biased low (Jensen); the bias shrinks with M."""
    torch.manual_seed(7)
    z = torch.tensor([[0.3]], dtype=torch.float64)
    exact = _quadrature_log_qz(cif_1d, z).item()
    reps = 4000
    with torch.no_grad():
        log_w = cif_1d.marginal_log_prob(z.repeat(reps * 16, 1), num_u_samples=1)
    log_w = log_w.reshape(reps, 16)
    bias_1, se_1 = mean_and_stderr(log_w[:, :1] - exact)
    bias_16, se_16 = mean_and_stderr(logmeanexp(log_w, dim=1) - exact)
    assert bias_1 < -3 * se_1
    assert bias_1 < bias_16 < 3 * se_16


@pytest.fixture(scope="module")
def trained_cif():
    seed_everything(0)
    family = cif_nsf_family(2, layers=2, hidden=16, bins=6, sigma0=1.0)
    fit_vi(family, get_target("mog9").log_prob, steps=100, num_samples=256, progress=False)
    return family


def test_aux_elbo_below_marginal_elbo_below_log_z(trained_cif):
    """For the normalized 9-mode mixture (log Z = 0):
    auxiliary ELBO <= marginal ELBO <= log Z, each within Monte Carlo error."""
    torch.manual_seed(8)
    target = get_target("mog9")
    with torch.no_grad():
        z, log_q_aux = trained_cif.sample_and_log_prob(2000)
        log_p = target.log_prob(z)
        log_q_marg = trained_cif.marginal_log_prob(z, num_u_samples=100)
    aux, se_aux = mean_and_stderr(log_p - log_q_aux)
    marg, se_marg = mean_and_stderr(log_p - log_q_marg)
    # Paired difference: E[log q_aux - log q_marg] is the KL gap, >= 0 (up to MC error).
    gap, se_gap = mean_and_stderr(log_q_aux - log_q_marg)
    assert gap > -3 * se_gap
    assert aux <= marg + 3 * se_gap
    assert marg <= target.log_normalizer + 3 * se_marg
    assert aux < -0.01  # a short fit is far from the target, so this is not vacuous


def test_importance_weighted_bound_rises_with_k(trained_cif):
    """E[log mean_K w] increases with K and stays below log Z = 0."""
    torch.manual_seed(9)
    target = get_target("mog9")
    reps = 200
    with torch.no_grad():
        z, log_q = trained_cif.sample_and_log_prob(reps * 100)
        log_w = (target.log_prob(z) - log_q).reshape(reps, 100)
    means = []
    for k in (1, 10, 100):
        mean, se = mean_and_stderr(logmeanexp(log_w[:, :k], dim=1))
        means.append((mean, se))
    for (m_small, s_small), (m_big, s_big) in zip(means[:-1], means[1:]):
        assert m_big > m_small - 3 * math.hypot(s_small, s_big)
    assert means[-1][0] > means[0][0] + 3 * math.hypot(means[0][1], means[-1][1])
    assert means[-1][0] <= 3 * means[-1][1]


def test_affine_first_layer_is_the_spline_of_the_indexed_affine():
    """order="affine-first": z = g((w + t(u)) exp(s(u))), r is read at v = (w + t) exp(s),
    and the log-det is the spline's plus sum(s); spline-first keeps z = exp(s) g(w) + t with
    r read at z."""
    torch.manual_seed(0)
    for order in ORDERS:
        fam = cif_nsf_family(2, layers=1, hidden=8, order=order).double()
        _perturb(fam, 0.3, seed=1)
        layer = fam.layers[0]
        out = fam.forward_sample(7)
        step = out.steps[0]
        t, s = layer.transform.shift_and_log_scale(step.u)
        g = layer.transform.flow
        if order == "affine-first":
            v = (step.w + t) * s.exp()
            z, ld = g(v)
        else:
            y, ld = g(step.w)
            z = v = y * s.exp() + t
        assert torch.allclose(step.z, z) and torch.allclose(step.v, v)
        assert torch.allclose(step.logabsdet, ld + s.sum(-1))
        assert torch.allclose(step.log_r_u, layer.r_u.log_prob(step.u, v))
        assert torch.allclose(layer.r_point(step.z), v)
    with pytest.raises(ValueError, match="order"):
        cif_nsf_family(2, order="spline-last")


def test_both_orders_have_the_same_parameter_count():
    from cifutils.flows import num_parameters

    counts = {o: num_parameters(cif_nsf_family(2, order=o)) for o in ORDERS}
    assert counts["spline-first"] == counts["affine-first"]
