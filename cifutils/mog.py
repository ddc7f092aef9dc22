"""Experiment 1: variational inference on the 9-component Gaussian mixture.

The paper's first experiment (Figure 1 of the slides): fit an NSF and a CIF-NSF to the
lattice mixture ``p(z) = (1/9) sum_c N(z; m_c, 0.25^2 I)``, ``m_c in {-2, 0, 2}^2``
(normalized, so ``log Z = 0``), from a fixed base ``N(0, sigma_0^2 I)`` with
``sigma_0 in {0.1, 1, 10}``, and compare the bounds and the modes they cover.

One *cell* is a (model, sigma_0, seed, budget) combination. :func:`run_cell` trains it with
checkpoints (resumable, bit-for-bit on CPU), evaluates it with :func:`evaluate` and
returns a JSON-ready result. The command line::

    python -m cifutils.experiments mog --model cif-nsf-af --sigma0 1 --seed 0 --budget paper
    python -m cifutils.experiments mog --all --budget book          # every cell, in order
    python -m cifutils.experiments mog --estimator --budget book    # the estimator study

writes ``results/mog/<budget>/<model>_sigma<sigma_0>_seed<seed>.json`` and keeps its
checkpoints under ``runs/mog/`` (ignored by git).

Beyond the paper, :func:`estimator_study` compares the marginal and auxiliary ELBO
estimators as the number of samples grows, and :func:`layer_posteriors` computes the exact
``q(u_l | w_l)`` of one CIF layer on a grid of ``u`` to compare it with the learned ``r``.

References:
    Caterini, Cornish, Sejdinovic, Doucet. Variational inference with continuously-indexed
    normalizing flows. ICML 2020 INNF+ workshop / UAI 2021.
    Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. NeurIPS 2019.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import cli
from .budgets import get_budget
from .cif import CIFLayer
from .families import VariationalFlow, make_family
from .flows import num_parameters
from .objectives import effective_sample_size, ess_summary, logmeanexp, mean_and_stderr
from .results import provenance, results_dir, write_json
from .targets import GaussianMixture, get_target
from .training import (
    History,
    fit,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
    seed_everything,
)

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
    "coverage",
    "downsample_curve",
    "evaluate",
    "estimate_text",
    "run_cell",
    "load_cell",
    "committed_results",
    "collect_results",
    "provenance_note",
    "compare_models",
    "check_claims",
    "findings",
    "summary_table",
    "first_spline_inside",
    "order_findings",
    "order_summary",
    "ablation_values",
    "spline_inside",
    "side_by_side",
    "encode_samples",
    "decode_samples",
    "estimator_study",
    "layer_posteriors",
    "main",
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


def coverage(target: GaussianMixture, z: Tensor) -> tuple[list[float], float]:
    """Fraction of samples nearest each mixture component, and the KL divergence from these
    fractions to the uniform distribution, ``KL(c || 1/C) = sum_i c_i log(C c_i)`` (0 for
    perfect coverage, ``log C`` when all samples sit in one component)."""
    idx = target.nearest_component(z)
    counts = torch.bincount(idx, minlength=target.num_components).double()
    frac = counts / counts.sum()
    c = target.num_components
    kl = torch.where(frac > 0, frac * torch.log(c * frac), torch.zeros_like(frac)).sum()
    return frac.tolist(), float(kl)


def downsample_curve(
    steps: Sequence[int], values: Sequence[float], points: int = 300
) -> dict[str, list[float]]:
    """Average ``values`` over at most ``points`` equal bins of consecutive steps (the mean
    of each bin is a less noisy curve than every k-th value)."""
    v = np.asarray(values, dtype=float)
    s = np.asarray(steps, dtype=float)
    if v.size == 0:
        return {"step": [], "elbo": []}
    bins = np.array_split(np.arange(v.size), min(points, v.size))
    return {
        "step": [int(s[b[-1]]) for b in bins],
        "elbo": [round(float(v[b].mean()), 4) for b in bins],
    }


def _spline_steps(family: VariationalFlow) -> list[torch.nn.Module]:
    """The autoregressive spline modules of ``family`` in the order samples meet them."""
    from nflows.transforms.autoregressive import (
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform as Spline,
    )

    return [m for m in family.modules() if isinstance(m, Spline)]


@torch.no_grad()
def spline_inside(family: VariationalFlow, num_samples: int) -> list[float]:
    """For each spline layer, in order, the share of ``num_samples`` fresh samples whose
    input to that spline lies inside its active square ``[-B, B]^d`` (``B`` the tail bound;
    outside it, in any coordinate, the spline is the identity there). For the slides' order
    the first layer's input is the base sample itself; with the affine first it is the
    affine's output. Draws from the global RNG."""
    shares: list[float] = []
    handles = [
        step.register_forward_pre_hook(
            lambda mod, args: shares.append(
                float((args[0].abs() <= mod.tail_bound).all(-1).double().mean())
            )
        )
        for step in _spline_steps(family)
    ]
    try:
        family.sample_and_log_prob(num_samples)
    finally:
        for h in handles:
            h.remove()
    return [round(x, 5) for x in shares]


