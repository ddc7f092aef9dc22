"""Evaluating a trained mixture model: the bounds, ``log Z``, mode coverage, where each spline
acts (:func:`spline_inside`), and the compact storage of samples and curves in a result.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cifutils.families import VariationalFlow
from cifutils.objectives import effective_sample_size, ess_summary, logmeanexp, mean_and_stderr
from cifutils.targets import GaussianMixture

from .config import MogConfig

__all__ = [
    "coverage",
    "downsample_curve",
    "evaluate",
    "estimate_text",
    "spline_inside",
    "encode_samples",
    "decode_samples",
]


def coverage(target: GaussianMixture, z: Tensor) -> tuple[list[float], float]:
    """Fraction of samples nearest each mixture component, and the KL divergence from these
    fractions to the uniform distribution, ``KL(c || 1/C) = sum_i c_i log(C c_i)`` (0 for
    perfect coverage, ``log C`` when all samples sit in one component)."""
    idx = target.nearest_component(z)
    counts = torch.bincount(idx, minlength=target.num_components).double()
    frac = counts / counts.sum()
    c = target.num_components
    kl = torch.where(frac > 0, frac * torch.log(c * frac), torch.zeros_like(frac)).sum()
    return frac.tolist(), float(kl)


def downsample_curve(
    steps: Sequence[int], values: Sequence[float], points: int = 300
) -> dict[str, list[float]]:
    """Average ``values`` over at most ``points`` equal bins of consecutive steps (the mean
    of each bin is a less noisy curve than every k-th value)."""
    v = np.asarray(values, dtype=float)
    s = np.asarray(steps, dtype=float)
    if v.size == 0:
        return {"step": [], "elbo": []}
    bins = np.array_split(np.arange(v.size), min(points, v.size))
    return {
        "step": [int(s[b[-1]]) for b in bins],
        "elbo": [round(float(v[b].mean()), 4) for b in bins],
    }


def _spline_steps(family: VariationalFlow) -> list[torch.nn.Module]:
    """The autoregressive spline modules of ``family`` in the order samples meet them."""
    from nflows.transforms.autoregressive import (
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform as Spline,
    )

    return [m for m in family.modules() if isinstance(m, Spline)]


@torch.no_grad()
def spline_inside(family: VariationalFlow, num_samples: int) -> list[float]:
    """For each spline layer, in order, the share of ``num_samples`` fresh samples whose
    input to that spline lies inside its active square ``[-B, B]^d`` (``B`` the tail bound;
    outside it, in any coordinate, the spline is the identity there). For the slides' order
    the first layer's input is the base sample itself; with the affine first it is the
    affine's output. Draws from the global RNG."""
    shares: list[float] = []
    handles = [
        step.register_forward_pre_hook(
            lambda mod, args: shares.append(
                float((args[0].abs() <= mod.tail_bound).all(-1).double().mean())
            )
        )
        for step in _spline_steps(family)
    ]
    try:
        family.sample_and_log_prob(num_samples)
    finally:
        for h in handles:
            h.remove()
    return [round(x, 5) for x in shares]


