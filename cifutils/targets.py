"""Two-dimensional target densities with known normalizing constants.

Each target gives an (unnormalized) ``log_prob(z)`` for ``z`` of shape ``(n, 2)`` and its
``log_normalizer`` ``log Z = log \\int exp(log_prob(z)) dz`` (the book's evidence ``log p(x)``,
with ``log_prob`` in the role of ``log p(x, z)``). The ELBO of any ``q`` is then
``<= log Z``, with equality iff ``q`` is the normalized target: the numbers in the book
can be checked against a known answer.

* :class:`GaussianMixture` -- the paper's lattice mixture (normalized, ``log Z = 0``);
* :class:`Banana` -- a sheared Gaussian, ``log Z`` in closed form;
* :class:`Ring` -- a Gaussian ridge around a circle, ``log Z`` in closed form.

:func:`quadrature_log_normalizer` checks any of them on a grid.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "Target",
    "GaussianMixture",
    "Banana",
    "Ring",
    "quadrature_log_normalizer",
    "get_target",
    "TARGETS",
]

_LOG_2PI = math.log(2 * math.pi)


def _check_positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class Target:
    """A 2-D target: unnormalized ``log_prob`` and its ``log_normalizer``."""

    dim = 2
    #: ``log Z``; 0 for a normalized density.
    log_normalizer: float = 0.0

    def _check(self, z: Tensor) -> None:
        if not isinstance(z, Tensor) or z.ndim != 2 or z.shape[1] != self.dim:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (n, {self.dim}), got {shape}")
        if not z.is_floating_point():
            raise ValueError(f"z must be floating point, got {z.dtype}")

    def log_prob(self, z: Tensor) -> Tensor:
        """Unnormalized log-density, ``(n, 2) -> (n,)``."""
        self._check(z)
        return self._log_prob(z)

    def __call__(self, z: Tensor) -> Tensor:
        return self.log_prob(z)

    def _log_prob(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class GaussianMixture(Target):
    """Equal-weight isotropic Gaussians centred on a square lattice (normalized).

    ``p(z) = (1/C) sum_c N(z; m_c, std^2 I)`` with ``m_c`` in ``lattice x lattice``.
    The paper's target is ``lattice = (-2, 0, 2)``, ``std = 0.25`` (9 components);
    ``(-3, -1, 1, 3)`` gives the 16-component variant.
    """

    def __init__(self, lattice: Sequence[float] = (-2.0, 0.0, 2.0), std: float = 0.25) -> None:
        self.std = _check_positive("std", std)
        if len(lattice) < 1:
            raise ValueError("lattice must have at least one point")
        self.means = torch.tensor(list(itertools.product(lattice, lattice)), dtype=torch.float64)
        self.log_normalizer = 0.0

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def _log_prob(self, z: Tensor) -> Tensor:
        means = self.means.to(z)
        sq = (z[:, None, :] - means[None]).pow(2).sum(-1) / self.std**2
        log_comp = -0.5 * sq - 2 * math.log(self.std) - _LOG_2PI
        return torch.logsumexp(log_comp, dim=1) - math.log(self.num_components)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact samples, ``(n, 2)`` float32."""
        idx = torch.randint(self.num_components, (n,), generator=generator)
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (self.means[idx] + self.std * noise).float()

    def nearest_component(self, z: Tensor) -> Tensor:
        """Index of the nearest mean for each row of ``z``, ``(n,)`` long."""
        self._check(z)
        return torch.cdist(z.double(), self.means.to(z.device)).argmin(dim=1)


class Banana(Target):
    """A sheared ("banana") Gaussian, unnormalized:

    ``log p(z) = -z_1^2 / (2 s_1^2) - (z_2 - b (z_1^2 - s_1^2))^2 / (2 s_2^2)``.

    The shear ``z_2 -> z_2 - b(z_1^2 - s_1^2)`` has unit Jacobian, so
    ``log Z = log(2 pi s_1 s_2)`` exactly.
    """

    def __init__(self, s1: float = 1.0, s2: float = 0.5, b: float = 0.75) -> None:
        self.s1 = _check_positive("s1", s1)
        self.s2 = _check_positive("s2", s2)
        if not math.isfinite(b):
            raise ValueError(f"b must be finite, got {b!r}")
        self.b = float(b)
        self.log_normalizer = _LOG_2PI + math.log(self.s1 * self.s2)

    def _log_prob(self, z: Tensor) -> Tensor:
        z1, z2 = z[:, 0], z[:, 1]
        y2 = z2 - self.b * (z1.pow(2) - self.s1**2)
        return -0.5 * (z1 / self.s1).pow(2) - 0.5 * (y2 / self.s2).pow(2)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact samples, ``(n, 2)`` float32."""
        e = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        z1 = self.s1 * e[:, 0]
        z2 = self.s2 * e[:, 1] + self.b * (z1.pow(2) - self.s1**2)
        return torch.stack([z1, z2], dim=1).float()


class Ring(Target):
    """A Gaussian ridge of width ``width`` around the circle of radius ``radius``:

    ``log p(z) = -(|z| - R)^2 / (2 s^2)`` (unnormalized). In polar coordinates

    ``Z = 2 pi [ s^2 exp(-R^2 / (2 s^2)) + R s sqrt(2 pi) Phi(R / s) ]``

    with ``Phi`` the standard normal CDF.
    """

    def __init__(self, radius: float = 2.0, width: float = 0.25) -> None:
        self.radius = _check_positive("radius", radius)
        self.width = _check_positive("width", width)
        r, s = self.radius, self.width
        phi = 0.5 * (1 + math.erf(r / (s * math.sqrt(2))))
        z = (
            2
            * math.pi
            * (s**2 * math.exp(-(r**2) / (2 * s**2)) + r * s * math.sqrt(2 * math.pi) * phi)
        )
        self.log_normalizer = math.log(z)

    def _log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * ((z.norm(dim=1) - self.radius) / self.width).pow(2)


def quadrature_log_normalizer(target: Target, bound: float = 6.0, n: int = 1201) -> float:
    """``log Z`` by the trapezoid rule on an ``n x n`` grid over ``[-bound, bound]^2``
    (float64). Accurate when the target's mass lies well inside the box."""
    x = torch.linspace(-bound, bound, n, dtype=torch.float64)
    zz = torch.cartesian_prod(x, x)
    logp = target.log_prob(zz).reshape(n, n)
    h = (x[1] - x[0]).item()
    w = torch.ones(n, dtype=torch.float64)
    w[0] = w[-1] = 0.5
    log_w = torch.log(w[:, None] * w[None, :]) + 2 * math.log(h)
    return torch.logsumexp(logp + log_w, dim=(0, 1)).item()


#: Named targets for the experiments and chapters.
TARGETS = {
    "mog9": lambda: GaussianMixture((-2.0, 0.0, 2.0), 0.25),
    "mog16": lambda: GaussianMixture((-3.0, -1.0, 1.0, 3.0), 0.25),
    "banana": Banana,
    "ring": Ring,
}


def get_target(name: str) -> Target:
    """A target by name: ``"mog9"`` (the paper's), ``"mog16"``, ``"banana"``, ``"ring"``."""
    if name not in TARGETS:
        raise ValueError(f"name must be one of {sorted(TARGETS)}, got {name!r}")
    return TARGETS[name]()