@torch.no_grad()
def evaluate(family: VariationalFlow, target: GaussianMixture, config: MogConfig) -> dict[str, Any]:
    """The metrics of one trained run.

    * ``elbo`` / ``elbo_se``: the ELBO (NSF) or auxiliary ELBO (CIF-NSF) over
      ``eval_samples`` draws, with its Monte Carlo standard error;
    * ``marginal_elbo`` / ``_se``: ``E[log p(z) - log q_Z(z)]`` with ``log q_Z`` exact (NSF) or
      estimated with ``r`` as proposal and ``M`` u-samples (CIF), computed in float64 on a
      copy of the model since the spline inverses are fragile in float32;
    * ``log_z_iw`` / ``_se``: the importance-sampled ``log Z`` estimate
      ``log (1/K) sum_k p(z_k) / q(z_k)`` averaged over groups of ``K = iw_k`` (the weights
      are the auxiliary ones for CIFs: their mean is still exactly ``Z``); ``log_z_all``
      uses all ``eval_samples`` at once. Both should approach ``log Z = 0``;
    * ``coverage`` (9 fractions) and ``coverage_kl`` (``KL(c || 1/C)``);
    * ``ess``: the effective sample size behind each importance-sampled estimate
      (:func:`~cifutils.objectives.ess_summary`: ``min``, ``median``, ``low_fraction``,
      ``reliable``): ``log_z_iw`` per group of ``K``, ``log_z_all`` over all samples, and
      ``marginal_elbo`` per point over the ``M`` u-samples (None for an explicit flow, whose
      ``log q_Z`` is exact). An estimate that is not ``reliable`` (too many of its terms
      below :data:`~cifutils.objectives.MIN_ESS` effective samples) is not meaningful,
      however small its standard error: :func:`estimate_text` prints it as such.

    :func:`run_cell` adds ``spline_inside`` (:func:`spline_inside`) after drawing the stored
    samples, so that neither these metrics nor the samples depend on it.
    """
    family.eval()
    z, log_q = family.sample_and_log_prob(config.eval_samples)
    log_w = (target.log_prob(z) - log_q).double()
    if not torch.isfinite(log_w).all():
        raise FloatingPointError("non-finite log-weights at evaluation")
    elbo, elbo_se = mean_and_stderr(log_w)
    k = config.iw_k
    groups = log_w[: (log_w.numel() // k) * k].reshape(-1, k)
    log_z_iw, log_z_iw_se = mean_and_stderr(logmeanexp(groups, dim=1))
    ess = {
        "log_z_iw": ess_summary(effective_sample_size(groups, dim=1), k),
        "log_z_all": ess_summary(effective_sample_size(log_w, dim=0), log_w.numel()),
        "marginal_elbo": None,
    }
    frac, kl = coverage(target, z)
    # Samples farther than 4 standard deviations from every mean (the target puts
    # exp(-8) ~ 0.03% of its mass there): nearest-component coverage hides these.
    dist = torch.cdist(z.double(), target.means.to(z.device)).min(dim=1).values
    far = float((dist > 4 * target.std).double().mean())
    f64 = copy.deepcopy(family).double()
    zm = z[: config.marginal_points].double()
    chunk = max(1, 200_000 // config.marginal_u_samples)
    parts = [
        f64.marginal_log_prob(part, num_u_samples=config.marginal_u_samples, return_ess=True)
        for part in zm.split(chunk)
    ]
    log_qz = torch.cat([log_q for log_q, _ in parts])
    if family.is_cif:
        marginal_ess = torch.cat([e for _, e in parts])
        ess["marginal_elbo"] = ess_summary(marginal_ess, config.marginal_u_samples)
    marg_w = target.log_prob(zm) - log_qz
    if not torch.isfinite(marg_w).all():
        raise FloatingPointError("non-finite marginal log-weights at evaluation")
    marginal, marginal_se = mean_and_stderr(marg_w)
    return {
        "elbo": elbo,
        "elbo_se": elbo_se,
        "elbo_kind": "auxiliary" if family.is_cif else "exact",
        "marginal_elbo": marginal,
        "marginal_elbo_se": marginal_se,
        "log_z_iw": log_z_iw,
        "log_z_iw_se": log_z_iw_se,
        "log_z_all": float(logmeanexp(log_w, dim=0)),
        "coverage": [round(c, 5) for c in frac],
        "coverage_kl": kl,
        "modes_covered": int(sum(c > 0.01 for c in frac)),
        "far_fraction": far,
        "ess": ess,
    }


def estimate_text(metrics: dict[str, Any], key: str, digits: int = 4, show_ess: bool = True) -> str:
    """``metrics[key]`` as text beside its effective sample size, e.g. ``"-0.7810 (ESS
    median 85.1 of 100)"``; when its ``ess`` report (see :func:`evaluate`) says it is not
    reliable, a flag around the number, e.g. ``"not meaningful (116863.1234; ESS median 1.0
    of 100, 100% below 10)"``. Results written before ESS reports (and exact values) show
    their number alone."""
    value = f"{metrics[key]:.{digits}f}"
    report = (metrics.get("ess") or {}).get(key)
    if not report:
        return value
    ess = f"ESS median {report['median']:.1f} of {report['samples']:,}"
    if report["reliable"]:
        return f"{value} ({ess})" if show_ess else value
    low = f"{100 * report['low_fraction']:.0f}% below {report['threshold']:g}"
    return f"not meaningful ({value}; {ess}, {low})"


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def run_cell(
    config: MogConfig,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 500,
    stop_after: int | None = None,
    progress: bool | None = None,
) -> tuple[dict[str, Any] | None, VariationalFlow]:
    """Train and evaluate one cell (on CPU); resume from ``checkpoint`` when it exists.

    Args:
        config: the run.
        checkpoint: file for the model, optimizer, history, step and the torch / numpy /
            python RNG states, written atomically every ``checkpoint_every`` steps and at
            the end. A resumed run reproduces the uninterrupted one exactly on CPU.
        stop_after: stop (after checkpointing) once this many steps are done in total, as
            if interrupted; the result is then None.
        progress: show a progress bar.

    Returns:
        The JSON-ready result (None if stopped early) and the trained model.
    """
    t_start = time.perf_counter()
    target = get_target(config.target)
    seed_everything(config.seed)
    family = build_model(config.model, config.sigma0)
    optimizer = torch.optim.Adam(family.parameters(), lr=config.lr)
    history, start, train_seconds = History(), 0, 0.0
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        state = load_checkpoint(path)
        diff = config_differences(state["config"], config)
        if diff:
            raise ValueError(
                f"checkpoint {path} belongs to another configuration ({_differences_text(diff)})"
                "; delete it to start this one, or use another checkpoint folder"
            )
        family.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = History.from_state_dict(state["history"])
        start, train_seconds = state["step"], state.get("train_seconds", 0.0)
        _set_rng_state(state["rng"])
    end = config.steps if stop_after is None else min(config.steps, stop_after)

    t_fit = time.perf_counter()

    def elapsed() -> float:
        # Training time over all resumed segments (History.seconds only updates at the end).
        return train_seconds + time.perf_counter() - t_fit

    def save(step_done: int) -> None:
        if path is not None:
            save_checkpoint(
                path,
                {
                    "config": asdict(config),
                    "model": family.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": history.state_dict(),
                    "step": step_done,
                    "rng": _rng_state(),
                    "train_seconds": elapsed(),
                },
            )

    def loss_fn(step: int) -> Tensor:
        z, log_q = family.sample_and_log_prob(config.batch)
        return (log_q - target.log_prob(z)).mean()

    def callback(step: int, hist: History) -> None:
        if (step + 1) % checkpoint_every == 0 and step + 1 < end:
            save(step + 1)

    family.train()
    if start < end:
        fit(
            family,
            loss_fn,
            end,
            clip=config.clip,
            optimizer=optimizer,
            start_step=start,
            history=history,
            progress=progress,
            callback=callback,
            desc=cell_name(config.model, config.sigma0, config.seed),
        )
        save(end)
    total = elapsed() if start < end else train_seconds
    if end < config.steps:
        return None, family
    metrics = evaluate(family, target, config)
    samples = family.sample(config.stored_samples) if config.stored_samples else None
    metrics["spline_inside"] = spline_inside(family, config.eval_samples)
    result = {
        "experiment": "mog",
        "budget": config.budget,
        "config": asdict(config),
        "provenance": provenance(asdict(config), "cpu"),
        "seed": config.seed,
        "num_parameters": num_parameters(family),
        "train_seconds": round(total, 2),
        "wall_seconds": round(time.perf_counter() - t_start, 2),
        "ms_per_step": round(1000 * total / max(1, config.steps), 3),
        "resumed_at_step": start,
        "metrics": metrics,
        "curve": downsample_curve(history.steps, [-x for x in history.loss]),
        "samples": None if samples is None else encode_samples(samples),
    }
    return result, family


def encode_samples(z: Tensor, decimals: int = 2) -> str:
    """``(n, 2)`` samples as one compact string ``"x,y x,y ..."`` (keeps the JSON small)."""
    return " ".join(f"{a:.{decimals}f},{b:.{decimals}f}" for a, b in z.tolist())


def decode_samples(text: str) -> np.ndarray:
    """The inverse of :func:`encode_samples`: an ``(n, 2)`` float array."""
    return np.array([[float(v) for v in pair.split(",")] for pair in text.split()])


def load_cell(
    model: str, sigma0: float, seed: int, budgets: Sequence[str] = ("paper", "book")
) -> dict[str, Any] | None:
    """The committed result of a cell from the first budget in ``budgets`` that has one."""
    from .results import load_result

    for b in budgets:
        res = load_result(result_path(b, model, sigma0, seed), fetch=False)
        if res is not None:
            return res
    return None


def committed_results(
    source: str,
    seeds: Sequence[int] | None = None,
    fetch: bool | None = None,
    models: Sequence[str] = MODELS,
) -> dict[tuple[str, float, int], dict[str, Any]]:
    """The committed results of budget ``source`` under ``results/mog/<source>/``:
    ``(model, sigma0, seed) -> result`` for every cell of ``models`` found (seeds
    ``0 .. mog_seeds - 1`` unless ``seeds`` is given). Nothing is trained; missing cells are
    simply absent. ``fetch`` (default: only outside a checkout, e.g. on Colab) also tries
    the repository."""
    from .results import load_result

    if fetch is None:
        fetch = not results_dir().is_dir()
    seeds = range(get_budget(source).mog_seeds) if seeds is None else seeds
    found = {}
    for seed in seeds:
        for m in models:
            for s in SIGMA0S:
                r = load_result(result_path(source, m, s, seed), fetch=fetch)
                if r is not None:
                    found[(m, s, seed)] = r
    return found


def collect_results(
    budget: str, sources: Sequence[str] = ("paper", "book"), progress: bool | None = None
) -> tuple[str, dict[tuple[str, float, int], dict[str, Any]]]:
    """Every cell's result, for the chapter: from the first budget in ``sources`` whose
    six seed-0 cells are all committed under ``results/mog/`` (with every seed found), else
    trained live at ``budget`` (seed 0 only, no checkpoints).

    Returns:
        The budget the results came from and ``(model, sigma0, seed) -> result``.
    """
    for source in sources:
        first = committed_results(source, seeds=[0])
        if len(first) == len(MODELS) * len(SIGMA0S):
            return source, committed_results(source)
    live = {}
    for m in MODELS:
        for s in SIGMA0S:
            live[(m, s, 0)], _ = run_cell(
                MogConfig.from_budget(m, s, 0, budget), None, progress=progress
            )
    return get_budget(budget).name, live


def _seeds_text(seeds: Sequence[int]) -> str:
    seeds = sorted(set(seeds))
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(s) for s in seeds)


def _wrap(text: str, width: int | None, indent: str = "    ") -> str:
    """``text`` broken at spaces into lines of at most ``width`` characters (None: one line);
    continuation lines start with ``indent``."""
    if width is None:
        return text
    return textwrap.fill(text, width, subsequent_indent=indent, break_long_words=False)


def provenance_note(
    results: dict[tuple[str, float, int], dict[str, Any]], label: str = "", width: int | None = 70
) -> str:
    """Where ``results`` came from, read from their own records: budget (steps x samples
    per step), seeds and number of runs, device(s), torch version(s) and commit(s), after
    ``label``, e.g. ``"budget paper (20,000 steps x 1,000 samples), seed 0, 6 runs, device
    cpu, torch 2.13.0+cpu, commits 5751343, ..."``, wrapped at ``width`` characters."""
    prefix = f"{label} " if label else ""
    if not results:
        return prefix + "no results"
    runs = list(results.values())
    budgets = sorted({r["budget"] for r in runs})
    sizes = sorted({(r["config"]["steps"], r["config"]["batch"]) for r in runs})
    size = "; ".join(f"{a:,} steps x {b:,} samples" for a, b in sizes)
    seeds = _seeds_text([seed for _, _, seed in results])
    devices = ", ".join(sorted({r["provenance"]["device"] for r in runs}))
    torches = ", ".join(sorted({r["provenance"]["torch_version"] for r in runs}))
    commits = sorted({r["provenance"]["git_commit"][:7] for r in runs})
    text = (
        f"budget {'/'.join(budgets)} ({size}), {seeds}, {len(runs)} runs, "
        f"device {devices}, torch {torches}, "
        f"commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}"
    )
    return _wrap(prefix + text, width)


def _cell_metrics(results: dict, model: str, sigma0: float) -> list[dict[str, Any]]:
    """The ``metrics`` of every seed of one cell, in seed order."""
    return [r["metrics"] for k, r in sorted(results.items()) if k[:2] == (model, sigma0)]


def _values(results: dict, model: str, sigma0: float, key: str) -> np.ndarray | None:
    """The metric ``key`` of every seed of one cell, in seed order (None if a run lacks it)."""
    runs = _cell_metrics(results, model, sigma0)
    if any(key not in r for r in runs):
        return None
    return np.array([r[key] for r in runs], dtype=float)


def _mean_and_error(results: dict, model: str, sigma0: float) -> tuple[float, float, int]:
    """Mean ELBO over seeds and its standard error: across seeds when there are several,
    else the Monte Carlo standard error of the one run."""
    v = _values(results, model, sigma0, "elbo")
    if v.size > 1:
        return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)), int(v.size)
    return float(v[0]), float(_values(results, model, sigma0, "elbo_se")[0]), 1