@torch.no_grad()
def evaluate(family: VariationalFlow, target: GaussianMixture, config: MogConfig) -> dict[str, Any]:
    """The metrics of one trained run.

    * ``elbo`` / ``elbo_se``: the ELBO (NSF) or auxiliary ELBO (CIF-NSF) over
      ``eval_samples`` draws, with its Monte Carlo standard error;
    * ``marginal_elbo`` / ``_se``: ``E[log p(z) - log q_Z(z)]`` with ``log q_Z`` exact (NSF) or
      estimated with ``r`` as proposal and ``M`` u-samples (CIF), computed in float64 on a
      copy of the model since the spline inverses are fragile in float32;
    * ``log_z_iw`` / ``_se``: the importance-sampled ``log Z`` estimate
      ``log (1/K) sum_k p(z_k) / q(z_k)`` averaged over groups of ``K = iw_k`` (the weights
      are the auxiliary ones for CIFs: their mean is still exactly ``Z``); ``log_z_all``
      uses all ``eval_samples`` at once. Both should approach ``log Z = 0``;
    * ``coverage`` (9 fractions) and ``coverage_kl`` (``KL(c || 1/C)``);
    * ``ess``: the effective sample size behind each importance-sampled estimate
      (:func:`~cifutils.objectives.ess_summary`: ``min``, ``median``, ``low_fraction``,
      ``reliable``): ``log_z_iw`` per group of ``K``, ``log_z_all`` over all samples, and
      ``marginal_elbo`` per point over the ``M`` u-samples (None for an explicit flow, whose
      ``log q_Z`` is exact). An estimate that is not ``reliable`` (too many of its terms
      below :data:`~cifutils.objectives.MIN_ESS` effective samples) is not meaningful,
      however small its standard error: :func:`estimate_text` prints it as such.

    :func:`~cifutils.experiments.mog.training.run_cell` adds ``spline_inside``
    (:func:`spline_inside`) after drawing the stored samples, so that neither these metrics nor the
    samples depend on it.
    """
    family.eval()
    z, log_q = family.sample_and_log_prob(config.eval_samples)
    log_w = (target.log_prob(z) - log_q).double()
    if not torch.isfinite(log_w).all():
        raise FloatingPointError("non-finite log-weights at evaluation")
    elbo, elbo_se = mean_and_stderr(log_w)
    k = config.iw_k
    groups = log_w[: (log_w.numel() // k) * k].reshape(-1, k)
    log_z_iw, log_z_iw_se = mean_and_stderr(logmeanexp(groups, dim=1))
    ess = {
        "log_z_iw": ess_summary(effective_sample_size(groups, dim=1), k),
        "log_z_all": ess_summary(effective_sample_size(log_w, dim=0), log_w.numel()),
        "marginal_elbo": None,
    }
    frac, kl = coverage(target, z)
    # Samples farther than 4 standard deviations from every mean (the target puts
    # exp(-8) ~ 0.03% of its mass there): nearest-component coverage hides these.
    dist = torch.cdist(z.double(), target.means.to(z.device)).min(dim=1).values
    far = float((dist > 4 * target.std).double().mean())
    f64 = copy.deepcopy(family).double()
    zm = z[: config.marginal_points].double()
    chunk = max(1, 200_000 // config.marginal_u_samples)
    parts = [
        f64.marginal_log_prob(part, num_u_samples=config.marginal_u_samples, return_ess=True)
        for part in zm.split(chunk)
    ]
    log_qz = torch.cat([log_q for log_q, _ in parts])
    if family.is_cif:
        marginal_ess = torch.cat([e for _, e in parts])
        ess["marginal_elbo"] = ess_summary(marginal_ess, config.marginal_u_samples)
    marg_w = target.log_prob(zm) - log_qz
    if not torch.isfinite(marg_w).all():
        raise FloatingPointError("non-finite marginal log-weights at evaluation")
    marginal, marginal_se = mean_and_stderr(marg_w)
    return {
        "elbo": elbo,
        "elbo_se": elbo_se,
        "elbo_kind": "auxiliary" if family.is_cif else "exact",
        "marginal_elbo": marginal,
        "marginal_elbo_se": marginal_se,
        "log_z_iw": log_z_iw,
        "log_z_iw_se": log_z_iw_se,
        "log_z_all": float(logmeanexp(log_w, dim=0)),
        "coverage": [round(c, 5) for c in frac],
        "coverage_kl": kl,
        "modes_covered": int(sum(c > 0.01 for c in frac)),
        "far_fraction": far,
        "ess": ess,
    }


def estimate_text(metrics: dict[str, Any], key: str, digits: int = 4, show_ess: bool = True) -> str:
    """``metrics[key]`` as text beside its effective sample size, e.g. ``"-0.7810 (ESS
    median 85.1 of 100)"``; when its ``ess`` report (see :func:`evaluate`) says it is not
    reliable, a flag around the number, e.g. ``"not meaningful (116863.1234; ESS median 1.0
    of 100, 100% below 10)"``. Results written before ESS reports (and exact values) show
    their number alone."""
    value = f"{metrics[key]:.{digits}f}"
    report = (metrics.get("ess") or {}).get(key)
    if not report:
        return value
    ess = f"ESS median {report['median']:.1f} of {report['samples']:,}"
    if report["reliable"]:
        return f"{value} ({ess})" if show_ess else value
    low = f"{100 * report['low_fraction']:.0f}% below {report['threshold']:g}"
    return f"not meaningful ({value}; {ess}, {low})"


def encode_samples(z: Tensor, decimals: int = 2) -> str:
    """``(n, 2)`` samples as one compact string ``"x,y x,y ..."`` (keeps the JSON small)."""
    return " ".join(f"{a:.{decimals}f},{b:.{decimals}f}" for a, b in z.tolist())


def decode_samples(text: str) -> np.ndarray:
    """The inverse of :func:`encode_samples`: an ``(n, 2)`` float array."""
    return np.array([[float(v) for v in pair.split(",")] for pair in text.split()])
