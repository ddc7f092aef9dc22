"""Speed of the Gaussian-mixture experiment: ms per training step (CPU, or a GPU).

Usage::

    python benchmarks/bench_mog.py [--threads 2] [--batch 1000] [--steps 20] [--repeats 5]
        [--device cuda] [--models nsf cif-nsf cif-nsf-af affine-nsf] [--impls nflows fast]

A training step is what ``python -m cifutils.experiments mog`` does 20,000 times per
paper-budget run: draw ``--batch`` reparameterized samples of a model (sigma_0 = 1; the
NSF, the CIF-NSF in either order, the control), evaluate the (auxiliary) ELBO against the
9-component mixture, backpropagate, clip the gradient norm at 5 and take an Adam step.
Each repeat times every model in turn over ``--steps`` steps (after a warm-up), so the
models are measured side by side and drift of a shared machine hits them alike; the
median over ``--repeats`` is printed with the min and max, the implied time of one paper
run, and the median of the per-repeat ratio to the first model. ``nflows`` rows use
nflows' spline layers (what the experiment uses); ``fast`` rows swap in
:mod:`cifutils.fast` layers (same weights, same function), for comparison. Also times the
float64 marginal-ELBO evaluation (1,000 points, M = 100 u-samples). The machine may be
shared: say so when quoting the figures.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch

from cifutils.experiments.mog import build_model
from cifutils.targets import get_target


def _sync(family) -> None:
    device = next(family.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(family, target, batch: int, steps: int, repeats: int) -> list[float]:
    """Milliseconds per training step, one figure per repeat (eager, on the family's
    device; CUDA work is synchronized before reading the clock)."""
    opt = torch.optim.Adam(family.parameters(), lr=1e-3)

    def step() -> None:
        z, log_q = family.sample_and_log_prob(batch)
        loss = (log_q - target.log_prob(z)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(family.parameters(), 5.0)
        opt.step()

    for _ in range(3):  # warm-up
        step()
    out = []
    for _ in range(repeats):
        _sync(family)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(family)
        out.append(1000 * (time.perf_counter() - t0) / steps)
    return out


@torch.no_grad()
def time_marginal(family, points: int = 1000, m: int = 100) -> float:
    """Seconds for the float64 marginal log-density of ``points`` samples, ``M = m``."""
    f64 = copy.deepcopy(family).double()
    z = f64.sample(points)
    _sync(f64)
    t0 = time.perf_counter()
    f64.marginal_log_prob(z, num_u_samples=m)
    _sync(f64)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--paper-steps", type=int, default=20_000)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--models", nargs="+", default=["nsf", "cif-nsf", "cif-nsf-af", "affine-nsf"])
    p.add_argument("--impls", nargs="+", choices=["nflows", "fast"], default=["nflows", "fast"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    target = get_target("mog9")
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    print(
        f"torch {torch.__version__}, {where}, {args.threads} threads, "
        f"batch {args.batch}, {args.steps} steps x {args.repeats} repeats"
    )
    print(
        f"{'model':10s} {'layers':7s} {'ms/step (median)':>17s} {'min':>7s} {'max':>7s} "
        f"{'paper run (min)':>16s} {'ratio':>6s}"
    )
    families = {}
    for model in args.models:
        for impl in args.impls:
            torch.manual_seed(0)
            family = build_model(model, 1.0)
            if impl == "fast":
                from cifutils.fast import accelerate

                accelerate(family)
            families[model, impl] = family.to(device)
    times = {key: [] for key in families}
    for _ in range(args.repeats):
        for key, family in families.items():
            times[key] += time_steps(family, target, args.batch, args.steps, 1)
    for (model, impl), ms in times.items():
        first = times[args.models[0], impl]
        ratio = statistics.median(a / b for a, b in zip(ms, first))
        med = statistics.median(ms)
        print(
            f"{model:10s} {impl:7s} {med:17.1f} {min(ms):7.1f} {max(ms):7.1f} "
            f"{med * args.paper_steps / 60_000:16.1f} {ratio:6.2f}"
        )
    torch.manual_seed(0)
    secs = time_marginal(build_model("cif-nsf", 1.0).to(device))
    print(f"cif-nsf marginal log q_Z, 1,000 points x M = 100 (float64): {secs:.2f} s")


if __name__ == "__main__":
    main()
