"""The mixture experiment's models and runs by name: :data:`VARIANTS`, :class:`MogConfig`, the
file names of results and checkpoints, and :func:`build_model`.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from cifutils.budgets import get_budget
from cifutils.families import VariationalFlow, make_family

__all__ = [
    "VARIANTS",
    "LABELS",
    "ABLATION",
    "MODELS",
    "SIGMA0S",
    "MogConfig",
    "config_differences",
    "cell_name",
    "result_path",
    "build_model",
]


#: Every model of the experiment by name, each with its family and where each layer's affine
#: sits. The CIF-NSF in the slides' order (spline, then the ``u``-indexed affine) and in the
#: order of the authors' experiment code (affine first), the control that keeps an affine
#: before each spline but drops the index ``u``, and the NSF.
VARIANTS: dict[str, tuple[str, str | None]] = {
    "cif-nsf": ("cif-nsf", "spline-first"),
    "cif-nsf-af": ("cif-nsf", "affine-first"),
    "affine-nsf": ("affine-nsf", "affine-first"),
    "nsf": ("nsf", None),
}


#: How the chapter names each model.
LABELS = {
    "cif-nsf": "CIF-NSF (spline first)",
    "cif-nsf-af": "CIF-NSF (affine first)",
    "affine-nsf": "NSF + affine (no u)",
    "nsf": "NSF",
}


#: The two models of Figure 1 in the slides' row order, CIF on top. The CIF-NSF is the one
#: with the affine first, the order of the authors' code (chapter 5's ablation).
MODELS = ("cif-nsf-af", "nsf")


#: The models of the order ablation and its control, in table order.
ABLATION = ("cif-nsf-af", "cif-nsf", "affine-nsf", "nsf")


#: The base standard deviations of Figure 1, one column each.
SIGMA0S = (0.1, 1.0, 10.0)


@dataclass
class MogConfig:
    """Everything that defines one run (stored in its JSON result).

    Attributes:
        model: a key of :data:`VARIANTS` (``"nsf"``, ``"cif-nsf"``, ``"cif-nsf-af"``,
            ``"affine-nsf"``).
        sigma0: standard deviation of the fixed base ``N(0, sigma0^2 I)``.
        seed: the run's seed.
        budget: name of the budget the sizes came from.
        steps, batch, lr, clip: Adam steps, samples of ``q`` per step, learning rate,
            gradient-norm clip (paper: 20,000, 1,000, 1e-3, 5).
        eval_samples: samples for the final ELBO, coverage and ``log Z`` estimates.
        marginal_u_samples: ``M``, u-samples per point in the marginal ELBO.
        marginal_points: points ``z`` at which ``log q_Z`` is estimated.
        iw_k: samples per importance-sampled ``log Z`` estimate (paper: 100).
        stored_samples: samples kept in the JSON for the figure (0 for none).
        target: target name (``"mog9"``).
        order: where the model's per-layer affine sits (``"spline-first"``,
            ``"affine-first"``; None for the NSF), set from :data:`VARIANTS`. Results written
            before this field existed are all of the slides' order (``"cif-nsf"``).
    """

    model: str
    sigma0: float
    seed: int
    budget: str
    steps: int
    batch: int
    lr: float = 1e-3
    clip: float = 5.0
    eval_samples: int = 10_000
    marginal_u_samples: int = 100
    marginal_points: int = 10_000
    iw_k: int = 100
    stored_samples: int = 5_000
    target: str = "mog9"
    order: str | None = None

    def __post_init__(self) -> None:
        if self.model not in VARIANTS:
            raise ValueError(f"model must be one of {tuple(VARIANTS)}, got {self.model!r}")
        self.order = VARIANTS[self.model][1]

    @classmethod
    def from_budget(
        cls, model: str, sigma0: float, seed: int, budget: str | None = None, **overrides: Any
    ) -> MogConfig:
        """The configuration of a cell with sizes from :func:`~cifutils.budgets.get_budget`."""
        b = get_budget(budget)
        fields = dict(
            model=model,
            sigma0=float(sigma0),
            seed=int(seed),
            budget=b.name,
            steps=b.mog_steps,
            batch=b.mog_batch,
            eval_samples=b.mog_eval_samples,
            marginal_points=min(b.mog_eval_samples, 10_000 if b.name == "paper" else 2_000),
            marginal_u_samples=100 if b.name != "smoke" else 20,
        )
        fields.update(overrides)
        return cls(**fields)


def config_differences(stored: dict[str, Any], config: MogConfig) -> dict[str, tuple]:
    """The fields in which a stored configuration (a result's or a checkpoint's
    ``config``) differs from ``config``: ``name -> (stored, asked)``. The stored one is read
    back through :class:`MogConfig`, so a field it lacks (written before the field existed)
    takes the value that class gives it (its default, or what ``__post_init__`` derives,
    e.g. ``order`` from ``model``)."""
    names = {f.name for f in fields(MogConfig)}
    try:
        stored = asdict(MogConfig(**{k: v for k, v in stored.items() if k in names}))
    except (TypeError, ValueError):
        pass  # not a whole configuration: compare the fields it has
    defaults = {f.name: f.default for f in fields(MogConfig) if f.default is not MISSING}
    out = {}
    for key, value in asdict(config).items():
        old = stored.get(key, defaults.get(key, MISSING))
        if old != value:
            out[key] = (None if old is MISSING else old, value)
    return out


def _differences_text(diff: dict[str, tuple]) -> str:
    return ", ".join(f"{key} {old!r} there, {new!r} asked" for key, (old, new) in diff.items())


def _sigma_label(sigma0: float) -> str:
    return f"{sigma0:g}"


def cell_name(model: str, sigma0: float, seed: int) -> str:
    """``"<model>_sigma<sigma0>_seed<seed>"``, e.g. ``"cif-nsf_sigma0.1_seed0"``."""
    return f"{model}_sigma{_sigma_label(sigma0)}_seed{seed}"


def result_path(budget: str, model: str, sigma0: float, seed: int) -> str:
    """The result's path relative to ``results/``: ``mog/<budget>/<cell>.json``."""
    return f"mog/{budget}/{cell_name(model, sigma0, seed)}.json"


def build_model(model: str, sigma0: float) -> VariationalFlow:
    """A model of :data:`VARIANTS` sized as in the paper (5 layers, hidden 32, 8 bins, tail
    bound 3; CIF: ``dim u = 1``, tanh ``[10, 10]`` nets) on a fixed ``N(0, sigma0^2 I)``
    base."""
    if model not in VARIANTS:
        raise ValueError(f"model must be one of {tuple(VARIANTS)}, got {model!r}")
    family, order = VARIANTS[model]
    kwargs = {} if order is None else {"order": order}
    return make_family(family, 2, sigma0=float(sigma0), **kwargs)
