"""Speed of the Table-1 VAEs on CPU: ms per training step and test images per second.

Usage::

    python benchmarks/bench_vae.py [--threads 2] [--steps 20] [--repeats 5] [--eval-images 20]
        [--compile] [--grouping]

A training step is one Adam update on a batch of 100 binary 28x28 images with one ELBO
sample (forward, backward, gradient clipping at 5, optimizer step). Each configuration is
timed ``--repeats`` times over ``--steps`` steps after a warm-up; the median is printed,
with the min and max. ``nflows`` rows are the direct composition: nflows' own spline
layers, PyTorch's convolutions and a plain ``torch.optim.Adam``; ``fast`` rows the
equal-valued layers of :mod:`cifutils.fast` (same weights, same function) with
:class:`~cifutils.training.FlatAdam` (Adam's fused kernel over one flat parameter
tensor); ``--compile`` adds ``compile`` rows: the fast layers with the whole loss through
``torch.compile`` (what ``python -m cifutils.experiments vae --compile`` runs).
Evaluation throughput is the importance-weighted bound with K = 100 per image.

``--grouping`` prints, instead, a paired comparison for the CIF-NSF: its r-networks' image
work grouped over the ten layers and the K samples (the default,
:meth:`~cifutils.experiments.vae.fast_layers.FastImageRNet.group_context`) against each
layer doing its own on the repeated images (``group_contexts = False``), the two alternating
within every repeat.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from cifutils.experiments.vae import iw_log_likelihood, make_vae, training_loss
from cifutils.training import FlatAdam, clipped_parameters


def _images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=g) < 0.15).float()


def make_step(posterior: str, fast: bool | str, grouped: bool = True):
    """A closure doing one training step of a fresh model (:class:`~cifutils.training.FlatAdam`
    on the fast path; ``fast="compile"``: the fast path with the whole loss through
    ``torch.compile``, as ``python -m cifutils.experiments vae --compile`` trains)."""
    torch.manual_seed(0)
    vae = make_vae(posterior, fast=bool(fast))
    vae.posterior.group_contexts = grouped
    # the fast path trains as the experiment does: Adam over one flat parameter tensor
    opt = FlatAdam(vae, lr=1e-3) if fast else torch.optim.Adam(vae.parameters(), lr=1e-3)
    params = clipped_parameters(opt, vae)
    loss_fn = training_loss(vae, compiled=fast == "compile")
    x = _images(100)

    def step() -> None:
        loss = loss_fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()

    for _ in range(3):  # warm-up (and compilation)
        step()
    return step


def time_training(configs, steps: int, repeats: int) -> dict:
    """ms per training step for each (posterior, fast) in ``configs``, one value per repeat.
    Repeats are interleaved across configurations, so that a change in the machine's load
    during the run affects all of them alike."""
    steppers = {c: make_step(*c) for c in configs}
    times: dict = {c: [] for c in configs}
    for _ in range(repeats):
        for c, step in steppers.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            times[c].append(1000 * (time.perf_counter() - t0) / steps)
    return times


def step_flops(posterior: str) -> float:
    """MFLOP of one training step's forward and backward pass (matrix products and
    convolutions, as counted by ``torch.utils.flop_counter``; elementwise work not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    vae = make_vae(posterior)
    with FlopCounterMode(display=False) as counter:
        training_loss(vae)(_images(100)).backward()
    return counter.get_total_flops() / 1e6


def time_eval(posterior: str, fast: bool, images: int, k: int = 100, grouped: bool = True) -> float:
    """Test images per second for the K-sample importance-weighted bound."""
    torch.manual_seed(0)
    vae = make_vae(posterior, fast=fast).eval()
    vae.posterior.group_contexts = grouped
    x = _images(images, seed=1)
    iw_log_likelihood(vae, x[:2], k, batch_size=100)
    t0 = time.perf_counter()
    iw_log_likelihood(vae, x, k, batch_size=100, chunk_size=k)
    return images / (time.perf_counter() - t0)


