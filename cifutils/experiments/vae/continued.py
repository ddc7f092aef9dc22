"""The runs trained past the first stopping point (``results/vae/long/``) and the validation
curves of the GPU session: their tables, their comparison with Table 1's runs, and the
figures chapter 6's prose quotes.
"""

from __future__ import annotations

import numpy as np

from .model import (
    POSTERIORS,
)
from .tables import SLIDES_TABLE1, _cell, ordering_check

__all__ = [
    "continued_table",
    "continued_comparison",
    "continued_summary",
    "validation_cells",
    "validation_table",
    "validation_ordering_lines",
]


def continued_table(long_rows: list[dict], short_rows: list[dict], k1000_rows=()):
    """The runs trained on past Table 1's epochs (``long_rows``, from
    ``collect_results(folder="vae/long")``), one row each: epochs run (and why training
    ended), best-validation epoch, the K = 100 bound with its standard error over test
    images, the K = 1,000 bound where ``k1000_rows`` has it, then the mean over seeds of
    the same (dataset, posterior) cell of ``short_rows`` (Table 1's shorter runs) and the
    slides' value (a pandas DataFrame)."""
    import pandas as pd

    def key(r):
        return r["dataset"], r["posterior"], r["seed"]

    large = {key(r): r for r in k1000_rows}
    out = []
    for r in long_rows:
        cell = _cell(short_rows, r["dataset"], r["posterior"])
        if r["stopped_early"]:
            ended = "early stop"
        elif r["complete"]:
            ended = "epoch cap"
        else:
            ended = "not finished"
        big = large.get(key(r))
        short = np.mean([s["mean"] for s in cell]) if cell else float("nan")
        out.append(
            {
                "dataset": r["dataset"],
                "posterior": r["posterior"],
                "seed": r["seed"],
                "epochs": f"{r['epochs']} of {r['max_epochs']} ({ended})",
                "best epoch": r["best_epoch"],
                "K=100": f"{r['mean']:.2f} ± {r['stderr']:.2f}",
                "K=1000": f"{big['mean']:.2f} ({big['test_images']:,} images)" if big else "",
                "Table 1 cell": (
                    f"{short:.2f} ({', '.join(str(s['epochs']) for s in cell)} epochs)"
                    if cell
                    else ""
                ),
                "slides": f"{SLIDES_TABLE1[key(r)[:2]][0]:.2f}",
            }
        )
    return pd.DataFrame(out)


def _continued_cells(long_rows: list[dict], short_rows: list[dict]) -> dict:
    """Per (dataset, posterior) with finished continued runs: the runs (``runs``), their
    mean (``longer``), the mean of the same cell of ``short_rows`` (``short``) and, for two
    or more seeds, how far apart they end (``spread``). A run stopped by a time limit
    (not ``complete``) is left out until it is continued."""
    finished = [r for r in long_rows if r.get("complete", True)]
    cells = {}
    for dataset, posterior in SLIDES_TABLE1:
        cell = _cell(finished, dataset, posterior)
        if not cell:
            continue
        ours = [r["mean"] for r in cell]
        short = _cell(short_rows, dataset, posterior)
        cells[dataset, posterior] = {
            "runs": cell,
            "longer": float(np.mean(ours)),
            "short": float(np.mean([r["mean"] for r in short])) if short else float("nan"),
            "spread": max(ours) - min(ours) if len(cell) > 1 else None,
        }
    return cells


