"""Faster, equal-valued layers for the VAE experiment: the autoregressive rational-quadratic
spline layer, the CIF r-network, the encoder and the decoder.

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
:class:`FastImageRNet` does the same for the CIF-VAE's auxiliary network ``r(u | w, x)``, and
:class:`FastEncoder` and :class:`FastDecoder` for the VAE's convolution and transposed
convolution (matrix products instead of convolution kernels, which are slow for a single
input or output channel, and no scatter-add in the compiled backward pass).
:func:`accelerate` swaps these layers into an existing model in place, keeping the weights,
so a model built with a seed is the same model with or without the fast path.

References:
    Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. NeurIPS 2019 (eqs. 4-5).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from nflows.transforms.autoregressive import (
    MaskedPiecewiseRationalQuadraticAutoregressiveTransform as _NflowsRQ,
)
from torch import Tensor, nn
from torch.nn import functional as F

from .vae import Decoder, Encoder, ImageRNet

__all__ = [
    "rq_spline",
    "FastRQAutoregressive",
    "FastImageRNet",
    "ImageContext",
    "FastEncoder",
    "FastDecoder",
    "accelerate",
    "cache_constants",
]


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


_PATCH_CACHE: list = [None, None, None]  # [image tensor, its patches, its key]


def _patches(x: Tensor) -> Tensor:
    """``(N, 196, 16)``: the 4x4 stride-2 patches (zero padding 1) of ``x (N, 1, 28, 28)``,
    position-major: the inputs of the r-network's convolution at each output position."""
    return F.unfold(x, 4, padding=1, stride=2).transpose(1, 2)


def _image_patches(x: Tensor) -> Tensor:
    """``(N * 196, 16)``: the 4x4 stride-2 patches of ``x (N, 1, 28, 28)`` (zero padding 1),
    position-major. The encoder and the r-networks of one forward pass get the same images,
    each time through a fresh view (``reshape``), so the last result is reused while a tensor
    with the same memory, layout and version counter comes back. The cache holds that tensor, so its
    memory cannot be freed and reused by other data in the meantime; writing to it in place
    bumps the version and forces a recomputation."""
    if torch.compiler.is_compiling():  # one traced graph: the compiler shares the work
        return _patches(x).reshape(-1, 16)
    key = (x.data_ptr(), tuple(x.shape), x.stride(), x.dtype, x.device, x._version)
    if _PATCH_CACHE[2] == key:
        return _PATCH_CACHE[1]
    patches = _patches(x).reshape(-1, 16)
    _PATCH_CACHE[:] = [x, patches, key]
    return patches


_UPSAMPLED_PATCHES: dict = {}


