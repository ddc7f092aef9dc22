"""The VAE's networks: the encoder, the two decoders (the small one and Table 1's residual one)
and the CIF posterior's auxiliary network ``r(u | w, x)`` that reads the image.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["Encoder", "Decoder", "ResBlock", "UpBlock", "ResDecoder", "ImageRNet"]


_HIDDEN_SHAPE = (8, 14, 14)  # channels x height x width after the stride-2 convolution


_HIDDEN = 8 * 14 * 14  # 1568


class Encoder(nn.Module):
    """``x (B, 1, 28, 28) -> (B, 2 latent)``: mean and log-std of ``q0(w0 | x)``.

    Conv(1 -> 8, kernel 4, stride 2, padding 1), tanh, Linear(1568 -> 2 latent).
    """

    def __init__(self, latent: int = 20) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 4, stride=2, padding=1)
        self.linear = nn.Linear(_HIDDEN, 2 * latent)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(torch.tanh(self.conv(x)).flatten(1))


class Decoder(nn.Module):
    """``z (N, latent) -> logits (N, 1, 28, 28)`` of ``p(x | z)``.

    Linear(latent -> 1568), tanh, ConvTranspose(8 -> 1, kernel 4, stride 2, padding 1).
    """

    def __init__(self, latent: int = 20) -> None:
        super().__init__()
        self.linear = nn.Linear(latent, _HIDDEN)
        self.deconv = nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        return self.deconv(torch.tanh(self.linear(z)).view(-1, *_HIDDEN_SHAPE))


class ResBlock(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` on ``(N, C, H, W)``; both convolutions 3x3,
    padding 1, ``C -> C``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class UpBlock(nn.Module):
    """``shortcut(x) + conv2(relu(conv1(relu(x))))``: ``(N, C, H, W) -> (N, C/2, H', W')``
    with ``H' = 2H - 1 + output_padding``.

    ``conv1`` is a 3x3 convolution ``C -> C`` (padding 1) at the low resolution; ``conv2``
    and ``shortcut`` are each a transposed convolution ``C -> C/2``, kernel 3, stride 2,
    padding 1.
    """

    def __init__(self, channels: int, output_padding: int = 1) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        up = dict(stride=2, padding=1, output_padding=output_padding)
        self.conv2 = nn.ConvTranspose2d(channels, half, 3, **up)
        self.shortcut = nn.ConvTranspose2d(channels, half, 3, **up)

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.conv2(F.relu(self.conv1(F.relu(x))))


class ResDecoder(nn.Module):
    """The Table-1 decoder: ``z (N, latent) -> logits (N, 1, 28, 28)``, residual and
    convolutional, channel multiplier ``c`` (16: 842,641 parameters for latent 32).

    Linear(latent -> 8c x 4 x 4), then Res(8c), Up(8c -> 4c, 4 -> 7), Res(4c),
    Up(4c -> 2c, 7 -> 14), Res(2c), Up(2c -> c, 14 -> 28), ReLU, Conv 1x1 (c -> 1).
    No batch norm, no dropout.
    """

    def __init__(self, latent: int = 32, channels: int = 16) -> None:
        super().__init__()
        top = 8 * channels
        self.top = top
        self.linear = nn.Linear(latent, top * 16)
        self.blocks = nn.Sequential(
            ResBlock(top),
            UpBlock(top, output_padding=0),  # 4x4 -> 7x7
            ResBlock(top // 2),
            UpBlock(top // 2),  # 7x7 -> 14x14
            ResBlock(top // 4),
            UpBlock(top // 4),  # 14x14 -> 28x28
        )
        self.out = nn.Conv2d(channels, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.blocks(self.linear(z).view(-1, self.top, 4, 4))
        return self.out(F.relu(h))


class ImageRNet(nn.Module):
    """The network of ``r(u | w, x)``: ``(w (N, d), x (N, 1, 28, 28)) -> (N, 2 dim_u)``.

    ``w`` -> Linear(d -> 49) -> a 1x7x7 map -> bilinear upsampling to 28x28, stacked with the
    image as a second channel -> Conv(2 -> 8, kernel 4, stride 2, padding 1), tanh,
    Linear(1568 -> 2 dim_u) (mean, then log-std).
    """

    def __init__(self, latent: int = 20, dim_u: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(latent, 49)
        self.conv = nn.Conv2d(2, 8, 4, stride=2, padding=1)
        self.out = nn.Linear(_HIDDEN, 2 * dim_u)

    def forward(self, w: Tensor, context: Tensor | None = None) -> Tensor:
        if context is None:
            raise ValueError("ImageRNet needs the image x as context")
        grid = self.embed(w).view(-1, 1, 7, 7)
        grid = F.interpolate(grid, size=(28, 28), mode="bilinear", align_corners=False)
        h = torch.cat([grid, context.reshape(-1, 1, 28, 28).to(grid.dtype)], dim=1)
        return self.out(torch.tanh(self.conv(h)).flatten(1))
