"""Faster, equal-valued autoregressive rational-quadratic spline layers.

:class:`FastRQAutoregressive` is a subclass of nflows'
``MaskedPiecewiseRationalQuadraticAutoregressiveTransform`` with the *same* parameters (same
names, same initialization) and the *same* function; only ``forward`` is rewritten:

* the MADE is evaluated with direct ``F.linear`` calls on the masked weights;
* the spline is evaluated for every entry at the input clamped to ``[-B, B]`` and the linear
  (identity) tails are selected with ``torch.where``, instead of nflows' boolean-mask
  gathers and scatters (slow in both the forward and the backward pass);
* widths and heights share one softmax and one cumulative sum; the bin lookup compares
  against the ``K - 1`` interior knots only; the bin's two knots and two derivatives are
  picked with two ``gather`` calls and no full-size slicing;
* no ``min``/``max`` domain check (the clamp makes it unnecessary).

``inverse`` is written the same way (``D`` passes of the MADE, the spline's quadratic solved
elementwise), each pass computing and inverting only the one feature it fixes; it serves the
marginal-density estimates of CIFs.
:func:`accelerate` swaps these layers into an existing model in place, keeping the weights,
so a model built with a seed is the same model with or without the fast path. The VAE's
image layers have fast versions of their own, beside the experiment
(:mod:`cifutils.experiments.vae.fast_layers`).

References:
    Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. NeurIPS 2019 (eqs. 4-5).
"""

from __future__ import annotations

import math

import torch
from nflows.transforms.autoregressive import (
    MaskedPiecewiseRationalQuadraticAutoregressiveTransform as _NflowsRQ,
)
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["rq_spline", "FastRQAutoregressive", "accelerate"]


def rq_spline(
    inputs: Tensor,
    params: Tensor,
    num_bins: int,
    tail_bound: float,
    scale: float = 1.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
    inverse: bool = False,
) -> tuple[Tensor, Tensor]:
    """Monotone rational-quadratic spline on ``[-B, B]`` with identity tails, elementwise,
    or its inverse.

    Args:
        inputs: ``(N, D)``.
        params: ``(N, D, 3K - 1)``: unnormalized widths, heights (both divided by
            ``scale``), then the ``K - 1`` interior unnormalized derivatives.
        num_bins: ``K``.
        tail_bound: ``B``.
        scale: divisor of the width and height logits (nflows: sqrt of the MADE width).
        inverse: invert the spline instead: the root in ``[0, 1]`` of the bin's quadratic,
            written in the cancellation-free form ``2c / (-b - sqrt(b^2 - 4ac))``, with the
            discriminant clamped at zero (rounding can make it slightly negative).

    Returns:
        ``outputs (N, D)`` and ``logabsdet (N,)`` (summed over ``D``; of the inverse when
        ``inverse``), equal to nflows' ``unconstrained_rational_quadratic_spline`` with
        ``tails="linear"``.
    """
    k, b = num_bins, float(tail_bound)
    n, d = inputs.shape
    inside = (inputs >= -b) & (inputs <= b)
    x = inputs.clamp(-b, b)
    logits, ud = params.split([2 * k, k - 1], dim=-1)
    logits = logits.reshape(n, d, 2, k)  # widths and heights together: one softmax
    if scale != 1.0:
        logits = logits / scale
    # (2, 1) column of the minimum width and height, built on the device without a host
    # copy, so that the layer can be captured in a CUDA graph
    mins = torch.full((2, 1), min_bin_width, dtype=logits.dtype, device=logits.device)
    if min_bin_height != min_bin_width:
        mins[1] = min_bin_height
    # softmax by hand: aten's softmax is several times slower over a last axis of size K
    # the shift is detached: softmax does not depend on it, so its gradient is zero (and
    # computing it, a tie count per row, is the slowest kernel of a compiled backward)
    expo = torch.exp(logits - logits.amax(dim=-1, keepdim=True).detach())
    sizes = mins + (1 - mins * k) * (expo / expo.sum(dim=-1, keepdim=True))
    cum = 2 * b * torch.cumsum(sizes, dim=-1) + (-b)  # (N, D, 2, K); last entry ~ B
    edge = torch.full_like(cum[..., :1], b)
    knots = torch.cat([-edge, cum[..., :-1], edge], dim=-1)  # (N, D, 2, K + 1), exact ends
    side = 1 if inverse else 0  # the bin is looked up among the knots of the input axis
    idx = (x.unsqueeze(-1) >= cum[..., side, :-1]).sum(-1, keepdim=True)  # bin, (N, D, 1)
    pair = torch.cat([idx, idx + 1], dim=-1)  # left and right knot of the bin
    kx, ky = knots.gather(-1, pair.unsqueeze(-2).expand(n, d, 2, 2)).unbind(-2)
    cw, w = kx[..., 0], kx[..., 1] - kx[..., 0]
    ch, h = ky[..., 0], ky[..., 1] - ky[..., 0]
    # Boundary derivatives: softplus of the constant nflows pads with, i.e. 1 - min_derivative.
    end = torch.full_like(ud[..., :1], math.log(math.expm1(1 - min_derivative)))
    derivs = min_derivative + F.softplus(torch.cat([end, ud, end], dim=-1))  # (N, D, K + 1)
    d0, d1 = derivs.gather(-1, pair).unbind(-1)
    dl = h / w
    if inverse:
        dy, curv = x - ch, d0 + d1 - 2 * dl
        qa = dy * curv + h * (dl - d0)
        qb = h * d0 - dy * curv
        qc = -dl * dy
        disc = (qb.pow(2) - 4 * qa * qc).clamp_min(0)
        theta = (2 * qc) / (-qb - torch.sqrt(disc))
        outputs = cw + theta * w
    else:
        theta = (x - cw) / w
    t1t = theta * (1 - theta)
    denominator = dl + (d0 + d1 - 2 * dl) * t1t
    if not inverse:
        outputs = ch + h * (dl * theta.pow(2) + d0 * t1t) / denominator
    numerator = dl.pow(2) * (d1 * theta.pow(2) + 2 * dl * t1t + d0 * (1 - theta).pow(2))
    logabsdet = torch.log(numerator) - 2 * torch.log(denominator)
    if inverse:
        logabsdet = -logabsdet
    outputs = torch.where(inside, outputs, inputs)
    logabsdet = torch.where(inside, logabsdet, torch.zeros_like(logabsdet))
    return outputs, logabsdet.sum(-1)


