"""What chapter 6 prints: the live runs' training lines and test bounds, Table 1 beside the
slides, the continued runs, the validation curves' table, the ordering checks and the
amortization gaps.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cifutils.results import load_result, results_dir

from .config import VAEConfig, stored_setting
from .model import (
    POSTERIORS,
)

__all__ = [
    "SLIDES_TABLE1",
    "training_lines",
    "live_bounds_table",
    "collect_results",
    "table1",
    "table1_lines",
    "continued_table",
    "continued_comparison",
    "continued_summary",
    "validation_cells",
    "validation_table",
    "ordering_check",
    "ordering_lines",
    "validation_ordering_lines",
    "committed_amortization_gaps",
    "amortization_table",
    "amortization_summary",
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
                        "budget": budget,
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


def table1(rows: list[dict]):
    """Table 1 as a pandas DataFrame: ours (mean over seeds, with the spread over seeds if
    several, else the test-set standard error) next to the slides' values."""
    import pandas as pd

    out = []
    for (dataset, posterior), (ref, ref_sd) in SLIDES_TABLE1.items():
        cell = _cell(rows, dataset, posterior)
        if cell:
            means = np.array([r["mean"] for r in cell])
            spread = means.std(ddof=1) if len(cell) > 1 else cell[0]["stderr"]
            ours = f"{means.mean():.2f} ± {spread:.2f}"
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


def continued_summary(long_rows: list[dict], short_rows: list[dict]) -> dict[str, float | str]:
    """The figures the chapter's reading of the continued runs quotes, as one flat dict (the
    notebook glues them into its prose, so the text follows the committed results).

    Over the finished runs: how many (``runs``), how many stopped early and after how many
    epochs (``early``, ``early_min``, ``early_max``), how many ran to the epoch cap (``cap``),
    the smallest and largest gain of a cell over its 63-epoch mean (``gain_min``,
    ``gain_max``), and, of the pairs of runs of one cell that trained for different numbers of
    epochs (``pairs``), in how many the longer one ends higher (``longer_higher``).

    Per dataset (prefix ``mnist_`` or ``fashion_``), where its cells have runs: the Gaussian
    VAE's distance below the slides (``gauss_below``) and its seeds' spread
    (``gauss_spread``); each richer posterior's lead over the simpler one (``nsf_lead``,
    ``cif_lead``), the slides' lead (``..._slides``), its seeds (``nsf_seeds``,
    ``cif_seeds``), the largest spread over seeds of the two flows (``flow_spread``, 0.0
    with one seed each) and whether the CIF-NSF's lead is "larger than" or "no larger than"
    that spread (``cif_vs_spread``)."""
    cells = _continued_cells(long_rows, short_rows)
    runs = [r for c in cells.values() for r in c["runs"]]
    early = [r["epochs"] for r in runs if r["stopped_early"]]
    gains = [c["longer"] - c["short"] for c in cells.values()]
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


def validation_ordering_lines(
    runs: dict, datasets: tuple[str, ...] = ("mnist", "fashion-mnist")
) -> list[str]:
    """:func:`ordering_check` (with the NSF's gain) on the best validation ELBO of each seed
    of a ``vae-many`` summary.

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


#: The posteriors' short names in the amortization summary's keys.
_GAP_KEYS = {"gaussian": "gaussian", "nsf": "nsf", "cif-nsf": "cif"}


def committed_amortization_gaps() -> dict[str, list[dict]]:
    """The amortization-gap estimates stored with the committed paper-budget runs, as
    ``{label: rows}`` (rows of :func:`collect_results` with ``metric="amortization_gap"``):
    Table 1's 63-epoch runs and the runs trained to the paper's stopping rule."""
    return {
        "Table 1 (63 epochs)": collect_results(metric="amortization_gap"),
        "trained to the rule": collect_results(metric="amortization_gap", folder="vae/long"),
    }


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
            its seeds ± their standard deviation.

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
            for q, cell in cells.items():
                means = np.array([r["mean"] for r in cell])
                spread = f" ± {means.std(ddof=1):.2f}" if len(cell) > 1 else ""
                row[q] = f"{means.mean():.2f}{spread}"
            seeds = sorted({r["seed"] for cell in cells.values() for r in cell})
            row["±"] = f"std. deviation over seeds {', '.join(map(str, seeds))}"
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