def _present(results: dict, model: str, sigma0: float) -> bool:
    return any((m, s) == (model, sigma0) for m, s, _ in results)


def compare_models(
    results: dict[tuple[str, float, int], dict[str, Any]],
    z: float = 2.0,
    models: tuple[str, str] = MODELS,
) -> dict[float, dict[str, Any]]:
    """Per ``sigma_0`` with runs of both ``models`` (default: Figure 1's CIF-NSF and NSF):
    the mean ELBO of each, the difference first minus second with its standard error, and
    the verdict (the name of the higher model, or ``"tie"`` for a difference within ``z``
    standard errors). The standard error is across seeds when every model has several,
    else the Monte Carlo error of single runs (which ignores seed-to-seed variation: one
    seed decides about that run, not the method).
    """
    out = {}
    first, second = models
    for s in SIGMA0S:
        if not all(_present(results, m, s) for m in models):
            continue
        (a, ea, na), (b, eb, nb) = (_mean_and_error(results, m, s) for m in models)
        diff, se = a - b, math.hypot(ea, eb)
        verdict = "tie" if abs(diff) <= z * se else (first if diff > 0 else second)
        out[s] = {
            "elbo": {first: a, second: b},
            "diff": diff,
            "se": se,
            "seeds": min(na, nb),
            "verdict": verdict,
        }
    return out


