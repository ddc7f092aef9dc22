"""The check behind chapter 2's learning rate for the nine-mode mixture: fit its NSF (the
chapter's settings, book budget: 1,500 steps of 256 samples) at a few learning rates and
seeds, and print the ELBO and the share of samples nearest to the least-visited mode (the
target gives each mode 1/9 = 0.111).

    python benchmarks/nsf_mog9_lr.py --lrs 3e-3 1e-3 --seeds 0 1 2 3
"""

from __future__ import annotations

import argparse
import time

import torch

from cifutils import get_target
from cifutils.experiments.mog import coverage
from cifutils.plotting import fit_family
from cifutils.training import estimate_elbo

NSF = dict(layers=5, hidden=32, bins=8, tail_bound=3.0, blocks=2, sigma0=1.0)  # chapter 2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lrs", type=float, nargs="+", default=[3e-3, 1e-3])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--steps", type=int, default=1_500)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--eval", type=int, default=10_000, help="samples for the estimates")
    a = p.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU kernels {torch.backends.cpu.get_cpu_capability()}")
    mog = get_target("mog9")
    for lr in a.lrs:
        for seed in a.seeds:
            t0 = time.perf_counter()
            q, _ = fit_family("nsf", mog.log_prob, a.steps, a.batch, lr, seed, **NSF)
            elbo, se = estimate_elbo(q, mog.log_prob, a.eval)
            with torch.no_grad():
                smallest = min(coverage(mog, q.sample(a.eval))[0])
            print(
                f"lr {lr:g}, seed {seed}: ELBO {elbo:.3f} +- {se:.3f}, "
                f"least-visited mode {smallest:.3f}, {time.perf_counter() - t0:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
