"""Compute budgets: the one place that says how long everything runs.

``CIFUTILS_BUDGET`` selects one of

* ``smoke`` -- CI and nbval: each notebook in about a minute on 2 CPU cores;
* ``book`` -- what the rendered book shows: the whole book in about 30 minutes on 2 CPU cores;
* ``paper`` -- the paper's settings, for the experiment command line (GPU recommended).

Notebooks and experiments read every size from :func:`get_budget`; nothing else in the
project hard-codes a number of steps or epochs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

__all__ = ["Budget", "BUDGETS", "BUDGET_ENV", "get_budget"]

#: The environment variable that selects the budget.
BUDGET_ENV = "CIFUTILS_BUDGET"


@dataclass(frozen=True)
class Budget:
    """Sizes of every run in the book, for one budget.

    Attributes:
        name: ``"smoke"``, ``"book"`` or ``"paper"``.
        vi_steps: optimizer steps of the small 2-D fits in the theory chapters.
        vi_batch: samples of ``q`` per step in those fits.
        vi_gauss_steps: Adam steps of the cheap Gaussian fits of chapter 1 (about a
            millisecond each on a CPU, so the smoke budget can afford converged fits).
        eval_samples: samples used for reported Monte Carlo estimates in the chapters.
        mog_steps: Adam steps per run of the Gaussian-mixture experiment (paper: 20,000).
        mog_batch: samples of ``q`` per step there (paper: 1,000).
        mog_seeds: number of seeds per (model, sigma_0) cell (paper: 3).
        mog_eval_samples: samples for the final ELBO of each run (paper: 10,000).
        mog_estimator_reps: repetitions in the ELBO-estimator study (paper: 20).
        mog_estimator_max_n: largest number of z samples in the estimator study.
        vae_max_epochs: epoch cap of a VAE run (paper: 1,000).
        vae_patience: early-stopping patience in epochs (paper: 50).
        vae_train_limit: images of each split used (None: all of them).
        vae_test_k: importance samples per test image for the test log-likelihood (paper: 100).
        vae_test_limit: test images evaluated (None: all 10,000).
        vae_gap_images: test images on which chapter 6 measures the amortization gap, by
            refining ``q`` on each image alone (the paper budget's runs: 10).
        vae_gap_steps: Adam steps of that refinement per image (the paper budget's runs: 50).
    """

    name: str
    vi_steps: int
    vi_batch: int
    eval_samples: int
    mog_steps: int
    mog_batch: int
    mog_seeds: int
    mog_eval_samples: int
    mog_estimator_reps: int
    mog_estimator_max_n: int
    vae_max_epochs: int
    vae_patience: int
    vae_train_limit: int | None
    vae_test_k: int
    vae_gap_images: int
    vae_gap_steps: int
    vi_gauss_steps: int = 500
    vae_test_limit: int | None = None


_SMOKE = Budget(
    name="smoke",
    vi_steps=30,
    vi_batch=128,
    eval_samples=2_000,
    mog_steps=20,
    mog_batch=100,
    mog_seeds=1,
    mog_eval_samples=1_000,
    mog_estimator_reps=2,
    mog_estimator_max_n=100,
    vae_max_epochs=1,
    vae_patience=1,
    vae_train_limit=500,
    vae_test_k=10,
    vae_test_limit=100,
    vae_gap_images=2,
    vae_gap_steps=10,
)

#: All budgets by name.
BUDGETS: dict[str, Budget] = {
    "smoke": _SMOKE,
    "book": replace(
        _SMOKE,
        name="book",
        vi_steps=1_500,
        vi_gauss_steps=2_000,
        vi_batch=256,
        eval_samples=10_000,
        mog_steps=2_000,
        mog_batch=500,
        mog_seeds=3,
        mog_eval_samples=10_000,
        mog_estimator_reps=5,
        mog_estimator_max_n=1_000,
        vae_max_epochs=3,
        vae_patience=3,
        vae_train_limit=10_000,
        vae_test_k=100,
        vae_test_limit=1_000,
        vae_gap_images=6,
        vae_gap_steps=40,
    ),
    "paper": replace(
        _SMOKE,
        name="paper",
        vi_steps=10_000,
        vi_gauss_steps=5_000,
        vi_batch=1_000,
        eval_samples=100_000,
        mog_steps=20_000,
        mog_batch=1_000,
        mog_seeds=3,
        mog_eval_samples=10_000,
        mog_estimator_reps=20,
        mog_estimator_max_n=10_000,
        vae_max_epochs=1_000,
        vae_patience=50,
        vae_train_limit=None,
        vae_test_k=100,
        vae_test_limit=None,
        vae_gap_images=10,
        vae_gap_steps=50,
    ),
}


def get_budget(name: str | None = None) -> Budget:
    """The :class:`Budget` named ``name``, or by ``$CIFUTILS_BUDGET`` (default ``"book"``).

    Raises:
        ValueError: for an unknown name, naming the variable it came from.
    """
    source = "name"
    if name is None:
        name, source = os.environ.get(BUDGET_ENV, "book"), BUDGET_ENV
    key = name.strip().lower()
    if key not in BUDGETS:
        raise ValueError(f"{source}={name!r} is not a budget; choose one of {sorted(BUDGETS)}")
    return BUDGETS[key]
