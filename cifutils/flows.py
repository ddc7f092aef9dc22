"""Rational-quadratic spline flows built from nflows parts.

Every builder returns an nflows :class:`~nflows.transforms.base.Transform`, so the one
contract of the whole library holds: ``forward(inputs, context=None) -> (outputs, logabsdet)``
with ``logabsdet`` of shape ``(batch,)``, and ``inverse`` likewise.

In variational inference the *forward* direction is the sampling direction. For the
autoregressive (MADE) spline this direction is a single network pass, because the spline
parameters of coordinate ``i`` are computed from the *inputs* ``w_{<i}``; the inverse needs
``dim`` sequential passes and is used only for evaluation (the marginal-ELBO estimator).
This is the inverse-autoregressive arrangement of Kingma et al. (2016).

References:
    Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. NeurIPS 2019.
    Germain, Gregor, Murray, Larochelle. MADE. ICML 2015.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from nflows.nn.nets import ResidualNet
from nflows.transforms.autoregressive import (
    MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
)
from nflows.transforms.base import CompositeTransform, Transform
from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform
from nflows.transforms.permutations import RandomPermutation, ReversePermutation
from torch.nn import functional as F

__all__ = [
    "check_spline_args",
    "rq_autoregressive_step",
    "rq_coupling_step",
    "permutation",
    "spline_flow",
    "compose",
    "interleave_permutations",
    "lu_permutation_stack",
    "LULinear",
    "LowerTriangularAffine",
    "ElementwiseAffine",
    "num_parameters",
]

#: Minimum bin width, bin height and knot derivative (REFERENCE: 1e-3 each).
MIN_BIN = 1e-3


def check_spline_args(
    dim: int, hidden: int, bins: int, tail_bound: float, blocks: int, layers: int = 1
) -> None:
    """Raise :class:`ValueError` naming the first invalid spline hyperparameter."""
    for name, value, low in (
        ("dim", dim, 1),
        ("hidden", hidden, 1),
        ("bins", bins, 1),
        ("blocks", blocks, 1),
        ("layers", layers, 0),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not (isinstance(tail_bound, (int, float)) and tail_bound > 0):
        raise ValueError(f"tail_bound must be a positive number, got {tail_bound!r}")
    if bins * MIN_BIN >= 1.0:
        raise ValueError(f"bins={bins} is too many for the minimum bin width {MIN_BIN}")


def rq_autoregressive_step(
    dim: int,
    hidden: int = 32,
    bins: int = 8,
    tail_bound: float = 3.0,
    blocks: int = 2,
    context_features: int | None = None,
) -> Transform:
    """One autoregressive rational-quadratic spline layer (MADE with residual blocks).

    Coordinate ``i`` of the output is ``z_i = h_i(w_i; theta_i(w_{<i}))``, where ``h_i`` is a
    monotone rational-quadratic spline with ``bins`` bins on ``[-tail_bound, tail_bound]``
    and the identity (linear tails) outside it. The log-determinant is
    ``sum_i log h_i'(w_i)``.

    Args:
        dim: number of features ``D``; inputs have shape ``(batch, D)``.
        hidden: width of the MADE's hidden layers.
        bins: number of spline bins ``K``.
        tail_bound: the spline acts on ``[-B, B]``; linear (identity) tails outside.
        blocks: number of residual blocks in the MADE (ReLU, no batch norm).
        context_features: size of an optional context vector fed to the MADE.

    Returns:
        An nflows transform; ``forward`` is one network pass, ``inverse`` is ``D`` passes.
    """
    check_spline_args(dim, hidden, bins, tail_bound, blocks)
    return MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
        features=dim,
        hidden_features=hidden,
        context_features=context_features,
        num_bins=bins,
        tails="linear",
        tail_bound=float(tail_bound),
        num_blocks=blocks,
        use_residual_blocks=True,
        random_mask=False,
        activation=F.relu,
        dropout_probability=0.0,
        use_batch_norm=False,
        min_bin_width=MIN_BIN,
        min_bin_height=MIN_BIN,
        min_derivative=MIN_BIN,
    )


def rq_coupling_step(
    dim: int,
    hidden: int = 32,
    bins: int = 8,
    tail_bound: float = 3.0,
    blocks: int = 2,
    context_features: int | None = None,
    parity: int = 0,
) -> Transform:
    """One coupling rational-quadratic spline layer.

    The features with ``(index + parity) % 2 == 1`` are transformed by splines whose
    parameters are a residual network of the other half; the other half passes unchanged.
    Forward and inverse are both one network pass. Needs ``dim >= 2``.

    Args:
        dim: number of features ``D >= 2``.
        hidden, bins, tail_bound, blocks, context_features: as in
            :func:`rq_autoregressive_step`.
        parity: 0 or 1, which half is transformed.
    """
    check_spline_args(dim, hidden, bins, tail_bound, blocks)
    if dim < 2:
        raise ValueError(f"dim must be >= 2 for a coupling layer, got {dim}")
    mask = (torch.arange(dim) + parity) % 2

    def make_net(in_features: int, out_features: int) -> ResidualNet:
        return ResidualNet(
            in_features,
            out_features,
            hidden_features=hidden,
            context_features=context_features,
            num_blocks=blocks,
            activation=F.relu,
            use_batch_norm=False,
        )

    return PiecewiseRationalQuadraticCouplingTransform(
        mask=mask,
        transform_net_create_fn=make_net,
        num_bins=bins,
        tails="linear",
        tail_bound=float(tail_bound),
        min_bin_width=MIN_BIN,
        min_bin_height=MIN_BIN,
        min_derivative=MIN_BIN,
    )


def permutation(dim: int, kind: str = "reverse") -> Transform:
    """A fixed permutation of the features (log-determinant 0).

    Args:
        dim: number of features.
        kind: ``"reverse"`` (deterministic) or ``"random"`` (drawn once from torch's RNG).
    """
    if kind == "reverse":
        return ReversePermutation(dim)
    if kind == "random":
        return RandomPermutation(dim)
    raise ValueError(f"kind must be 'reverse' or 'random', got {kind!r}")


def spline_flow(
    dim: int,
    layers: int = 5,
    hidden: int = 32,
    bins: int = 8,
    tail_bound: float = 3.0,
    blocks: int = 2,
    kind: str = "autoregressive",
    permute: str = "reverse",
) -> list[Transform]:
    """The layers of a neural spline flow (NSF): ``layers`` spline steps with a
    permutation between consecutive steps.

    Args:
        dim: number of features.
        layers: number of spline steps ``L``.
        kind: ``"autoregressive"`` (single-pass sampling) or ``"coupling"``.
        permute: ``"reverse"`` or ``"random"`` permutations between steps.

    Returns:
        A list of ``2L - 1`` transforms; wrap it in
        :class:`nflows.transforms.base.CompositeTransform` for a single transform, or pass it
        to :class:`cifutils.families.VariationalFlow`.
    """
    check_spline_args(dim, hidden, bins, tail_bound, blocks, layers)
    if kind == "autoregressive":
        make = rq_autoregressive_step
    elif kind == "coupling":
        make = rq_coupling_step
    else:
        raise ValueError(f"kind must be 'autoregressive' or 'coupling', got {kind!r}")

    def make_step(i: int) -> Transform:
        extra = {"parity": i % 2} if kind == "coupling" else {}
        return make(dim, hidden, bins, tail_bound, blocks, **extra)

    return interleave_permutations(dim, layers, make_step, permute)


def interleave_permutations(
    dim: int, layers: int, make_step: Callable[[int], torch.nn.Module], permute: str = "reverse"
) -> list[torch.nn.Module]:
    """``[step_0, perm, step_1, perm, ..., step_{L-1}]``: the steps built by
    ``make_step(i)`` in order, with a fixed permutation between consecutive steps (none in 1-D).

    Used for plain spline flows and, with CIF layers as steps, for CIF flows.
    """
    steps: list[torch.nn.Module] = []
    for i in range(layers):
        if i > 0 and dim > 1:
            steps.append(permutation(dim, permute))
        steps.append(make_step(i))
    return steps


def lu_permutation_stack(
    dim: int, layers: int, make_step: Callable[[int], torch.nn.Module], permute: str = "random"
) -> list[torch.nn.Module]:
    """``[perm, LU, step_0, LU, perm, step_1, LU, perm, ..., step_{L-1}, LU, perm]``: the
    layout of the flows in the authors' VAE code (REFERENCE.md, Experiment 2): one
    permutation and one :class:`LULinear` layer before the first step, then after every step
    an LU-linear layer and a permutation (none in 1-D). ``L + 1`` LU-linear layers in all.
    The modules are built in list order (so a seed fixes the random permutations)."""
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 0:
        raise ValueError(f"layers must be an integer >= 0, got {layers!r}")
    perms = dim > 1
    stack: list[torch.nn.Module] = [permutation(dim, permute)] if perms else []
    stack.append(LULinear(dim))
    for i in range(layers):
        stack += [make_step(i), LULinear(dim)]
        if perms:
            stack.append(permutation(dim, permute))
    return stack


def compose(transforms: list[Transform]) -> Transform:
    """Compose transforms into one nflows transform (applied in list order)."""
    return CompositeTransform(transforms)


class LULinear(Transform):
    """``z = W w + b`` with ``W = L U`` in LU form: ``L`` unit lower triangular, ``U`` upper
    triangular with diagonal ``softplus(c) + eps > 0``, so ``W`` is invertible.

    ``log|det dz/dw| = sum_i log U_ii``; the inverse is two triangular solves. Parameters:
    the ``d(d-1)/2`` entries below the diagonal of ``L``, the ``d(d-1)/2`` above the diagonal
    of ``U``, the ``d`` diagonal logits ``c`` and the bias: ``d^2 + d`` in all. Starts at the
    identity (zero entries, ``softplus(c) + eps = 1``, zero bias).

    References:
        Kingma, Dhariwal. Glow: generative flow with invertible 1x1 convolutions. NeurIPS 2018.

    Args:
        dim: number of features ``d``.
        eps: lower bound of the diagonal of ``U``.
    """

    def __init__(self, dim: int, eps: float = 1e-3) -> None:
        super().__init__()
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not 0 < eps < 1:
            raise ValueError(f"eps must be in (0, 1), got {eps!r}")
        self.dim, self.eps = dim, eps
        n = dim * (dim - 1) // 2
        self.lower_entries = torch.nn.Parameter(torch.zeros(n))
        self.upper_entries = torch.nn.Parameter(torch.zeros(n))
        self.unconstrained_diag = torch.nn.Parameter(
            torch.full((dim,), math.log(math.expm1(1 - eps)))
        )
        self.bias = torch.nn.Parameter(torch.zeros(dim))
        # flat positions of the entries in a (d, d) matrix: device buffers, so that building
        # the factors needs no host data (CUDA graphs, torch.compile); not saved
        rows, cols = torch.tril_indices(dim, dim, -1)
        self.register_buffer("lower_index", rows * dim + cols, persistent=False)
        rows, cols = torch.triu_indices(dim, dim, 1)
        self.register_buffer("upper_index", rows * dim + cols, persistent=False)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def diagonal(self) -> torch.Tensor:
        """The diagonal of ``U``, ``(d,)``."""
        return F.softplus(self.unconstrained_diag) + self.eps

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``L`` and ``U``, each ``(d, d)``."""
        d = self.dim
        flat = self.lower_entries.new_zeros(d * d)
        lower = flat.scatter(0, self.lower_index, self.lower_entries).view(d, d)
        lower = lower + torch.eye(d, dtype=flat.dtype, device=flat.device)
        upper = flat.scatter(0, self.upper_index, self.upper_entries).view(d, d)
        return lower, upper + torch.diag(self.diagonal())

    def weight(self) -> torch.Tensor:
        """``W = L U``, ``(d, d)``."""
        lower, upper = self.factors()
        return lower @ upper

    def forward(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = F.linear(inputs, self.weight(), self.bias)
        return outputs, torch.log(self.diagonal()).sum().expand(inputs.shape[0])

    def inverse(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper = self.factors()
        centred = (inputs - self.bias).T
        y = torch.linalg.solve_triangular(lower, centred, upper=False, unitriangular=True)
        outputs = torch.linalg.solve_triangular(upper, y, upper=True).T
        return outputs, -torch.log(self.diagonal()).sum().expand(inputs.shape[0])


class LowerTriangularAffine(Transform):
    """``z = L w + b`` with ``L`` lower triangular with a positive diagonal.

    Pushes ``N(0, I)`` to ``N(b, L L^T)``: any full-covariance Gaussian, in the Cholesky
    parametrization. ``log|det dz/dw| = sum_i log L_ii``; the inverse is a triangular solve.
    Starts at the identity.

    Args:
        dim: number of features ``d``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.shift = torch.nn.Parameter(torch.zeros(dim))
        self.log_diag = torch.nn.Parameter(torch.zeros(dim))
        self.off_diag = torch.nn.Parameter(torch.zeros(dim, dim))
        self.register_buffer("mask", torch.tril(torch.ones(dim, dim), diagonal=-1))

    def matrix(self) -> torch.Tensor:
        """The Cholesky factor ``L``, ``(d, d)``."""
        return self.off_diag * self.mask + torch.diag(torch.exp(self.log_diag))

    def forward(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = inputs @ self.matrix().T + self.shift
        return outputs, self.log_diag.sum().expand(inputs.shape[0])

    def inverse(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        centred = (inputs - self.shift).T
        outputs = torch.linalg.solve_triangular(self.matrix(), centred, upper=False).T
        return outputs, -self.log_diag.sum().expand(inputs.shape[0])


class ElementwiseAffine(Transform):
    """``z = w * exp(s) + t`` with learnable vectors ``s, t`` (identity at initialization).

    ``log|det dz/dw| = sum(s)``. Beside a spline step it is the control for a CIF layer:
    the same kind of affine map in the same place, but one map for all samples instead of
    one per index ``u``.

    Args:
        dim: number of features ``d``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.shift = torch.nn.Parameter(torch.zeros(dim))
        self.log_scale = torch.nn.Parameter(torch.zeros(dim))

    def forward(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = inputs * torch.exp(self.log_scale) + self.shift
        return outputs, self.log_scale.sum().expand(inputs.shape[0])

    def inverse(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = (inputs - self.shift) * torch.exp(-self.log_scale)
        return outputs, -self.log_scale.sum().expand(inputs.shape[0])


def num_parameters(module: torch.nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