def check_claims(
    results: dict[tuple[str, float, int], dict[str, Any]],
) -> dict[str, bool | None]:
    """The slides' qualitative claims about Figure 1, each checked on ``results`` (means
    over the seeds found; "significantly" means by more than 2 standard errors, see
    :func:`compare_models`). A claim is None when a cell it needs has no run."""
    have = {(m, s): _present(results, m, s) for m in MODELS for s in SIGMA0S}
    mean = {k: _mean_and_error(results, *k) for k, ok in have.items() if ok}
    complete = all(have.values())
    cmp = compare_models(results)

    def nsf_lower(s: float) -> bool | None:
        if ("nsf", s) not in mean or ("nsf", 1.0) not in mean:
            return None
        (lo, e_lo, _), (hi, e_hi, _) = mean["nsf", s], mean["nsf", 1.0]
        return bool(hi - lo > 2 * math.hypot(e_lo, e_hi))

    def spread(m: str) -> float:
        return float(np.ptp([mean[m, s][0] for s in SIGMA0S]))

    return {
        "CIF-NSF covers all 9 modes at every sigma_0, every run": all(
            (_values(results, MODELS[0], s, "modes_covered") == 9).all() for s in SIGMA0S
        )
        if complete
        else None,
        "CIF-NSF's ELBO varies less over sigma_0 than NSF's": (
            spread(MODELS[0]) < spread("nsf") if complete else None
        ),
        "NSF's ELBO is significantly lower at sigma_0 = 0.1 than at 1": nsf_lower(0.1),
        "NSF's ELBO is significantly lower at sigma_0 = 10 than at 1": nsf_lower(10.0),
        "CIF-NSF's ELBO is significantly above NSF's at every sigma_0": (
            all(c["verdict"] == MODELS[0] for c in cmp.values()) if complete else None
        ),
        "CIF-NSF's ELBO is significantly below NSF's at no sigma_0": (
            all(c["verdict"] != "nsf" for c in cmp.values()) if complete else None
        ),
    }


def findings(
    results: dict[tuple[str, float, int], dict[str, Any]], width: int | None = 70
) -> list[str]:
    """One entry per ``sigma_0`` saying, from ``results``, which model has the higher ELBO
    (or a tie), how many modes each covers (per seed) and what share of its samples lies
    far (over 4 standard deviations) from every mode; wrapped at ``width`` characters."""
    names = {MODELS[0]: "CIF-NSF", "nsf": "NSF"}
    lines = []
    cmp = compare_models(results)
    for s in SIGMA0S:
        if s not in cmp:
            missing = [names[m] for m in MODELS if not _present(results, m, s)]
            lines.append(_wrap(f"sigma_0 = {s:g}: no run of {' or '.join(missing)}", width))
            continue
        c = cmp[s]
        err = "seed-to-seed" if c["seeds"] > 1 else "Monte Carlo, one run"
        if c["verdict"] == "tie":
            verdict = f"tie (difference {c['diff']:+.3f} within 2 standard errors, {err})"
        else:
            verdict = (
                f"{names[c['verdict']]} higher by {abs(c['diff']):.3f} nats "
                f"(> 2 standard errors of {c['se']:.3f}, {err})"
            )
        parts = []
        for m in MODELS:
            modes = "/".join(f"{v:.0f}" for v in _values(results, m, s, "modes_covered"))
            far = _values(results, m, s, "far_fraction")
            far_text = "n/a" if far is None else f"{100 * far.mean():.1f}%"
            parts.append(f"{names[m]} {modes} modes, {far_text} far")
        elbos = ", ".join(f"{names[m]} {c['elbo'][m]:.3f}" for m in MODELS)
        lines.append(_wrap(f"sigma_0 = {s:g}: ELBO {elbos}: {verdict}; {'; '.join(parts)}", width))
    return lines


def summary_table(
    results: dict[tuple[str, float, int], dict[str, Any]], columns: Sequence[str] | None = None
):
    """A pandas table over ``sigma_0`` x model: mean +- std over seeds of the ELBO, the
    marginal ELBO, the ``log Z`` estimate, the modes covered (one figure per seed), the
    coverage KL, the share of samples far from every mode, and the share of inputs of the
    first spline inside its active square (:func:`first_spline_inside`) (only ``columns``
    of them when given)."""
    import pandas as pd

    rows = []
    order = list(ABLATION)
    keys = sorted({(m, s) for m, s, _ in results}, key=lambda k: (k[1], order.index(k[0])))
    for m, s in keys:
        runs = _cell_metrics(results, m, s)

        def fmt(key: str, digits: int = 3, runs: list = runs) -> str:
            if any(key not in r for r in runs):
                return "n/a"
            v = np.array([r[key] for r in runs], dtype=float)
            reports = [(r.get("ess") or {}).get(key) for r in runs]
            flag = (
                " (not meaningful: low ESS)"
                if any(e and not e["reliable"] for e in reports)
                else ""
            )
            if v.size == 1:
                return f"{v[0]:.{0 if key == 'modes_covered' else digits}f}" + flag
            return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" + flag

        inside = first_spline_inside(m, s, runs)
        rows.append(
            {
                "sigma_0": f"{s:g}",
                "model": LABELS[m],
                "seeds": len(runs),
                "ELBO (aux. for CIF)": fmt("elbo"),
                "marginal ELBO": fmt("marginal_elbo"),
                "log Z estimate (K=100)": fmt("log_z_iw"),
                "modes covered": "/".join(str(r.get("modes_covered", "?")) for r in runs),
                "coverage KL": fmt("coverage_kl"),
                "far from all modes": fmt("far_fraction"),
                "1st spline input in [-3, 3]²": "n/a" if inside is None else f"{inside:.3f}",
            }
        )
    table = pd.DataFrame(rows).set_index(["sigma_0", "model"])
    return table if columns is None else table[list(columns)]


