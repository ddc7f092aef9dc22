"""One VAE run by name: :class:`VAEConfig` (what defines a run, stored in its result), the
settings of results written before a field existed, where runs live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from cifutils.budgets import get_budget

from .model import (
    ALL_POSTERIORS,
    LATENT,
    check_arch,
)

__all__ = ["VAEConfig", "device_label", "default_runs_dir", "stored_setting"]


@dataclass
class VAEConfig:
    """Everything that defines a run (stored in checkpoints and results).

    ``arch`` is the model architecture (``"small"`` or ``"table1"``); ``latent`` defaults to
    its latent dimension. ``clip`` is the gradient-norm bound (None: no clipping; the
    Table-1 Gaussian VAE of :meth:`from_budget` trains without)."""

    dataset: str = "mnist"
    posterior: str = "gaussian"
    seed: int = 0
    budget: str = "book"
    max_epochs: int = 3
    patience: int = 3
    train_limit: int | None = None
    batch_size: int = 100
    lr: float = 1e-3
    clip: float | None = 5.0
    latent: int | None = None
    fast: bool = True
    test_k: list[int] = field(default_factory=lambda: [100])
    test_limit: int | None = None
    large_k_limit: int | None = None
    gap_images: int = 0
    amortization_steps: int = 0
    arch: str = "small"

    def __post_init__(self) -> None:
        check_arch(self.arch)
        if self.posterior not in ALL_POSTERIORS:
            raise ValueError(f"posterior must be one of {ALL_POSTERIORS}, got {self.posterior!r}")
        if self.latent is None:
            self.latent = LATENT[self.arch]

    @classmethod
    def from_budget(cls, budget: str | None = None, **kw) -> VAEConfig:
        """The run's settings from the budget; ``kw`` override them. The ``paper`` budget
        trains the ``"table1"`` architecture unless ``arch`` says otherwise, the others the
        small one; the Table-1 Gaussian VAE trains without gradient clipping (REFERENCE.md)."""
        b = get_budget(budget)
        arch = kw.get("arch") or ("table1" if b.name == "paper" else "small")
        base = dict(
            budget=b.name,
            max_epochs=b.vae_max_epochs,
            patience=b.vae_patience,
            train_limit=b.vae_train_limit,
            test_k=[b.vae_test_k],
            test_limit=b.vae_test_limit,
            arch=arch,
        )
        if arch == "table1" and kw.get("posterior", "gaussian") == "gaussian":
            base["clip"] = None
        return cls(**{**base, **kw, "arch": arch})

    @property
    def name(self) -> str:
        arch = "" if self.arch == "small" else f"-{self.arch}"
        return f"{self.dataset}-{self.posterior}{arch}-seed{self.seed}-{self.budget}"


def device_label(device: torch.device | str, compiled: bool = False) -> str:
    """``"cpu"``, ``"cpu (torch.compile)"`` or ``"cuda (NVIDIA H100 80GB HBM3)"``: where (and
    how) epochs ran, for provenance."""
    device = torch.device(device)
    label = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"
    return f"{label} (torch.compile)" if compiled else label


_EVAL_ONLY = {"test_k", "test_limit", "large_k_limit", "gap_images", "amortization_steps"}


#: What a setting missing from an older checkpoint or result was (before it existed).
_LEGACY = {"arch": "small"}


def stored_setting(config: dict, key: str):
    """Setting ``key`` of a stored run configuration; for a setting that older checkpoints
    and results lack, the value it had before it existed (a run saved before ``arch``
    existed is small)."""
    return config.get(key, _LEGACY.get(key))


def default_runs_dir() -> Path:
    """``runs/vae`` of this checkout, where the command line (run from the repository root)
    keeps its checkpoints; outside a checkout (an installed package), ``runs/vae`` of the
    working directory."""
    root = Path(__file__).resolve().parents[3]  # cifutils/experiments/vae/config.py
    return (root if (root / "pyproject.toml").exists() else Path.cwd()) / "runs" / "vae"
