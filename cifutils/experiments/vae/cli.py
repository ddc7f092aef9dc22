"""The command line ``python -m cifutils.experiments vae``: train (or resume) one run, evaluate
it, write ``results/vae/<name>.json``.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from cifutils import cli
from cifutils.budgets import get_budget
from cifutils.data import load_binarized
from cifutils.flows import num_parameters
from cifutils.results import provenance, results_dir, write_json
from cifutils.training import (
    get_device,
)

from .config import VAEConfig
from .evaluation import evaluate
from .model import (
    ALL_POSTERIORS,
    ARCHITECTURES,
)
from .training import train

__all__ = ["run", "main"]


def run(
    cfg: VAEConfig,
    runs_dir: str | Path = "runs/vae",
    out_dir: str | Path | None = None,
    epochs: int | None = None,
    do_eval: bool = True,
    log=print,
    device: torch.device | str = "cpu",
    compiled: bool = False,
    time_limit: float | None = None,
    eval_if_complete: bool = False,
    save_weights: bool = False,
) -> dict:
    """Train/resume on ``device`` (``compiled``, ``time_limit``: see
    :func:`~cifutils.experiments.vae.training.train`), evaluate there, and write
    ``<out_dir>/<name>.json``; returns the record. Its provenance names the evaluation device;
    ``train_devices`` counts the epochs run on each device (a run may be continued elsewhere). With
    ``eval_if_complete``, a run that has not finished training (early stop or epoch cap) is neither
    evaluated nor written: its checkpoint waits for the next invocation. With ``save_weights``, the
    evaluated best-validation weights are also written in half precision to
    ``<out_dir>/weights/<name>.pt``, their SHA-256 recorded under ``"weights"``
    (:func:`cifutils.experiments.vae.weights.save_weights`)."""
    splits = load_binarized(cfg.dataset, limit=cfg.train_limit)
    start = time.perf_counter()
    vae, state = train(
        cfg, Path(runs_dir) / cfg.name, epochs, splits, log, device, compiled, time_limit
    )
    record = {
        "provenance": provenance(asdict(cfg), device),
        "train_devices": state["devices"],
        "name": cfg.name,
        "dataset": cfg.dataset,
        "posterior": cfg.posterior,
        "arch": cfg.arch,
        "seed": cfg.seed,
        "budget": cfg.budget,
        "parameters": num_parameters(vae),
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "complete": state["done"],
        "stopped_early": state["done"] and state["epoch"] < cfg.max_epochs,
        "train_images": len(splits.train),
        "train_seconds": state["seconds"],
        "best_val_elbo": state["best_val"],
        "history": state["history"],
    }
    if do_eval and (state["done"] or not eval_if_complete):
        t0 = time.perf_counter()
        record["metrics"] = evaluate(vae, cfg, splits)
        record["eval_seconds"] = time.perf_counter() - t0
        out = Path(out_dir) if out_dir is not None else results_dir() / "vae"
        if save_weights:
            from .weights import save_weights as save

            record["weights"] = save(vae, cfg.name, out)
        write_json(out / f"{cfg.name}.json", record)
    record["invocation_seconds"] = time.perf_counter() - start
    return record


def main(argv: list[str] | None = None) -> int:
    p = cli.ArgumentParser(
        prog="python -m cifutils.experiments vae",
        description="Train and evaluate one VAE of Table 1 (resumable).",
    )
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    p.add_argument("--posterior", choices=ALL_POSTERIORS, default="gaussian")
    p.add_argument(
        "--arch",
        choices=ARCHITECTURES,
        default=None,
        help="model: small (the CPU edition) or table1 (default: table1 for the paper "
        "budget, small otherwise)",
    )
    p.add_argument("--seed", type=cli.SEED, default=0)
    p.add_argument(
        "--budget",
        type=cli.budget,
        default=None,
        help="smoke | book | paper (default: $CIFUTILS_BUDGET)",
    )
    p.add_argument(
        "--epochs", type=cli.count(0), default=None, help="stop this invocation after N epochs"
    )
    p.add_argument(
        "--time-limit",
        type=cli.POSITIVE,
        default=None,
        help="minutes of training in this invocation (then evaluate); resume later",
    )
    p.add_argument(
        "--test-k", type=cli.count(1), nargs="+", default=None, help="K of the IW bound(s)"
    )
    p.add_argument(
        "--test-limit", type=cli.count(1), default=None, help="test images (default: all)"
    )
    p.add_argument(
        "--large-k-limit",
        type=cli.count(1),
        default=None,
        help="evaluate K > 100 on only the first N of the test images",
    )
    p.add_argument(
        "--gap-images",
        type=cli.count(0),
        default=None,
        help="test images for the gap estimates (default: the budget's vae_gap_images; 0: none)",
    )
    p.add_argument(
        "--amortization-steps",
        type=cli.count(0),
        default=None,
        help="Adam steps of the per-image refinement (default: the budget's vae_gap_steps)",
    )
    p.add_argument("--runs-dir", default="runs/vae")
    p.add_argument("--out-dir", default=None, help="default: results/vae")
    p.add_argument("--no-eval", action="store_true", help="train only; write no JSON")
    p.add_argument(
        "--save-weights",
        action="store_true",
        help="with the JSON, write the best-validation weights in half precision to "
        "<out-dir>/weights/<name>.pt and record their SHA-256",
    )
    p.add_argument(
        "--eval-if-complete",
        action="store_true",
        help="evaluate and write the JSON only once training has finished (early stop or "
        "epoch cap); an unfinished run keeps its checkpoint for the next invocation",
    )
    p.add_argument(
        "--threads",
        type=cli.count(1),
        default=1,
        help="torch CPU threads (1 is as fast for these small layers and robust on a "
        "shared machine, where 2 threads can be several times slower)",
    )
    p.add_argument("--nflows", action="store_true", help="nflows' own spline layers (slower)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="train with the loss through torch.compile (about 2x faster than the eager fast "
        "layers on a CPU after a compilation of about half a minute; needs a C++ compiler)",
    )
    p.add_argument(
        "--device",
        type=cli.device(allow_auto=True),
        default="cpu",
        help="cpu (default), cuda, or auto (CUDA when available)",
    )
    a = p.parse_args(argv)
    chosen = get_budget(a.budget)
    if a.gap_images is None:
        a.gap_images = chosen.vae_gap_images
    if a.amortization_steps is None:
        a.amortization_steps = chosen.vae_gap_steps
    torch.set_num_threads(a.threads)
    device = get_device(None if a.device == "auto" else a.device)
    kw = dict(
        dataset=a.dataset,
        posterior=a.posterior,
        seed=a.seed,
        arch=a.arch,
        fast=not a.nflows,
        gap_images=a.gap_images,
        amortization_steps=a.amortization_steps,
        large_k_limit=a.large_k_limit,
    )
    if a.test_k:
        kw["test_k"] = a.test_k
    if a.test_limit is not None:
        kw["test_limit"] = a.test_limit
    cfg = VAEConfig.from_budget(a.budget, **kw)
    rec = run(
        cfg,
        a.runs_dir,
        a.out_dir,
        a.epochs,
        not a.no_eval,
        device=device,
        compiled=a.compile,
        time_limit=None if a.time_limit is None else 60 * a.time_limit,
        eval_if_complete=a.eval_if_complete,
        save_weights=a.save_weights,
    )
    line = {k: rec[k] for k in ("name", "parameters", "epochs_run", "best_epoch", "complete")}
    print(line)
    for key, value in rec.get("metrics", {}).items():
        print(f"  {key}: {value}")
    return 0