def first_spline_inside(model: str, sigma0: float, runs: Sequence[dict]) -> float | None:
    """The share of samples whose input to the first spline layer lies inside its active
    square ``[-3, 3]^2``, averaged over ``runs`` (their ``metrics``): measured
    (``spline_inside``) where the runs recorded it; exact where the first spline reads the
    base sample itself (the NSF and the slides' order), ``P(|N(0, sigma0^2)| <= 3)^2``;
    else None."""
    measured = [r["spline_inside"][0] for r in runs if "spline_inside" in r]
    if measured and len(measured) == len(runs):
        return float(np.mean(measured))
    if VARIANTS[model][1] in (None, "spline-first"):
        return math.erf(3.0 / (sigma0 * math.sqrt(2.0))) ** 2
    return None


def ablation_values(
    results: dict[tuple[str, float, int], dict[str, Any]], models: Sequence[str] = ABLATION
) -> tuple[dict, dict]:
    """What :func:`cifutils.plotting.plot_order_ablation` draws: two dicts keyed by
    ``(model, sigma0)``, the ELBO of every seed found, and the first spline's share of
    inputs inside its square (:func:`first_spline_inside`; None where unknown)."""
    elbos, inside = {}, {}
    for m in models:
        for s in SIGMA0S:
            runs = _cell_metrics(results, m, s)
            elbos[m, s] = [r["elbo"] for r in runs]
            inside[m, s] = first_spline_inside(m, s, runs) if runs else None
    return elbos, inside


def order_summary(results: dict[tuple[str, float, int], dict[str, Any]]) -> dict[str, float]:
    """The figures the chapter's reading of the order ablation quotes, by name: for every
    model of :data:`ABLATION` (tags ``af``, ``sf``, ``ctrl``, ``nsf``) and ``sigma_0`` (tags
    ``01``, ``1``, ``10``) the mean ELBO over the seeds found (``<model>_elbo_<s>``), the
    share of samples far from every mode in percent (``<model>_far_<s>``) and the smallest
    number of modes covered by a seed (``<model>_modes_<s>``), the first spline's share of
    inputs in range in percent (``<model>_inside_<s>``, :func:`first_spline_inside`); and
    ``af_seeds`` and ``ctrl_seeds``, the fewest seeds of a cell of those models. Missing cells
    give NaN."""
    tags = {"cif-nsf-af": "af", "cif-nsf": "sf", "affine-nsf": "ctrl", "nsf": "nsf"}
    out: dict[str, float] = {}
    seeds: dict[str, list[int]] = {"af": [], "ctrl": []}
    for m, tag in tags.items():
        for s in SIGMA0S:
            stag = f"{s:g}".replace(".", "")
            runs = _cell_metrics(results, m, s)
            if tag in seeds:
                seeds[tag].append(len(runs))
            out[f"{tag}_elbo_{stag}"] = (
                float(np.mean([r["elbo"] for r in runs])) if runs else math.nan
            )
            out[f"{tag}_far_{stag}"] = (
                100 * float(np.mean([r["far_fraction"] for r in runs])) if runs else math.nan
            )
            out[f"{tag}_modes_{stag}"] = (
                float(min(r["modes_covered"] for r in runs)) if runs else math.nan
            )
            inside = first_spline_inside(m, s, runs) if runs else None
            out[f"{tag}_inside_{stag}"] = math.nan if inside is None else 100 * inside
    for tag, counts in seeds.items():
        out[f"{tag}_seeds"] = float(min(counts))
    return out


def order_findings(
    results: dict[tuple[str, float, int], dict[str, Any]], width: int | None = 70
) -> list[str]:
    """The order ablation, one entry per ``sigma_0``: the affine-first CIF-NSF against the
    slides' order and against the control without ``u`` (:func:`compare_models` on each
    pair: mean ELBOs, the difference and its verdict); wrapped at ``width`` characters."""
    lines = []
    for s in SIGMA0S:
        parts = []
        for pair in (("cif-nsf-af", "cif-nsf"), ("cif-nsf-af", "affine-nsf")):
            c = compare_models(results, models=pair).get(s)
            if c is None:
                missing = [LABELS[m] for m in pair if not _present(results, m, s)]
                parts.append(f"no run of {' or '.join(missing)}")
                continue
            verdict = "tie" if c["verdict"] == "tie" else f"{LABELS[c['verdict']]} higher"
            parts.append(
                f"{LABELS[pair[0]]} {c['elbo'][pair[0]]:.3f} vs {LABELS[pair[1]]} "
                f"{c['elbo'][pair[1]]:.3f}: {verdict} (difference {c['diff']:+.3f}, "
                f"se {c['se']:.3f}, {c['seeds']} seed{'s' if c['seeds'] > 1 else ''})"
            )
        lines.append(_wrap(f"sigma_0 = {s:g}: " + "; ".join(parts), width))
    return lines


def side_by_side(
    named: dict[str, dict[tuple[str, float, int], dict[str, Any]]],
    columns: Sequence[str] = (
        "seeds",
        "ELBO (aux. for CIF)",
        "modes covered",
        "far from all modes",
    ),
):
    """Several :func:`summary_table` s next to each other, one column group per entry of
    ``named`` (label -> results), e.g. ``{"paper, seed 0": ..., "book, 3 seeds": ...}``."""
    import pandas as pd

    return pd.concat([summary_table(r, columns) for r in named.values()], axis=1, keys=list(named))


def _unit_seed(seed: int, n: int, rep: int) -> int:
    """The RNG seed of repetition ``rep`` at sample size ``n``: each (n, rep) is its own
    stream, so any subset of the study, in any process and order, gives the same numbers."""
    return (seed * 100_003 + n) * 1_009 + rep


def _num_u_samples(rule: str, n: int) -> int:
    """``M`` of a rule of the estimator study at ``N = n``: ``"N"`` or ``"sqrtN"``."""
    return n if rule == "N" else math.ceil(math.sqrt(n))


