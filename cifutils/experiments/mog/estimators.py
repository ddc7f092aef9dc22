"""The estimator study (beyond the paper): the marginal and the auxiliary ELBO of one trained
CIF as the number of samples grows, computed in worker processes with a resumable cache.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cifutils.families import VariationalFlow
from cifutils.fast import accelerate
from cifutils.objectives import logmeanexp
from cifutils.results import load_result
from cifutils.targets import GaussianMixture

__all__ = ["estimator_study", "committed_study", "study_note", "study_lines", "study_values"]


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


def committed_study(
    sources: Sequence[str], name: str = "estimator_cif-nsf_sigma1_seed0"
) -> dict[str, Any] | None:
    """The committed study ``results/mog/<source>/<name>.json`` of the first of ``sources``
    that has one (written by ``python -m cifutils.experiments mog --estimator``), or None.
    Outside a checkout (on Colab) the repository's committed copy is fetched, as for the
    cells (:func:`~cifutils.experiments.mog.training.committed_results`)."""
    for source in sources:
        study = load_result(f"mog/{source}/{name}.json")
        if study is not None:
            return study
    return None


def study_note(study: dict[str, Any], live_budget: str) -> str:
    """Where ``study`` came from, in one line: a committed study's budget, device and wall
    time, with the estimates it skipped as too costly; or ``live_budget`` for one computed
    in the chapter."""
    if "provenance" not in study:
        return f"live, budget {live_budget}, cpu"
    minutes = study["wall_seconds"] / 60
    note = f"committed JSON, budget {study['budget']}, {study['provenance']['device']}"
    note += f", {minutes:.0f} min"
    for skip in study.get("skipped", []):
        rule = "M = N" if skip["rule"] == "N" else "M = ceil(sqrt N)"
        note += f"; not run: {rule} at N = {skip['n']:,} ({skip['rows_per_rep']:.0e} passes/rep)"
    return note


def _study_run(study: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics of the trained run a committed ``study`` used, as the command line
    evaluated it (None for a live study, or when its file is absent)."""
    if "provenance" not in study:
        return None
    path = f"mog/{study['budget']}/cif-nsf_sigma1_seed0.json"
    cell = load_result(path)
    return None if cell is None else cell["metrics"]


def study_lines(study: dict[str, Any]) -> list[str]:
    """What chapter 5 reads off a study: for each rule for ``M``, both estimates at the
    largest ``N`` where it ran and their paired difference; the marginal estimate with
    ``M = N`` minus with ``M = ceil(sqrt N)`` on the same samples at the largest ``N`` where
    both ran; and, for a committed study, the evaluation of the trained run it used (its two
    estimates are unpaired: the standard error of their difference is printed with it)."""
    lines = []
    for rule, label in (("N", "M = N"), ("sqrtN", "M = ceil(sqrt N)")):
        i = max(j for j, v in enumerate(study[f"marg_{rule}_mean"]) if v is not None)
        aux, marg = study["aux_mean"][i], study[f"marg_{rule}_mean"][i]
        line = f"{label}, N = {study['n'][i]:,}: auxiliary {aux:.4f}, marginal {marg:.4f}"
        if "diff_N_mean" in study:  # studies saved before the paired difference lack it
            diff, sd = study[f"diff_{rule}_mean"][i], study[f"diff_{rule}_std"][i]
            line += f", paired difference {diff:+.4f} (std {sd:.4f})"
        lines.append(line)
    both = [u for u in study.get("units", []) if "marg_N" in u and "marg_sqrtN" in u]
    if both:
        n_max = max(u["n"] for u in both)
        gap = np.array([u["marg_N"] - u["marg_sqrtN"] for u in both if u["n"] == n_max])
        lines.append(
            f"N = {n_max:,}: marginal estimate with M = N minus with M = ceil(sqrt N), same z: "
            f"{gap.mean():+.6f} (std {gap.std():.6f})"
        )
    m = _study_run(study)
    if m is not None:
        se = math.hypot(m["elbo_se"], m["marginal_elbo_se"])
        lines.append(
            f"the same run's evaluation: auxiliary ELBO {m['elbo']:.4f}, marginal ELBO "
            f"{m['marginal_elbo']:.4f} ({m['marginal_elbo'] - m['elbo']:+.4f} +- {se:.4f})"
        )
    return lines


def study_values(study: dict[str, Any]) -> dict[str, float]:
    """The figures of :func:`study_lines` by name, for the chapter's prose to quote: at the
    largest ``N`` where ``M = N`` ran, ``study_n`` (that ``N``), ``study_reps``, the mean
    auxiliary and marginal estimates (``study_aux``, ``study_marg``) and their paired
    difference, mean and standard deviation over repetitions (``study_diff``,
    ``study_diff_std``); the marginal estimate with ``M = N`` minus with ``M = ceil(sqrt N)``
    on the same samples (``study_m_gap``, ``study_m_gap_std``); and the evaluation of the run
    a committed study used: its marginal minus auxiliary ELBO and the standard error of that
    unpaired difference (``study_eval_gap``, ``study_eval_gap_se``). Figures a study lacks
    are NaN."""
    nan = math.nan
    i = max(j for j, v in enumerate(study["marg_N_mean"]) if v is not None)
    out = {
        "study_n": float(study["n"][i]),
        "study_reps": float(study["reps"]),
        "study_aux": study["aux_mean"][i],
        "study_marg": study["marg_N_mean"][i],
        "study_diff": study.get("diff_N_mean", [nan] * (i + 1))[i],
        "study_diff_std": study.get("diff_N_std", [nan] * (i + 1))[i],
    }
    both = [u for u in study.get("units", []) if "marg_N" in u and "marg_sqrtN" in u]
    gap = np.array([u["marg_N"] - u["marg_sqrtN"] for u in both if u["n"] == study["n"][i]])
    out["study_m_gap"] = float(gap.mean()) if gap.size else nan
    out["study_m_gap_std"] = float(gap.std()) if gap.size else nan
    m = _study_run(study)
    out["study_eval_gap"] = nan if m is None else m["marginal_elbo"] - m["elbo"]
    out["study_eval_gap_se"] = nan if m is None else math.hypot(m["elbo_se"], m["marginal_elbo_se"])
    return out