class FastRQAutoregressive(_NflowsRQ):
    """nflows' masked autoregressive RQ-spline transform with a fused forward pass.

    Supports the configuration used in this library: linear tails, residual MADE blocks,
    no batch norm, no dropout. ``forward(x, context)`` returns ``(y (N, D), logabsdet (N,))``
    equal (to float rounding) to the parent's; ``inverse`` too (``D`` passes, as nflows).
    """

    def _made(self, inputs: Tensor, context: Tensor | None, feature: int | None = None) -> Tensor:
        """The MADE's output ``(N, D * P)``, or only feature ``feature``'s ``P`` parameters."""
        made = self.autoregressive_net
        first = made.initial_layer
        h = F.linear(inputs, first.weight * first.mask, first.bias)
        if context is not None:
            h = h + made.activation(made.context_layer(context))
        for block in made.blocks:
            l0, l1 = block.linear_layers
            t = F.linear(made.activation(h), l0.weight * l0.mask, l0.bias)
            if context is not None:
                t = t + block.context_layer(context)
            h = h + F.linear(block.activation(t), l1.weight * l1.mask, l1.bias)
        last = made.final_layer
        weight, bias = last.weight * last.mask, last.bias
        if feature is not None:  # nflows lays the outputs out feature-major
            rows = slice(
                feature * self._output_dim_multiplier(),
                (feature + 1) * self._output_dim_multiplier(),
            )
            weight, bias = weight[rows], bias[rows]
        return F.linear(h, weight, bias)

    def _logit_scale(self) -> float:
        # nflows divides the width/height logits by sqrt(hidden) only when the net has a
        # ``hidden_features`` attribute, which its MADE does not: the divisor is then 1.
        hidden = getattr(self.autoregressive_net, "hidden_features", None)
        return math.sqrt(hidden) if hidden is not None else 1.0

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.tails != "linear" or not self.autoregressive_net.use_residual_blocks:
            return super().forward(inputs, context)
        return self._spline(inputs, self._made(inputs, context), inverse=False)

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.tails != "linear" or not self.autoregressive_net.use_residual_blocks:
            return super().inverse(inputs, context)
        # Feature i of the output needs features 1..i-1 of the output: D passes, each
        # inverting one more feature's spline. The MADE's masks keep feature i's parameters
        # blind to features i..D, which are left at zero; the first feature's parameters
        # depend on no feature at all, so without a context they are one row for all.
        n, d = inputs.shape
        columns: list[Tensor] = []
        logabsdet = inputs.new_zeros(n)
        for i in range(d):
            if i == 0 and context is None:
                params = self._made(inputs.new_zeros(1, d), None, feature=0).expand(n, -1)
            else:
                known = torch.cat(columns + [inputs.new_zeros(n, d - i)], dim=1)
                params = self._made(known, context, feature=i)
            column, lad = self._spline(inputs[:, i : i + 1], params, inverse=True)
            columns.append(column)
            logabsdet = logabsdet + lad
        return torch.cat(columns, dim=1), logabsdet

    def _spline(self, inputs: Tensor, made_out: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        n, d = inputs.shape
        return rq_spline(
            inputs,
            made_out.view(n, d, self._output_dim_multiplier()),
            self.num_bins,
            self.tail_bound,
            self._logit_scale(),
            self.min_bin_width,
            self.min_bin_height,
            self.min_derivative,
            inverse=inverse,
        )


def _supported(layer: nn.Module) -> bool:
    made = layer.autoregressive_net
    return (
        layer.tails == "linear"
        and made.use_residual_blocks
        and not getattr(made, "use_batch_norm", False)
        and all(
            getattr(b, "dropout", nn.Identity()).p == 0.0 if hasattr(b, "dropout") else True
            for b in made.blocks
        )
    )


def accelerate(module: nn.Module) -> nn.Module:
    """Replace, in place, every nflows masked RQ-autoregressive layer inside ``module`` by
    :class:`FastRQAutoregressive` holding the same submodules and weights. Returns ``module``.

    The class of each layer object is changed, not the object, so parameter names, optimizer
    state and checkpoints are unaffected.
    """
    for sub in module.modules():
        if type(sub) is _NflowsRQ and _supported(sub):
            sub.__class__ = FastRQAutoregressive
    return module
