"""Chapter 5's figures: Figure 1's grid of samples, the estimator study, the order ablation."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from cifutils.plotting.densities import axes_or_current, plot_kde
from cifutils.plotting.indexed import plot_index_colouring, plot_layer_posterior

from .config import MODELS, SIGMA0S
from .evaluation import decode_samples

__all__ = [
    "plot_order_ablation",
    "plot_mog_grid",
    "plot_estimator_study",
    "plot_estimator_differences",
    "plot_figure1",
    "plot_training_curves",
    "plot_estimator_panels",
    "plot_layer_posteriors",
    "plot_index_colourings",
]


def plot_mog_grid(
    cells: dict,
    models: Sequence[str],
    sigma0s: Sequence[float],
    labels: dict | None = None,
    size: float = 3.2,
):
    """Figure 1 of the slides: one row per model, one column per ``sigma_0``.

    Args:
        cells: ``(model, sigma0) -> (samples (n, 2), elbo)``.
        models: row order (the slides: CIF-NSF on top, NSF below).
        sigma0s: column order.
        labels: display names of the models.

    Returns:
        The figure.
    """
    labels = labels or {}
    fig, axes = plt.subplots(
        len(models), len(sigma0s), figsize=(size * len(sigma0s), size * len(models)), squeeze=False
    )
    for i, model in enumerate(models):
        for j, s in enumerate(sigma0s):
            samples, value = cells[(model, s)]
            name = labels.get(model, model)
            ax = plot_kde(samples, axes[i, j])
            title = f"{name}, $\\sigma_0$={s:g}\nELBO = {value:.{3 if abs(value) < 100 else 1}f}"
            if ax.outside_fraction > 0.005:
                title += f", {100 * ax.outside_fraction:.0f}% outside"
            ax.set_title(title)
            if j > 0:
                axes[i, j].set_ylabel("")
    fig.tight_layout()
    return fig


def _errorbar_where_run(ax, n, study: dict, key: str, shift: float, **kwargs) -> None:
    """``study[key + "_mean"]`` +- ``study[key + "_std"]`` against ``n * shift``, leaving out
    the skipped entries (``None``)."""
    means = np.asarray(study[f"{key}_mean"], dtype=object)
    ran = means != None  # noqa: E711 (elementwise)
    stds = np.asarray(study[f"{key}_std"], dtype=object)[ran].astype(float)
    ax.errorbar(n[ran] * shift, means[ran].astype(float), yerr=stds, capsize=3, **kwargs)


def plot_estimator_study(study: dict, ax=None, reference: float | None = None):
    """Mean +- standard deviation over repetitions of the auxiliary and marginal ELBO
    estimates against the number of samples ``N`` (log axis); skipped estimates (``None``)
    are left out."""
    ax = axes_or_current(ax)
    n = np.asarray(study["n"], dtype=float)
    series = [
        ("aux", "auxiliary ELBO", "o"),
        ("marg_N", "marginal, $M = N$", "s"),
        ("marg_sqrtN", "marginal, $M = \\lceil\\sqrt{N}\\rceil$", "^"),
    ]
    for shift, (key, label, marker) in zip((0.94, 1.0, 1.06), series):
        if f"{key}_mean" in study:
            _errorbar_where_run(ax, n, study, key, shift, marker=marker, label=label)
    if reference is not None:
        ax.axhline(reference, color="grey", ls="--", lw=1, label="$\\log p(x) = 0$")
    ax.set_xscale("log")
    ax.set_xlabel("number of samples $N$")
    ax.set_ylabel("estimate (nats)")
    ax.legend()
    return ax


def plot_estimator_differences(study: dict, ax=None, linthresh: float | None = 0.01):
    """Mean +- standard deviation over repetitions of the paired difference marginal minus
    auxiliary ELBO estimate (same ``z`` samples) against ``N``, for each rule for ``M``;
    skipped estimates are left out. Needs a study with ``diff_*`` entries. The y axis is
    linear within ``+-linthresh`` and logarithmic beyond (``None``: linear), so that the
    small settled values and the wide spread at small ``N`` both stay readable."""
    ax = axes_or_current(ax)
    n = np.asarray(study["n"], dtype=float)
    series = [
        ("N", "$M = N$", "s", "C1"),
        ("sqrtN", "$M = \\lceil\\sqrt{N}\\rceil$", "^", "C2"),
    ]
    for shift, (rule, label, marker, colour) in zip((0.97, 1.03), series):
        if f"diff_{rule}_mean" in study:
            key = f"diff_{rule}"
            _errorbar_where_run(ax, n, study, key, shift, marker=marker, color=colour, label=label)
    ax.axhline(0.0, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("number of samples $N$")
    ax.set_ylabel("marginal $-$ auxiliary (nats)")
    if linthresh is not None:
        ax.set_yscale("symlog", linthresh=linthresh)
        ax.set_ylabel(f"marginal $-$ auxiliary (nats,\nlinear within $\\pm${linthresh:g})")
    ax.legend()
    return ax


def plot_order_ablation(
    elbos: dict,
    inside: dict,
    models: Sequence[str],
    sigma0s: Sequence[float],
    labels: dict | None = None,
    size: float = 3.4,
):
    """The order ablation of the mixture experiment: one column per ``sigma_0``; top, the
    ELBO of every seed (dots) and their mean (bar) per model on a symmetric-log axis (the
    NSF at ``sigma_0 = 10`` is far below the others); bottom, the share of the first spline's
    inputs inside its active square.

    Args:
        elbos: ``(model, sigma0) -> list of ELBOs`` (one per seed; missing cells are left
            empty and marked "not run").
        inside: ``(model, sigma0) -> share or None``.
        models: x-axis order.
        sigma0s: column order.
        labels: display names of the models.

    Returns:
        The figure.
    """
    labels = labels or {}
    fig, axes = plt.subplots(
        2,
        len(sigma0s),
        figsize=(size * len(sigma0s), 1.45 * size),
        squeeze=False,
        sharex=True,
        gridspec_kw={"height_ratios": [2, 1]},
    )
    x = np.arange(len(models))
    for j, s in enumerate(sigma0s):
        top, bottom = axes[0, j], axes[1, j]
        for i, m in enumerate(models):
            values = elbos.get((m, s)) or []
            colour = f"C{i}"
            if values:
                top.bar(i, np.mean(values), color=colour, alpha=0.35, width=0.7)
                top.plot([i] * len(values), values, "o", color=colour, ms=4)
            else:
                top.text(i, -0.05, "not run", ha="center", va="top", rotation=90, fontsize=8)
            share = inside.get((m, s))
            if share is not None:
                bottom.bar(i, share, color=colour, alpha=0.8, width=0.7)
            else:
                bottom.text(i, 0.05, "n/a", ha="center", fontsize=8)
        top.set_yscale("symlog", linthresh=0.1)
        top.axhline(0.0, color="0.3", lw=0.8)
        top.set_title(f"$\\sigma_0$ = {s:g}")
        bottom.set_ylim(0, 1.05)
        bottom.set_xticks(x, [labels.get(m, m) for m in models], rotation=35, ha="right")
        if j == 0:
            top.set_ylabel("ELBO (aux. for CIF), nats\n(symmetric log scale)")
            bottom.set_ylabel("1st spline's inputs\nin $[-3, 3]^2$")
    fig.tight_layout()
    return fig


def plot_figure1(
    results: dict,
    models: Sequence[str] = MODELS,
    sigma0s: Sequence[float] = SIGMA0S,
    seed: int = 0,
    size: float = 3.0,
):
    """Figure 1 from the results of one seed (``(model, sigma0, seed) -> result``): the stored
    samples of each run as a density, titled with its ELBO (:func:`plot_mog_grid`; the first
    model is labelled CIF-NSF). Returns the figure."""
    cells = {
        (m, s): (
            decode_samples(results[(m, s, seed)]["samples"]),
            results[(m, s, seed)]["metrics"]["elbo"],
        )
        for m in models
        for s in sigma0s
    }
    labels = {models[0]: "CIF-NSF", "nsf": "NSF"}
    return plot_mog_grid(cells, models, sigma0s, labels=labels, size=size)


def plot_training_curves(
    results: dict,
    models: Sequence[str] = MODELS,
    sigma0s: Sequence[float] = SIGMA0S,
    seed: int = 0,
):
    """The training ELBO (means over bins of steps, as stored) of the first model (labelled
    CIF-NSF) and the NSF, one panel per ``sigma_0``. Returns the figure."""
    fig, axes = plt.subplots(1, len(sigma0s), figsize=(11, 3.2), sharey=True)
    for ax, s in zip(axes, sigma0s):
        for m, name in ((models[0], "CIF-NSF"), ("nsf", "NSF")):
            curve = results[(m, s, seed)]["curve"]
            ax.plot(curve["step"], curve["elbo"], label=name)
        ax.set(title=f"$\\sigma_0$ = {s:g}", xlabel="Adam step", ylim=(-6, 0.3))
    axes[0].set_ylabel("training ELBO (bin means)")
    axes[0].legend()
    return fig


def plot_estimator_panels(study: dict):
    """The estimator study in two panels: both estimates against ``N``
    (:func:`plot_estimator_study`, against ``log Z = 0``) and their paired differences
    (:func:`plot_estimator_differences`; left empty for a study saved without them). Returns
    the figure."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    plot_estimator_study(study, axes[0], reference=0.0)
    if "diff_N_mean" in study:
        plot_estimator_differences(study, axes[1])
    return fig


def plot_layer_posteriors(post: list[dict]):
    """The exact posterior of ``u`` against ``r`` for one sample ``w`` of the first and of the
    last CIF layer (``post`` from :func:`~cifutils.experiments.mog.posteriors.layer_posteriors`).
    Returns the figure."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, i in zip(axes, (0, len(post) - 1)):
        plot_layer_posterior(
            post[i]["u"],
            post[i]["log_q"][0],
            post[i]["log_r"][0],
            ax,
            title=f"CIF layer {i + 1}, one sample $w_{{{i + 1}}}$",
        )
    return fig


def plot_index_colourings(sample):
    """Samples ``z`` of a CIF coloured by the index of its first and of its last layer
    (``sample`` from :meth:`~cifutils.families.VariationalFlow.forward_sample`). Returns the
    figure."""
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4), layout="constrained")
    for ax, i in zip(axes, (0, len(sample.us) - 1)):
        plot_index_colouring(
            sample.z.numpy(), sample.us[i].numpy(), ax, title=f"samples coloured by $u_{i + 1}$"
        )
    return fig
