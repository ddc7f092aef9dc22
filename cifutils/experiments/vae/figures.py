"""Chapter 6's figures: images in a grid, latent projections, the live runs' training
history, reconstructions and prior samples, validation curves, the continued runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from cifutils.plotting.densities import axes_or_current
from cifutils.plotting.indexed import to_numpy
from cifutils.training import seed_everything

__all__ = [
    "plot_image_grid",
    "plot_latent_projection",
    "plot_training_history",
    "plot_reconstructions",
    "plot_posterior_projections",
    "plot_validation_curves",
    "plot_validation_panels",
    "plot_continued_runs",
    "plot_continued_panels",
]

#: The two datasets of Table 1, in the order of the chapter's two-panel figures.
DATASETS = ("mnist", "fashion-mnist")


def plot_image_grid(images, ncols: int = 8, ax=None, title: str | None = None):
    """Show ``images (N, 1, 28, 28)`` (values in [0, 1]) as one grey-scale mosaic."""
    imgs = to_numpy(images).reshape(-1, 28, 28)
    nrows = -(-len(imgs) // ncols)
    canvas = np.ones((nrows * 29 + 1, ncols * 29 + 1))
    for i, img in enumerate(imgs):
        r, c = divmod(i, ncols)
        canvas[1 + 29 * r : 29 * (r + 1), 1 + 29 * c : 29 * (c + 1)] = img
    ax = ax or plt.gca()
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def plot_latent_projection(z, basis, ax=None, title: str | None = None, color: str = "C0"):
    """Scatter samples ``z (S, d)`` projected on the two columns of ``basis (d, 2)``,
    centred at their mean; axes labelled as the two projection directions."""
    pts = (to_numpy(z) - to_numpy(z).mean(0)) @ to_numpy(basis)
    ax = ax or plt.gca()
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.3, color=color, rasterized=True)
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    if title:
        ax.set_title(title)
    return ax


def plot_training_history(states: Mapping[str, dict], ax=None):
    """Training and validation ELBO per epoch of the live runs, one pair of lines per run.

    Args:
        states: ``{posterior: state}`` with the training states of
            :func:`~cifutils.experiments.vae.training.train` (``epoch`` and
            ``history["val_elbo"]``, ``history["train_elbo"]``, one value per epoch).
        ax: the axes to draw on; a new 5 x 3.2 inch figure when None.

    Returns:
        The axes: validation ELBO as solid lines, training ELBO dashed in the same colour,
        labelled axes and a legend. Runs of up to 30 epochs mark each epoch (dots, crosses)
        and tick every epoch; longer ones (the ``paper`` budget's) draw plain lines with
        integer ticks.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    longest = max((st["epoch"] for st in states.values()), default=0)
    short = longest <= 30
    for kind, st in states.items():
        epochs = np.arange(1, st["epoch"] + 1)
        val, train = ("o-", "x--") if short else ("-", "--")
        (line,) = ax.plot(epochs, st["history"]["val_elbo"], val, label=f"{kind} (validation)")
        ax.plot(
            epochs,
            st["history"]["train_elbo"],
            train,
            color=line.get_color(),  # one colour per run
            alpha=0.5,
            label=f"{kind} (training)",
        )
    if short:
        ax.set_xticks(np.arange(1, longest + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean (auxiliary) ELBO per image (nats)")
    ax.legend(fontsize=7)
    return ax


def plot_reconstructions(
    models: Mapping[str, torch.nn.Module],
    images: torch.Tensor,
    seed: int,
    ncols: int = 4,
    figsize: tuple[float, float] = (15, 2.8),
):
    """Test images, then for each model their reconstructions and as many prior samples.

    Reconstructions decode one ``z ~ q(z | x)`` per image and samples decode ``z ~ p(z)``
    (Bernoulli means, see :meth:`~cifutils.experiments.vae.model.VAE.reconstruct` and
    :meth:`~cifutils.experiments.vae.model.VAE.sample`). The generators are seeded with
    ``seed`` once, after the test images are drawn and before the first model, so the
    figure is repeatable.

    Args:
        models: ``{posterior: VAE}``, one pair of panels each, in this order.
        images: the test images ``(N, 1, 28, 28)`` to reconstruct (N samples are drawn too).
        seed: seed of :func:`~cifutils.training.seed_everything`.
        ncols: images per row of each panel.
        figsize: the figure's size in inches.

    Returns:
        The figure, ``1 + 2 * len(models)`` titled panels in one row.
    """
    fig, axes = plt.subplots(1, 1 + 2 * len(models), figsize=figsize, squeeze=False)
    axes = axes[0]
    plot_image_grid(images, ncols=ncols, ax=axes[0], title="test\nimages")
    seed_everything(seed)
    for i, (kind, vae) in enumerate(models.items()):
        title = f"{kind}:\nreconstructions"
        plot_image_grid(vae.reconstruct(images), ncols=ncols, ax=axes[1 + 2 * i], title=title)
        samples = vae.sample(len(images))
        plot_image_grid(samples, ncols=ncols, ax=axes[2 + 2 * i], title=f"{kind}:\nprior samples")
    return fig


def plot_posterior_projections(
    models: Mapping[str, torch.nn.Module],
    images: torch.Tensor,
    num_samples: int,
    figsize: tuple[float, float] = (10, 8.5),
):
    """Samples of each model's ``q(z | x)`` for a few images, projected on their two
    principal directions: one row per image, one column (and colour) per model.

    The samples are drawn from torch's global generator image by image, model by model (row
    by row), so seed it beforehand for a repeatable figure.

    Args:
        models: ``{posterior: VAE}``, one column each, in this order.
        images: the images ``(N, 1, 28, 28)``, one row each.
        num_samples: samples of ``z`` per image and model.
        figsize: the figure's size in inches.

    Returns:
        The figure; the first row's panels are titled with the image and the posterior, the
        others with the image.
    """
    fig, axes = plt.subplots(len(images), len(models), figsize=figsize, squeeze=False)
    for i in range(len(images)):
        for j, (kind, vae) in enumerate(models.items()):
            with torch.no_grad():
                z = vae.posterior.sample(num_samples, context=images[i : i + 1])[0]
            basis = torch.linalg.svd(z - z.mean(0), full_matrices=False).Vh[:2].T
            title = f"image {i}: {kind}" if i == 0 else f"image {i}"
            plot_latent_projection(z, basis, ax=axes[i, j], color=f"C{j}", title=title)
    fig.tight_layout()
    return fig


def plot_validation_curves(runs: dict, dataset: str, ax=None, first_epoch: int = 1):
    """Validation ELBO per epoch of the runs of one dataset in a ``vae-many`` summary
    (``{name: {"val_elbo": [...], ...}}``, names ``<dataset>-<posterior>-seed<s>-<budget>``):
    one colour per posterior, one line per seed, from ``first_epoch`` on."""
    ax = axes_or_current(ax)
    colours = {"gaussian": "C0", "nsf": "C1", "cif-nsf": "C2"}
    labelled = set()
    mine = {n: r for n, r in runs.items() if n.startswith(dataset + "-")}
    kind = {n: n[len(dataset) + 1 :].rsplit("-seed", 1)[0] for n in mine}
    order = list(colours)
    for name in sorted(mine, key=lambda n: (order.index(kind[n]) if kind[n] in order else 9, n)):
        run, posterior = mine[name], kind[name]
        values = np.asarray(run["val_elbo"], dtype=float)[first_epoch - 1 :]
        epochs = np.arange(first_epoch, first_epoch + len(values))
        label = None if posterior in labelled else posterior
        labelled.add(posterior)
        ax.plot(epochs, values, color=colours.get(posterior), lw=1, alpha=0.8, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation ELBO (nats)")
    ax.set_title(dataset)
    ax.legend()
    return ax


def plot_validation_panels(runs: dict, first_epoch: int = 5, datasets: Sequence[str] = DATASETS):
    """:func:`plot_validation_curves` of each dataset side by side.

    Args:
        runs: a ``vae-many`` summary's runs (``{name: {"val_elbo": [...], ...}}``).
        first_epoch: the first epoch drawn.
        datasets: one panel each, in this order.

    Returns:
        The figure, 10 x 3.4 inches for two panels.
    """
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        plot_validation_curves(runs, dataset, ax=ax, first_epoch=first_epoch)
    fig.tight_layout()
    return fig


def plot_continued_runs(
    rows: list[dict], dataset: str, ax=None, mark_epoch: int | None = 63, first_epoch: int = 10
):
    """Validation ELBO per epoch of the VAE runs of one dataset (rows of
    :func:`~cifutils.experiments.vae.tables.collect_results`, with their ``val_elbo``
    histories) from ``first_epoch`` on: one colour per posterior, one line per seed, a dot at
    each run's best-validation epoch and a dotted line at ``mark_epoch`` (where the 63-epoch
    runs of ``results/vae/`` stopped; None: no line)."""
    ax = axes_or_current(ax)
    colours = {"gaussian": "C0", "nsf": "C1", "cif-nsf": "C2"}
    labelled = set()
    for row in rows:
        if row["dataset"] != dataset:
            continue
        values = np.asarray(row["val_elbo"], dtype=float)
        epochs = np.arange(1, len(values) + 1)
        keep = epochs >= first_epoch
        colour = colours.get(row["posterior"])
        label = None if row["posterior"] in labelled else row["posterior"]
        labelled.add(row["posterior"])
        ax.plot(epochs[keep], values[keep], color=colour, lw=0.8, alpha=0.8, label=label)
        best = row["best_epoch"]
        ax.plot([best], [values[best - 1]], "o", color=colour, ms=4)
    if mark_epoch is not None:
        ax.axvline(mark_epoch, color="grey", ls=":", label=f"epoch {mark_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation ELBO (nats)")
    ax.set_title(dataset)
    ax.legend(fontsize=7)
    return ax


def plot_continued_panels(rows: list[dict], datasets: Sequence[str] = DATASETS, **kwargs):
    """:func:`plot_continued_runs` of each dataset side by side.

    Args:
        rows: the continued runs, from
            :func:`~cifutils.experiments.vae.tables.collect_results` (``folder="vae/long"``).
        datasets: one panel each, in this order.
        **kwargs: passed on to :func:`plot_continued_runs` (``mark_epoch``, ``first_epoch``).

    Returns:
        The figure, 10 x 3.4 inches for two panels.
    """
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        plot_continued_runs(rows, dataset, ax=ax, **kwargs)
    fig.tight_layout()
    return fig
