"""Experiment 1: variational inference on the 9-component Gaussian mixture.

The paper's first experiment (Figure 1 of the slides): fit an NSF and a CIF-NSF to the
lattice mixture ``p(z) = (1/9) sum_c N(z; m_c, 0.25^2 I)``, ``m_c in {-2, 0, 2}^2``
(normalized, so ``log Z = 0``), from a fixed base ``N(0, sigma_0^2 I)`` with
``sigma_0 in {0.1, 1, 10}``, and compare the bounds and the modes they cover.

One *cell* is a (model, sigma_0, seed, budget) combination; the command line::

    python -m cifutils.experiments mog --model cif-nsf-af --sigma0 1 --seed 0 --budget paper
    python -m cifutils.experiments mog --all --budget book          # every cell, in order
    python -m cifutils.experiments mog --estimator --budget book    # the estimator study

writes ``results/mog/<budget>/<model>_sigma<sigma_0>_seed<seed>.json`` and keeps its
checkpoints under ``runs/mog/`` (ignored by git).

What lives where (each public name is also importable from this package):

* :mod:`~cifutils.experiments.mog.config` -- the models by name
  (:data:`~cifutils.experiments.mog.config.VARIANTS`), one run's configuration, file names,
  building a model;
* :mod:`~cifutils.experiments.mog.training` -- running one cell (train with checkpoints,
  evaluate, write the result) and loading the committed results;
* :mod:`~cifutils.experiments.mog.evaluation` -- the metrics of one trained model;
* :mod:`~cifutils.experiments.mog.tables` -- the tables, claim checks and findings that
  chapter 5 prints;
* :mod:`~cifutils.experiments.mog.estimators` -- the estimator study (beyond the paper);
* :mod:`~cifutils.experiments.mog.posteriors` -- one CIF layer's exact ``q(u_l | w_l)``;
* :mod:`~cifutils.experiments.mog.figures` -- chapter 5's figures (imports matplotlib, so
  it is not imported here);
* :mod:`~cifutils.experiments.mog.cli` -- the command line.

References:
    Caterini, Cornish, Sejdinovic, Doucet. Variational inference with continuously-indexed
    normalizing flows. ICML 2020 INNF+ workshop / UAI 2021.
    Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. NeurIPS 2019.
"""

from .cli import main
from .config import (
    ABLATION,
    LABELS,
    MODELS,
    SIGMA0S,
    VARIANTS,
    MogConfig,
    build_model,
    cell_name,
    config_differences,
    result_path,
)
from .estimators import committed_study, estimator_study, study_lines, study_note, study_values
from .evaluation import (
    coverage,
    decode_samples,
    downsample_curve,
    encode_samples,
    estimate_text,
    evaluate,
    spline_inside,
)
from .posteriors import layer_posteriors, posterior_lines, posterior_values
from .tables import (
    ablation_values,
    check_claims,
    compare_models,
    findings,
    first_spline_inside,
    order_findings,
    order_summary,
    provenance_note,
    sanity_checks,
    side_by_side,
    summary_table,
)
from .training import collect_results, committed_results, load_cell, run_cell

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
    "spline_inside",
    "encode_samples",
    "decode_samples",
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
    "side_by_side",
    "sanity_checks",
    "estimator_study",
    "committed_study",
    "study_note",
    "study_lines",
    "study_values",
    "layer_posteriors",
    "posterior_lines",
    "posterior_values",
    "main",
]
