"""The fit loop, budgets and devices."""

from __future__ import annotations

import pytest
import torch

from cifutils.budgets import BUDGETS, get_budget
from cifutils.families import make_family
from cifutils.training import (
    NonFiniteError,
    estimate_elbo,
    fit,
    fit_vi,
    get_device,
    seed_everything,
)


def test_non_finite_loss_stops_before_the_update_and_names_the_step():
    seed_everything(0)
    family = make_family("gaussian", 2)
    snapshots = {}

    def loss_fn(step):
        z, log_q = family.sample_and_log_prob(16)
        loss = (z.pow(2).sum(1) + log_q).mean()
        return loss * float("nan") if step == 3 else loss

    def remember(step, history):
        snapshots[step] = [p.detach().clone() for p in family.parameters()]

    with pytest.raises(NonFiniteError, match="step 3"):
        fit(family, loss_fn, steps=10, progress=False, callback=remember)
    for before, now in zip(snapshots[2], family.parameters()):
        assert torch.equal(before, now.detach())
        assert torch.isfinite(now).all()


def test_non_finite_gradient_is_caught():
    family = make_family("gaussian", 2)

    def loss_fn(step):
        return family.base.loc.sqrt().sum()  # finite (0) at loc = 0, its gradient is not

    with torch.no_grad():
        family.base.loc.fill_(0.0)  # d sqrt(x)/dx at 0 is infinite
    with pytest.raises(NonFiniteError, match="gradient"):
        fit(family, loss_fn, steps=2, progress=False)


def test_target_returning_nan_is_a_value_error_with_the_step():
    family = make_family("gaussian", 2)

    def bad_target(z):
        return torch.full((z.shape[0],), float("nan"))

    with pytest.raises(ValueError, match="log_p") as info:
        fit_vi(family, bad_target, steps=3, progress=False)
    assert any("step 0" in note for note in getattr(info.value, "__notes__", []))


def test_fit_validates_hyperparameters():
    family = make_family("gaussian", 2)
    for kwargs, name in (({"steps": -1}, "steps"), ({"lr": 0.0}, "lr"), ({"clip": -1.0}, "clip")):
        args = {"steps": 1} | kwargs
        with pytest.raises(ValueError, match=name):
            fit(family, lambda s: family.base.loc.sum(), progress=False, **args)


def test_fit_converges_on_a_gaussian_target():
    """VI with a Gaussian family on a Gaussian target recovers its mean and std."""
    seed_everything(1)
    family = make_family("gaussian", 2)

    def log_p(z):
        return -0.5 * ((z - torch.tensor([1.0, -2.0])) / torch.tensor([0.5, 2.0])).pow(2).sum(1)

    fit_vi(family, log_p, steps=800, num_samples=128, lr=2e-2, progress=False)
    torch.testing.assert_close(
        family.base.loc.detach(), torch.tensor([1.0, -2.0]), atol=0.1, rtol=0
    )
    torch.testing.assert_close(
        family.base.log_scale.detach().exp(), torch.tensor([0.5, 2.0]), atol=0.1, rtol=0
    )


def test_budgets(monkeypatch):
    monkeypatch.setenv("CIFUTILS_BUDGET", "smoke")
    assert get_budget().name == "smoke"
    monkeypatch.setenv("CIFUTILS_BUDGET", "PAPER")
    assert get_budget().name == "paper"
    monkeypatch.setenv("CIFUTILS_BUDGET", "huge")
    with pytest.raises(ValueError, match="CIFUTILS_BUDGET"):
        get_budget()
    with pytest.raises(ValueError, match="name"):
        get_budget("tiny")
    paper = BUDGETS["paper"]
    # The paper's settings (REFERENCE.md).
    assert (paper.mog_steps, paper.mog_batch, paper.mog_seeds) == (20_000, 1_000, 3)
    assert (paper.vae_max_epochs, paper.vae_patience, paper.vae_test_k) == (1_000, 50, 100)
    assert BUDGETS["smoke"].mog_steps < BUDGETS["book"].mog_steps <= paper.mog_steps
    # Chapter 6's amortization gap at the paper budget: the committed runs' setting.
    assert (paper.vae_gap_images, paper.vae_gap_steps) == (10, 50)
    for field in ("vae_gap_images", "vae_gap_steps"):
        sizes = [getattr(BUDGETS[name], field) for name in ("smoke", "book", "paper")]
        assert 2 <= sizes[0] <= sizes[1] <= sizes[2], (field, sizes)


def test_device_choice(monkeypatch):
    monkeypatch.setenv("CIFUTILS_DEVICE", "cpu")
    assert get_device().type == "cpu"
    monkeypatch.delenv("CIFUTILS_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert get_device().type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            get_device("cuda")


def test_seed_validation():
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


def test_nan_clip_and_lr_are_refused_before_training():
    family = make_family("gaussian", 2)
    before = [p.detach().clone() for p in family.parameters()]
    for kwargs, name in (({"clip": float("nan")}, "clip"), ({"lr": float("nan")}, "lr")):
        with pytest.raises(ValueError, match=name):
            fit_vi(family, lambda z: -z.pow(2).sum(1), steps=2, progress=False, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(before, family.parameters()))
    fit_vi(family, lambda z: -z.pow(2).sum(1), steps=1, clip=float("inf"), progress=False)


def test_estimate_elbo_and_seed_ranges_are_validated():
    family = make_family("gaussian", 2)
    for kwargs, name in (({"num_samples": 0}, "num_samples"), ({"chunk_size": 0}, "chunk_size")):
        with pytest.raises(ValueError, match=name):
            estimate_elbo(family, lambda z: -z.pow(2).sum(1), **kwargs)
    for seed in (2**32, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
            seed_everything(seed)
    seed_everything(2**32 - 1)


@pytest.mark.parametrize("kind, kwargs", [("nsf", {"hidden": 0}), ("cif-nsf", {"hidden": -2})])
def test_non_positive_hidden_widths_are_refused(kind, kwargs):
    with pytest.raises(ValueError, match="hidden"):
        make_family(kind, 2, **kwargs)
    with pytest.raises(ValueError, match="hidden widths"):
        make_family("cif-nsf", 2, cif_hidden=(10, 0))
