"""Targets against torch.distributions and their normalizing constants by quadrature."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from cifutils.targets import Banana, GaussianMixture, Ring, get_target, quadrature_log_normalizer


def test_mixture_matches_torch_distributions():
    target = get_target("mog9")
    mix = D.MixtureSameFamily(
        D.Categorical(torch.full((9,), 1 / 9, dtype=torch.float64)),
        D.Independent(D.Normal(target.means, 0.25), 1),
    )
    z = torch.randn(100, 2, dtype=torch.float64) * 2
    torch.testing.assert_close(target.log_prob(z), mix.log_prob(z))
    assert target.num_components == 9
    assert get_target("mog16").num_components == 16


@pytest.mark.parametrize("name", ["mog9", "mog16", "banana", "ring"])
def test_log_normalizer_matches_quadrature(name):
    target = get_target(name)
    # The banana's arms reach z2 = b z1^2: it needs the larger box.
    bound, n = (15.0, 2401) if name == "banana" else (7.0, 1201)
    assert quadrature_log_normalizer(target, bound=bound, n=n) == pytest.approx(
        target.log_normalizer, abs=1e-4
    )
    # Not vacuous: the unnormalized targets do have log Z != 0.
    if name in ("banana", "ring"):
        assert abs(target.log_normalizer) > 0.5


def test_samples_follow_the_target():
    torch.manual_seed(0)
    banana = Banana(s1=1.0, s2=0.5, b=0.75)
    z = banana.sample(200_000).double()
    # E[z1] = 0, E[z2] = 0 (the shear is centred), Var z1 = s1^2.
    se = z.std(0) / math.sqrt(z.shape[0])
    assert (z.mean(0).abs() < 5 * se).all()
    assert z[:, 0].var().item() == pytest.approx(1.0, rel=0.02)
    mog = GaussianMixture()
    idx = mog.nearest_component(mog.sample(90_000).double())
    counts = torch.bincount(idx, minlength=9).double()
    p = 1 / 9
    assert ((counts - 90_000 * p).abs() < 5 * math.sqrt(90_000 * p * (1 - p))).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="std"):
        GaussianMixture(std=-0.25)
    with pytest.raises(ValueError, match="width"):
        Ring(width=0.0)
    with pytest.raises(ValueError, match="s2"):
        Banana(s2=-1.0)
    with pytest.raises(ValueError, match="z must have shape"):
        get_target("mog9").log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="floating"):
        get_target("ring").log_prob(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="name"):
        get_target("moons")
