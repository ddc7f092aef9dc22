"""``python -m cifutils.experiments params``: the parameter count of every part of every VAE.

Prints, for each architecture (``small``, ``table1``) and each posterior, the trainable
parameters of the encoder, the decoder, the flow (spline steps and LU-linear layers) and the
CIF layers' extras (s/t, q and r networks), and the total
(:func:`cifutils.experiments.vae.model.parameter_counts`).
"""

from __future__ import annotations

import torch

from cifutils import cli

from .model import ALL_POSTERIORS, ARCHITECTURES, print_parameter_counts

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = cli.ArgumentParser(
        prog="python -m cifutils.experiments params",
        description="Print the parameter count of every part of every VAE.",
    )
    p.add_argument("--arch", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    p.add_argument("--posteriors", nargs="+", choices=ALL_POSTERIORS, default=None)
    a = p.parse_args(argv)
    torch.manual_seed(0)
    print_parameter_counts(tuple(a.arch), tuple(a.posteriors or ALL_POSTERIORS))
    return 0
