"""Tests of chapter 6's figure and table helpers (cifutils.experiments.vae.figures and the
line and table builders of cifutils.experiments.vae.tables), on the Agg backend."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from cifutils import seed_everything  # noqa: E402
from cifutils.experiments import vae as vx  # noqa: E402
from cifutils.experiments.vae import figures, make_vae  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def models():
    """Two small Gaussian VAEs (different weights) standing in for the trained posteriors."""
    torch.manual_seed(0)
    return {"first": make_vae("gaussian").eval(), "second": make_vae("gaussian").eval()}


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.full((4, 1, 28, 28), 0.3), generator=gen)


def _states():
    return {
        "gaussian": {
            "epoch": 3,
            "seconds": 4.6,
            "best_val": -142.494,
            "best_epoch": 3,
            "history": {
                "val_elbo": [-160.0, -150.0, -142.5],
                "train_elbo": [-170.0, -155.0, -148.0],
            },
        },
        "nsf": {
            "epoch": 4,
            "seconds": 23.5,
            "best_val": -144.0,
            "best_epoch": 2,
            "history": {
                "val_elbo": [-165.0, -144.0, -145.0, -146.0],
                "train_elbo": [-175.0, -158.0, -150.0, -149.0],
            },
        },
    }


def _grid_cell(ax, index: int, ncols: int) -> np.ndarray:
    """The image at ``index`` of a :func:`figures.plot_image_grid` mosaic on ``ax``."""
    canvas = np.asarray(ax.images[0].get_array())
    r, c = divmod(index, ncols)
    return canvas[1 + 29 * r : 29 * (r + 1), 1 + 29 * c : 29 * (c + 1)]


# -- figures -------------------------------------------------------------------------------


def test_training_history_draws_both_curves_of_every_run():
    states = _states()
    ax = figures.plot_training_history(states)
    assert tuple(ax.figure.get_size_inches()) == (5.0, 3.2)
    assert len(ax.lines) == 4  # validation and training per run
    val, train = ax.lines[2], ax.lines[3]  # the NSF's
    assert list(val.get_xdata()) == [1, 2, 3, 4]
    assert list(val.get_ydata()) == states["nsf"]["history"]["val_elbo"]
    assert list(train.get_ydata()) == states["nsf"]["history"]["train_elbo"]
    assert val.get_linestyle() == "-" and val.get_marker() == "o"
    assert val.get_color() == train.get_color() != ax.lines[0].get_color()  # a colour per run
    assert train.get_linestyle() == "--" and train.get_marker() == "x"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [
        "gaussian (validation)",
        "gaussian (training)",
        "nsf (validation)",
        "nsf (training)",
    ]
    assert list(ax.get_xticks()) == [1, 2, 3, 4]  # every epoch of the longest run
    assert ax.get_xlabel() == "epoch" and "ELBO" in ax.get_ylabel()
    fig, mine = plt.subplots()
    assert figures.plot_training_history(states, ax=mine) is mine
    assert len(fig.axes) == 1


def test_training_history_of_paper_length_runs_has_plain_lines_and_few_ticks():
    """A run of the paper budget (189 epochs here) draws lines without markers and about ten
    integer ticks, not one per epoch."""
    n = 189
    history = {
        "val_elbo": list(-np.linspace(120, 94, n)),
        "train_elbo": list(-np.linspace(125, 92, n)),
    }
    ax = figures.plot_training_history({"gaussian": {"epoch": n, "history": history}})
    val, train = ax.lines
    assert list(val.get_xdata()) == list(range(1, n + 1))
    assert val.get_marker() in ("None", None, "") and train.get_marker() in ("None", None, "")
    assert val.get_linestyle() == "-" and train.get_linestyle() == "--"
    ticks = [t for t in ax.get_xticks() if 1 <= t <= n]
    assert 3 <= len(ticks) <= 12 and all(float(t).is_integer() for t in ticks)
    plt.close(ax.figure)


def test_reconstructions_show_images_reconstructions_and_seeded_samples(models, images):
    fig = figures.plot_reconstructions(models, images, seed=3, ncols=2)
    axes = fig.axes
    assert len(axes) == 1 + 2 * len(models)
    assert [ax.get_title() for ax in axes] == [
        "test\nimages",
        "first:\nreconstructions",
        "first:\nprior samples",
        "second:\nreconstructions",
        "second:\nprior samples",
    ]
    np.testing.assert_array_equal(_grid_cell(axes[0], 3, ncols=2), images[3, 0].numpy())
    # the same draws, in the same order, as seeding once and running the models in turn
    seed_everything(3)
    for i, vae in enumerate(models.values()):
        recon, samples = vae.reconstruct(images), vae.sample(len(images))
        for j in range(len(images)):
            cell = _grid_cell(axes[1 + 2 * i], j, ncols=2)
            np.testing.assert_allclose(cell, recon[j, 0].numpy(), rtol=0, atol=1e-7)
            cell = _grid_cell(axes[2 + 2 * i], j, ncols=2)
            np.testing.assert_allclose(cell, samples[j, 0].numpy(), rtol=0, atol=1e-7)
    # so a second call gives the same figure
    again = figures.plot_reconstructions(models, images, seed=3, ncols=2)
    for a, b in zip(fig.axes, again.axes):
        np.testing.assert_array_equal(a.images[0].get_array(), b.images[0].get_array())
    other = figures.plot_reconstructions(models, images, seed=4, ncols=2)
    assert not np.array_equal(other.axes[2].images[0].get_array(), axes[2].images[0].get_array())


def test_posterior_projections_draw_each_image_under_each_model(models, images):
    torch.manual_seed(7)
    fig = figures.plot_posterior_projections(models, images[:2], num_samples=50)
    axes = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_title() for ax in axes.ravel()] == [
        "image 0: first",
        "image 0: second",
        "image 1",
        "image 1",
    ]
    for ax in axes.ravel():
        assert ax.get_xlabel() == "direction 1" and ax.get_ylabel() == "direction 2"
        assert len(ax.collections) == 1 and ax.collections[0].get_offsets().shape == (50, 2)
    # the draws come image by image, model by model, from torch's global generator
    torch.manual_seed(7)
    for i in range(2):
        for j, vae in enumerate(models.values()):
            with torch.no_grad():
                z = vae.posterior.sample(50, context=images[i : i + 1])[0]
            basis = torch.linalg.svd(z - z.mean(0), full_matrices=False).Vh[:2].T
            expected = ((z - z.mean(0)) @ basis).numpy()
            drawn = np.asarray(axes[i, j].collections[0].get_offsets())
            np.testing.assert_allclose(drawn, expected, rtol=1e-5, atol=1e-5)
            colour = matplotlib.colors.to_rgb(f"C{j}")
            assert tuple(axes[i, j].collections[0].get_facecolor()[0][:3]) == colour
            # principal directions: the first carries at least the variance of the second
            assert drawn[:, 0].var() >= drawn[:, 1].var()


def _summary_runs(first: float = -120.0) -> dict:
    """A ``vae-many`` summary: two seeds of every posterior on MNIST, one NSF run on
    Fashion-MNIST."""
    runs = {}
    for q, offset in (("gaussian", 0.0), ("nsf", 4.0), ("cif-nsf", 4.5)):
        for seed, noise in ((0, 0.0), (1, 0.5)):
            curve = [first + offset + noise + e for e in range(8)]
            runs[f"mnist-{q}-seed{seed}-paper"] = {
                "val_elbo": curve,
                "best_val_elbo": max(curve),
                "epochs": len(curve),
            }
    runs["fashion-mnist-nsf-seed0-paper"] = {
        "val_elbo": [-250.0, -245.0, -244.0],
        "best_val_elbo": -244.0,
        "epochs": 3,
    }
    return runs


def test_validation_panels_draw_one_panel_per_dataset():
    fig = figures.plot_validation_panels(_summary_runs(), first_epoch=5)
    assert len(fig.axes) == 2 and tuple(fig.get_size_inches()) == (10.0, 3.4)
    mnist, fashion = fig.axes
    assert mnist.get_title() == "mnist" and fashion.get_title() == "fashion-mnist"
    assert len(mnist.lines) == 6  # two seeds of each posterior
    (empty,) = fashion.lines  # the one Fashion-MNIST run has 3 epochs < first_epoch
    assert len(empty.get_xdata()) == 0
    assert list(mnist.lines[0].get_xdata()) == [5, 6, 7, 8]
    assert list(mnist.lines[0].get_ydata()) == [-116.0, -115.0, -114.0, -113.0]
    assert mnist.get_xlabel() == "epoch" and mnist.get_ylabel() == "validation ELBO (nats)"
    assert [t.get_text() for t in mnist.get_legend().get_texts()] == ["gaussian", "nsf", "cif-nsf"]
    fig = figures.plot_validation_panels(
        _summary_runs(), first_epoch=1, datasets=("fashion-mnist",)
    )
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 1


def _continued_rows() -> list[dict]:
    def row(dataset, posterior, seed, epochs, best):
        curve = [-200.0 + e for e in range(epochs)]
        return {
            "dataset": dataset,
            "posterior": posterior,
            "seed": seed,
            "val_elbo": curve,
            "best_epoch": best,
        }

    return [
        row("mnist", "gaussian", 0, 80, 70),
        row("mnist", "nsf", 0, 100, 90),
        row("mnist", "nsf", 1, 120, 100),
        row("fashion-mnist", "cif-nsf", 0, 90, 40),
    ]


def test_continued_panels_draw_one_panel_per_dataset():
    fig = figures.plot_continued_panels(_continued_rows(), mark_epoch=63, first_epoch=10)
    assert len(fig.axes) == 2 and tuple(fig.get_size_inches()) == (10.0, 3.4)
    mnist, fashion = fig.axes
    assert mnist.get_title() == "mnist" and fashion.get_title() == "fashion-mnist"
    # per run a curve and its best-epoch dot, then the dotted line at epoch 63
    assert len(mnist.lines) == 2 * 3 + 1 and len(fashion.lines) == 2 + 1
    assert (
        list(mnist.lines[0].get_xdata())[:2] == [10, 11] and len(mnist.lines[0].get_xdata()) == 71
    )
    assert list(fashion.lines[1].get_xdata()) == [40]
    assert list(fashion.lines[1].get_ydata()) == [-200.0 + 39]
    assert list(mnist.lines[-1].get_xdata()) == [63, 63]
    assert mnist.get_xlabel() == "epoch" and mnist.get_ylabel() == "validation ELBO (nats)"
    labels = [t.get_text() for t in mnist.get_legend().get_texts()]
    assert labels == ["gaussian", "nsf", "epoch 63"]
    # without a marked epoch: the curves and dots only
    bare = figures.plot_continued_panels(_continued_rows(), mark_epoch=None).axes[0]
    assert len(bare.lines) == 2 * 3
    assert [t.get_text() for t in bare.get_legend().get_texts()] == ["gaussian", "nsf"]


# -- tables and lines ------------------------------------------------------------------------


def test_training_lines_give_one_line_per_run():
    assert vx.training_lines(_states(), 10_000) == [
        "gaussian  3 epoch(s) of 10,000 images in 5 s, best validation ELBO -142.49 (epoch 3)",
        "nsf       4 epoch(s) of 10,000 images in 24 s, best validation ELBO -144.00 (epoch 2)",
    ]


def test_live_bounds_table_holds_the_metrics_of_each_posterior():
    def metrics(elbo, iw, se):
        return {
            "test_images": 100,
            "test_elbo": {"mean": elbo, "stderr": 0.5},
            "test_iw_k100": {"mean": iw, "stderr": se, "images": 100},
            "test_iw_k5": {"mean": iw - 1.0, "stderr": 9.9, "images": 100},
        }

    found = {"gaussian": metrics(-140.0, -135.123, 0.97), "nsf": metrics(-142.0, -137.5, 0.99)}
    table = vx.live_bounds_table(found, 100)
    assert table.index.name == "posterior" and list(table.index) == ["gaussian", "nsf"]
    assert list(table.columns) == ["test ELBO", "IW bound K=100", "std. error"]
    assert table.loc["gaussian", "IW bound K=100"] == -135.123  # not rounded
    assert table.loc["nsf", "test ELBO"] == -142.0 and table.loc["nsf", "std. error"] == 0.99
    assert vx.live_bounds_table(found, 5).loc["nsf", "IW bound K=5"] == -138.5


def _table1_rows() -> list[dict]:
    rows = []
    for q, base in (("gaussian", -98.0), ("nsf", -95.0), ("cif-nsf", -94.5)):
        for seed, noise in ((0, 0.0), (1, 0.5)):
            rows.append(
                {
                    "dataset": "mnist",
                    "posterior": q,
                    "seed": seed,
                    "budget": "paper",
                    "device": "cuda" if seed else "cpu",
                    "complete": q == "gaussian",
                    "mean": base + noise,
                }
            )
    return rows


def test_table1_lines_say_where_the_runs_come_from_and_check_the_ordering():
    rows = _table1_rows()
    header, *ordering = vx.table1_lines(rows)
    assert header == (
        "ours: K = 100 IW bound, paper budget, device(s) ['cpu', 'cuda']; "
        "2 of 6 run(s) trained to completion"
    )
    assert ordering == vx.ordering_lines(rows) and len(ordering) == 1
    assert ordering[0].startswith("mnist: Gaussian < NSF < CIF-NSF as in Table 1: True")
    assert vx.table1_lines(rows[:1], k=1000)[0].startswith("ours: K = 1000 IW bound")
    assert vx.table1_lines([]) == ["no committed results found: run the command line first"]


def test_validation_ordering_lines_check_every_complete_dataset():
    runs = _summary_runs()
    (line,) = vx.validation_ordering_lines(runs)  # Fashion-MNIST lacks two posteriors
    assert line == (
        "mnist: Gaussian < NSF < CIF-NSF as in Table 1: True; CIF-NSF - NSF = +0.50 nats "
        "(seed std 0.35 and 0.35); NSF - Gaussian = +4.00 nats"
    )
    runs["mnist-cif-nsf-seed1-paper"]["best_val_elbo"] = -110.0  # CIF-NSF now below the NSF
    assert ": False; CIF-NSF - NSF = -0.50 nats" in vx.validation_ordering_lines(runs)[0]
    assert vx.validation_ordering_lines(runs, datasets=("fashion-mnist",)) == []
