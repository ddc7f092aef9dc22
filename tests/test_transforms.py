"""Every transform of the library obeys the nflows contract, in float64:
shapes, inverse(forward(x)) = x both ways, forward log-det = -inverse log-det, and the
log-det equals log|det| of the autograd Jacobian."""

from __future__ import annotations

import pytest
import torch

from cifutils.cif import FixedIndex, cif_layer
from cifutils.families import affine_nsf_family, nsf_family
from cifutils.flows import (
    ElementwiseAffine,
    LowerTriangularAffine,
    LULinear,
    compose,
    permutation,
    rq_autoregressive_step,
    rq_coupling_step,
    spline_flow,
)


def _perturb(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Move the parameters away from their (near-identity) initial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _fixed_cif_layer(dim: int, order: str = "spline-first"):
    layer = cif_layer(dim, rq_autoregressive_step(dim, hidden=8, bins=4), dim_u=2, order=order)
    return FixedIndex(layer.transform, torch.tensor([0.7, -1.3]))


def _affine_nsf(dim: int, order: str):
    return compose(list(affine_nsf_family(dim, layers=2, hidden=8, bins=4, order=order).layers))


#: name -> (dimension, builder)
TRANSFORMS = {
    "autoregressive-spline": (
        3,
        lambda: rq_autoregressive_step(3, hidden=8, bins=5, tail_bound=2.5),
    ),
    "autoregressive-spline-1d": (1, lambda: rq_autoregressive_step(1, hidden=8, bins=4)),
    "coupling-spline": (4, lambda: rq_coupling_step(4, hidden=8, bins=5, tail_bound=2.5, parity=1)),
    "reverse-permutation": (4, lambda: permutation(4)),
    "random-permutation": (4, lambda: permutation(4, "random")),
    "lower-triangular-affine": (3, lambda: LowerTriangularAffine(3)),
    "spline-flow": (3, lambda: compose(spline_flow(3, layers=3, hidden=8, bins=4))),
    "coupling-flow": (
        2,
        lambda: compose(spline_flow(2, layers=2, hidden=8, bins=4, kind="coupling")),
    ),
    "cif-layer-at-fixed-u": (3, lambda: _fixed_cif_layer(3)),
    "cif-layer-at-fixed-u-affine-first": (3, lambda: _fixed_cif_layer(3, "affine-first")),
    "elementwise-affine": (3, lambda: ElementwiseAffine(3)),
    "lu-linear": (4, lambda: LULinear(4)),
    "lu-permutation-nsf": (
        3,
        lambda: compose(list(nsf_family(3, 2, 8, 4, lu=True, permute="random").layers)),
    ),
    "affine-nsf-affine-first": (3, lambda: _affine_nsf(3, "affine-first")),
    "affine-nsf-spline-first": (3, lambda: _affine_nsf(3, "spline-first")),
}


@pytest.fixture(params=sorted(TRANSFORMS), ids=sorted(TRANSFORMS))
def transform(request):
    torch.manual_seed(1)
    dim, build = TRANSFORMS[request.param]
    module = _perturb(build().double())
    module.test_dim = dim
    return module


def _inputs(transform, n: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    # 2.0 * N(0, 1) puts some points beyond the tail bound, into the linear tails.
    return 2.0 * torch.randn(n, transform.test_dim, generator=g, dtype=torch.float64)


def test_shapes_and_finiteness(transform):
    x = _inputs(transform)
    y, logabsdet = transform(x)
    assert y.shape == x.shape and logabsdet.shape == (x.shape[0],)
    assert torch.isfinite(y).all() and torch.isfinite(logabsdet).all()


def test_inverse_of_forward_is_identity(transform):
    x = _inputs(transform)
    with torch.no_grad():
        y, ld_forward = transform(x)
        x_back, ld_inverse = transform.inverse(y)
    torch.testing.assert_close(x_back, x, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ld_inverse, -ld_forward, atol=1e-6, rtol=1e-6)


def test_forward_of_inverse_is_identity(transform):
    y = _inputs(transform)
    with torch.no_grad():
        x, ld_inverse = transform.inverse(y)
        y_back, ld_forward = transform(x)
    torch.testing.assert_close(y_back, y, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ld_forward, -ld_inverse, atol=1e-6, rtol=1e-6)


def test_logdet_matches_autograd_jacobian(transform):
    x = _inputs(transform, n=6)
    _, logabsdet = transform(x)
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v: transform(v[None])[0][0], x[i])
        _, expected = torch.linalg.slogdet(jac)
        torch.testing.assert_close(logabsdet[i], expected, atol=1e-6, rtol=1e-6)


def test_transform_is_not_trivially_the_identity(transform):
    """Guards the other tests: after perturbation, the splines and affines really act."""
    x = _inputs(transform)
    y, logabsdet = transform(x)
    assert (y - x).abs().max() > 1e-3 or logabsdet.abs().max() > 1e-3


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"bins": 0}, "bins"),
        ({"tail_bound": 0.0}, "tail_bound"),
        ({"tail_bound": -1.0}, "tail_bound"),
        ({"hidden": 0}, "hidden"),
        ({"blocks": 0}, "blocks"),
        ({"bins": 2000}, "bins"),
    ],
)
def test_invalid_spline_hyperparameters_name_the_argument(kwargs, name):
    args = {"dim": 2, "hidden": 8, "bins": 4, "tail_bound": 3.0, "blocks": 2} | kwargs
    with pytest.raises(ValueError, match=name):
        rq_autoregressive_step(**args)
    with pytest.raises(ValueError, match=name):
        rq_coupling_step(**args)


def test_spline_flow_rejects_unknown_kind_and_dim():
    with pytest.raises(ValueError, match="kind"):
        spline_flow(2, kind="planar")
    with pytest.raises(ValueError, match="dim"):
        spline_flow(0)
    with pytest.raises(ValueError, match="dim"):
        rq_coupling_step(1)


def test_lu_linear_starts_at_the_identity_and_counts_d2_plus_d():
    layer = LULinear(5)
    x = torch.randn(7, 5)
    y, logabsdet = layer(x)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(logabsdet, torch.zeros(7))
    assert sum(p.numel() for p in layer.parameters()) == 5**2 + 5
    assert set(layer.state_dict()) == {
        "lower_entries",
        "upper_entries",
        "unconstrained_diag",
        "bias",
    }
    with pytest.raises(ValueError, match="dim"):
        LULinear(0)


def test_lu_layout_and_the_default_layout():
    """The LU layout: permutation, LU, then (step, LU, permutation) per step; the default
    stays steps with reversals between them, as before the LU option existed."""
    kinds = [type(m).__name__ for m in nsf_family(3, 2, 8, 4, lu=True, permute="random").layers]
    step = "MaskedPiecewiseRationalQuadraticAutoregressiveTransform"
    assert kinds == ["RandomPermutation", "LULinear"] + [step, "LULinear", "RandomPermutation"] * 2
    kinds = [type(m).__name__ for m in nsf_family(3, 2, 8, 4).layers]
    assert kinds == [step, "ReversePermutation", step]
    with pytest.raises(ValueError, match="permute"):
        nsf_family(3, 2, 8, 4, permute="shuffle")
