"""Experiment 2: amortized variational inference in VAEs on binarized MNIST and Fashion-MNIST
(Table 1 of the slides).

The generative model is ``p(z) = N(0, I)`` and ``p(x | z) = prod_pixels Bernoulli(x;
sigmoid(decoder(z)))``; the posterior ``q(z | x)`` is an amortized Gaussian, an NSF or a
CIF-NSF. The command line::

    python -m cifutils.experiments vae --dataset mnist --posterior cif-nsf --seed 0 --budget paper
    python -m cifutils.experiments vae-many ...   # several runs side by side (a GPU)
    python -m cifutils.experiments sweep ...      # the commands of a whole table
    python -m cifutils.experiments params         # parameter counts of every model

trains (or resumes) a run in ``runs/vae/<name>/`` and writes ``results/vae/<name>.json``.

What lives where (the names used by chapter 6 are also importable from this package):

* :mod:`~cifutils.experiments.vae.networks` -- the encoder, the decoders and the image-reading
  r-network;
* :mod:`~cifutils.experiments.vae.fast_layers` -- faster, equal-valued versions of those
  networks, swapped in with the same weights;
* :mod:`~cifutils.experiments.vae.model` -- the VAE with its posterior, the two
  architectures, the importance-weighted bound, parameter counts;
* :mod:`~cifutils.experiments.vae.config` -- one run's
  :class:`~cifutils.experiments.vae.config.VAEConfig`;
* :mod:`~cifutils.experiments.vae.training` -- training with early stopping and checkpoints;
* :mod:`~cifutils.experiments.vae.multi` -- several runs side by side (CUDA graphs on a GPU);
* :mod:`~cifutils.experiments.vae.evaluation` -- test bounds, auxiliary and amortization gaps;
* :mod:`~cifutils.experiments.vae.tables` -- Table 1 (in two blocks: the Table-1
  architecture and the CPU edition) and the live runs' tables;
* :mod:`~cifutils.experiments.vae.continued` -- the continued runs and the validation curves;
* :mod:`~cifutils.experiments.vae.amortization` -- the committed runs' amortization gaps;
* :mod:`~cifutils.experiments.vae.weights` -- trained weights stored compactly in the repository;
* :mod:`~cifutils.experiments.vae.figures` -- chapter 6's figures (imports matplotlib, so it
  is not imported here);
* :mod:`~cifutils.experiments.vae.cli`, :mod:`~cifutils.experiments.vae.sweep`,
  :mod:`~cifutils.experiments.vae.params` -- the command lines.

References:
    Kingma, Welling. Auto-encoding variational Bayes. ICLR 2014.
    Burda, Grosse, Salakhutdinov. Importance weighted autoencoders. ICLR 2016.
    Caterini, Cornish, Sejdinovic, Doucet. Variational inference with continuously-indexed
    normalizing flows. ICML 2020 INNF+ workshop / UAI 2021.
"""

from .amortization import amortization_summary, amortization_table, committed_amortization_gaps
from .cli import main, run
from .config import VAEConfig, default_runs_dir, device_label, stored_setting
from .continued import (
    continued_comparison,
    continued_summary,
    continued_table,
    validation_cells,
    validation_ordering_lines,
    validation_table,
)
from .evaluation import amortization_gap, amortization_gap_curve, auxiliary_gap, evaluate
from .model import (
    ALL_POSTERIORS,
    ARCHITECTURES,
    POSTERIORS,
    VAE,
    iw_log_likelihood,
    make_vae,
    parameter_counts,
)
from .multi import train_many, train_together
from .tables import (
    SLIDES_TABLE1,
    TABLE1_BLOCKS,
    collect_results,
    live_bounds_table,
    ordering_check,
    ordering_lines,
    table1,
    table1_block_lines,
    table1_blocks,
    table1_by_block,
    table1_caption,
    table1_level,
    table1_lines,
    training_lines,
)
from .training import end_epoch, load_run, new_state, save_run, train, training_loss
from .weights import committed_runs, load_weights, pretrained_models, pretrained_table

__all__ = [
    "POSTERIORS",
    "ALL_POSTERIORS",
    "ARCHITECTURES",
    "VAE",
    "make_vae",
    "iw_log_likelihood",
    "parameter_counts",
    "VAEConfig",
    "default_runs_dir",
    "device_label",
    "stored_setting",
    "training_loss",
    "new_state",
    "load_run",
    "save_run",
    "end_epoch",
    "train",
    "train_many",
    "train_together",
    "evaluate",
    "auxiliary_gap",
    "amortization_gap",
    "amortization_gap_curve",
    "SLIDES_TABLE1",
    "training_lines",
    "live_bounds_table",
    "collect_results",
    "table1",
    "table1_lines",
    "TABLE1_BLOCKS",
    "table1_blocks",
    "table1_by_block",
    "table1_caption",
    "table1_block_lines",
    "table1_level",
    "continued_table",
    "continued_comparison",
    "continued_summary",
    "validation_cells",
    "validation_table",
    "ordering_lines",
    "ordering_check",
    "validation_ordering_lines",
    "committed_amortization_gaps",
    "amortization_table",
    "amortization_summary",
    "load_weights",
    "committed_runs",
    "pretrained_models",
    "pretrained_table",
    "run",
    "main",
]