def _marginal_log_q(
    log_weights: Callable[[Tensor], Tensor], z: Tensor, m: int, chunk_rows: int
) -> Tensor:
    """``log q_hat_M(z)`` for each row of ``z (n, d)`` from ``log_weights`` (the CIF's
    ``_inverse_log_prob``: one log importance weight per row, u drawn from r inside), in
    calls of ``chunk_rows`` backward passes: several points per call when ``M`` is small,
    several calls per point when it is large."""
    if m <= chunk_rows:
        per = max(1, chunk_rows // m)
        return torch.cat(
            [logmeanexp(log_weights(p.repeat(m, 1)).reshape(m, -1), dim=0) for p in z.split(per)]
        )
    pieces = [chunk_rows] * (m // chunk_rows) + ([m % chunk_rows] if m % chunk_rows else [])
    out = []
    for point in z.split(1):
        w = torch.cat([log_weights(point.expand(k, -1).contiguous()) for k in pieces])
        out.append(logmeanexp(w, dim=0).reshape(1))
    return torch.cat(out)


class _EstimatorUnit:
    """One repetition at one ``N`` of :func:`estimator_study`: picklable, so that worker
    processes can run it."""

    def __init__(self, family, target, m_rules, chunk_rows, max_rows, seed, compiled):
        self.family, self.target, self.m_rules = family, target, tuple(m_rules)
        self.chunk_rows, self.max_rows = chunk_rows, max_rows
        self.seed, self.compiled = seed, compiled
        self._fn = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fn": None}  # a compiled function does not pickle

    def rules(self, n: int) -> dict[str, int]:
        """``M`` of each rule at ``N = n`` that fits within ``max_rows``."""
        ms = {rule: _num_u_samples(rule, n) for rule in self.m_rules}
        return {r: m for r, m in ms.items() if self.max_rows is None or n * m <= self.max_rows}

    def _log_weights(self, rows: Tensor) -> Tensor:
        """One log importance weight per row (``u`` drawn from ``r`` inside); calls of
        exactly ``chunk_rows`` rows go through the compiled function when ``compiled``
        (one shape, one compilation), others stay eager."""
        eager = self.family._inverse_log_prob
        if not self.compiled or rows.shape[0] != self.chunk_rows:
            return eager(rows, None)
        if self._fn is None:
            self._fn = torch.compile(eager, fullgraph=True, dynamic=False)
        import torch._inductor.config as inductor_config

        # random draws stay aten's, as in eager mode: compiled = eager up to rounding
        with inductor_config.patch(fallback_random=True):
            return self._fn(rows.contiguous(), None)

    @torch.no_grad()
    def __call__(self, unit: tuple[int, int]) -> dict[str, Any]:
        n, rep = unit
        torch.manual_seed(_unit_seed(self.seed, n, rep))
        z, log_q = self.family.sample_and_log_prob(n)
        log_p = self.target.log_prob(z)
        record: dict[str, Any] = {"n": n, "rep": rep, "aux": (log_p - log_q).mean().item()}
        for rule, m in self.rules(n).items():
            log_qz = _marginal_log_q(self._log_weights, z, m, self.chunk_rows)
            record[f"marg_{rule}"] = (log_p - log_qz).mean().item()
        return record


_WORKER_UNIT: _EstimatorUnit | None = None  # in a worker process: the study it serves


def _worker_init(unit: _EstimatorUnit) -> None:
    global _WORKER_UNIT
    torch.set_num_threads(1)
    _WORKER_UNIT = unit


def _worker_run(unit: tuple[int, int]) -> dict[str, Any]:
    return _WORKER_UNIT(unit)


def estimator_study(
    family: VariationalFlow,
    target: GaussianMixture,
    ns: Sequence[int],
    reps: int,
    m_rules: Sequence[str] = ("N", "sqrtN"),
    chunk_rows: int = 10_000,
    max_rows: int | None = None,
    seed: int = 0,
    workers: int = 1,
    compiled: bool = False,
    cache: str | Path | None = None,
) -> dict[str, Any]:
    """Marginal vs auxiliary ELBO estimates as the number ``N`` of z-samples grows.

    For each ``N`` and repetition: draw ``N`` samples ``(z, u)`` of the CIF; the auxiliary
    estimate is ``mean(log p(z) - log q_aux(z, u))``; the marginal estimate is
    ``mean(log p(z) - log q_hat_M(z))`` with ``M = N`` or ``M = ceil(sqrt N)`` u-samples
    (float64, through the fused inverse of :mod:`cifutils.fast`). A marginal estimate that
    needs more than ``max_rows`` backward passes (``N * M``) per repetition is skipped: its
    mean and std are ``None`` and it is listed under ``"skipped"``. Returns the mean and
    standard deviation over ``reps`` of each estimate, and of the paired difference
    marginal minus auxiliary on the same ``z`` samples (``diff_<rule>_mean/std``), which shows
    the marginal estimate's bias far more sharply than either estimate alone; ``"units"``
    keeps every repetition's values.

    Each (N, repetition) draws from its own seeded stream, so the study can be split:
    ``workers > 1`` runs the repetitions in that many single-thread processes, and
    ``cache`` (a JSON-lines file) keeps each finished repetition, so that an interrupted
    study resumes where it stopped; either way the numbers are those of one uninterrupted
    single-process run. ``compiled`` passes the backward passes through ``torch.compile``
    (CPU: about 15% faster for long runs; the same numbers up to rounding).
    """
    from .fast import accelerate

    f64 = accelerate(copy.deepcopy(family).double())
    run = _EstimatorUnit(f64, target, m_rules, chunk_rows, max_rows, seed, compiled)
    header = {
        "ns": list(ns),
        "reps": reps,
        "m_rules": list(m_rules),
        "max_rows": max_rows,
        "seed": seed,
        "chunk_rows": chunk_rows,  # it decides which u-noise goes to which point
    }
    done = _read_unit_cache(cache, header)
    todo = [(n, rep) for n in sorted(ns, reverse=True) for rep in range(reps)]
    todo = [u for u in todo if u not in done]  # largest N first: the workers finish together

    def keep(record: dict[str, Any]) -> None:
        done[(record["n"], record["rep"])] = record
        if cache is not None:
            with open(cache, "a") as f:
                f.write(json.dumps(record) + "\n")

    if workers <= 1 or len(todo) <= 1:
        for unit in todo:
            keep(run(unit))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, context, _worker_init, (run,)) as pool:
            for future in as_completed([pool.submit(_worker_run, unit) for unit in todo]):
                keep(future.result())  # as each finishes: the cache loses no finished work
    return _summarize_units(done, ns, reps, m_rules, run)


def _read_unit_cache(cache: str | Path | None, header: dict[str, Any]) -> dict:
    """Finished repetitions from ``cache``; a cache written for another study is reset."""
    if cache is None:
        return {}
    path = Path(cache)
    lines = path.read_text().splitlines() if path.exists() else []
    if not lines or json.loads(lines[0]) != header:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(header) + "\n")
        return {}
    records = [json.loads(line) for line in lines[1:] if line.strip()]
    return {(r["n"], r["rep"]): r for r in records}


