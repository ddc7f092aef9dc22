"""Variational families with one interface: Gaussian, NSF and CIF-NSF.

A :class:`VariationalFlow` is a base density ``q0(w0[ | x])`` followed by a list of layers.
A layer is either an ordinary nflows transform (deterministic) or a
:class:`~cifutils.cif.CIFLayer` (stochastic). One call,
:meth:`VariationalFlow.sample_and_log_prob`, returns reparameterized samples ``z`` and the
log-density the VI objective needs:

* explicit families (no CIF layer): ``log q(z) = log q0(w0) - sum_l log|det dT_l/dw|``;
* CIF families: the auxiliary log-density

  .. math::

     \\log q_0(w_0) + \\sum_l \\big[\\log q(u_l \\mid w_{l-1}) - \\log|\\det \\partial_w G_l|
     - \\log r(u_l \\mid w_l)\\big],

  whose expectation under ``q`` upper-bounds the entropy term, so that
  ``E[log p - log q_aux]`` is the auxiliary ELBO.

So the Gaussian, the NSF and the CIF-NSF baselines differ in one argument of
:func:`make_family`.

References:
    Rezende, Mohamed. Variational inference with normalizing flows. ICML 2015.
    Agakov, Barber. An auxiliary variational method. ICONIP 2004.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .cif import CIFLayer, CIFStep, check_order, cif_layer, diagonal_normal_log_prob
from .flows import (
    ElementwiseAffine,
    LowerTriangularAffine,
    check_spline_args,
    compose,
    interleave_permutations,
    lu_permutation_stack,
    rq_autoregressive_step,
)
from .objectives import effective_sample_size, logmeanexp

__all__ = [
    "GaussianBase",
    "AmortizedGaussianBase",
    "VariationalFlow",
    "FlowSample",
    "gaussian_family",
    "full_gaussian_family",
    "nsf_family",
    "cif_nsf_family",
    "affine_nsf_family",
    "make_family",
    "FAMILIES",
]


def _capturing(t: Tensor) -> bool:
    """True while a CUDA graph is being captured on the current stream of ``t``'s device, or
    while ``torch.compile`` traces the code: a value check would then need a host sync (or
    split the compiled graph in two)."""
    if torch.compiler.is_compiling():
        return True
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def _check_num_samples(num_samples: int) -> None:
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")


class GaussianBase(nn.Module):
    """``q0(w) = N(w; loc, diag(scale^2))``, fixed (buffers) or trainable (parameters).

    Args:
        dim: dimension ``d``.
        loc: initial mean (a number, broadcast to ``d``).
        scale: initial standard deviation ``sigma_0 > 0``.
        trainable: learn ``loc`` and ``log scale`` when True.
    """

    amortized = False

    def __init__(self, dim: int, loc: float = 0.0, scale: float = 1.0, trainable: bool = False):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        self.dim = dim
        loc_t = torch.full((dim,), float(loc))
        log_scale_t = torch.full((dim,), math.log(scale))
        if trainable:
            self.loc = nn.Parameter(loc_t)
            self.log_scale = nn.Parameter(log_scale_t)
        else:
            self.register_buffer("loc", loc_t)
            self.register_buffer("log_scale", log_scale_t)

    def rsample_and_log_prob(
        self, num_samples: int, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``num_samples`` draws per context row (or in all, without context).

        Returns ``w (n, d)`` and ``log q0(w) (n,)`` with ``n = num_samples * B``.
        """
        n = num_samples * (1 if context is None else context.shape[0])
        eps = torch.randn(n, self.dim, dtype=self.loc.dtype, device=self.loc.device)
        w = self.loc + torch.exp(self.log_scale) * eps
        log_q = diagonal_normal_log_prob(w, self.loc, self.log_scale)
        return w, log_q

    def log_prob(self, w: Tensor, context: Tensor | None = None) -> Tensor:
        """``log q0(w)`` for ``w (n, d)``; returns ``(n,)``."""
        return diagonal_normal_log_prob(w, self.loc, self.log_scale)


