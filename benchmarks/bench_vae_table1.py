"""Speed of the Table-1 VAEs (latent 32, residual decoder) on CPU, against the CPU's own
arithmetic limit.

Usage::

    python benchmarks/bench_vae_table1.py [--threads 1 2] [--steps 3] [--repeats 3]
        [--posteriors gaussian nsf cif-nsf] [--compile gaussian ...] [--channels-last ...]

A training step is what ``python -m cifutils.experiments vae --arch table1`` does per batch:
one Adam update (:class:`~cifutils.training.FlatAdam`) on 100 binary 28x28 images with one
ELBO sample, the fast layers of :mod:`cifutils.fast`, gradient-norm clipping at 5 for the
flows and none for the Gaussian VAE. Rows:

* ``eager``: the model as trained by default;
* ``compile``: the whole loss through ``torch.compile`` (``--compile`` lists the posteriors;
  compiling takes about 1 minute for the Gaussian VAE and 4-5 minutes for the CIF-NSF on a
  shared 2-core machine, so the default run compiles none);
* ``channels-last``: the eager model with the decoder's weights and activations in the
  channels-last memory format (the same function, so the same bound; its loss is checked
  against the eager one on one batch).

bf16 autocast is not offered: it changes the computed ELBO beyond float32 rounding, so a
run trained with it would not be the experiment's.

Each configuration is timed ``--repeats`` times over ``--steps`` steps after a warm-up;
repeats are interleaved across all configurations and thread counts (the thread count is set
before each block), so that a change of the machine's load affects all of them alike, and the
ratios are paired per repeat (median over the repeats). For each thread count the script also
measures the rate of a plain float32 matrix product (``--matmul`` square, the best case for
the CPU's vector units; three products per repeat) and reports each step's counted FLOP rate
(matrix products and convolutions, as ``torch.utils.flop_counter`` counts them; elementwise
work not counted) as a fraction of the best matmul rate seen: on a machine shared with other
jobs that is the closest measured approach to the arithmetic limit, and still below it.
The decoder's FLOPs per step are counted separately (forward and backward).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

from cifutils.experiments.vae import POSTERIORS, make_vae, training_loss
from cifutils.training import FlatAdam, clipped_parameters

BATCH = 100


def _images(n: int = BATCH, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=g) < 0.15).float()


def make_step(posterior: str, mode: str = "eager"):
    """A closure doing one training step of a fresh Table-1 model (``mode``: ``"eager"``,
    ``"compile"`` or ``"channels-last"``); the first call compiles in ``"compile"`` mode."""
    torch.manual_seed(0)
    vae = make_vae(posterior, arch="table1")
    if mode == "channels-last":
        vae.decoder.to(memory_format=torch.channels_last)
    opt = FlatAdam(vae, lr=1e-3)
    params = clipped_parameters(opt, vae)
    loss_fn = training_loss(vae, compiled=mode == "compile")
    clip = None if posterior == "gaussian" else 5.0
    x = _images()
    if mode == "channels-last":
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        loss = loss_fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()

    return step


def channels_last_difference(posterior: str = "gaussian") -> float:
    """Largest difference of the per-image ELBO, channels-last decoder against the default,
    same weights and same noise: float32 rounding only."""
    torch.manual_seed(0)
    vae = make_vae(posterior, arch="table1")
    x = _images(8)
    with torch.no_grad():
        torch.manual_seed(1)
        a = vae.elbo(x)
        vae.decoder.to(memory_format=torch.channels_last)
        torch.manual_seed(1)
        b = vae.elbo(x.contiguous(memory_format=torch.channels_last))
    return (a - b).abs().max().item()


def _counted(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def decoder_flops(batch: int = BATCH) -> tuple[float, float]:
    """FLOPs of the Table-1 decoder for ``batch`` latent vectors: forward, and forward plus
    backward (a training step's share)."""
    torch.manual_seed(0)
    dec = make_vae("gaussian", arch="table1").decoder
    z = torch.randn(batch, 32, requires_grad=True)
    forward = _counted(lambda: dec(z))
    both = _counted(lambda: dec(z).sum().backward())
    return forward, both


def step_flops(posterior: str) -> float:
    """Counted FLOPs of one training step's forward and backward pass (batch 100)."""
    torch.manual_seed(0)
    vae = make_vae(posterior, arch="table1")
    return _counted(lambda: training_loss(vae)(_images()).backward())


def matmul_rate(n: int = 2048, repeats: int = 3) -> float:
    """GFLOP/s of an ``n x n`` float32 matrix product at the current thread count (the best
    of ``repeats``)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    a @ b  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return max(rates)


def time_configs(configs: list[tuple], steps: int, repeats: int, matmul: int) -> tuple:
    """ms per step of each ``(posterior, mode, threads)`` and the matmul GFLOP/s of each
    thread count, one value per repeat, all interleaved."""
    steppers = {}
    for c in configs:
        torch.set_num_threads(c[2])
        t0 = time.perf_counter()
        steppers[c] = make_step(c[0], c[1])
        for _ in range(2):  # warm-up (and compilation)
            steppers[c]()
        if c[1] == "compile":
            print(f"# compiled {c[0]} ({c[2]} thread(s)): {time.perf_counter() - t0:.0f} s")
    times: dict = {c: [] for c in configs}
    rates: dict = {t: [] for t in sorted({c[2] for c in configs})}
    for _ in range(repeats):
        for t in rates:
            torch.set_num_threads(t)
            rates[t].append(matmul_rate(matmul, 3))
        for c, step in steppers.items():
            torch.set_num_threads(c[2])
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            times[c].append(1000 * (time.perf_counter() - t0) / steps)
    return times, rates


def _paired(a: list[float], b: list[float]) -> str:
    ratios = sorted(x / y for x, y in zip(a, b))
    return f"{statistics.median(ratios):.2f} [{ratios[0]:.2f}, {ratios[-1]:.2f}]"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--posteriors", nargs="+", choices=POSTERIORS, default=list(POSTERIORS))
    p.add_argument("--compile", nargs="*", choices=POSTERIORS, default=[])
    p.add_argument("--channels-last", nargs="*", choices=POSTERIORS, default=[])
    p.add_argument("--matmul", type=int, default=2048, help="size of the reference product")
    a = p.parse_args(argv)
    print(
        "# python benchmarks/bench_vae_table1.py "
        + " ".join(sys.argv[1:] if argv is None else argv)
    )
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, kernels {torch.backends.cpu.get_cpu_capability()}, "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    fwd, both = decoder_flops()
    print(
        f"decoder FLOPs per step of {BATCH}: forward {fwd / 1e9:.2f} G "
        f"({fwd / 2 / BATCH / 1e6:.1f} M multiply-adds per image), forward + backward "
        f"{both / 1e9:.2f} G"
    )
    flops = {q: step_flops(q) for q in a.posteriors}
    print(
        "whole step, counted FLOPs: " + ", ".join(f"{q} {f / 1e9:.2f} G" for q, f in flops.items())
    )
    if a.channels_last:
        diff = channels_last_difference(a.channels_last[0])
        print(f"channels-last vs default ELBO, same noise: max |difference| {diff:.1e} nats")
    configs = [(q, "eager", t) for t in a.threads for q in a.posteriors]
    configs += [(q, "compile", t) for t in a.threads for q in a.compile]
    configs += [(q, "channels-last", t) for t in a.threads for q in a.channels_last]
    times, rates = time_configs(configs, a.steps, a.repeats, a.matmul)
    print(f"\n{a.repeats} repeats x {a.steps} steps, batch {BATCH}; median [min, max]")
    for t, r in rates.items():
        print(
            f"matmul {a.matmul}^2, {t} thread(s): best {max(r):.1f}, median "
            f"{statistics.median(r):.1f} GFLOP/s"
        )
    print(f"{'posterior':9s} {'mode':13s} thr  ms/step [min, max]      GFLOP/s  of best matmul")
    for (q, mode, t), ms in times.items():
        med = statistics.median(ms)
        rate = flops[q] / (med / 1000) / 1e9
        frac = rate / max(rates[t])
        print(
            f"{q:9s} {mode:13s} {t:3d}  {med:7.0f} [{min(ms):5.0f}, {max(ms):5.0f}]"
            f"   {rate:7.1f}  {frac:8.0%}"
        )
    print("\npaired ratios of time per step (median [min, max] over repeats):")
    for q in a.posteriors:
        if len(a.threads) > 1:
            one, two = (times[q, "eager", t] for t in a.threads[:2])
            print(f"{q:9s} eager, {a.threads[1]} / {a.threads[0]} threads: {_paired(two, one)}")
        for mode in ("compile", "channels-last"):
            for t in a.threads:
                if (q, mode, t) in times:
                    ratio = _paired(times[q, mode, t], times[q, "eager", t])
                    print(f"{q:9s} {mode} / eager, {t} thread(s): {ratio}")
    print(f"# load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