def _summarize_units(done, ns, reps, m_rules, run: _EstimatorUnit) -> dict[str, Any]:
    out: dict[str, Any] = {"n": list(ns), "reps": reps, "aux_mean": [], "aux_std": []}
    out["skipped"] = [
        {"rule": rule, "n": n, "rows_per_rep": n * _num_u_samples(rule, n)}
        for n in ns
        for rule in m_rules
        if rule not in run.rules(n)
    ]
    for rule in m_rules:
        for key in ("marg", "diff"):
            out[f"{key}_{rule}_mean"], out[f"{key}_{rule}_std"] = [], []
    for n in ns:
        records = [done[(n, rep)] for rep in range(reps)]
        aux = np.array([r["aux"] for r in records])
        out["aux_mean"].append(float(aux.mean()))
        out["aux_std"].append(float(aux.std()))
        for rule in m_rules:
            marg = None
            if rule in run.rules(n):
                marg = np.array([r[f"marg_{rule}"] for r in records])
            for key, values in (("marg", marg), ("diff", None if marg is None else marg - aux)):
                out[f"{key}_{rule}_mean"].append(None if values is None else float(values.mean()))
                out[f"{key}_{rule}_std"].append(None if values is None else float(values.std()))
    out["units"] = [done[(n, rep)] for n in ns for rep in range(reps)]
    return out


def _sub_flow(family: VariationalFlow, upto: int) -> VariationalFlow:
    """The flow made of the base and ``family.layers[:upto]`` (modules shared)."""
    sub = VariationalFlow.__new__(VariationalFlow)
    torch.nn.Module.__init__(sub)
    sub.base, sub.dim = family.base, family.dim
    sub.layers = torch.nn.ModuleList(family.layers[:upto])
    return sub


@torch.no_grad()
def layer_posteriors(
    family: VariationalFlow,
    num_points: int = 100,
    u_grid: Tensor | None = None,
    num_u_samples: int = 50,
) -> list[dict[str, Any]]:
    """The exact posterior ``q(u_l | w_l)`` of each CIF layer against the learned
    ``r(u_l | w_l)``, on a grid of a 1-D ``u``.

    By Bayes' rule, with ``w_{l-1} = G_l^{-1}(w_l; u)``,

    .. math::

        q(u \\mid w_l) \\propto q_{W_{l-1}}(w_{l-1})\\, q(u \\mid w_{l-1})\\,
        |\\det \\partial_{w_l} G_l^{-1}(w_l; u)|,

    normalized by quadrature over the grid. ``q_{W_{l-1}}`` is exact for the first layer
    (the Gaussian base) and the marginal estimate with ``num_u_samples`` for later ones.
    Since ``q(u_{1:L} | z) = prod_l q(u_l | w_l)`` exactly, the per-layer KLs
    ``E KL(q(u_l | w_l) || r(u_l | w_l))`` add up to the gap between the marginal and the
    auxiliary ELBO.

    Returns:
        One dict per CIF layer: ``layer`` (position), ``kl`` and ``kl_se`` (mean and standard
        error over ``num_points`` samples ``w_l``), and for the first 3 points the grid,
        ``log_q`` and ``log_r`` curves (lists) for plotting.
    """
    f64 = copy.deepcopy(family).double()
    grid = (torch.linspace(-6, 6, 241) if u_grid is None else u_grid).double()
    du = (grid[1] - grid[0]).item()
    sample = f64.forward_sample(num_points)
    cif_positions = [i for i, layer in enumerate(f64.layers) if isinstance(layer, CIFLayer)]
    out = []
    for pos, step in zip(cif_positions, sample.steps):
        if step.u.shape[1] != 1:
            raise ValueError("layer_posteriors needs a 1-D index u")
        layer: CIFLayer = f64.layers[pos]
        g = grid.numel()
        w_out = step.z.repeat_interleave(g, dim=0)
        u = grid.repeat(num_points)[:, None]
        w_in, logdet_inv = layer.transform.inverse(w_out, u)
        sub = _sub_flow(f64, pos)
        if sub.is_cif:
            log_q_in = sub.marginal_log_prob(w_in, num_u_samples=num_u_samples)
        else:
            log_q_in = sub.marginal_log_prob(w_in)
        log_joint = (log_q_in + layer.q_u.log_prob(u, w_in) + logdet_inv).reshape(num_points, g)
        log_post = log_joint - torch.logsumexp(log_joint, dim=1, keepdim=True) - math.log(du)
        v_out = step.v.repeat_interleave(g, dim=0)
        log_r = layer.r_u.log_prob(u, v_out).reshape(num_points, g)
        post = log_post.exp() * du
        kl = (post * (log_post - log_r)).sum(1)
        mean, se = mean_and_stderr(kl)
        out.append(
            {
                "layer": pos,
                "kl": mean,
                "kl_se": se,
                "u": grid.tolist(),
                "log_q": log_post[:3].tolist(),
                "log_r": log_r[:3].tolist(),
            }
        )
    return out


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = cli.ArgumentParser(
        prog="python -m cifutils.experiments mog",
        description="VI on the 9-component Gaussian mixture: NSF vs CIF-NSF (Figure 1).",
    )
    p.add_argument(
        "--model",
        choices=tuple(VARIANTS),
        default=MODELS[0],
        help="cif-nsf-af: CIF-NSF with the indexed affine before each spline (the authors' "
        "code; the default); cif-nsf: the slides' order, spline then affine; affine-nsf: the "
        "control, an NSF with a learnable affine before each spline and no index u",
    )
    p.add_argument(
        "--models",
        choices=tuple(VARIANTS),
        nargs="+",
        default=None,
        help=f"with --all: these models (default: Figure 1's {' and '.join(MODELS)})",
    )
    p.add_argument("--sigma0", type=cli.POSITIVE, default=1.0)
    p.add_argument("--seed", type=cli.SEED, default=0)
    p.add_argument(
        "--budget", type=cli.budget, default=None, help="smoke, book or paper ($CIFUTILS_BUDGET)"
    )
    p.add_argument("--steps", type=cli.count(1), default=None, help="override the budget's steps")
    p.add_argument("--batch", type=cli.count(1), default=None, help="override the budget's batch")
    p.add_argument(
        "--all",
        action="store_true",
        help="run every (seed, model, sigma0) cell of the budget in turn, seed 0 "
        "first; finished cells are skipped",
    )
    p.add_argument(
        "--seeds",
        type=cli.SEED,
        nargs="+",
        default=None,
        help="with --all: only these seeds (default: the budget's mog_seeds)",
    )
    p.add_argument(
        "--estimator",
        action="store_true",
        help="run the estimator study on the trained cell given by "
        "--model cif-nsf --sigma0 --seed (trains it first if needed)",
    )
    p.add_argument(
        "--estimator-max-rows",
        type=cli.count(1),
        default=None,
        help="skip marginal estimates needing more than this many backward passes (N * M) "
        "per repetition (M = N = 10,000 is 1e8 passes: hours on a CPU)",
    )
    p.add_argument(
        "--workers",
        type=cli.count(1),
        default=1,
        help="estimator study on the CPU: run its repetitions in this many single-thread "
        "processes (the numbers do not depend on it)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="estimator study: pass the backward passes through torch.compile",
    )
    p.add_argument("--results", default=None, help="results folder (default: results/)")
    p.add_argument("--runs", default="runs", help="checkpoint folder (default: runs/)")
    p.add_argument("--checkpoint-every", type=cli.count(1), default=500)
    p.add_argument(
        "--stop-after",
        type=cli.count(1),
        default=None,
        help="stop after this many steps (simulates an interruption; rerun to resume)",
    )
    p.add_argument(
        "--threads",
        type=cli.count(1),
        default=1,
        help="torch CPU threads (default 1: these small models gain nothing from more, and on "
        "a loaded 2-core machine 2 threads measured 2,325 ms per step against 32 ms with 1; "
        "measure before raising it)",
    )
    p.add_argument(
        "--device",
        type=cli.device(),
        default="cpu",
        help="device of the estimator study (training stays on CPU)",
    )
    p.add_argument("--force", action="store_true", help="recompute an existing result")
    p.add_argument(
        "--reevaluate",
        action="store_true",
        help="recompute the metrics of a finished run from its final checkpoint "
        "(same samples: the RNG state is restored) and rewrite its JSON",
    )
    return p.parse_args(list(argv))


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    if args.steps is not None:
        out["steps"] = args.steps
    if args.batch is not None:
        out["batch"] = args.batch
    return out


