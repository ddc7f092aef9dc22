"""The exact posterior ``q(u_l | w_l)`` of one CIF layer of a trained model, on a grid of ``u``,
to compare with the learned ``r``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor

from cifutils.cif import CIFLayer
from cifutils.families import VariationalFlow
from cifutils.objectives import mean_and_stderr

__all__ = ["layer_posteriors", "posterior_lines", "posterior_values"]


def _sub_flow(family: VariationalFlow, upto: int) -> VariationalFlow:
    """The flow made of the base and ``family.layers[:upto]`` (modules shared)."""
    sub = VariationalFlow.__new__(VariationalFlow)
    torch.nn.Module.__init__(sub)
    sub.base, sub.dim = family.base, family.dim
    sub.layers = torch.nn.ModuleList(family.layers[:upto])
    return sub


@torch.no_grad()
def layer_posteriors(
    family: VariationalFlow,
    num_points: int = 100,
    u_grid: Tensor | None = None,
    num_u_samples: int = 50,
) -> list[dict[str, Any]]:
    """The exact posterior ``q(u_l | w_l)`` of each CIF layer against the learned
    ``r(u_l | w_l)``, on a grid of a 1-D ``u``.

    By Bayes' rule, with ``w_{l-1} = G_l^{-1}(w_l; u)``,

    .. math::

        q(u \\mid w_l) \\propto q_{W_{l-1}}(w_{l-1})\\, q(u \\mid w_{l-1})\\,
        |\\det \\partial_{w_l} G_l^{-1}(w_l; u)|,

    normalized by quadrature over the grid. ``q_{W_{l-1}}`` is exact for the first layer
    (the Gaussian base) and the marginal estimate with ``num_u_samples`` for later ones.
    Since ``q(u_{1:L} | z) = prod_l q(u_l | w_l)`` exactly, the per-layer KLs
    ``E KL(q(u_l | w_l) || r(u_l | w_l))`` add up to the gap between the marginal and the
    auxiliary ELBO.

    Returns:
        One dict per CIF layer: ``layer`` (position), ``kl`` and ``kl_se`` (mean and standard
        error over ``num_points`` samples ``w_l``), ``kl_points`` (the KL at each of them, the
        same forward samples for every layer), and for the first 3 points the grid, ``log_q``
        and ``log_r`` curves (lists) for plotting.
    """
    f64 = copy.deepcopy(family).double()
    grid = (torch.linspace(-6, 6, 241) if u_grid is None else u_grid).double()
    du = (grid[1] - grid[0]).item()
    sample = f64.forward_sample(num_points)
    cif_positions = [i for i, layer in enumerate(f64.layers) if isinstance(layer, CIFLayer)]
    out = []
    for pos, step in zip(cif_positions, sample.steps):
        if step.u.shape[1] != 1:
            raise ValueError("layer_posteriors needs a 1-D index u")
        layer: CIFLayer = f64.layers[pos]
        g = grid.numel()
        w_out = step.z.repeat_interleave(g, dim=0)
        u = grid.repeat(num_points)[:, None]
        w_in, logdet_inv = layer.transform.inverse(w_out, u)
        sub = _sub_flow(f64, pos)
        if sub.is_cif:
            log_q_in = sub.marginal_log_prob(w_in, num_u_samples=num_u_samples)
        else:
            log_q_in = sub.marginal_log_prob(w_in)
        log_joint = (log_q_in + layer.q_u.log_prob(u, w_in) + logdet_inv).reshape(num_points, g)
        log_post = log_joint - torch.logsumexp(log_joint, dim=1, keepdim=True) - math.log(du)
        v_out = step.v.repeat_interleave(g, dim=0)
        log_r = layer.r_u.log_prob(u, v_out).reshape(num_points, g)
        post = log_post.exp() * du
        kl = (post * (log_post - log_r)).sum(1)
        mean, se = mean_and_stderr(kl)
        out.append(
            {
                "layer": pos,
                "kl": mean,
                "kl_se": se,
                "kl_points": kl.tolist(),
                "u": grid.tolist(),
                "log_q": log_post[:3].tolist(),
                "log_r": log_r[:3].tolist(),
            }
        )
    return out


def posterior_values(post: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, float]:
    """What :func:`posterior_lines` prints, by name: the smallest and largest per-layer
    ``E KL(q(u | w) || r(u | w))`` (``post_kl_min``, ``post_kl_max``), their sum over layers
    with its standard error over the sampled points (``post_kl_sum``, ``post_kl_sum_se``; every
    layer uses the same forward samples, so the per-point sums are averaged), and the gap
    between the marginal and the auxiliary ELBO in ``metrics`` with the standard error of that
    difference of two unpaired estimates (``post_gap``, ``post_gap_se``)."""
    kls = [p["kl"] for p in post]
    total, total_se = mean_and_stderr(torch.tensor([p["kl_points"] for p in post]).sum(0))
    return {
        "post_kl_min": min(kls),
        "post_kl_max": max(kls),
        "post_kl_sum": total,
        "post_kl_sum_se": total_se,
        "post_gap": metrics["marginal_elbo"] - metrics["elbo"],
        "post_gap_se": math.hypot(metrics["elbo_se"], metrics["marginal_elbo_se"]),
    }


def posterior_lines(post: list[dict[str, Any]], metrics: dict[str, Any]) -> list[str]:
    """Each layer's ``E KL(q(u | w) || r(u | w))`` from :func:`layer_posteriors`, and their sum
    beside the gap between the marginal and the auxiliary ELBO of the same model
    (``metrics`` of its result), which that sum should approach; each with its standard
    error (:func:`posterior_values`)."""
    lines = [
        f"CIF layer {i}: E KL(q(u|w) || r(u|w)) = {layer['kl']:.3f} +- {layer['kl_se']:.3f}"
        for i, layer in enumerate(post, 1)
    ]
    v = posterior_values(post, metrics)
    lines.append(
        f"sum over layers {v['post_kl_sum']:.3f} +- {v['post_kl_sum_se']:.3f}; marginal - "
        f"auxiliary ELBO {v['post_gap']:.3f} +- {v['post_gap_se']:.3f} (unpaired estimates)"
    )
    return lines
