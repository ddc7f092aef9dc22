"""Speed of the Table-1 VAEs on a CUDA GPU: eager steps, CUDA-graph steps, concurrent runs.

Usage (on a machine with a GPU and ``CIFUTILS_DATA`` set)::

    python benchmarks/bench_vae_gpu.py [--steps 50] [--runs 6]

For each posterior it builds one run exactly as ``python -m cifutils.experiments vae-many``
does (MNIST, the paper's model, batch 100) and prints the median milliseconds per training step
(a) eagerly and (b) as a replay of the recorded CUDA graph; then the time of one "round" in
which ``--runs`` runs each replay one step on their own streams (the way ``vae-many`` trains).
Before timing, the recorded validation step is checked against the eager one on three
batches: the ELBO sums must agree to within 3% (they are Monte Carlo estimates with different
random numbers), which catches a graph that reads a stale batch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from cifutils.data import load_binarized
from cifutils.experiments.vae import VAEConfig, load_run
from cifutils.experiments.vae.multi import _capture, _Run, _step


def _make(posterior: str, seed: int, graphs: bool, splits) -> _Run:
    cfg = VAEConfig.from_budget("paper", dataset="mnist", posterior=posterior, seed=seed)
    dev = torch.device("cuda")
    vae, opt, gen, state, best = load_run(cfg, Path("/nonexistent"), dev, capturable=graphs)
    zero = torch.zeros((), device=dev)
    run = _Run(cfg, Path("/nonexistent"), vae, opt, gen, state, best,
               splits.train.probs.to(dev), splits.val.probs.to(dev),
               idx=torch.zeros(100, dtype=torch.long, device=dev),
               train_sum=zero.clone(), val_sum=zero.clone())  # fmt: skip
    if graphs:
        _capture(run, 100)
    return run


def _time(fn, steps: int, repeats: int = 5) -> list[float]:
    out = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
        out.append(1e3 * (time.perf_counter() - t0) / steps)
    return out


def _stepper(runs: list[_Run], order: torch.Tensor):
    """A function doing one training step of each run on the next batch of ``order``."""
    count = iter(range(10**9))

    def go() -> None:
        start = 100 * (next(count) % 540)
        for r in runs:
            _step(r, "train", order, start, 100)

    return go


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--runs", type=int, default=6)
    a = p.parse_args()
    torch.set_num_threads(1)
    splits = load_binarized("mnist")
    order = torch.randperm(54_000, device="cuda")
    val_order = torch.arange(6_000, device="cuda")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    rows = []
    for posterior in ("gaussian", "nsf", "cif-nsf"):
        eager = _make(posterior, 0, False, splits)
        graph = _make(posterior, 0, True, splits)
        graph.vae.load_state_dict(eager.vae.state_dict())
        for b in range(3):  # the recorded validation step sees each new batch
            for r in (eager, graph):
                r.val_sum.zero_()
                _step(r, "val", val_order, 100 * b, 100)
            torch.cuda.synchronize()
            e, g = eager.val_sum.item(), graph.val_sum.item()
            assert abs(g - e) < 0.03 * abs(e), (posterior, b, e, g)
        t_eager = _time(_stepper([eager], order), 10)
        t_graph = _time(_stepper([graph], order), a.steps)
        rows.append((posterior, statistics.median(t_eager), statistics.median(t_graph)))
        print(f"{posterior}: eager {rows[-1][1]:.2f} ms/step, graph {rows[-1][2]:.2f} ms/step")
    kinds = ("gaussian", "nsf", "cif-nsf")
    runs = [_make(q, s, True, splits) for s in range(a.runs // 3) for q in kinds]
    t_round = statistics.median(_time(_stepper(runs, order), a.steps))
    print(f"{len(runs)} runs on their own streams: {t_round:.2f} ms per round of one step each")
    print("| posterior | eager ms/step | CUDA graph ms/step |\n| --- | --- | --- |")
    for q, e, g in rows:
        print(f"| {q} | {e:.2f} | {g:.2f} |")


if __name__ == "__main__":
    main()
