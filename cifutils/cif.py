"""Continuously-indexed flow (CIF) layers.

A CIF layer maps an input ``w`` to an output ``z`` through a *family* of bijections indexed
by a continuous variable ``u``:

.. math::

    u \\sim q(u \\mid w), \\qquad z = G(w; u) = e^{s(u)} \\odot g(w) + t(u),

where ``g`` is any ordinary flow step and ``s, t`` are one small network of ``u``. Since
``u`` is integrated out, ``q(z)`` has no closed form; auxiliary VI instead uses an
inference density ``r(u | z)`` (optionally amortized on an observation ``x``).

That is the slides' arrangement (``order="spline-first"``). The code behind the paper's
experiments puts the indexed affine first, ``G(w; u) = g((w + t(u)) e^{s(u)})``
(``order="affine-first"``); both are CIFs with the same parameters, and
:class:`IndexedTransform` offers either.

Parts are passed explicitly: :class:`IndexedTransform` is ``G``, and
:class:`ConditionalDiagonalGaussian` gives both ``q(u | w)`` and ``r(u | z[, x])``.
:func:`cif_layer` sizes them as in the paper.

References:
    Cornish, Caterini, Deligiannidis, Doucet. Relaxing bijectivity constraints with
    continuously indexed normalising flows. ICML 2020.
    Caterini, Cornish, Sejdinovic, Doucet. Variational inference with continuously-indexed
    normalizing flows. ICML 2020 INNF+ workshop / UAI 2021.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from nflows.transforms.base import Transform
from torch import Tensor, nn

__all__ = [
    "MLP",
    "ConditionalDiagonalGaussian",
    "IndexedTransform",
    "FixedIndex",
    "CIFLayer",
    "CIFStep",
    "cif_layer",
    "diagonal_normal_log_prob",
    "ORDERS",
    "check_order",
]

_LOG_2PI = math.log(2 * math.pi)


def diagonal_normal_log_prob(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """``log N(x; mean, diag(exp(2 log_std)))`` summed over the last axis.

    Shapes: ``x``, ``mean``, ``log_std`` broadcast to ``(..., d)``; returns ``(...)``.
    """
    z = (x - mean) * torch.exp(-log_std)
    return -0.5 * (z.pow(2) + _LOG_2PI).sum(-1) - log_std.sum(-1)


class MLP(nn.Module):
    """A small fully connected network ``(inputs[, context]) -> outputs``.

    The context, when given, is concatenated to the inputs. Hidden layers use ``activation``
    (tanh in the paper); the output layer is linear (no squashing).

    Args:
        in_features: size of ``inputs`` (last axis).
        out_features: size of the output.
        hidden: widths of the hidden layers, e.g. ``(10, 10)``.
        context_features: size of an optional context vector.
        activation: hidden activation module class.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (10, 10),
        context_features: int | None = None,
        activation: type[nn.Module] = nn.Tanh,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        hidden = tuple(hidden)
        if not all(
            isinstance(h, numbers.Integral) and not isinstance(h, bool) and h >= 1 for h in hidden
        ):
            raise ValueError(f"hidden widths must be integers >= 1, got {hidden!r}")
        self.context_features = context_features
        sizes = [in_features + (context_features or 0), *hidden]
        parts: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            parts += [nn.Linear(a, b), activation()]
        parts.append(nn.Linear(sizes[-1], out_features))
        self.net = nn.Sequential(*parts)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        if self.context_features:
            if context is None:
                raise ValueError("context is required by this network but was None")
            inputs = torch.cat([inputs, context.reshape(inputs.shape[0], -1)], dim=-1)
        return self.net(inputs)


