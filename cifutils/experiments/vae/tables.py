"""What chapter 6 prints about its runs: the live runs' training lines and test bounds, the
committed results collected, Table 1 beside the slides (in two blocks, one per architecture),
and the checks of the posteriors' order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cifutils.results import load_result, results_dir
from cifutils.runcard import DATASET_NAMES

from .config import VAEConfig, stored_setting
from .model import (
    LATENT,
    POSTERIORS,
)

__all__ = [
    "SLIDES_TABLE1",
    "TABLE1_BLOCKS",
    "training_lines",
    "live_bounds_table",
    "collect_results",
    "table1",
    "table1_lines",
    "table1_blocks",
    "table1_by_block",
    "table1_caption",
    "table1_block_lines",
    "table1_level",
    "ordering_check",
    "ordering_lines",
]


#: The slides' Table 1 -- test log-likelihood in nats, mean and std over three runs.
SLIDES_TABLE1 = {
    ("mnist", "gaussian"): (-87.37, 0.15),
    ("mnist", "nsf"): (-82.95, 0.11),
    ("mnist", "cif-nsf"): (-82.22, 0.13),
    ("fashion-mnist", "gaussian"): (-217.82, 0.07),
    ("fashion-mnist", "nsf"): (-215.45, 0.08),
    ("fashion-mnist", "cif-nsf"): (-214.50, 0.11),
}

#: The two blocks of chapter 6's Table 1, ``{arch: (label, results folder)}``: the Table-1
#: architecture (the ``paper`` budget's default, results in ``results/vae/``, named
#: ``<dataset>-<posterior>-table1-seed<s>-paper.json``) and the small model, the CPU edition,
#: trained to the paper's stopping rule (``results/vae/long/``).
TABLE1_BLOCKS = {
    "table1": ("Table-1 architecture", "vae"),
    "small": ("CPU edition", "vae/long"),
}


def training_lines(states: Mapping[str, dict], train_images: int) -> list[str]:
    """One line per live run: the epochs it ran, its training time and its best validation
    ELBO with the epoch it was reached.

    Args:
        states: ``{posterior: state}`` with the training states of
            :func:`~cifutils.experiments.vae.training.train` (``epoch``, ``seconds``,
            ``best_val``, ``best_epoch``).
        train_images: the number of training images of an epoch.

    Returns:
        The lines, in the order of ``states``.
    """
    return [
        f"{kind:9s} {st['epoch']} epoch(s) of {train_images:,} images in {st['seconds']:.0f} s, "
        f"best validation ELBO {st['best_val']:.2f} (epoch {st['best_epoch']})"
        for kind, st in states.items()
    ]


def live_bounds_table(metrics: Mapping[str, dict], k: int):
    """The live models' test bounds, one row per posterior.

    Args:
        metrics: ``{posterior: metrics}`` as returned by
            :func:`~cifutils.experiments.vae.evaluation.evaluate`, each with ``test_elbo``
            and ``test_iw_k<k>`` (their ``mean`` and ``stderr``).
        k: the number of importance samples of the bound shown.

    Returns:
        A pandas DataFrame indexed by ``posterior``, with the columns ``test ELBO``,
        ``IW bound K=<k>`` and ``std. error`` (the bound's standard error over test images),
        unrounded.
    """
    import pandas as pd

    rows = [
        {
            "posterior": kind,
            "test ELBO": m["test_elbo"]["mean"],
            f"IW bound K={k}": m[f"test_iw_k{k}"]["mean"],
            "std. error": m[f"test_iw_k{k}"]["stderr"],
        }
        for kind, m in metrics.items()
    ]
    return pd.DataFrame(rows).set_index("posterior")


def collect_results(
    budgets=("paper",),
    seeds=(0, 1, 2),
    metric: str = "test_iw_k100",
    folder: str = "vae",
    arch: str = "small",
) -> list[dict]:
    """The committed ``results/<folder>`` records of every (dataset, posterior) cell of
    Table 1 trained with the architecture ``arch`` (by default the small one), one row per
    found run: dataset, posterior, architecture, seed, budget, epochs, best epoch, complete,
    stopped early, metric mean and stderr, test images, refinement steps (``steps``: the
    ``amortization_gap`` metric's, else None), device, and the validation ELBO per epoch
    (``val_elbo``)."""

    fetch = not (results_dir() / folder).exists()  # on Colab: fetch committed files
    rows = []
    for dataset, posterior in SLIDES_TABLE1:
        for budget in budgets:
            for seed in seeds:
                cfg = VAEConfig(dataset, posterior, seed, budget, arch=arch)
                rec = load_result(f"{folder}/{cfg.name}.json", fetch)
                if rec is None or metric not in rec.get("metrics", {}):
                    continue
                m = rec["metrics"][metric]
                rows.append(
                    {
                        "dataset": dataset,
                        "posterior": posterior,
                        "arch": stored_setting(rec["provenance"]["config"], "arch"),
                        "seed": seed,
                        "budget": rec["provenance"]["config"].get("budget", budget),
                        "epochs": rec["epochs_run"],
                        "best_epoch": rec["best_epoch"],
                        "max_epochs": rec["provenance"]["config"]["max_epochs"],
                        "complete": rec["complete"],
                        "stopped_early": rec["stopped_early"],
                        "mean": m["mean"],
                        "stderr": m["stderr"],
                        "test_images": m.get("images", rec["metrics"]["test_images"]),
                        "steps": m.get("steps"),  # the amortization gap's refinement
                        "device": rec["provenance"]["device"],
                        "trained_on": ", ".join(rec.get("train_devices") or {"cpu": 0}),
                        "val_elbo": rec.get("history", {}).get("val_elbo", []),
                    }
                )
    return rows


def _cell(rows: list[dict], dataset: str, posterior: str) -> list[dict]:
    """The rows of one (dataset, posterior) cell, in their order."""
    return [r for r in rows if (r["dataset"], r["posterior"]) == (dataset, posterior)]


def _mean_spread(cell: list[dict]) -> str:
    """``"mean ± spread"`` of a non-empty cell: the spread over seeds when there are
    several, else the single run's standard error over test images."""
    means = np.array([r["mean"] for r in cell])
    spread = means.std(ddof=1) if len(cell) > 1 else cell[0]["stderr"]
    return f"{means.mean():.2f} ± {spread:.2f}"


def _seeds_label(seeds) -> str:
    """``"seed 0"`` or ``"seeds 0, 1, 2"``."""
    return f"seed{'s' if len(seeds) > 1 else ''} " + ", ".join(str(s) for s in seeds)


def table1(rows: list[dict]):
    """Table 1 as a pandas DataFrame: ours (mean over seeds, with the spread over seeds if
    several, else the test-set standard error) next to the slides' values."""
    import pandas as pd

    out = []
    for (dataset, posterior), (ref, ref_sd) in SLIDES_TABLE1.items():
        cell = _cell(rows, dataset, posterior)
        if cell:
            ours = _mean_spread(cell)
            epochs = ", ".join(str(r["epochs"]) for r in cell)
            where = ", ".join(sorted({d for r in cell for d in r["trained_on"].split(", ")}))
            note = (
                f"{cell[0]['budget']}; {len(cell)} seed(s); {epochs} of "
                f"{cell[0]['max_epochs']} epochs; {cell[0]['test_images']:,} test images; "
                f"trained on {where}"
            )
        else:
            ours, note = "not run", ""
        out.append(
            {
                "dataset": dataset,
                "posterior": posterior,
                "ours": ours,
                "slides": f"{ref:.2f} ± {ref_sd:.2f}",
                "run": note,
            }
        )
    return pd.DataFrame(out)


def table1_lines(rows: list[dict], k: int = 100) -> list[str]:
    """The lines printed under Table 1: which bound, budget(s) and devices the rows come
    from and how many runs finished, then :func:`ordering_lines`.

    Args:
        rows: the runs of Table 1, from :func:`collect_results`.
        k: the number of importance samples of the bound the rows hold (the ``metric`` of
            :func:`collect_results`, ``test_iw_k100`` by default).

    Returns:
        The lines; a single line saying so when ``rows`` is empty.
    """
    if not rows:
        return ["no committed results found: run the command line first"]
    budgets = ", ".join(sorted({r["budget"] for r in rows}))
    devices = sorted({r["device"] for r in rows})
    done = sum(r["complete"] for r in rows)
    return [
        f"ours: K = {k} IW bound, {budgets} budget, device(s) {devices}; "
        f"{done} of {len(rows)} run(s) trained to completion",
        *ordering_lines(rows),
    ]


def table1_blocks(
    seeds=(0, 1, 2), metric: str = "test_iw_k100", blocks: Mapping = TABLE1_BLOCKS
) -> dict[str, list[dict]]:
    """The committed ``paper``-budget runs of each block of Table 1.

    Args:
        seeds: the seeds looked for.
        metric: the metric read (see
            :func:`~cifutils.experiments.vae.tables.collect_results`).
        blocks: ``{arch: (label, results folder)}``, by default
            :data:`~cifutils.experiments.vae.tables.TABLE1_BLOCKS`.

    Returns:
        ``{arch: rows}`` with the rows of
        :func:`~cifutils.experiments.vae.tables.collect_results` for that architecture and
        folder, in the order of ``blocks``; a block without committed runs has no rows.
    """
    return {
        arch: collect_results(seeds=seeds, metric=metric, folder=folder, arch=arch)
        for arch, (_, folder) in blocks.items()
    }


def _block_label(arch: str) -> str:
    """``"CPU edition (latent 20)"``: a block's label with its latent dimension."""
    return f"{TABLE1_BLOCKS[arch][0]} (latent {LATENT[arch]})"


def _partial(cell: list[dict]) -> list[dict]:
    """The runs of ``cell`` whose training had not finished by the paper's rule."""
    return [r for r in cell if not r["complete"]]


def table1_by_block(blocks: Mapping[str, list[dict]], seeds=(0, 1, 2)):
    """Table 1 in blocks, one per architecture, each beside the slides' values.

    Args:
        blocks: ``{arch: rows}`` as returned by
            :func:`~cifutils.experiments.vae.tables.table1_blocks`.
        seeds: the seeds each cell is meant to have.

    Returns:
        A pandas DataFrame indexed by ``model`` (the block's label and latent dimension),
        ``dataset`` and ``posterior``, six rows per block, with the columns ``ours`` (the mean
        over the cell's runs ± their standard deviation, or ± the test-set standard error
        for a single run; ``"not trained yet"`` without runs; ``" (partial)"`` appended when
        a run stopped before the paper's rule), ``slides`` and ``runs`` (how many of
        ``seeds`` are committed, and which are partial with the epochs they ran).
    """
    import pandas as pd

    out = []
    for arch, rows in blocks.items():
        for (dataset, posterior), (ref, ref_sd) in SLIDES_TABLE1.items():
            cell = _cell(rows, dataset, posterior)
            partial = _partial(cell)
            runs = f"{len(cell)} of {len(seeds)} seeds"
            if not cell:
                ours = "not trained yet"
            else:
                ours = _mean_spread(cell) + (" (partial)" if partial else "")
                runs += "".join(
                    f"; seed {r['seed']} partial ({r['epochs']} of {r['max_epochs']:,} epochs)"
                    for r in partial
                )
            out.append(
                {
                    "model": _block_label(arch),
                    "dataset": dataset,
                    "posterior": posterior,
                    "ours": ours,
                    "slides": f"{ref:.2f} ± {ref_sd:.2f}",
                    "runs": runs,
                }
            )
    return pd.DataFrame(out).set_index(["model", "dataset", "posterior"])


def table1_caption(rows: list[dict], k: int = 100) -> str:
    """One caption line for a block of Table 1, read from its runs' records: budget, seeds,
    epochs (and how many runs the paper's rule stopped, how many are partial), the devices
    the runs trained on and the one they were evaluated on, and the test images of the bound.

    Args:
        rows: the block's runs, from
            :func:`~cifutils.experiments.vae.tables.collect_results` (or
            :func:`~cifutils.experiments.vae.tables.table1_blocks`).
        k: the number of importance samples of the bound the rows hold.

    Returns:
        The line; ``"not trained yet (no run committed)"`` when ``rows`` is empty.
    """
    if not rows:
        return "not trained yet (no run committed)"
    budgets = ", ".join(sorted({r["budget"] for r in rows}))
    seeds = _seeds_label(sorted({r["seed"] for r in rows}))
    epochs = [r["epochs"] for r in rows]
    span = f"{min(epochs)}" if min(epochs) == max(epochs) else f"{min(epochs)}-{max(epochs)}"
    span += " epoch" if max(epochs) == 1 else " epochs"
    cap = max(r["max_epochs"] for r in rows)
    early = sum(r["stopped_early"] for r in rows)
    partial = len(_partial(rows))
    trained = sorted({d for r in rows for d in r["trained_on"].split(", ")})
    evaluated = sorted({r["device"] for r in rows})
    images = sorted({r["test_images"] for r in rows})
    return (
        f"{budgets} budget; {seeds}; {span} of at most {cap:,}, "
        f"{early} of {len(rows)} run{'s' if len(rows) > 1 else ''} stopped by the paper's rule"
        + (f", {partial} partial" if partial else "")
        + f"; trained on {', '.join(trained)}; K = {k} bound on "
        + f"{', '.join(f'{n:,}' for n in images)} test images, evaluated on "
        + ", ".join(evaluated)
    )


def table1_block_lines(blocks: Mapping[str, list[dict]]) -> list[str]:
    """:func:`~cifutils.experiments.vae.tables.ordering_lines` (with the NSF's gain) for each
    block of Table 1, each line prefixed with the block's label; a block without a dataset
    whose cells all have two or more seeds gets one line saying so.

    Args:
        blocks: ``{arch: rows}`` as returned by
            :func:`~cifutils.experiments.vae.tables.table1_blocks`.

    Returns:
        The lines, block by block.
    """
    lines = []
    for arch, rows in blocks.items():
        label = TABLE1_BLOCKS[arch][0]
        checks = ordering_lines(rows, nsf_gain=True)
        lines += [f"{label}, {c}" for c in checks] or [
            f"{label}: no ordering check yet (it needs two seeds in every cell of a dataset)"
        ]
    return lines


_POSTERIOR_NAMES = {"gaussian": "Gaussian VAE", "nsf": "NSF", "cif-nsf": "CIF-NSF"}


def table1_level(blocks: Mapping[str, list[dict]]) -> str:
    """A sentence for the prose: how far each trained cell of the Table-1 block sits from
    the slides, next to the same cell of the CPU edition.

    Args:
        blocks: ``{arch: rows}`` as returned by
            :func:`~cifutils.experiments.vae.tables.table1_blocks`, with a ``"table1"`` and a
            ``"small"`` block.

    Returns:
        ``"No cell of the Table-1 block is trained yet."``, or, per trained cell, the mean
        over its runs (which seeds; "partial" for a run stopped before the rule), its
        distance to the slides' mean, and the CPU edition's distance in the same cell.
    """
    parts = []
    for (dataset, posterior), (ref, _) in SLIDES_TABLE1.items():
        cell = _cell(blocks["table1"], dataset, posterior)
        if not cell:
            continue
        mean = float(np.mean([r["mean"] for r in cell]))
        label = _seeds_label([r["seed"] for r in cell]) + (", partial" if _partial(cell) else "")
        side = "below" if mean < ref else "above"
        small = _cell(blocks.get("small", []), dataset, posterior)
        versus = (
            f" (the CPU edition: {ref - np.mean([r['mean'] for r in small]):.2f} below)"
            if small
            else ""
        )
        parts.append(
            f"the {_POSTERIOR_NAMES[posterior]} on {DATASET_NAMES[dataset]} ({label}) reaches "
            f"{mean:.2f}, {abs(mean - ref):.2f} nats {side} the slides' {ref:.2f}{versus}"
        )
    if not parts:
        return "No cell of the Table-1 block is trained yet."
    many = len(parts) > 1
    return f"So far {len(parts)} cell{'s are' if many else ' is'}: " + "; ".join(parts) + "."


def ordering_lines(rows: list[dict], nsf_gain: bool = False) -> list[str]:
    """:func:`ordering_check` for each dataset of ``rows`` (from :func:`collect_results`)
    whose three cells each have two or more seeds (a spread over seeds needs two); the
    datasets short of that are left out."""
    lines = []
    for dataset in ("mnist", "fashion-mnist"):
        values = {q: np.array([r["mean"] for r in _cell(rows, dataset, q)]) for q in POSTERIORS}
        if all(len(v) > 1 for v in values.values()):
            lines.append(ordering_check(dataset, values, nsf_gain))
    return lines


def ordering_check(dataset: str, values: dict[str, np.ndarray], nsf_gain: bool = False) -> str:
    """One line checking Table 1's ordering Gaussian < NSF < CIF-NSF on per-seed ``values``
    (``{posterior: array over seeds}``): the ordering of the means, CIF-NSF's lead over the
    NSF next to each one's standard deviation over seeds, and with ``nsf_gain`` the NSF's
    lead over the Gaussian."""
    m = {q: np.mean(v) for q, v in values.items()}
    line = (
        f"{dataset}: Gaussian < NSF < CIF-NSF as in Table 1: "
        f"{m['gaussian'] < m['nsf'] < m['cif-nsf']}; CIF-NSF - NSF = "
        f"{m['cif-nsf'] - m['nsf']:+.2f} nats (seed std {np.std(values['nsf'], ddof=1):.2f} "
        f"and {np.std(values['cif-nsf'], ddof=1):.2f})"
    )
    if nsf_gain:
        line += f"; NSF - Gaussian = {m['nsf'] - m['gaussian']:+.2f} nats"
    return line
