"""Exact computations for small CIFs by quadrature over the indices ``u``.

A CIF family with ``L`` layers, each with a one-dimensional index ``u_l``, has the explicit
joint density (going backwards from ``z = w_L``, ``w_{l-1} = G_l^{-1}(w_l; u_l)``)

.. math::

    q(z, u_{1:L}) = q_0(w_0) \\prod_l q(u_l \\mid w_{l-1})\\,
    \\big|\\det \\partial_{w_l} G_l^{-1}(w_l; u_l)\\big|,

but only an implicit marginal ``q_Z(z) = \\int q(z, u_{1:L}) du_{1:L}``. When ``L`` is 1 or 2
that integral is a cheap trapezoid rule on a grid of ``u`` values, so every quantity of the
book's chapters 3 and 4 can be computed (almost) exactly, in float64:

* :func:`log_joint` -- ``log q(z, u)`` and ``log r(u | z)`` on a ``u`` grid;
* :func:`marginal_log_prob` -- ``log q_Z(z)`` at any points ``z``;
* :func:`posterior_log_prob` -- the exact posterior ``log q(u | z)`` on the grid;
* :func:`exact_summary` -- for a 1-D target on a ``z`` grid: ``log Z``, the ELBO, the
  auxiliary ELBO, and the gaps ``E_q[KL(q(u|z) || r(u|z))]`` and ``E_q[KL(r || q(u|z))]``.

Explicit (non-CIF) layers may appear anywhere in the family; ``z`` may have any dimension,
but :func:`exact_summary` integrates over a 1-D ``z`` grid.

References:
    Cornish, Caterini, Deligiannidis, Doucet. Relaxing bijectivity constraints with
    continuously indexed normalising flows. ICML 2020.
    Agakov, Barber. An auxiliary variational method. ICONIP 2004.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from nflows.transforms.standard import IdentityTransform
from torch import Tensor, nn

from .cif import CIFLayer, ConditionalDiagonalGaussian, IndexedTransform
from .families import GaussianBase, VariationalFlow

__all__ = [
    "TwoGaussians1D",
    "trapezoid_log_weights",
    "log_normalizer_1d",
    "as_float64",
    "cif_layers",
    "u_grids_from_samples",
    "log_joint",
    "marginal_log_prob",
    "posterior_log_prob",
    "ExactSummary",
    "exact_summary",
    "path_logabsdet",
    "routing_cif",
    "log_slopes",
]

_LOG_2PI = math.log(2 * math.pi)


class TwoGaussians1D:
    """An unnormalized 1-D target with two well separated modes and a gap between them:

    ``p~(z) = exp(-(z - m)^2 / (2 s^2)) + exp(-(z + m)^2 / (2 s^2))``, so that
    ``log Z = log(2 s sqrt(2 pi))`` exactly (the two bumps barely overlap).

    ``log_prob`` maps ``(n, 1) -> (n,)``.
    """

    dim = 1

    def __init__(self, mode: float = 2.0, std: float = 0.3) -> None:
        if not (mode > 0 and std > 0):
            raise ValueError(f"mode and std must be positive, got {mode!r}, {std!r}")
        self.mode, self.std = float(mode), float(std)
        self.log_normalizer = math.log(2 * self.std) + 0.5 * _LOG_2PI

    def log_prob(self, z: Tensor) -> Tensor:
        if z.ndim != 2 or z.shape[1] != 1:
            raise ValueError(f"z must have shape (n, 1), got {tuple(z.shape)}")
        x = z[:, 0]
        a = -0.5 * ((x - self.mode) / self.std) ** 2
        b = -0.5 * ((x + self.mode) / self.std) ** 2
        return torch.logaddexp(a, b)

    def __call__(self, z: Tensor) -> Tensor:
        return self.log_prob(z)


def trapezoid_log_weights(grid: Tensor) -> Tensor:
    """Log of the trapezoid-rule weights of an increasing 1-D ``grid`` (``(m,) -> (m,)``),
    so that ``int f ~ exp(logsumexp(log f(grid) + weights))``."""
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError("grid must be 1-D with at least 2 points")
    h = grid.diff()
    if not (h > 0).all():
        raise ValueError("grid must be strictly increasing")
    w = torch.zeros_like(grid)
    w[:-1] += h / 2
    w[1:] += h / 2
    return w.log()


def log_normalizer_1d(log_p: Callable[[Tensor], Tensor], z_grid: Tensor) -> float:
    """``log Z = log int exp(log_p(z)) dz`` by the trapezoid rule on ``z_grid`` (float64)."""
    z = z_grid.double()
    return torch.logsumexp(log_p(z[:, None]) + trapezoid_log_weights(z), 0).item()


def as_float64(family: VariationalFlow) -> VariationalFlow:
    """A float64 copy of ``family`` in evaluation mode (the original is untouched)."""
    return copy.deepcopy(family).double().eval()


def cif_layers(family: VariationalFlow) -> list[CIFLayer]:
    """The CIF layers of ``family``, in order."""
    return [layer for layer in family.layers if isinstance(layer, CIFLayer)]


@torch.no_grad()
def u_grids_from_samples(
    family: VariationalFlow, num: int = 400, num_samples: int = 20_000, margin: float = 6.0
) -> list[Tensor]:
    """One float64 grid per CIF layer covering the indices the family draws.

    The range of layer ``l`` is ``[min u_l - margin sd, max u_l + margin sd]`` over
    ``num_samples`` forward samples, with ``sd`` the largest std of ``q(u_l | w)`` and of
    ``r(u_l | w_l)`` seen, so that both the posterior and ``r`` lie well inside the grid.
    """
    out = family.forward_sample(num_samples)
    grids = []
    for layer, step in zip(cif_layers(family), out.steps):
        if step.u.shape[1] != 1:
            raise ValueError("quadrature needs one-dimensional indices (dim_u = 1)")
        sd_q = layer.q_u.params(step.w)[1].exp().max()
        sd_r = layer.r_u.params(step.v)[1].exp().max()
        sd = torch.maximum(sd_q, sd_r).item()
        lo, hi = step.u.min().item() - margin * sd, step.u.max().item() + margin * sd
        grids.append(torch.linspace(lo, hi, num, dtype=torch.float64))
    return grids


@torch.no_grad()
def log_joint(
    family: VariationalFlow, z: Tensor, u_grids: Sequence[Tensor], chunk_size: int = 200_000
) -> tuple[Tensor, Tensor]:
    """``log q(z, u_1..u_L)`` and ``log prod_l r(u_l | w_l)`` for every ``z`` and every
    combination of grid values.

    Args:
        family: a (float64) family whose CIF layers have ``dim_u = 1``; no context.
        z: points, ``(n, d)``.
        u_grids: one 1-D grid per CIF layer (sizes ``m_1, ..., m_L``).

    Returns:
        Two tensors of shape ``(n, m_1, ..., m_L)``.
    """
    layers = cif_layers(family)
    if len(u_grids) != len(layers):
        raise ValueError(f"need {len(layers)} u grids (one per CIF layer), got {len(u_grids)}")
    z = z.to(torch.float64)
    n, sizes = z.shape[0], [g.numel() for g in u_grids]
    us = torch.cartesian_prod(*u_grids).reshape(-1, len(u_grids)) if u_grids else z.new_zeros(1, 0)
    rows_z = z.repeat_interleave(us.shape[0], 0)
    rows_u = us.repeat(n, 1)
    log_q, log_r = [], []
    for zc, uc in zip(rows_z.split(chunk_size), rows_u.split(chunk_size)):
        w = zc
        lq = torch.zeros(zc.shape[0], dtype=zc.dtype)
        lr = torch.zeros_like(lq)
        k = len(layers)
        for layer in reversed(family.layers):
            if isinstance(layer, CIFLayer):
                k -= 1
                u = uc[:, k : k + 1]
                v, ld_v = layer.transform.split_inverse(w)
                lr = lr + layer.r_u.log_prob(u, v)
                w, ld = layer.transform.indexed_inverse(v, u)
                lq = lq + ld_v + ld + layer.q_u.log_prob(u, w)
            else:
                w, ld = layer.inverse(w)
                lq = lq + ld
        log_q.append(lq + family.base.log_prob(w))
        log_r.append(lr)
    shape = (n, *sizes)
    return torch.cat(log_q).reshape(shape), torch.cat(log_r).reshape(shape)


def _u_log_weights(u_grids: Sequence[Tensor]) -> Tensor:
    """Log trapezoid weights of the product grid, shape ``(m_1, ..., m_L)``."""
    total = torch.zeros((), dtype=torch.float64)
    for i, g in enumerate(u_grids):
        shape = [1] * len(u_grids)
        shape[i] = -1
        total = total + trapezoid_log_weights(g.double()).reshape(shape)
    return total


def _sum_u(x: Tensor, num_u: int) -> Tensor:
    return torch.logsumexp(x, dim=tuple(range(1, 1 + num_u))) if num_u else x


def marginal_log_prob(family: VariationalFlow, z: Tensor, u_grids: Sequence[Tensor]) -> Tensor:
    """``log q_Z(z) = log int q(z, u) du`` by the trapezoid rule over ``u_grids``: ``(n,)``."""
    log_q, _ = log_joint(family, z, u_grids)
    return _sum_u(log_q + _u_log_weights(u_grids), len(u_grids))


def posterior_log_prob(family: VariationalFlow, z: Tensor, u_grids: Sequence[Tensor]) -> Tensor:
    """The exact posterior ``log q(u | z) = log q(z, u) - log q_Z(z)`` on the grid,
    ``(n, m_1, ..., m_L)``."""
    log_q, _ = log_joint(family, z, u_grids)
    log_qz = _sum_u(log_q + _u_log_weights(u_grids), len(u_grids))
    return log_q - log_qz.reshape(-1, *[1] * len(u_grids))


@dataclass
class ExactSummary:
    """Quadrature results for a CIF family and a 1-D target (all in nats, float64).

    Attributes:
        z: the ``z`` grid, ``(n,)``.
        u_grids: the ``u`` grids.
        log_q_zu: ``log q(z, u)`` on the grid, ``(n, m_1, ..., m_L)``.
        log_r: ``log r(u | z)`` there (product over layers).
        log_q_z: ``log q_Z(z)``, ``(n,)``.
        mass: ``int q_Z(z) dz`` over the ``z`` grid (close to 1 when the grid covers ``q``).
        log_z: ``log Z`` of the target.
        elbo: ``E_q[log p(z) - log q_Z(z)]``.
        aux_elbo: ``E_q[log p(z) + log r(u | z) - log q(z, u)]``.
        kl_q_r: ``E_q[KL(q(u | z) || r(u | z))]``, the gap ``elbo - aux_elbo``.
        kl_r_q: ``E_q[KL(r(u | z) || q(u | z))]``, the bias of the one-sample marginal
            estimator of the ELBO.
    """

    z: Tensor
    u_grids: list[Tensor]
    log_q_zu: Tensor
    log_r: Tensor
    log_q_z: Tensor
    mass: float
    log_z: float
    elbo: float
    aux_elbo: float
    kl_q_r: float
    kl_r_q: float


def exact_summary(
    family: VariationalFlow,
    log_p: Callable[[Tensor], Tensor],
    z_grid: Tensor,
    u_grids: Sequence[Tensor],
) -> ExactSummary:
    """Every quantity of the auxiliary-ELBO story by quadrature (1-D ``z``).

    The ``z`` integrals use the trapezoid rule on ``z_grid``; the ``u`` integrals on
    ``u_grids`` (see :func:`u_grids_from_samples`). ``family`` should be float64
    (:func:`as_float64`). On the grid, ``elbo - aux_elbo = kl_q_r`` holds exactly, because
    ``q_Z`` is computed with the same weights.
    """
    z = z_grid.double()
    num_u = len(u_grids)
    log_q, log_r = log_joint(family, z[:, None], u_grids)
    wu = _u_log_weights(u_grids)
    log_qz = _sum_u(log_q + wu, num_u)
    wz = trapezoid_log_weights(z)
    expand = (-1, *[1] * num_u)
    qz = (log_qz + wz).exp()
    mass = qz.sum().item()
    log_pz = log_p(z[:, None]).double()
    # Normalize by the mass on the grid so that tiny truncation errors do not bias the means.
    elbo = (qz * (log_pz - log_qz)).sum().item() / mass
    log_post = log_q - log_qz.reshape(expand)
    post = (log_post + wu).exp()
    dims = tuple(range(1, 1 + num_u))
    kl_q_r_z = (post * (log_post - log_r)).sum(dims)
    r_w = (log_r + wu).exp()
    kl_r_q_z = (r_w * (log_r - log_post)).sum(dims)
    kl_q_r = (qz * kl_q_r_z).sum().item() / mass
    kl_r_q = (qz * kl_r_q_z).sum().item() / mass
    return ExactSummary(
        z=z,
        u_grids=[g.double() for g in u_grids],
        log_q_zu=log_q,
        log_r=log_r,
        log_q_z=log_qz,
        mass=mass,
        log_z=log_normalizer_1d(log_p, z),
        elbo=elbo,
        aux_elbo=elbo - kl_q_r,
        kl_q_r=kl_q_r,
        kl_r_q=kl_r_q,
    )


@torch.no_grad()
def path_logabsdet(family: VariationalFlow, num_samples: int) -> tuple[Tensor, Tensor]:
    """Samples ``z`` and the total ``log|det dz/dw_0|`` of the path each took through the
    layers (the sum of every layer's log-determinant at its sampled index), ``(n, d)`` and
    ``(n,)``. For an explicit flow this is the flow's own log-Jacobian; for a CIF it is the
    Jacobian of ``w_0 -> z`` with the indices held fixed."""
    out = family.forward_sample(num_samples)
    total = out.log_q0.new_zeros(out.z.shape[0])
    w = out.w0
    steps = iter(out.steps)
    for layer in family.layers:
        if isinstance(layer, CIFLayer):
            step = next(steps)
            total, w = total + step.logabsdet, step.z
        else:
            w, ld = layer(w)
            total = total + ld
    return out.z, total


class _TanhShift(nn.Module):
    """``u -> (t, s) = (m tanh(k u), 0)``: a shift that saturates at ``+-m``, no scaling."""

    def __init__(self, shift: float, sharpness: float) -> None:
        super().__init__()
        self.shift, self.sharpness = shift, sharpness

    def forward(self, u: Tensor) -> Tensor:
        t = self.shift * torch.tanh(self.sharpness * u)
        return torch.cat([t, torch.zeros_like(t)], dim=-1)


class _StandardNormalNet(nn.Module):
    """The network of a ``N(0, 1)`` that ignores its input: mean 0 and log-std 0."""

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        return inputs.new_zeros(inputs.shape[0], 2)


def routing_cif(scale: float = 0.3, shift: float = 2.0, sharpness: float = 5.0) -> VariationalFlow:
    """A hand-built one-layer 1-D CIF that routes samples by its index: base
    ``N(0, scale^2)``, ``q(u | w) = N(0, 1)`` (independent of ``w``),
    ``G(w; u) = w + shift * tanh(sharpness * u)`` (slope 1 for every ``u``) and
    ``r(u | z) = N(0, 1)``. Its marginal tends to ``N(-shift, scale^2) / 2 + N(shift,
    scale^2) / 2`` as ``sharpness`` grows (the book's exercise ch3-ex2): two modes with an
    almost empty gap, without any slope other than 1. No parameters are trained."""
    for name, value in (("scale", scale), ("shift", shift), ("sharpness", sharpness)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    layer = CIFLayer(
        IndexedTransform(IdentityTransform(), _TanhShift(shift, sharpness)),
        ConditionalDiagonalGaussian(_StandardNormalNet(), 1),
        ConditionalDiagonalGaussian(_StandardNormalNet(), 1),
    )
    family = VariationalFlow(GaussianBase(1, 0.0, scale), [layer])
    return family.requires_grad_(False)


@torch.no_grad()
def log_slopes(family: VariationalFlow, w: Tensor, us: Sequence[float]) -> Tensor:
    """``log |dG(w; u) / dw|`` of a one-layer 1-D CIF on a grid: one row per index in ``us``,
    one column per point of ``w (n, 1)``. Unlike slopes along sampled paths, a grid also
    visits the steep parts where few samples land."""
    layer = cif_layers(family)[0]
    rows = []
    for u in us:
        index = torch.full((w.shape[0], 1), float(u), dtype=w.dtype)
        rows.append(layer.transform(w, index)[1])
    return torch.stack(rows)
