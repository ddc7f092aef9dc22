"""The variational families: one interface, shapes, gradients, training, persistence,
repeatability, and clear errors for bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cifutils.families import AmortizedGaussianBase, make_family
from cifutils.objectives import elbo
from cifutils.targets import get_target
from cifutils.training import fit_vi, load_checkpoint, save_checkpoint, seed_everything

KINDS = ["gaussian", "full-gaussian", "nsf", "cif-nsf"]
SMALL = {"layers": 2, "hidden": 8, "bins": 4}


def _family(kind: str, dim: int = 2, **kwargs):
    extra = SMALL if kind in ("nsf", "cif-nsf") else {}
    return make_family(kind, dim, **(extra | kwargs))


@pytest.mark.parametrize("kind", KINDS)
def test_sample_and_log_prob_shapes(kind):
    family = _family(kind, dim=3)
    z, log_q = family.sample_and_log_prob(7)
    assert z.shape == (7, 3) and log_q.shape == (7,)
    assert torch.isfinite(z).all() and torch.isfinite(log_q).all()
    assert family.is_cif == (kind == "cif-nsf")


@pytest.mark.parametrize("kind", ["gaussian", "full-gaussian", "nsf"])
def test_explicit_log_q_equals_marginal_log_prob(kind):
    """For explicit families the sampling-pass density equals the inverse-pass density."""
    seed_everything(0)
    family = _family(kind).double()
    with torch.no_grad():
        for p in family.parameters():
            p.add_(0.2 * torch.randn_like(p))
        z, log_q = family.sample_and_log_prob(50)
        torch.testing.assert_close(family.marginal_log_prob(z), log_q, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter(kind):
    seed_everything(1)
    family = _family(kind)
    z, log_q = family.sample_and_log_prob(64)
    (-elbo(get_target("banana").log_prob(z), log_q)).backward()
    for name, p in family.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


class _Encoder(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Linear(5, 2 * dim)

    def forward(self, x):
        return self.net(x)


def test_amortized_cif_family_with_context():
    """An amortized family: q0(w | x) from an encoder and r(u | z, x) on a context."""
    seed_everything(2)
    base = AmortizedGaussianBase(_Encoder(3), 3)
    family = make_family("cif-nsf", 3, base=base, context_features=5, dim_u=2, **SMALL)
    x = torch.randn(4, 5)
    z, log_q = family.sample_and_log_prob(6, context=x)
    assert z.shape == (4, 6, 3) and log_q.shape == (4, 6)
    log_q.sum().backward()
    assert all(p.grad is not None for p in family.parameters())
    with torch.no_grad():
        est = family.marginal_log_prob(z.reshape(-1, 3), x.repeat_interleave(6, 0), 8)
    assert est.shape == (24,) and torch.isfinite(est).all()
    with pytest.raises(ValueError, match="context"):
        family.sample_and_log_prob(2)


@pytest.mark.parametrize("kind", KINDS)
def test_a_few_steps_lower_the_loss(kind):
    seed_everything(3)
    family = _family(kind)
    target = get_target("banana")
    history = fit_vi(family, target.log_prob, steps=60, num_samples=128, lr=1e-2, progress=False)
    first, last = sum(history.loss[:10]) / 10, sum(history.loss[-10:]) / 10
    assert last < first - 0.1, (first, last)


def test_save_load_round_trip(tmp_path):
    seed_everything(4)
    family = _family("cif-nsf")
    fit_vi(family, get_target("mog9").log_prob, steps=5, num_samples=32, progress=False)
    save_checkpoint(tmp_path / "f.pt", {"model": family.state_dict()})
    seed_everything(99)  # a different initialization, then overwritten by the checkpoint
    restored = _family("cif-nsf")
    restored.load_state_dict(load_checkpoint(tmp_path / "f.pt")["model"])
    torch.manual_seed(5)
    a = family.sample_and_log_prob(20)
    torch.manual_seed(5)
    b = restored.sample_and_log_prob(20)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bit_for_bit_repeatable_on_cpu():
    def run():
        seed_everything(6)
        family = _family("cif-nsf")
        fit_vi(family, get_target("mog9").log_prob, steps=10, num_samples=64, progress=False)
        torch.manual_seed(7)
        return family.sample_and_log_prob(30)

    (z1, l1), (z2, l2) = run(), run()
    assert torch.equal(z1, z2) and torch.equal(l1, l2)


def test_bad_inputs_raise_value_errors_naming_the_argument():
    family = _family("cif-nsf")
    with pytest.raises(ValueError, match="num_samples"):
        family.sample_and_log_prob(0)
    with pytest.raises(ValueError, match="num_samples"):
        family.sample_and_log_prob(2.5)
    with pytest.raises(ValueError, match="z must have shape"):
        family.marginal_log_prob(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="z must have shape"):
        family.marginal_log_prob(torch.zeros(4))
    with pytest.raises(ValueError, match="dtype"):
        family.marginal_log_prob(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-finite"):
        family.marginal_log_prob(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="num_samples"):
        family.marginal_log_prob(torch.zeros(4, 2), num_u_samples=0)
    with pytest.raises(ValueError, match="kind"):
        make_family("planar", 2)
    with pytest.raises(ValueError, match="scale"):
        make_family("gaussian", 2, scale=-1.0)
    with pytest.raises(ValueError, match="scale"):
        make_family("nsf", 2, sigma0=0.0)
    with pytest.raises(ValueError, match="bins"):
        make_family("cif-nsf", 2, bins=0)
    with pytest.raises(ValueError, match="tail_bound"):
        make_family("nsf", 2, tail_bound=-3.0)
    with pytest.raises(ValueError, match="dim_u"):
        make_family("cif-nsf", 2, dim_u=0)
