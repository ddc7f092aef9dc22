"""Variational autoencoders with Gaussian, NSF and CIF-NSF amortized posteriors.

The generative model is ``p(z) = N(0, I)`` (``z`` in ``R^20``, or ``R^32`` for the Table-1
architecture) and ``p(x | z) = prod_pixels Bernoulli(x; sigmoid(decoder(z)))`` for a binary
28x28 image ``x``.

Two architectures (:data:`ARCHITECTURES`, REFERENCE.md, Experiment 2):

* ``"small"``, the CPU edition and the default: latent 20, the one-layer
  :class:`~cifutils.experiments.vae.networks.Decoder`, flows of spline steps with reversals between
  them;
* ``"table1"``, the configuration that most likely produced the slides' Table 1: latent 32,
  the residual :class:`~cifutils.experiments.vae.networks.ResDecoder` (842,641 parameters), flows in
  the authors' layout (a random permutation and an LU-linear layer around every spline step, CIF
  layers with the indexed affine before the spline).

The posterior ``q(z | x)`` is a :class:`~cifutils.families.VariationalFlow` whose base is the
amortized Gaussian ``q0(w0 | x)`` given by a small convolutional encoder; an NSF or a CIF-NSF
then transforms ``w0``. The CIF-NSF's auxiliary inference density ``r(u | w, x)`` sees both
the layer output ``w`` and the image (:class:`~cifutils.experiments.vae.networks.ImageRNet`).

Every posterior returns ``(z, log q)`` from one pass, where ``log q`` is exact for the
Gaussian and the NSF, and the auxiliary log-density for the CIF-NSF; so the (auxiliary) ELBO,
``E[log p(x, z) - log q]``, and the importance-weighted bound
``log (1/K) sum_k p(x, z_k) / q_k`` are the same formulas for all three.

The experiment itself (training with early stopping, checkpoints, test evaluation, the
command line) is in the other modules of :mod:`cifutils.experiments.vae`.

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

from cifutils.families import AmortizedGaussianBase, VariationalFlow, cif_nsf_family, nsf_family
from cifutils.objectives import iw_bound_chunked, mean_and_stderr

from .fast_layers import accelerate
from .networks import Decoder, Encoder, ImageRNet, ResDecoder

__all__ = [
    "POSTERIORS",
    "ALL_POSTERIORS",
    "ARCHITECTURES",
    "LATENT",
    "PAPER_SIZES",
    "TABLE1_SIZES",
    "ARCH_SIZES",
    "check_arch",
    "VAE",
    "make_posterior",
    "make_vae",
    "iw_log_likelihood",
    "parameter_counts",
    "print_parameter_counts",
]


#: The posterior kinds of Table 1.
POSTERIORS = ("gaussian", "nsf", "cif-nsf")


#: Table 1's posteriors and the NSF at the CIF-NSF's width (hidden 32, not parameter-matched),
#: which the authors also ran.
ALL_POSTERIORS = ("gaussian", "nsf", "nsf-32", "cif-nsf")


#: The model architectures, the small CPU edition and the Table-1 configuration.
ARCHITECTURES = ("small", "table1")


#: Latent dimension of each architecture.
LATENT = {"small": 20, "table1": 32}


#: Flow sizes of the small VAE, the CPU edition (REFERENCE.md, Experiment 2).
PAPER_SIZES: dict[str, dict] = {
    "gaussian": {},
    "nsf": {"layers": 10, "hidden": 44},
    "nsf-32": {"layers": 10, "hidden": 32},
    "cif-nsf": {"layers": 10, "hidden": 32, "dim_u": 2},
}


#: Flow sizes and layout of the Table-1 VAE, the authors' stack (random permutations and
#: LU-linear layers around each spline step; the CIF's affine before the spline).
TABLE1_SIZES: dict[str, dict] = {
    "gaussian": {},
    "nsf": {"layers": 10, "hidden": 44, "lu": True, "permute": "random"},
    "nsf-32": {"layers": 10, "hidden": 32, "lu": True, "permute": "random"},
    "cif-nsf": {
        "layers": 10,
        "hidden": 32,
        "dim_u": 2,
        "lu": True,
        "permute": "random",
        "order": "affine-first",
    },
}


#: The sizes of each architecture's posteriors.
ARCH_SIZES = {"small": PAPER_SIZES, "table1": TABLE1_SIZES}


def check_arch(arch: str) -> str:
    """``arch`` if it is one of :data:`ARCHITECTURES`, else a ValueError naming it."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
    return arch