def continued_comparison(long_rows: list[dict], short_rows: list[dict]) -> list[str]:
    """Lines reading the continued runs against Table 1, per dataset: each posterior's mean
    over its continued runs (with their seeds and, for two or more, how far apart they are),
    its gain over the same cell of ``short_rows`` (the 63-epoch runs) and its distance to the
    slides; then NSF - Gaussian and CIF-NSF - NSF, trained longer, at 63 epochs and in the
    slides, beside the larger spread over seeds of the two cells. Only runs whose training
    finished (``complete``) count; a run stopped by a time limit is left out until it is
    continued."""
    cells = _continued_cells(long_rows, short_rows)
    lines = []
    for dataset in ("mnist", "fashion-mnist"):
        for q in POSTERIORS:
            if (dataset, q) not in cells:
                continue
            c = cells[dataset, q]
            seeds = ", ".join(str(r.get("seed", "?")) for r in c["runs"])
            if c["spread"] is not None:
                which = f"seeds {seeds}, {c['spread']:.2f} apart"
            else:
                which = f"seed {seeds}"
            lines.append(
                f"{dataset} {q}, {len(c['runs'])} run(s) trained longer ({which}): "
                f"{c['longer']:.2f} nats, {c['longer'] - c['short']:+.2f} over Table 1's "
                f"63-epoch cell, {c['longer'] - SLIDES_TABLE1[dataset, q][0]:+.2f} from the "
                "slides"
            )
        for rich, plain in (("nsf", "gaussian"), ("cif-nsf", "nsf")):
            if (dataset, rich) in cells and (dataset, plain) in cells:
                r, p = cells[dataset, rich], cells[dataset, plain]
                slides = SLIDES_TABLE1[dataset, rich][0] - SLIDES_TABLE1[dataset, plain][0]
                spreads = [c["spread"] for c in (r, p) if c["spread"] is not None]
                beside = (
                    f"seeds of a cell up to {max(spreads):.2f} apart"
                    if spreads
                    else "one seed each, no spread over seeds yet"
                )
                lines.append(
                    f"{dataset}: {rich} - {plain} = {r['longer'] - p['longer']:+.2f} nats "
                    f"trained longer ({beside}), {r['short'] - p['short']:+.2f} at 63 "
                    f"epochs, {slides:+.2f} in the slides"
                )
    return lines


def continued_summary(long_rows: list[dict], short_rows=()) -> dict[str, float | str]:
    """The figures the chapter's reading of the runs trained to the paper's stopping rule
    quotes, as one flat dict (the notebook glues them into its prose, so the text follows the
    committed results).

    Over the finished runs: how many (``runs``), how many stopped early and after how many
    epochs (``early``, ``early_min``, ``early_max``), how many ran to the epoch cap (``cap``),
    the smallest and largest gain of a cell over its mean in ``short_rows`` (``gain_min``,
    ``gain_max``; only for the cells that ``short_rows``, by default empty, has), and, of the
    pairs of runs of one cell that trained for different numbers of epochs (``pairs``), in
    how many the longer one ends higher (``longer_higher``).

    Per dataset (prefix ``mnist_`` or ``fashion_``), where its cells have runs: the smallest
    and largest distance of a cell below the slides (``below_min``, ``below_max``), the
    Gaussian VAE's (``gauss_below``) and its seeds' spread (``gauss_spread``); each richer
    posterior's lead over the simpler one (``nsf_lead``, ``cif_lead``), the slides' lead
    (``..._slides``), its seeds (``nsf_seeds``, ``cif_seeds``), the largest spread over seeds
    of the two flows (``flow_spread``, 0.0 with one seed each) and whether the CIF-NSF's lead
    is "larger than" or "no larger than" that spread (``cif_vs_spread``)."""
    cells = _continued_cells(long_rows, short_rows)
    runs = [r for c in cells.values() for r in c["runs"]]
    early = [r["epochs"] for r in runs if r["stopped_early"]]
    gains = [c["longer"] - c["short"] for c in cells.values() if not np.isnan(c["short"])]
    out = {
        "runs": len(runs),
        "early": len(early),
        "cap": len(runs) - len(early),
    }
    if early:
        out.update(early_min=min(early), early_max=max(early))
    if gains:
        out.update(gain_min=min(gains), gain_max=max(gains))
    pairs = [
        (a, b)
        for c in cells.values()
        for i, a in enumerate(c["runs"])
        for b in c["runs"][i + 1 :]
        if a["epochs"] != b["epochs"]
    ]
    out["pairs"] = len(pairs)
    out["longer_higher"] = sum(
        (a["epochs"] > b["epochs"]) == (a["mean"] > b["mean"]) for a, b in pairs
    )
    for dataset, prefix in (("mnist", "mnist_"), ("fashion-mnist", "fashion_")):
        g, n, c = (cells.get((dataset, q)) for q in POSTERIORS)
        below = [
            SLIDES_TABLE1[dataset, q][0] - x["longer"] for q, x in zip(POSTERIORS, (g, n, c)) if x
        ]
        if below:
            out[prefix + "below_min"], out[prefix + "below_max"] = min(below), max(below)
        if g:
            out[prefix + "gauss_below"] = SLIDES_TABLE1[dataset, "gaussian"][0] - g["longer"]
            out[prefix + "gauss_spread"] = g["spread"] or 0.0
        for key, rich, plain, (a, b) in (
            ("nsf", n, g, ("nsf", "gaussian")),
            ("cif", c, n, ("cif-nsf", "nsf")),
        ):
            if rich and plain:
                out[prefix + key + "_lead"] = rich["longer"] - plain["longer"]
                out[prefix + key + "_lead_slides"] = (
                    SLIDES_TABLE1[dataset, a][0] - SLIDES_TABLE1[dataset, b][0]
                )
        for key, cell in (("nsf", n), ("cif", c)):
            if cell:
                out[prefix + key + "_seeds"] = len(cell["runs"])
        if n or c:
            out[prefix + "flow_spread"] = max([x["spread"] or 0.0 for x in (n, c) if x])
        if prefix + "cif_lead" in out:
            beyond = out[prefix + "cif_lead"] > out[prefix + "flow_spread"]
            out[prefix + "cif_vs_spread"] = "larger than" if beyond else "no larger than"
    return out