class AmortizedGaussianBase(nn.Module):
    """``q0(w | x) = N(w; mu(x), diag sigma(x)^2)``: the encoder of a VAE.

    Args:
        encoder: module mapping ``x (B, ...) -> (B, 2 d)``: mean then log-std.
        dim: dimension ``d`` of ``w``.
    """

    amortized = True

    def __init__(self, encoder: nn.Module, dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.dim = dim

    def params(self, context: Tensor) -> tuple[Tensor, Tensor]:
        out = self.encoder(context)
        if out.shape != (context.shape[0], 2 * self.dim):
            raise ValueError(f"encoder returned {tuple(out.shape)}, expected (B, {2 * self.dim})")
        mean, log_std = out.chunk(2, dim=-1)
        return mean, log_std

    def rsample_and_log_prob(
        self, num_samples: int, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``num_samples`` draws per row of ``context (B, ...)``, row-major: row
        ``b * num_samples + s`` belongs to ``x_b``. Returns ``(B*S, d)`` and ``(B*S,)``."""
        if context is None:
            raise ValueError("context (the observations x) is required by an amortized base")
        mean, log_std = self.params(context)
        mean = mean.repeat_interleave(num_samples, dim=0)
        log_std = log_std.repeat_interleave(num_samples, dim=0)
        eps = torch.randn_like(mean)
        w = mean + torch.exp(log_std) * eps
        return w, -0.5 * (eps.pow(2) + math.log(2 * math.pi)).sum(-1) - log_std.sum(-1)

    def log_prob(self, w: Tensor, context: Tensor | None = None) -> Tensor:
        """``log q0(w | x)`` with one context row per row of ``w``."""
        if context is None:
            raise ValueError("context (the observations x) is required by an amortized base")
        mean, log_std = self.params(context)
        return diagonal_normal_log_prob(w, mean, log_std)


@dataclass
class FlowSample:
    """A forward pass through a :class:`VariationalFlow` (``n`` rows).

    Attributes:
        z: samples, ``(n, d)``.
        log_q: ``log q(z)`` (explicit) or the auxiliary log-density (CIF), ``(n,)``.
        w0: base samples, ``(n, d)``.
        log_q0: ``log q0(w0)``, ``(n,)``.
        steps: one :class:`~cifutils.cif.CIFStep` per CIF layer, in order.
    """

    z: Tensor
    log_q: Tensor
    w0: Tensor
    log_q0: Tensor
    steps: list[CIFStep] = field(default_factory=list)

    @property
    def us(self) -> list[Tensor]:
        """The indices ``u_1, ..., u_L`` of the CIF layers."""
        return [s.u for s in self.steps]


class VariationalFlow(nn.Module):
    """A base density followed by flow and CIF layers (see the module docstring).

    Args:
        base: :class:`GaussianBase` or :class:`AmortizedGaussianBase`.
        layers: nflows transforms and/or :class:`~cifutils.cif.CIFLayer` s, applied in order.

    Attributes:
        group_contexts: whether the CIF layers' ``r`` networks may prepare their contexts
            together (see ``_cif_contexts``; the default, True). Set it to False to have
            each network handle the repeated observations itself: the same function, for
            comparisons.
    """

    def __init__(self, base: nn.Module, layers: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        self.base = base
        self.layers = nn.ModuleList(layers)
        self.dim = base.dim
        self.group_contexts = True

    @property
    def is_cif(self) -> bool:
        """True when some layer is a CIF layer (then ``log_q`` is auxiliary)."""
        return any(isinstance(layer, CIFLayer) for layer in self.layers)

    def _check_context(self, context: Tensor | None) -> None:
        if context is None:
            if getattr(self.base, "amortized", False):
                raise ValueError("context is required: the base density is amortized")
            return
        if not isinstance(context, Tensor) or context.ndim < 1 or context.shape[0] < 1:
            raise ValueError("context must be a tensor with a non-empty batch axis")
        if _capturing(context):
            return  # recorded or traced: a value check would need a host sync
        if context.is_floating_point() and not torch.isfinite(context).all():
            raise ValueError("context contains non-finite values")

    def _cif_contexts(self, context: Tensor | None, num_samples: int) -> list:
        """The context of each CIF layer's ``r`` network, in order: the observations repeated
        per sample (row ``b * num_samples + s`` is observation ``b``), or None. When every
        such network is of one class with a static ``group_context(nets, context,
        num_samples)``, that method prepares them instead, all layers together (how the
        fast r-network of the VAEs shares its work over the layers and the samples)."""
        nets = [layer.r_u.net for layer in self.layers if isinstance(layer, CIFLayer)]
        if context is None or not nets:
            return [None] * len(nets)
        group = getattr(type(nets[0]), "group_context", None) if self.group_contexts else None
        if group is not None and all(type(net) is type(nets[0]) for net in nets):
            return group(nets, context, num_samples)
        return [context.repeat_interleave(num_samples, dim=0)] * len(nets)

    def forward_sample(self, num_samples: int, context: Tensor | None = None) -> FlowSample:
        """Sample with everything recorded; rows are flat (``n = B * num_samples``)."""
        _check_num_samples(num_samples)
        self._check_context(context)
        contexts = iter(self._cif_contexts(context, num_samples))
        w, log_q0 = self.base.rsample_and_log_prob(num_samples, context)
        w0, log_q, steps = w, log_q0, []
        for layer in self.layers:
            if isinstance(layer, CIFLayer):
                step = layer.sample_forward(w, next(contexts))
                w, log_q = step.z, log_q + step.log_weight
                steps.append(step)
            else:
                w, logabsdet = layer(w)
                log_q = log_q - logabsdet
        return FlowSample(z=w, log_q=log_q, w0=w0, log_q0=log_q0, steps=steps)

    def sample_and_log_prob(
        self, num_samples: int, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Reparameterized samples and their (auxiliary) log-density in one pass.

        Returns:
            Without context: ``z (S, d)`` and ``log_q (S,)``. With ``context (B, ...)``:
            ``z (B, S, d)`` and ``log_q (B, S)``.
        """
        out = self.forward_sample(num_samples, context)
        if context is None:
            return out.z, out.log_q
        b = context.shape[0]
        return out.z.reshape(b, num_samples, -1), out.log_q.reshape(b, num_samples)

    @torch.no_grad()
    def sample(self, num_samples: int, context: Tensor | None = None) -> Tensor:
        """Samples only (no gradient), shaped as in :meth:`sample_and_log_prob`."""
        return self.sample_and_log_prob(num_samples, context)[0]

    def _check_points(self, z: Tensor, context: Tensor | None) -> None:
        if not isinstance(z, Tensor) or z.ndim != 2 or z.shape[1] != self.dim:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (n, {self.dim}), got {shape}")
        tensors = [*self.parameters(), *self.buffers()]
        dtype = next((t.dtype for t in tensors if t.is_floating_point()), z.dtype)
        if z.dtype != dtype:
            raise ValueError(f"z must have dtype {dtype}, got {z.dtype}")
        if not torch.isfinite(z).all():
            raise ValueError("z contains non-finite values")
        if context is not None and context.shape[0] != z.shape[0]:
            raise ValueError(f"context has {context.shape[0]} rows but z has {z.shape[0]}")

    def _inverse_log_prob(self, z: Tensor, context: Tensor | None) -> Tensor:
        """One draw of the backward pass: an estimate of ``log q(z)`` (exact if explicit)."""
        w, log_weight = z, torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for layer in reversed(self.layers):
            if isinstance(layer, CIFLayer):
                w, term = layer.sample_inverse(w, context)
            else:
                w, term = layer.inverse(w)
            log_weight = log_weight + term
        return log_weight + self.base.log_prob(w, context)

    def marginal_log_prob(
        self,
        z: Tensor,
        context: Tensor | None = None,
        num_u_samples: int = 100,
        return_ess: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``log q_Z(z)``: exact for explicit families; for CIFs the importance-sampling
        estimate with ``r`` as proposal,

        .. math::

            \\log \\frac{1}{M} \\sum_{m=1}^M q_0(w_0^{(m)}) \\prod_l
            \\frac{q(u_l^{(m)} \\mid w_{l-1}^{(m)}) |\\det \\partial_z G_l^{-1}|}
            {r(u_l^{(m)} \\mid w_l^{(m)})},

        drawn from the last layer down (``u_l ~ r(. | w_l)``, ``w_{l-1} = G_l^{-1}(w_l; u_l)``).
        Its exponential is unbiased, so the log is biased low by Jensen's inequality, less so
        as ``M`` grows. Needs the layers' inverses (``d`` passes per autoregressive layer).

        Args:
            z: points, ``(n, d)``.
            context: one observation row per point, ``(n, ...)``, or None.
            num_u_samples: ``M`` (ignored by explicit families).
            return_ess: also return the effective sample size of each point's ``M``
                weights (:func:`~cifutils.objectives.effective_sample_size`; ``inf`` for
                explicit families, whose value is exact). The estimate is the same either
                way: no extra random numbers are drawn.

        Returns:
            ``(n,)``, or ``(log q_Z (n,), ess (n,))`` with ``return_ess``. A small ESS
            (below :data:`~cifutils.objectives.MIN_ESS`) marks a point where ``r`` is a
            poor proposal and the estimate is not meaningful, however precise it looks.
        """
        self._check_points(z, context)
        self._check_context(context)
        if not self.is_cif:
            exact = self._inverse_log_prob(z, context)
            return (exact, torch.full_like(exact, math.inf)) if return_ess else exact
        _check_num_samples(num_u_samples)
        n, m = z.shape[0], num_u_samples
        zs = z.repeat(m, 1)
        rows = None if context is None else context.repeat(m, *([1] * (context.ndim - 1)))
        log_w = self._inverse_log_prob(zs, rows).reshape(m, n)
        estimate = logmeanexp(log_w, dim=0)
        return (estimate, effective_sample_size(log_w, dim=0)) if return_ess else estimate


def gaussian_family(dim: int, loc: float = 0.0, scale: float = 1.0) -> VariationalFlow:
    """A mean-field Gaussian with trainable mean and log-std."""
    return VariationalFlow(GaussianBase(dim, loc, scale, trainable=True))


def full_gaussian_family(dim: int) -> VariationalFlow:
    """A full-covariance Gaussian: ``z = L w + b`` with ``w ~ N(0, I)`` and a trainable
    lower-triangular ``L`` with positive diagonal (so ``q = N(b, L L^T)``)."""
    return VariationalFlow(GaussianBase(dim), [LowerTriangularAffine(dim)])


def _base(dim: int, sigma0: float, base: nn.Module | None) -> nn.Module:
    return base if base is not None else GaussianBase(dim, 0.0, sigma0, trainable=False)


def nsf_family(
    dim: int,
    layers: int = 5,
    hidden: int = 32,
    bins: int = 8,
    tail_bound: float = 3.0,
    blocks: int = 2,
    sigma0: float = 1.0,
    base: nn.Module | None = None,
    permute: str = "reverse",
    lu: bool = False,
) -> VariationalFlow:
    """A neural spline flow: autoregressive RQ-spline steps with a fixed permutation
    (``permute``: ``"reverse"`` or ``"random"``) between them, on a fixed
    ``N(0, sigma0^2 I)`` base unless ``base`` is given. With ``lu`` the steps are laid out
    as in the authors' VAEs (:func:`~cifutils.flows.lu_permutation_stack`): a permutation and
    an LU-linear layer first, then an LU-linear layer and a permutation after every step."""
    check_spline_args(dim, hidden, bins, tail_bound, blocks, layers)

    def make_step(i: int) -> nn.Module:
        return rq_autoregressive_step(dim, hidden, bins, tail_bound, blocks)

    steps = _stack(dim, layers, make_step, permute, lu)
    return VariationalFlow(_base(dim, sigma0, base), steps)


def _stack(
    dim: int, layers: int, make_step: Callable[[int], nn.Module], permute: str, lu: bool
) -> list[nn.Module]:
    """The steps with permutations between them, or in the LU layout (``lu``)."""
    if permute not in ("reverse", "random"):
        raise ValueError(f"permute must be 'reverse' or 'random', got {permute!r}")
    if lu:
        return lu_permutation_stack(dim, layers, make_step, permute)
    return interleave_permutations(dim, layers, make_step, permute)


def cif_nsf_family(
    dim: int,
    layers: int = 5,
    hidden: int = 32,
    bins: int = 8,
    tail_bound: float = 3.0,
    blocks: int = 2,
    sigma0: float = 1.0,
    base: nn.Module | None = None,
    dim_u: int = 1,
    cif_hidden: Sequence[int] = (10, 10),
    context_features: int | None = None,
    r_net_factory: Callable[[], nn.Module] | None = None,
    order: str = "spline-first",
    permute: str = "reverse",
    lu: bool = False,
) -> VariationalFlow:
    """A CIF-NSF: as :func:`nsf_family`, each spline step ``g_l`` wrapped in a CIF layer
    ``G_l(w; u_l) = exp(s_l(u_l)) g_l(w) + t_l(u_l)`` (``order="spline-first"``, the
    slides) or ``G_l(w; u_l) = g_l((w + t_l(u_l)) exp(s_l(u_l)))`` (``"affine-first"``,
    the authors' experiment code).

    Args:
        dim_u: dimension of each ``u_l``.
        cif_hidden: hidden widths of the s/t, q and r networks.
        context_features: amortize ``r(u | v, x)`` on a flat context of this size.
        r_net_factory: builds a custom ``r`` network per layer (e.g. a conv net of an image).
        order: where the indexed affine sits, see :class:`~cifutils.cif.IndexedTransform`.
        permute, lu: the permutations and the layout, as in :func:`nsf_family` (with ``lu``,
            each CIF layer takes the place of a spline step).
    """
    check_spline_args(dim, hidden, bins, tail_bound, blocks, layers)
    check_order(order)

    def make_step(i: int) -> CIFLayer:
        flow = rq_autoregressive_step(dim, hidden, bins, tail_bound, blocks)
        r_net = r_net_factory() if r_net_factory is not None else None
        return cif_layer(dim, flow, dim_u, cif_hidden, context_features, r_net, order=order)

    steps = _stack(dim, layers, make_step, permute, lu)
    return VariationalFlow(_base(dim, sigma0, base), steps)


def affine_nsf_family(
    dim: int,
    layers: int = 5,
    hidden: int = 32,
    bins: int = 8,
    tail_bound: float = 3.0,
    blocks: int = 2,
    sigma0: float = 1.0,
    base: nn.Module | None = None,
    order: str = "affine-first",
) -> VariationalFlow:
    """The control for a CIF-NSF: an NSF whose every spline step has a learnable
    elementwise affine (:class:`~cifutils.flows.ElementwiseAffine`) in the place of the CIF
    layer's indexed affine, before the spline (``"affine-first"``) or after it
    (``"spline-first"``). It keeps "an affine beside each spline" and removes the index
    ``u``, so comparing it with the CIF-NSF of the same order isolates what the index adds.
    """
    check_spline_args(dim, hidden, bins, tail_bound, blocks, layers)
    check_order(order)

    def make_step(i: int) -> nn.Module:
        spline = rq_autoregressive_step(dim, hidden, bins, tail_bound, blocks)
        affine = ElementwiseAffine(dim)
        return compose([affine, spline] if order == "affine-first" else [spline, affine])

    steps = interleave_permutations(dim, layers, make_step)
    return VariationalFlow(_base(dim, sigma0, base), steps)


#: The family builders by name; :func:`make_family` dispatches on these keys.
FAMILIES: dict[str, Callable[..., VariationalFlow]] = {
    "gaussian": gaussian_family,
    "full-gaussian": full_gaussian_family,
    "nsf": nsf_family,
    "cif-nsf": cif_nsf_family,
    "affine-nsf": affine_nsf_family,
}


def make_family(kind: str, dim: int, **kwargs) -> VariationalFlow:
    """Build a family by name: ``"gaussian"``, ``"full-gaussian"``, ``"nsf"``,
    ``"cif-nsf"`` or ``"affine-nsf"``; ``kwargs`` go to the builder."""
    if kind not in FAMILIES:
        raise ValueError(f"kind must be one of {sorted(FAMILIES)}, got {kind!r}")
    return FAMILIES[kind](dim, **kwargs)
