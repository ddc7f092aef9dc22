"""Variational objectives as pure functions of log-densities and log-weights.

With samples ``z_k ~ q`` (and, for CIFs, ``u_k``), a *log-weight* is
``log w_k = log p(x, z_k) - log q(z_k)``, where ``log q`` is the exact density of an explicit
family or the auxiliary density of a CIF. Then:

* ELBO (and auxiliary ELBO): ``mean_k log w_k``;
* importance-weighted bound over ``K`` samples: ``log (1/K) sum_k w_k`` (IWAE);
* both lower-bound ``log p(x)`` (the ``log_normalizer`` ``log Z`` of a target in
  :mod:`cifutils.targets`).

No function here knows about networks: families produce ``log q``, targets produce
``log p``, and these functions combine them.

References:
    Burda, Grosse, Salakhutdinov. Importance weighted autoencoders. ICLR 2016.
    Agakov, Barber. An auxiliary variational method. ICONIP 2004.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

__all__ = [
    "log_weights",
    "elbo",
    "auxiliary_elbo",
    "mean_and_stderr",
    "logmeanexp",
    "streaming_logmeanexp",
    "iw_bound",
    "iw_bound_chunked",
    "MIN_ESS",
    "MAX_LOW_FRACTION",
    "effective_sample_size",
    "max_normalized_weight",
    "ess_summary",
]

#: Below this many effective samples an importance-sampled estimate is flagged as not
#: meaningful. Why 10: the delta-method standard error of ``log mean w`` is about
#: ``sqrt(1/ESS - 1/M)``, which only holds while many weights share the mass; below about
#: 10 effective samples one or two weights decide the value (the largest normalized weight
#: then exceeds ``1/sqrt(10) ~ 0.32`` or several share it), and the ESS computed from those
#: same weights is itself unreliable. A low ESS says the proposal misses where the mass is;
#: a high ESS does not prove the opposite (a proposal can miss a region entirely).
MIN_ESS = 10.0
#: A mean over many points or groups, each an importance-sampled estimate, is flagged when
#: more than this share of them is below :data:`MIN_ESS`: a few poorly sampled terms move
#: the mean by their small share, a tenth of them can decide it.
MAX_LOW_FRACTION = 0.1


def _check_finite(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    bad = ~torch.isfinite(x)
    if bad.any():
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s) out of {x.numel()} "
            f"(first: {x[bad].flatten()[0].item()})"
        )


def log_weights(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``log p - log q`` after checking both are finite and of the same shape.

    Raises:
        ValueError: naming ``log_p`` (e.g. a target returning NaN) or ``log_q``.
    """
    _check_finite("log_p", log_p)
    _check_finite("log_q", log_q)
    if log_p.shape != log_q.shape:
        raise ValueError(f"log_p {tuple(log_p.shape)} and log_q {tuple(log_q.shape)} differ")
    return log_p - log_q