class ConditionalDiagonalGaussian(nn.Module):
    """A diagonal Gaussian over ``u`` whose mean and log-std are a network of an input.

    ``(mean, log_std) = net(inputs, context)``, split along the last axis, and
    ``u = mean + exp(log_std) * eps`` with ``eps ~ N(0, I)`` (reparameterized).

    Args:
        net: module mapping ``(inputs (N, ...), context) -> (N, 2 * dim)``.
        dim: dimension of ``u``.
    """

    def __init__(self, net: nn.Module, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.net = net
        self.dim = dim

    def params(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and log-std, each of shape ``(N, dim)``."""
        out = self.net(inputs, context)
        if out.shape[-1] != 2 * self.dim:
            raise ValueError(f"net returned {out.shape[-1]} features, expected {2 * self.dim}")
        mean, log_std = out.chunk(2, dim=-1)
        return mean, log_std

    def rsample_and_log_prob(
        self, inputs: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw one ``u`` per row of ``inputs``: returns ``u (N, dim)`` and ``log q(u) (N,)``."""
        mean, log_std = self.params(inputs, context)
        eps = torch.randn_like(mean)
        u = mean + torch.exp(log_std) * eps
        log_prob = -0.5 * (eps.pow(2) + _LOG_2PI).sum(-1) - log_std.sum(-1)
        return u, log_prob

    def log_prob(self, u: Tensor, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        """``log N(u; mean(inputs), diag std(inputs)^2)``, shape ``(N,)``."""
        mean, log_std = self.params(inputs, context)
        return diagonal_normal_log_prob(u, mean, log_std)


#: The two arrangements of a CIF layer's indexed bijection (see :class:`IndexedTransform`).
ORDERS = ("spline-first", "affine-first")


def check_order(order: str) -> str:
    """``order`` if it is one of :data:`ORDERS`, else a ValueError naming it."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    return order


class IndexedTransform(Transform):
    """The indexed bijection ``G(w; u)``: a flow step ``g`` and a ``u``-indexed affine, in
    one of two orders.

    ``u`` travels as nflows' ``context``. With ``(t, s) = st_net(u)``:

    * ``order="spline-first"`` (the slides): ``G(w; u) = exp(s) * g(w) + t``;
    * ``order="affine-first"`` (the authors' experiment code):
      ``G(w; u) = g((w + t) * exp(s))``.

    Either way ``log|det dG/dw| = log|det g'| + sum(s)``, and both are CIFs with the same
    parameters. The auxiliary density ``r`` of a :class:`CIFLayer` is conditioned on the
    *affine's output* ``v``: the layer output ``z`` itself when the affine comes last, and
    ``v = (w + t) exp(s) = g^{-1}(z)`` when it comes first (as in the authors' code). Since
    ``g`` is a bijection that does not depend on ``u``, conditioning on ``v`` or on ``z``
    gives the same set of possible ``r``; ``v`` keeps the spline's inverse out of sampling.

    The inverse splits accordingly into a ``u``-free part, :meth:`split_inverse`
    (``z -> v``), and an indexed part, :meth:`indexed_inverse` (``v, u -> w``), so that an
    importance sampler draws ``u ~ r(u | v)`` between the two and inverts the spline once
    per point rather than once per ``u``.

    Args:
        flow: the ordinary flow step ``g`` (an nflows transform without context).
        st_net: module mapping ``u (N, d_u) -> (N, 2 * d)``: shift ``t`` then log-scale ``s``.
        order: ``"spline-first"`` or ``"affine-first"``.
    """

    def __init__(self, flow: Transform, st_net: nn.Module, order: str = "spline-first") -> None:
        super().__init__()
        self.flow = flow
        self.st_net = st_net
        self.order = check_order(order)

    def extra_repr(self) -> str:
        return f"order={self.order!r}"

    def shift_and_log_scale(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """``t(u)`` and ``s(u)``, each ``(N, d)``."""
        shift, log_scale = self.st_net(u).chunk(2, dim=-1)
        return shift, log_scale

    @staticmethod
    def _require(u: Tensor | None) -> Tensor:
        if u is None:
            raise ValueError("context (the index u) is required by an IndexedTransform")
        return u

    def forward_parts(self, inputs: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``z = G(w; u)``, ``log|det dG/dw|`` and the affine's output ``v`` (on which ``r`` is
        conditioned; ``v = z`` for ``"spline-first"``)."""
        shift, log_scale = self.shift_and_log_scale(self._require(u))
        if self.order == "spline-first":
            y, logabsdet = self.flow(inputs)
            z = y * torch.exp(log_scale) + shift
            return z, logabsdet + log_scale.sum(-1), z
        v = (inputs + shift) * torch.exp(log_scale)
        z, logabsdet = self.flow(v)
        return z, logabsdet + log_scale.sum(-1), v

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z, logabsdet, _ = self.forward_parts(inputs, self._require(context))
        return z, logabsdet

    def split_inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The part of ``G^{-1}`` that does not depend on ``u``: ``v`` and its
        ``log|det dv/dz|`` (``z`` and 0 for ``"spline-first"``, ``g^{-1}(z)`` otherwise)."""
        if self.order == "spline-first":
            return z, z.new_zeros(z.shape[0])
        return self.flow.inverse(z)

    def indexed_inverse(self, v: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """The rest of ``G^{-1}``: ``w`` from ``v`` and ``u``, with ``log|det dw/dv|``."""
        shift, log_scale = self.shift_and_log_scale(self._require(u))
        if self.order == "spline-first":
            w, logabsdet = self.flow.inverse((v - shift) * torch.exp(-log_scale))
            return w, logabsdet - log_scale.sum(-1)
        return v * torch.exp(-log_scale) - shift, -log_scale.sum(-1)

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        u = self._require(context)
        v, logabsdet_v = self.split_inverse(inputs)
        w, logabsdet_w = self.indexed_inverse(v, u)
        return w, logabsdet_v + logabsdet_w


class FixedIndex(Transform):
    """``G(.; u)`` for one fixed index ``u``: an ordinary transform without context.

    Useful to draw the indexed family and to test a CIF layer at fixed ``u``.

    Args:
        transform: an :class:`IndexedTransform`.
        u: the index, shape ``(d_u,)``; it is broadcast over the batch.
    """

    def __init__(self, transform: IndexedTransform, u: Tensor) -> None:
        super().__init__()
        self.transform = transform
        self.register_buffer("u", u.reshape(1, -1))

    def _index(self, inputs: Tensor) -> Tensor:
        return self.u.to(inputs.dtype).expand(inputs.shape[0], -1)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform(inputs, self._index(inputs))

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(inputs, self._index(inputs))


@dataclass
class CIFStep:
    """What one CIF layer did to a batch of ``N`` samples (all tensors have ``N`` rows).

    Attributes:
        w: the layer input ``w_{l-1}``, ``(N, d)``.
        u: the index drawn from ``q(u | w)``, ``(N, d_u)``.
        z: the layer output ``w_l = G(w_{l-1}; u)``, ``(N, d)``.
        log_q_u: ``log q(u | w_{l-1})``, ``(N,)``.
        log_r_u: ``log r(u | v[, x])``, ``(N,)``.
        logabsdet: ``log|det dG/dw|``, ``(N,)``.
        v: the point ``r`` is conditioned on, the output of the indexed affine (the same
            tensor as ``z`` when the affine comes last), ``(N, d)``.
    """

    w: Tensor
    u: Tensor
    z: Tensor
    log_q_u: Tensor
    log_r_u: Tensor
    logabsdet: Tensor
    v: Tensor | None = None

    def __post_init__(self) -> None:
        if self.v is None:
            self.v = self.z

    @property
    def log_weight(self) -> Tensor:
        """This layer's term of the auxiliary log-density:
        ``log q(u | w) - log|det dG/dw| - log r(u | v)``."""
        return self.log_q_u - self.logabsdet - self.log_r_u


class CIFLayer(nn.Module):
    """One stochastic CIF layer: ``u ~ q(u | w)``, ``z = G(w; u)``, scored by ``r(u | v[, x])``.

    ``v`` is the output of the layer's indexed affine: ``z`` itself in the slides' order,
    ``g^{-1}(z)`` when the affine comes first (see :class:`IndexedTransform`). Either way it
    is a function of ``z`` alone, so ``r(u | v)`` is a conditional density of ``u`` given ``z``.

    Args:
        transform: the indexed bijection ``G`` (:class:`IndexedTransform`).
        q_u: ``q(u | w)``; its network is called as ``net(w)``.
        r_u: ``r(u | v[, x])``; its network is called as ``net(v, context)`` where
            ``context`` is the observation ``x`` when amortized, else ``None``.
    """

    def __init__(
        self,
        transform: Transform,
        q_u: ConditionalDiagonalGaussian,
        r_u: ConditionalDiagonalGaussian,
    ) -> None:
        super().__init__()
        if q_u.dim != r_u.dim:
            raise ValueError(f"q_u.dim ({q_u.dim}) and r_u.dim ({r_u.dim}) differ")
        self.transform = transform
        self.q_u = q_u
        self.r_u = r_u

    @property
    def dim_u(self) -> int:
        return self.q_u.dim

    def sample_forward(self, w: Tensor, context: Tensor | None = None) -> CIFStep:
        """Push ``w (N, d)`` through the layer with fresh ``u``; see :class:`CIFStep`."""
        u, log_q_u = self.q_u.rsample_and_log_prob(w)
        z, logabsdet, v = self.transform.forward_parts(w, u)
        log_r_u = self.r_u.log_prob(u, v, context)
        return CIFStep(w=w, u=u, z=z, log_q_u=log_q_u, log_r_u=log_r_u, logabsdet=logabsdet, v=v)

    def r_point(self, z: Tensor) -> Tensor:
        """The point ``v`` that ``r`` is conditioned on, for layer outputs ``z (N, d)``."""
        return self.transform.split_inverse(z)[0]

    def sample_inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``u ~ r(u | v[, x])`` and invert: returns ``w = G^{-1}(z; u)`` and the
        importance log-weight ``log q(u | w) + log|det dG^{-1}/dz| - log r(u | v)``, ``(N,)``.

        With ``w`` distributed as the layer input, ``exp(log q(w) + weight)`` is an unbiased
        estimate of the layer's output density at ``z``.
        """
        v, logabsdet_v = self.transform.split_inverse(z)
        u, log_r_u = self.r_u.rsample_and_log_prob(v, context)
        w, logabsdet_w = self.transform.indexed_inverse(v, u)
        log_q_u = self.q_u.log_prob(u, w)
        return w, log_q_u + logabsdet_v + logabsdet_w - log_r_u


def cif_layer(
    dim: int,
    flow: Transform,
    dim_u: int = 1,
    hidden: Sequence[int] = (10, 10),
    context_features: int | None = None,
    r_net: nn.Module | None = None,
    activation: type[nn.Module] = nn.Tanh,
    order: str = "spline-first",
) -> CIFLayer:
    """A CIF layer sized as in the paper: s/t, q and r each a tanh MLP (``hidden``).

    Args:
        dim: dimension ``d`` of ``w`` and ``z``.
        flow: the flow step ``g`` inside ``G(w; u) = exp(s(u)) g(w) + t(u)`` (or
            ``g((w + t(u)) exp(s(u)))`` with ``order="affine-first"``).
        dim_u: dimension of the index ``u`` (1 in the mixture experiment, 2 in the VAEs).
        hidden: hidden widths of the three MLPs.
        context_features: if given, ``r(u | z, x)`` is amortized on a flat context of this
            size (concatenated to ``z``).
        r_net: a custom network for ``r`` (called as ``r_net(v, x)``, returning
            ``(N, 2 * dim_u)``); overrides ``context_features``.
        order: ``"spline-first"`` (the slides) or ``"affine-first"`` (the authors' code); see
            :class:`IndexedTransform`.
    """
    check_order(order)
    if dim_u < 1:
        raise ValueError(f"dim_u must be >= 1, got {dim_u}")
    st_net = MLP(dim_u, 2 * dim, hidden, activation=activation)
    q_net = MLP(dim, 2 * dim_u, hidden, activation=activation)
    if r_net is None:
        r_net = MLP(
            dim, 2 * dim_u, hidden, context_features=context_features, activation=activation
        )
    return CIFLayer(
        IndexedTransform(flow, st_net, order),
        ConditionalDiagonalGaussian(q_net, dim_u),
        ConditionalDiagonalGaussian(r_net, dim_u),
    )
