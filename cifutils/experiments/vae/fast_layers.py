"""Faster, equal-valued versions of the VAE's image layers: the CIF r-network, the encoder and
the decoder.

:class:`FastImageRNet` computes the CIF-VAE's auxiliary network ``r(u | w, x)`` by linearity,
and :class:`FastEncoder` and :class:`FastDecoder` the VAE's convolution and transposed
convolution (matrix products instead of convolution kernels, which are slow for a single
input or output channel, and no scatter-add in the compiled backward pass). Each has the same
parameters and function as the layer it replaces. :func:`accelerate` swaps them, and the
core's fast spline layers (:func:`cifutils.fast.accelerate`), into an existing model in
place, keeping the weights.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cifutils import fast

from .networks import Decoder, Encoder, ImageRNet

__all__ = [
    "accelerate",
    "FastImageRNet",
    "ImageContext",
    "FastEncoder",
    "FastDecoder",
    "cache_constants",
]


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
    """:class:`~cifutils.experiments.vae.networks.ImageRNet` (the CIF-VAE's ``r(u | w, x)``
    network) computed by linearity: the same parameters and function, no convolution at all.

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
    """:class:`~cifutils.experiments.vae.networks.Encoder` with its convolution written as one
    matrix product of the image's 4x4 patches (the same patches as :class:`FastImageRNet`'s,
    computed once per batch): same parameters, same function. Hidden units are kept
    position-major; the linear layer's weight is permuted to match."""

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        kernel = self.conv.weight.reshape(8, 16)
        patches = _image_patches(x.reshape(-1, 1, 28, 28).to(kernel.dtype))
        h = torch.tanh(torch.addmm(self.conv.bias, patches, kernel.T)).reshape(n, -1)
        return F.linear(h, _position_major(self.linear.weight), self.linear.bias)


class FastDecoder(Decoder):
    """:class:`~cifutils.experiments.vae.networks.Decoder` with its transposed convolution
    written as a matrix product and four shifted sums: same parameters, same function, and no
    scatter-add in either pass.

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


def accelerate(module: nn.Module) -> nn.Module:
    """Replace, in place, every spline layer of ``module`` by its fast version
    (:func:`cifutils.fast.accelerate`) and every
    :class:`~cifutils.experiments.vae.networks.ImageRNet`,
    :class:`~cifutils.experiments.vae.networks.Encoder` and
    :class:`~cifutils.experiments.vae.networks.Decoder` by :class:`FastImageRNet`,
    :class:`FastEncoder` and :class:`FastDecoder`. Returns ``module``.

    The class of each layer object is changed, not the object, so parameter names, optimizer
    state and checkpoints are unaffected.
    """
    fast.accelerate(module)
    for sub in module.modules():
        if type(sub) is ImageRNet:
            sub.__class__ = FastImageRNet
        elif type(sub) is Encoder:
            sub.__class__ = FastEncoder
        elif type(sub) is Decoder:
            sub.__class__ = FastDecoder
    return module