def _run_one(
    args: argparse.Namespace, model: str, sigma0: float, seed: int, root: Path
) -> tuple[int, VariationalFlow | None]:
    config = MogConfig.from_budget(model, sigma0, seed, args.budget, **_overrides(args))
    if seed != 0:
        config.stored_samples = 0
    out = root / result_path(config.budget, model, sigma0, seed)
    ckpt = Path(args.runs) / "mog" / config.budget / (cell_name(model, sigma0, seed) + ".pt")
    if args.reevaluate:
        if not ckpt.exists() or load_checkpoint(ckpt)["step"] != config.steps:
            print(f"{cell_name(model, sigma0, seed)}: no finished checkpoint, skipped")
            return 0, None
        old = json.loads(out.read_text()) if out.exists() else {}
        result, family = run_cell(config, ckpt)
        for key in ("provenance", "wall_seconds", "ms_per_step", "resumed_at_step"):
            if key in old:
                result[key] = old[key]
        result["reevaluated"] = provenance(asdict(config), "cpu")["date"]
        write_json(out, result)
        print(f"{out.name}: re-evaluated")
        return 0, family
    if out.exists() and not args.force and not args.estimator:
        # A result stands for the configuration it was computed with, overrides included.
        diff = config_differences(json.loads(out.read_text()).get("config", {}), config)
        if not diff:
            print(f"{out}: exists, skipped")
            return 0, None
        print(
            f"{out}: exists but was computed with another configuration "
            f"({_differences_text(diff)}): kept, nothing computed. Rerun with --force to "
            "replace it, or give another --results folder to keep both",
            file=sys.stderr,
        )
        return 1, None
    if args.force and ckpt.exists() and not args.estimator:
        remove_checkpoint(ckpt)
    result, family = run_cell(config, ckpt, args.checkpoint_every, args.stop_after)
    if result is None:
        print(
            f"{cell_name(model, sigma0, seed)}: stopped at step {args.stop_after}; "
            f"checkpoint {ckpt}"
        )
        return 0, None
    if not out.exists() or args.force:
        write_json(out, result)
    m = result["metrics"]
    print(
        f"{out}: ELBO {m['elbo']:.4f} +- {m['elbo_se']:.4f}, marginal "
        f"{estimate_text(m, 'marginal_elbo')}, log Z {estimate_text(m, 'log_z_iw')}, "
        f"modes {m['modes_covered']}, {result['ms_per_step']} ms/step"
    )
    return 0, family


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cifutils.experiments mog``."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    root = Path(args.results) if args.results else results_dir()
    budget = get_budget(args.budget)
    if args.all:
        rc = 0
        for seed in args.seeds if args.seeds is not None else range(budget.mog_seeds):
            for model in args.models or MODELS:
                for sigma0 in SIGMA0S:
                    rc = max(rc, _run_one(args, model, sigma0, seed, root)[0])
        return rc
    rc, family = _run_one(args, args.model, args.sigma0, args.seed, root)
    if args.estimator:
        if family is None or not family.is_cif:
            print("the estimator study needs a finished CIF cell (cif-nsf or cif-nsf-af)")
            return 2
        ns = [n for n in (1, 10, 100, 1_000, 10_000) if n <= budget.mog_estimator_max_n]
        device = torch.device(args.device)
        family = family.to(device)
        rows = 4_000_000 if device.type == "cuda" else 2_000  # backward passes per call
        name = "estimator_" + cell_name(args.model, args.sigma0, args.seed)
        t0 = time.perf_counter()
        study = estimator_study(
            family,
            get_target("mog9"),
            ns,
            budget.mog_estimator_reps,
            chunk_rows=rows,
            max_rows=args.estimator_max_rows,
            seed=10_000 + args.seed,
            workers=args.workers if device.type == "cpu" else 1,
            compiled=args.compile,
            cache=Path(args.runs) / "mog" / budget.name / (name + ".jsonl"),
        )
        config = {
            "model": args.model,
            "sigma0": args.sigma0,
            "seed": args.seed,
            "budget": budget.name,
            "ns": ns,
            "reps": budget.mog_estimator_reps,
            "max_rows": args.estimator_max_rows,
            "threads": args.threads,
            "workers": args.workers,
            "compile": args.compile,
            "chunk_rows": rows,
        }
        study.update(
            provenance=provenance(config, device),
            budget=budget.name,
            wall_seconds=round(time.perf_counter() - t0, 1),
        )
        out = root / "mog" / budget.name / (name + ".json")
        write_json(out, study)
        print(f"{out}: written")
    return rc
