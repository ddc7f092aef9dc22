"""What chapter 5 prints from the results: the summary table, the claims of Figure 1 checked
against the runs, the order ablation's values and findings, the provenance line.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from .config import ABLATION, LABELS, MODELS, SIGMA0S, VARIANTS

__all__ = [
    "provenance_note",
    "compare_models",
    "check_claims",
    "findings",
    "summary_table",
    "first_spline_inside",
    "order_findings",
    "order_summary",
    "ablation_values",
    "side_by_side",
    "sanity_checks",
]


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
    results: dict[tuple[str, float, int], dict[str, Any]],
    label: str = "",
    width: int | None = 70,
    detail: bool = False,
) -> str:
    """Where ``results`` came from, read from their own records, after ``label``: budget
    (steps x samples per step), seeds, number of runs and device(s), e.g. ``"budget paper
    (20,000 steps x 1,000 samples), seed 0, 6 runs, device cpu"``; with ``detail``, also the
    torch version(s) and commit(s) (``"..., torch 2.13.0+cpu, commits 5751343, ..."``), which
    the chapter leaves to the JSON files. Wrapped at ``width`` characters."""
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
    text = f"budget {'/'.join(budgets)} ({size}), {seeds}, {len(runs)} runs, device {devices}"
    if detail:
        text += f", torch {torches}, commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}"
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
                "log p(x) estimate (K=100)": fmt("log_z_iw"),
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
    """What :func:`cifutils.experiments.mog.figures.plot_order_ablation` draws: two dicts keyed by
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
    """The figures the chapter quotes from the summary table, the claims and the order
    ablation, by name: for every model of :data:`~cifutils.experiments.mog.config.ABLATION`
    (tags ``af``, ``sf``, ``ctrl``, ``nsf``) and ``sigma_0`` (tags ``01``, ``1``, ``10``) the
    mean ELBO over the seeds found (``<model>_elbo_<s>``), the share of samples far from every
    mode in percent (``<model>_far_<s>``) and the smallest number of modes covered by a seed
    (``<model>_modes_<s>``), the first spline's share of inputs in range in percent
    (``<model>_inside_<s>``, :func:`first_spline_inside`), the mean marginal ELBO minus the
    ELBO (``<model>_margin_<s>``; 0 for an explicit flow), the mean importance-sampled
    ``log p(x)`` estimate (``<model>_logz_<s>``) and the mean coverage KL
    (``<model>_covkl_<s>``); and ``af_seeds`` and ``ctrl_seeds``, the fewest seeds of a cell of
    those models. Missing cells, and metrics a run did not record, give NaN."""
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
            for name, key in (("logz", "log_z_iw"), ("covkl", "coverage_kl")):
                v = _values(results, m, s, key) if runs else None
                out[f"{tag}_{name}_{stag}"] = math.nan if v is None else float(v.mean())
            marginal = _values(results, m, s, "marginal_elbo") if runs else None
            out[f"{tag}_margin_{stag}"] = (
                math.nan
                if marginal is None
                else float((marginal - _values(results, m, s, "elbo")).mean())
            )
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


def sanity_checks(results_by_budget: dict[str, dict]) -> dict[str, bool]:
    """Checks every run should pass whatever its budget, over the runs of each budget
    (``{budget: {(model, sigma0, seed): result}}``): its coverage fractions sum to 1; its
    ELBO is at most ``log p(x) = 0`` within 3 standard errors; and, for a CIF, its marginal ELBO
    is at least its auxiliary ELBO within 4 standard errors of the difference."""
    runs = [(key, r["metrics"]) for res in results_by_budget.values() for key, r in res.items()]
    return {
        "coverage fractions sum to 1 in every run": all(
            abs(sum(m["coverage"]) - 1) < 1e-3 for _, m in runs
        ),
        "every ELBO <= log p(x) = 0 within 3 standard errors": all(
            m["elbo"] <= 3 * m["elbo_se"] for _, m in runs
        ),
        "CIF-NSF: marginal ELBO >= auxiliary ELBO within 4 standard errors": all(
            m["marginal_elbo"] >= m["elbo"] - 4 * math.hypot(m["elbo_se"], m["marginal_elbo_se"])
            for (model, _, _), m in runs
            if model.startswith("cif")
        ),
    }