def elbo(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Monte Carlo ELBO ``mean(log p(x, z) - log q(z))`` over all samples (a scalar).

    Shapes: ``log_p`` and ``log_q`` are equal, e.g. ``(S,)`` or ``(B, S)``.
    """
    return log_weights(log_p, log_q).mean()


def auxiliary_elbo(log_p: Tensor, log_q_aux: Tensor) -> Tensor:
    """Monte Carlo auxiliary ELBO
    ``mean(log p(x, z) + log r(u | z) - log q(z, u))`` (a scalar).

    ``log_q_aux`` is the auxiliary log-density returned by a CIF family. The formula is the
    ELBO's; only the meaning of ``log_q`` differs, and the bound is looser by
    ``E_q[KL(q(u | z) || r(u | z))]``.
    """
    return elbo(log_p, log_q_aux)


def mean_and_stderr(x: Tensor) -> tuple[float, float]:
    """Mean of a 1-D sample and its Monte Carlo standard error ``std / sqrt(n)``."""
    x = x.detach().flatten().double()
    n = x.numel()
    if n < 2:
        raise ValueError(f"x needs at least 2 values for a standard error, got {n}")
    return x.mean().item(), (x.std() / math.sqrt(n)).item()


def logmeanexp(x: Tensor, dim: int = 0) -> Tensor:
    """``log mean(exp(x))`` along ``dim``, computed stably."""
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


def streaming_logmeanexp(chunks: Iterable[Tensor], dim: int = 0) -> Tensor:
    """``logmeanexp`` over the concatenation of ``chunks`` along ``dim``, one chunk at a
    time, so that memory does not grow with the total number of samples."""
    total, count = None, 0
    for chunk in chunks:
        part = torch.logsumexp(chunk, dim=dim)
        total = part if total is None else torch.logaddexp(total, part)
        count += chunk.shape[dim]
    if total is None:
        raise ValueError("chunks is empty")
    return total - math.log(count)


def iw_bound(log_w: Tensor, dim: int = -1) -> Tensor:
    """Importance-weighted bound ``log (1/K) sum_k exp(log_w_k)`` along ``dim`` (``K``
    samples there). Increases with ``K`` in expectation; ``K = 1`` is the ELBO."""
    _check_finite("log_w", log_w)
    return logmeanexp(log_w, dim=dim)


def iw_bound_chunked(
    sample_log_weights: Callable[[int], Tensor],
    num_samples: int,
    chunk_size: int = 500,
    return_ess: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The importance-weighted bound over ``num_samples`` samples drawn in chunks.

    Args:
        sample_log_weights: ``k -> log-weights of shape (..., k)`` for ``k`` fresh samples.
        num_samples: ``K``, the total number of samples per bound.
        chunk_size: samples drawn per call.
        return_ess: also return the effective sample size of the ``K`` weights of each
            bound (:func:`effective_sample_size`, accumulated over the chunks); the bound
            is the same either way.

    Returns:
        The bound, of the shape ``(...)`` that ``sample_log_weights`` gives (and its ESS,
        of the same shape, with ``return_ess``).
    """
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(
            f"num_samples and chunk_size must be >= 1, got {num_samples}, {chunk_size}"
        )
    log_sum_squares = None  # log sum_k w_k^2, for the ESS

    def chunks() -> Iterable[Tensor]:
        nonlocal log_sum_squares
        left = num_samples
        while left > 0:
            k = min(chunk_size, left)
            log_w = sample_log_weights(k)
            _check_finite("log_w", log_w)
            if return_ess:
                part = torch.logsumexp(2 * log_w, dim=-1)
                first = log_sum_squares is None
                log_sum_squares = part if first else torch.logaddexp(log_sum_squares, part)
            yield log_w
            left -= k

    bound = streaming_logmeanexp(chunks(), dim=-1)
    if not return_ess:
        return bound
    log_sum = bound + math.log(num_samples)
    return bound, torch.exp(2 * log_sum - log_sum_squares)


def effective_sample_size(log_w: Tensor, dim: int = -1) -> Tensor:
    """Kish's effective sample size of importance weights given as logs, along ``dim``:

    .. math::

        \\mathrm{ESS} = \\frac{(\\sum_m w_m)^2}{\\sum_m w_m^2}
        = \\exp\\big(2\\,\\mathrm{logsumexp}(\\log w) - \\mathrm{logsumexp}(2 \\log w)\\big),

    between 1 (one weight carries all the mass) and ``M`` (equal weights).

    References:
        Kong. A note on importance sampling using standardized weights. 1992.
    """
    return torch.exp(2 * torch.logsumexp(log_w, dim=dim) - torch.logsumexp(2 * log_w, dim=dim))


def max_normalized_weight(log_w: Tensor, dim: int = -1) -> Tensor:
    """The largest normalized weight ``max_m w_m / sum_m w_m`` along ``dim`` (in
    ``[1/M, 1]``)."""
    return torch.exp(log_w.max(dim=dim).values - torch.logsumexp(log_w, dim=dim))


def ess_summary(
    ess: Tensor,
    num_samples: int,
    threshold: float = MIN_ESS,
    max_low_fraction: float = MAX_LOW_FRACTION,
) -> dict:
    """A JSON-ready report of the effective sample sizes ``ess`` of the importance-sampled
    estimates behind one reported number (one per point or group, or a single one), each
    from ``num_samples`` weights: ``samples``, ``threshold``, ``min``, ``median``,
    ``low_fraction`` (the share below ``threshold``) and ``reliable`` (that share is at
    most ``max_low_fraction``; a single estimate: its ESS reaches ``threshold``)."""
    ess = ess.detach().double().flatten()
    low = float((ess < threshold).double().mean())
    return {
        "samples": int(num_samples),
        "threshold": float(threshold),
        "min": round(float(ess.min()), 3),
        "median": round(float(ess.median()), 3),
        "low_fraction": low,
        "reliable": low <= max_low_fraction,
    }
