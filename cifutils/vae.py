"""Variational autoencoders with Gaussian, NSF and CIF-NSF amortized posteriors.

The generative model is ``p(z) = N(0, I)`` (``z`` in ``R^20``) and
``p(x | z) = prod_pixels Bernoulli(x; sigmoid(decoder(z)))`` for a binary 28x28 image ``x``.
The posterior ``q(z | x)`` is a :class:`~cifutils.families.VariationalFlow` whose base is the
amortized Gaussian ``q0(w0 | x)`` given by a small convolutional encoder; an NSF or a CIF-NSF
then transforms ``w0``. The CIF-NSF's auxiliary inference density ``r(u | w, x)`` sees both
the layer output ``w`` and the image (:class:`ImageRNet`).

Every posterior returns ``(z, log q)`` from one pass, where ``log q`` is exact for the
Gaussian and the NSF, and the auxiliary log-density for the CIF-NSF; so the (auxiliary) ELBO,
``E[log p(x, z) - log q]``, and the importance-weighted bound
``log (1/K) sum_k p(x, z_k) / q_k`` are the same formulas for all three.

The experiment itself (training with early stopping, checkpoints, test evaluation, the
command line) is in ``cifutils.vae_experiment``; :func:`main` here is its entry point.

References:
    Kingma, Welling. Auto-encoding variational Bayes. ICLR 2014.
    Burda, Grosse, Salakhutdinov. Importance weighted autoencoders. ICLR 2016.
    Caterini, Cornish, Sejdinovic, Doucet. Variational inference with continuously-indexed
    normalizing flows. ICML 2020 INNF+ workshop / UAI 2021.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .families import AmortizedGaussianBase, VariationalFlow, cif_nsf_family, nsf_family
from .objectives import iw_bound_chunked, mean_and_stderr

__all__ = [
    "POSTERIORS",
    "PAPER_SIZES",
    "Encoder",
    "Decoder",
    "ImageRNet",
    "VAE",
    "make_posterior",
    "make_vae",
    "iw_log_likelihood",
    "main",
]

#: The posterior kinds of Table 1.
POSTERIORS = ("gaussian", "nsf", "cif-nsf")

#: Flow sizes of the paper's small VAE (REFERENCE.md, Experiment 2).
PAPER_SIZES: dict[str, dict] = {
    "gaussian": {},
    "nsf": {"layers": 10, "hidden": 44},
    "cif-nsf": {"layers": 10, "hidden": 32, "dim_u": 2},
}

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


def make_posterior(kind: str, latent: int = 20, **sizes) -> VariationalFlow:
    """The amortized posterior ``q(z | x)`` of Table 1: ``"gaussian"``, ``"nsf"`` or
    ``"cif-nsf"`` (default sizes :data:`PAPER_SIZES`; ``sizes`` override them)."""
    if kind not in POSTERIORS:
        raise ValueError(f"posterior must be one of {POSTERIORS}, got {kind!r}")
    base = AmortizedGaussianBase(Encoder(latent), latent)
    kw = {**PAPER_SIZES[kind], **sizes}
    if kind == "gaussian":
        return VariationalFlow(base)
    if kind == "nsf":
        return nsf_family(latent, base=base, **kw)
    dim_u = kw.setdefault("dim_u", 2)
    return cif_nsf_family(latent, base=base, r_net_factory=lambda: ImageRNet(latent, dim_u), **kw)


class VAE(nn.Module):
    """A Bernoulli-decoder VAE with a :class:`~cifutils.families.VariationalFlow` posterior.

    Args:
        posterior: ``q(z | x)`` (amortized on the image).
        decoder: ``z -> logits`` of ``p(x | z)``.
    """

    def __init__(self, posterior: VariationalFlow, decoder: nn.Module) -> None:
        super().__init__()
        self.posterior = posterior
        self.decoder = decoder
        self.latent = posterior.dim

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x, z) = log N(z; 0, I) + log p(x | z)`` for ``x (B, 1, 28, 28)`` and
        ``z (B, S, d)``; returns ``(B, S)``."""
        b, s, d = z.shape
        logits = self.decoder(z.reshape(b * s, d)).view(b, s, -1)
        target = x.reshape(b, 1, -1).expand_as(logits)
        log_px = -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)
        log_pz = -0.5 * (z.pow(2).sum(-1) + d * math.log(2 * math.pi))
        return log_px + log_pz

    def log_weights(self, x: Tensor, num_samples: int = 1) -> Tensor:
        """``log p(x, z_k) - log q_k`` for ``num_samples`` draws ``z_k ~ q(. | x)``:
        ``(B, num_samples)``. ``log q`` is auxiliary for a CIF posterior."""
        z, log_q = self.posterior.sample_and_log_prob(num_samples, context=x)
        return self.log_joint(x, z) - log_q

    def elbo(self, x: Tensor) -> Tensor:
        """One-sample (auxiliary) ELBO of each image, ``(B,)``."""
        return self.log_weights(x, 1)[:, 0]

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Bernoulli means ``sigmoid(decoder(z))`` for one ``z ~ q(z | x)`` per image."""
        z, _ = self.posterior.sample_and_log_prob(1, context=x)
        return torch.sigmoid(self.decoder(z[:, 0]))

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Bernoulli means of ``n`` images decoded from the prior, ``(n, 1, 28, 28)``."""
        ref = next(self.decoder.parameters())
        return torch.sigmoid(
            self.decoder(torch.randn(n, self.latent, dtype=ref.dtype, device=ref.device))
        )


def make_vae(posterior: str, latent: int = 20, fast: bool = True, **sizes) -> VAE:
    """The VAE of Table 1 with the named posterior. With ``fast`` the spline layers are
    swapped for :mod:`cifutils.fast`'s equal-valued fused version (same parameters, same
    initialization, same function); only the speed differs."""
    vae = VAE(make_posterior(posterior, latent, **sizes), Decoder(latent))
    if fast:
        from .fast import accelerate

        accelerate(vae)
    return vae


@torch.no_grad()
def iw_log_likelihood(
    vae: VAE,
    images: Tensor,
    num_samples: int = 100,
    batch_size: int = 100,
    chunk_size: int = 100,
) -> tuple[float, float, Tensor]:
    """The importance-weighted bound on ``log p(x)`` with ``K = num_samples`` per image,
    averaged over ``images (N, 1, 28, 28)`` (already binarized).

    Returns ``(mean, stderr, per-image bounds (N,))``; the standard error is over images.
    For a CIF posterior the weights use the auxiliary density, ``p(x, z) r(u | z, x) /
    q(z, u | x)``, which still gives a lower bound on ``log p(x)``.
    """
    parts = []
    for start in range(0, images.shape[0], batch_size):
        xb = images[start : start + batch_size]
        draw = lambda k, xb=xb: vae.log_weights(xb, k)  # noqa: E731  (binds this batch)
        parts.append(iw_bound_chunked(draw, num_samples, chunk_size))
    bounds = torch.cat(parts)
    mean, stderr = mean_and_stderr(bounds)
    return mean, stderr, bounds


def main(argv: list[str] | None = None) -> int:
    """``python -m cifutils.experiments vae ...``: see ``cifutils.vae_experiment``."""
    from .vae_experiment import main as run

    return run(argv)