def make_posterior(
    kind: str, latent: int | None = None, arch: str = "small", **sizes
) -> VariationalFlow:
    """The amortized posterior ``q(z | x)`` of Table 1: ``"gaussian"``, ``"nsf"``,
    ``"nsf-32"`` or ``"cif-nsf"`` of the architecture ``arch`` (default sizes
    :data:`ARCH_SIZES`, latent :data:`LATENT`; ``latent`` and ``sizes`` override them)."""
    if kind not in ALL_POSTERIORS:
        raise ValueError(f"posterior must be one of {ALL_POSTERIORS}, got {kind!r}")
    latent = LATENT[check_arch(arch)] if latent is None else latent
    base = AmortizedGaussianBase(Encoder(latent), latent)
    kw = {**ARCH_SIZES[arch][kind], **sizes}
    if kind == "gaussian":
        return VariationalFlow(base)
    if kind in ("nsf", "nsf-32"):
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


def make_vae(
    posterior: str, latent: int | None = None, fast: bool = True, arch: str = "small", **sizes
) -> VAE:
    """The VAE of Table 1 with the named posterior, in the architecture ``arch``
    (``"small"``, the CPU edition, by default; ``"table1"``: latent 32 and the
    :class:`~cifutils.experiments.vae.networks.ResDecoder`). With ``fast`` the spline layers (and
    the small model's convolutions) are swapped for :mod:`cifutils.fast`'s equal-valued fused
    versions (same parameters, same initialization, same function); only the speed differs."""
    latent = LATENT[check_arch(arch)] if latent is None else latent
    posterior_net = make_posterior(posterior, latent, arch, **sizes)
    decoder = ResDecoder(latent) if arch == "table1" else Decoder(latent)
    vae = VAE(posterior_net, decoder)
    if fast:
        accelerate(vae)
    return vae


@torch.no_grad()
def iw_log_likelihood(
    vae: VAE,
    images: Tensor,
    num_samples: int = 100,
    batch_size: int = 100,
    chunk_size: int = 100,
    return_ess: bool = False,
) -> tuple[float, float, Tensor] | tuple[float, float, Tensor, Tensor]:
    """The importance-weighted bound on ``log p(x)`` with ``K = num_samples`` per image,
    averaged over ``images (N, 1, 28, 28)`` (already binarized).

    Returns ``(mean, stderr, per-image bounds (N,))``; the standard error is over images.
    With ``return_ess``, also the effective sample size of each image's ``K`` weights
    (``(N,)``; the same bounds either way).
    For a CIF posterior the weights use the auxiliary density, ``p(x, z) r(u | z, x) /
    q(z, u | x)``, which still gives a lower bound on ``log p(x)``.
    """
    parts, ess = [], []
    for start in range(0, images.shape[0], batch_size):
        xb = images[start : start + batch_size]
        draw = lambda k, xb=xb: vae.log_weights(xb, k)  # noqa: E731  (binds this batch)
        out = iw_bound_chunked(draw, num_samples, chunk_size, return_ess=return_ess)
        parts.append(out[0] if return_ess else out)
        ess.extend([out[1]] if return_ess else [])
    bounds = torch.cat(parts)
    mean, stderr = mean_and_stderr(bounds)
    return (mean, stderr, bounds, torch.cat(ess)) if return_ess else (mean, stderr, bounds)


def parameter_counts(vae: VAE) -> dict[str, int]:
    """Trainable parameters of each part of ``vae``: ``encoder`` (the base ``q0(w0 | x)``),
    ``decoder``, ``flow`` (the spline steps and LU-linear layers, the CIF layers' extras left
    out), ``cif_st``, ``cif_q`` and ``cif_r`` (the CIF layers' s/t, ``q(u | w)`` and
    ``r(u | v, x)`` networks, all layers together), and ``total``."""
    from cifutils.cif import CIFLayer

    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    cif = [m for m in vae.posterior.layers if isinstance(m, CIFLayer)]
    parts = {
        "encoder": count(vae.posterior.base),
        "decoder": count(vae.decoder),
        "cif_st": sum(count(m.transform.st_net) for m in cif),
        "cif_q": sum(count(m.q_u) for m in cif),
        "cif_r": sum(count(m.r_u) for m in cif),
    }
    extras = parts["cif_st"] + parts["cif_q"] + parts["cif_r"]
    parts["flow"] = count(vae.posterior.layers) - extras
    parts["total"] = count(vae)
    return parts


def print_parameter_counts(
    archs: tuple[str, ...] = ARCHITECTURES, posteriors: tuple[str, ...] = ALL_POSTERIORS
) -> dict[tuple[str, str], dict[str, int]]:
    """Print (and return) :func:`parameter_counts` for each posterior of each architecture,
    one row each: encoder, decoder, flow, CIF extras (s/t, q, r) and total."""
    keys = ("encoder", "decoder", "flow", "cif_st", "cif_q", "cif_r", "total")
    print(f"{'arch':7s} {'posterior':9s}" + "".join(f"{k:>10s}" for k in keys))
    table = {}
    for arch in archs:
        for kind in posteriors:
            parts = parameter_counts(make_vae(kind, arch=arch, fast=False))
            table[arch, kind] = parts
            print(f"{arch:7s} {kind:9s}" + "".join(f"{parts[k]:10,d}" for k in keys))
    return table