def _paired(label: str, unit: str, grouped: list, per_layer: list, rate: bool = False) -> None:
    """Medians, and the paired ratio of times per layer / grouped (of rates: the inverse)."""
    ratios = sorted((a / b if rate else b / a) for a, b in zip(grouped, per_layer))
    q1, q2, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    print(
        f"{label:22s} grouped {statistics.median(grouped):7.1f}  per layer "
        f"{statistics.median(per_layer):7.1f} {unit}; per layer / grouped, paired: "
        f"median {q2:.2f} [quartiles {q1:.2f}, {q3:.2f}]"
    )


def compare_grouping(steps: int, repeats: int, images: int, compiled: bool) -> None:
    """The paired comparison of ``--grouping`` (see the module docstring)."""
    for fast in (True, "compile") if compiled else (True,):
        configs = [("cif-nsf", fast, True), ("cif-nsf", fast, False)]
        times = time_training(configs, steps, repeats)
        label = "train, compiled" if fast == "compile" else "train, fast layers"
        _paired(label, "ms/step", times[configs[0]], times[configs[1]])
    rates: dict = {True: [], False: []}
    for _ in range(repeats):
        for grouped in (True, False):
            rates[grouped].append(time_eval("cif-nsf", True, images, grouped=grouped))
    _paired("eval, K=100", "img/s", rates[True], rates[False], rate=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eval-images", type=int, default=20)
    parser.add_argument("--skip-nflows", action="store_true", help="time the fast path only")
    parser.add_argument(
        "--compile", action="store_true", help="add rows with the loss through torch.compile"
    )
    parser.add_argument(
        "--grouping", action="store_true", help="CIF-NSF, grouped r-networks or not (paired)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, batch 100, latent 20"
    )
    if args.grouping:
        compare_grouping(args.steps, args.repeats, args.eval_images, args.compile)
        return
    rows = [("gaussian", True)]
    for kind in ("nsf", "cif-nsf"):
        if not args.skip_nflows:
            rows.append((kind, False))
        rows.append((kind, True))
        if args.compile:
            rows.append((kind, "compile"))
    all_times = time_training(rows, args.steps, args.repeats)
    medians = {}
    print(
        f"{'posterior':10s} {'layers':7s} {'train ms/step (median [min, max])':36s} "
        f"{'eval img/s (K=100)':>18s}"
    )
    flops = {kind: step_flops(kind) for kind in ("gaussian", "nsf", "cif-nsf")}
    for kind, fast in rows:
        times = all_times[kind, fast]
        med = statistics.median(times)
        medians[kind, fast] = med
        ips = time_eval(kind, bool(fast), args.eval_images)
        label = {False: "nflows", True: "fast", "compile": "compile"}[fast]
        label = "-" if kind == "gaussian" else label
        print(
            f"{kind:10s} {label:7s} {med:7.1f} [{min(times):.1f}, {max(times):.1f}]"
            f"{'':18s} {ips:12.1f}"
        )
    if ("nsf", False) in medians:
        print(f"NSF speed-up (nflows / fast): {medians['nsf', False] / medians['nsf', True]:.2f}x")
        print(
            f"CIF-NSF speed-up (nflows / fast): "
            f"{medians['cif-nsf', False] / medians['cif-nsf', True]:.2f}x"
        )
    print(f"CIF-NSF / NSF (fast): {medians['cif-nsf', True] / medians['nsf', True]:.2f}")
    print(
        "MFLOP per step (matrix products and convolutions, forward + backward): "
        + ", ".join(f"{k} {v:.0f}" for k, v in flops.items())
        + f"; CIF-NSF / NSF {flops['cif-nsf'] / flops['nsf']:.2f}"
    )
    if args.compile:
        for kind in ("nsf", "cif-nsf"):
            base = medians.get((kind, False))
            if base:
                print(f"{kind} speed-up (nflows / compile): {base / medians[kind, 'compile']:.2f}x")
        ratio = medians["cif-nsf", "compile"] / medians["nsf", "compile"]
        print(f"CIF-NSF / NSF (compile): {ratio:.2f}")


if __name__ == "__main__":
    main()