def validation_cells(runs: dict) -> dict[tuple[str, str], list[dict]]:
    """The runs of a ``vae-many`` summary grouped by (dataset, posterior), in Table 1's
    order and by name within a cell; cells without runs are left out."""
    cells = {}
    for dataset, posterior in SLIDES_TABLE1:
        prefix = f"{dataset}-{posterior}-seed"
        cell = [r for name, r in sorted(runs.items()) if name.startswith(prefix)]
        if cell:
            cells[dataset, posterior] = cell
    return cells


def validation_table(runs: dict):
    """Best validation ELBO of each (dataset, posterior) of a ``vae-many`` summary: mean and
    standard deviation over seeds, the seeds and the epochs run (a pandas DataFrame)."""
    import pandas as pd

    out = []
    for (dataset, posterior), cell in validation_cells(runs).items():
        best = np.array([r["best_val_elbo"] for r in cell])
        spread = f" ± {best.std(ddof=1):.2f}" if len(cell) > 1 else ""
        out.append(
            {
                "dataset": dataset,
                "posterior": posterior,
                "best validation ELBO": f"{best.mean():.2f}{spread}",
                "seeds": len(cell),
                "epochs": ", ".join(str(r["epochs"]) for r in cell),
            }
        )
    return pd.DataFrame(out)


def validation_ordering_lines(
    runs: dict, datasets: tuple[str, ...] = ("mnist", "fashion-mnist")
) -> list[str]:
    """:func:`~cifutils.experiments.vae.tables.ordering_check` (with the NSF's gain) on the best
    validation ELBO of each seed of a ``vae-many`` summary.

    Args:
        runs: the summary's runs (``{name: {"best_val_elbo": ..., ...}}``).
        datasets: the datasets checked, in this order; one without runs of all three
            posteriors is left out.

    Returns:
        One line per dataset.
    """
    cells = validation_cells(runs)
    lines = []
    for dataset in datasets:
        if all((dataset, q) in cells for q in POSTERIORS):
            best = {
                q: np.array([r["best_val_elbo"] for r in cells[dataset, q]]) for q in POSTERIORS
            }
            lines.append(ordering_check(dataset, best, nsf_gain=True))
    return lines
