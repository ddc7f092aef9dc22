"""The amortization gap in chapter 6: the gaps stored in the committed runs' results, as a table
and as the figures the prose quotes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .model import (
    POSTERIORS,
)
from .tables import TABLE1_BLOCKS, _cell, _mean_spread, collect_results

__all__ = ["committed_amortization_gaps", "amortization_table", "amortization_summary"]


#: The posteriors' short names in the amortization summary's keys.
_GAP_KEYS = {"gaussian": "gaussian", "nsf": "nsf", "cif-nsf": "cif"}


def committed_amortization_gaps(blocks: Mapping = TABLE1_BLOCKS) -> dict[str, list[dict]]:
    """The amortization-gap estimates stored with the committed runs of Table 1's blocks, as
    ``{label: rows}`` (rows of :func:`~cifutils.experiments.vae.tables.collect_results` with
    ``metric="amortization_gap"``), one entry per block of ``blocks`` (by default
    :data:`~cifutils.experiments.vae.tables.TABLE1_BLOCKS`: the Table-1 architecture and the
    CPU edition trained to the paper's stopping rule) with such estimates; a block whose runs
    store none (or that has no runs yet) is left out."""
    found = {
        label: collect_results(metric="amortization_gap", folder=folder, arch=arch)
        for arch, (label, folder) in blocks.items()
    }
    return {label: rows for label, rows in found.items() if rows}


def amortization_table(
    live: Mapping[str, Mapping[int, tuple[float, float]]],
    images: int,
    label: str,
    dataset: str,
    committed: Mapping[str, list[dict]] | None = None,
):
    """Amortization-gap estimates side by side: one row per set of models and refinement
    length, one column per posterior, each cell ``"mean ± spread"`` in nats.

    Args:
        live: ``{posterior: {steps: (mean, stderr)}}`` from
            :func:`~cifutils.experiments.vae.evaluation.amortization_gap_curve` on the live
            models; one row per number of steps, ± the standard error over the images.
        images: the test images of ``live``.
        label: what the live models are, for the ``models`` column.
        dataset: the live models' dataset.
        committed: ``{label: rows}`` with rows of
            ``collect_results(metric="amortization_gap", ...)``, by default
            :func:`committed_amortization_gaps`; one row per dataset of each, the mean over
            its seeds ± their standard deviation (± the standard error over the images for
            a cell of one run; "not trained yet" for a cell without runs).

    Returns:
        A pandas DataFrame indexed by ``models`` and ``dataset``, with the columns
        ``images``, ``steps``, the posteriors, and ``±`` (which spread the cells give).
    """
    import pandas as pd

    committed = committed_amortization_gaps() if committed is None else committed
    out = []
    for n in next(iter(live.values())):
        row = {"models": label, "dataset": dataset, "images": images, "steps": n}
        row.update({q: f"{c[n][0]:.2f} ± {c[n][1]:.2f}" for q, c in live.items()})
        out.append({**row, "±": "std. error over images"})
    for name, rows in committed.items():
        for ds in ("mnist", "fashion-mnist"):
            cells = {q: _cell(rows, ds, q) for q in POSTERIORS if _cell(rows, ds, q)}
            if not cells:
                continue
            first = next(iter(cells.values()))[0]
            row = {"models": name, "dataset": ds, "images": first["test_images"]}
            row["steps"] = first["steps"]
            for q in POSTERIORS:
                row[q] = _mean_spread(cells[q]) if q in cells else "not trained yet"
            seeds = ", ".join(map(str, sorted({r["seed"] for c in cells.values() for r in c})))
            sizes = {len(cell) for cell in cells.values()}
            if sizes == {1}:
                row["±"] = f"std. error over images (one run: seed {seeds})"
            else:
                row["±"] = f"std. deviation over seeds {seeds}" + (
                    "; a single run: std. error over images" if 1 in sizes else ""
                )
            out.append(row)
    return pd.DataFrame(out).set_index(["models", "dataset"])


def amortization_summary(
    live: Mapping[str, Mapping[int, tuple[float, float]]],
    images: int,
    committed: Mapping[str, list[dict]] | None = None,
) -> dict[str, float | str]:
    """The figures chapter 6's reading of the amortization gap quotes, as one flat dict (the
    notebook glues them into its prose).

    From ``live`` (as in :func:`amortization_table`, with ``images`` test images):
    ``gap_images``, the first and last number of refinement steps (``gap_first_steps``,
    ``gap_steps``); per posterior (``gaussian``, ``nsf``, ``cif``) the gain after the last
    count and its standard error (``gap_<q>``, ``gap_<q>_se``) and how much it grew since the
    first count (``gap_rise_<q>``); ``gap_live_verdict``, whether both flows' gains lie
    below the Gaussian's by more than two standard errors (of the difference, counting the
    two as independent): ``"both lie"`` or ``"do not both lie"``; and ``gap_live_claim``,
    whether the live estimate shows that the flows shrink the gap, which takes both that and
    every flow's gain having stopped growing (its rise no larger than its standard error):
    ``"shows it"`` or ``"does not show it"``.

    From ``committed`` (as in :func:`amortization_table`, by default
    :func:`committed_amortization_gaps`), over every (set, dataset) with all three
    posteriors, on the means over seeds: in how many of the comparisons of a flow with the
    Gaussian the flow's gain is the smaller (``gap_flows_below`` of ``gap_flow_cases``), the
    smallest and largest difference (``gap_flow_lead_min``, ``gap_flow_lead_max``: the
    Gaussian's gain minus the flow's), and in how many the CIF-NSF's gain is below the
    NSF's (``gap_cif_below`` of ``gap_cif_cases``)."""
    committed = committed_amortization_gaps() if committed is None else committed
    counts = sorted(next(iter(live.values())))
    first, last = counts[0], counts[-1]
    out: dict[str, float | str] = {
        "gap_images": images,
        "gap_first_steps": first,
        "gap_steps": last,
    }
    for q, c in live.items():
        key = _GAP_KEYS[q]
        out[f"gap_{key}"], out[f"gap_{key}_se"] = c[last]
        out[f"gap_rise_{key}"] = c[last][0] - c[first][0]
    g_mean, g_se = live["gaussian"][last]
    below = all(
        g_mean - live[q][last][0] > 2 * np.hypot(g_se, live[q][last][1]) for q in ("nsf", "cif-nsf")
    )
    out["gap_live_verdict"] = "both lie" if below else "do not both lie"
    settled = all(out[f"gap_rise_{_GAP_KEYS[q]}"] <= live[q][last][1] for q in ("nsf", "cif-nsf"))
    out["gap_live_claim"] = "shows it" if below and settled else "does not show it"
    leads, cif_below = [], []
    for rows in committed.values():
        for ds in ("mnist", "fashion-mnist"):
            m = {q: [r["mean"] for r in _cell(rows, ds, q)] for q in POSTERIORS}
            if all(m.values()):
                m = {q: float(np.mean(v)) for q, v in m.items()}
                leads += [m["gaussian"] - m[q] for q in ("nsf", "cif-nsf")]
                cif_below.append(m["cif-nsf"] < m["nsf"])
    out["gap_flow_cases"] = len(leads)
    out["gap_flows_below"] = sum(d > 0 for d in leads)
    if leads:
        out.update(gap_flow_lead_min=min(leads), gap_flow_lead_max=max(leads))
    out["gap_cif_cases"], out["gap_cif_below"] = len(cif_below), sum(cif_below)
    return out