def _upsampled_patches(dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(49, 196, 16)``: the 4x4 stride-2 patches (zero padding 1) of the bilinear 28x28
    upsampling of each of the 49 unit 7x7 maps: a constant of the geometry, so that
    ``conv(upsample(m))`` is a matrix product for any 7x7 map ``m``."""
    key = (dtype, device)
    if key in _UPSAMPLED_PATCHES:  # traced: enters the graph as a constant input
        return _UPSAMPLED_PATCHES[key]
    units = torch.eye(49, dtype=dtype, device=device).view(49, 1, 7, 7)
    patches = _patches(F.interpolate(units, size=(28, 28), mode="bilinear", align_corners=False))
    # (traced before :func:`cache_constants` ran: computed inside the graph, at every call)
    if not torch.compiler.is_compiling():
        _UPSAMPLED_PATCHES[key] = patches.contiguous()
    return patches


def cache_constants(module: nn.Module) -> None:
    """Compute, outside any ``torch.compile`` trace, the constants that the fast layers of
    ``module`` need on its device and dtype, so that a compiled graph reads them instead of
    recomputing them at every call. Call it after moving ``module``."""
    for sub in module.modules():
        if isinstance(sub, FastImageRNet):
            weight = sub.conv.weight
            with torch.no_grad():
                _upsampled_patches(weight.dtype, weight.device)


def _position_major(weight: Tensor) -> Tensor:
    """A linear layer's weight over the 1568 hidden units of an 8x14x14 map, its columns
    reordered from channel-major to position-major (how the fast layers lay the map out)."""
    return weight.view(weight.shape[0], 8, 196).transpose(1, 2).reshape(weight.shape[0], -1)


class ImageContext(NamedTuple):
    """What :meth:`FastImageRNet.group_context` prepares for one CIF layer's r-network:
    ``image``, the image's part of the hidden pre-activations, the convolution's bias
    included, one row per observation (not per sample), ``(B, 196, 8)`` (position, channel;
    a strided view into the parts of all layers); ``unit_maps``, the convolution of the
    upsampled unit 7x7 maps, ``(49, 196, 8)`` (a strided view likewise); ``samples``, how
    many consecutive rows of ``w`` belong to each observation."""

    image: Tensor
    unit_maps: Tensor
    samples: int


class FastImageRNet(ImageRNet):
    """:class:`~cifutils.vae.ImageRNet` (the CIF-VAE's ``r(u | w, x)`` network) computed by
    linearity: the same parameters and function, no convolution at all.

    The convolution of the two stacked channels is the sum of a convolution of the image and
    one of ``upsample(Linear(w))``. Upsampling and the convolution's first input channel are
    linear maps from the 7x7 map to the 1568 hidden units; their product ``M (49, 1568)`` is
    the fixed patches of the upsampled unit maps times the kernel, so the ``w`` part is
    ``w @ (W_embed^T M) + b_embed M``: two small matrix products per layer, in place of an
    upsampling and a convolution of every row. The image part is a matrix product with the
    image's patches. Hidden units are kept position-major; the output layer's weight is
    permuted to match.

    Called with the image rows as context, one layer computes its own image part. A
    :class:`~cifutils.families.VariationalFlow` whose CIF layers all have this network calls
    :meth:`group_context` instead, which computes the image parts and the maps ``M`` of all
    layers in one matrix product each (80 columns instead of ten products of 8), and the image
    parts once per image rather than once per sample: the ``K`` samples of an importance-
    weighted bound share them.
    """

    @staticmethod
    def group_context(
        nets: list[FastImageRNet], context: Tensor, num_samples: int
    ) -> list[ImageContext]:
        """The :class:`ImageContext` of each of ``nets`` (in order) for the observations
        ``context (B, ...)``, each repeated ``num_samples`` times (consecutive rows)."""
        kernels = torch.cat([net.conv.weight.reshape(8, 2, 16) for net in nets])
        bias = torch.cat([net.conv.bias for net in nets])
        patches = _image_patches(context.reshape(-1, 1, 28, 28).to(kernels.dtype))
        image = torch.addmm(bias, patches, kernels[:, 1].T)  # (B * 196, layers * 8)
        units = _upsampled_patches(kernels.dtype, kernels.device).reshape(-1, 16)
        unit_maps = units @ kernels[:, 0].T  # (49 * 196, layers * 8)
        # unbind: views, no copy, and its backward stacks the layers' gradients in one copy
        images = image.view(context.shape[0], 196, len(nets), 8).unbind(2)
        maps = unit_maps.view(49, 196, len(nets), 8).unbind(2)
        return [ImageContext(a, m, num_samples) for a, m in zip(images, maps)]

    def forward(self, w: Tensor, context: Tensor | ImageContext | None = None) -> Tensor:
        if context is None:
            raise ValueError("ImageRNet needs the image x as context")
        if not isinstance(context, ImageContext):  # the image rows, one per row of w
            context = self.group_context([self], context, 1)[0]
        image, unit_maps, samples = context
        unit_maps = unit_maps.reshape(49, -1)  # position-major (49, 1568)
        slope = self.embed.weight.T @ unit_maps  # (d, 1568)
        offset = self.embed.bias @ unit_maps  # (1568,)
        # the image part broadcast over each observation's samples, never repeated
        pre = (w @ slope).view(-1, samples, 196, 8) + (image + offset.view(196, 8)).unsqueeze(1)
        h = torch.tanh(pre.reshape(w.shape[0], -1))
        return F.linear(h, _position_major(self.out.weight), self.out.bias)


class FastEncoder(Encoder):
    """:class:`~cifutils.vae.Encoder` with its convolution written as one matrix product
    of the image's 4x4 patches (the same patches as :class:`FastImageRNet`'s, computed once
    per batch): same parameters, same function. Hidden units are kept position-major; the
    linear layer's weight is permuted to match."""

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        kernel = self.conv.weight.reshape(8, 16)
        patches = _image_patches(x.reshape(-1, 1, 28, 28).to(kernel.dtype))
        h = torch.tanh(torch.addmm(self.conv.bias, patches, kernel.T)).reshape(n, -1)
        return F.linear(h, _position_major(self.linear.weight), self.linear.bias)


class FastDecoder(Decoder):
    """:class:`~cifutils.vae.Decoder` with its transposed convolution written as a matrix
    product and four shifted sums: same parameters, same function, and no scatter-add in
    either pass.

    With kernel 4, stride 2 and padding 1, input position ``i`` feeds output rows
    ``2i - 1 + ky``. Writing ``ky = 2 qy + ry`` (``qy, ry`` in ``{0, 1}``), row ``2i - 1 + ky``
    is row ``2 m + ry`` of the output padded by one, ``m = i + qy``. So each input pixel's
    8 channels times the kernel, ``(8) @ (8, 16)``, give its 16 contributions, and the output
    is the sum over ``(qy, qx)`` of those contributions shifted by ``(qy, qx)`` blocks, then
    cropped.
    """

    def forward(self, z: Tensor) -> Tensor:
        n = z.shape[0]
        lin = self.linear
        # batch innermost throughout, so that every elementwise pass runs over long rows
        h = torch.tanh(torch.addmm(lin.bias.unsqueeze(1), lin.weight, z.T))  # (8 * 196, n)
        parts = self.deconv.weight.reshape(8, 16).T @ h.view(8, -1)  # (16, 196 n)
        parts = parts.view(2, 2, 2, 2, 14, 14, n)  # (qy, ry, qx, rx, i, j, n)
        total = None
        for qy in (0, 1):
            for qx in (0, 1):
                part = F.pad(parts[qy, :, qx], (0, 0, qx, 1 - qx, qy, 1 - qy))  # (ry, rx, m, mx, n)
                total = part if total is None else total + part
        out = total.permute(4, 2, 0, 3, 1).reshape(n, 30, 30)[:, 1:29, 1:29]
        return (out + self.deconv.bias).reshape(n, 1, 28, 28)


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
        elif type(sub) is ImageRNet:
            sub.__class__ = FastImageRNet
        elif type(sub) is Encoder:
            sub.__class__ = FastEncoder
        elif type(sub) is Decoder:
            sub.__class__ = FastDecoder
    return module
