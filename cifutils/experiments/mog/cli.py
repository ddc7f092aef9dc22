"""The command line ``python -m cifutils.experiments mog``: one cell, every cell (``--all``),
the estimator study (``--estimator``), re-evaluation of a finished run (``--reevaluate``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from cifutils import cli
from cifutils.budgets import get_budget
from cifutils.families import VariationalFlow
from cifutils.results import provenance, results_dir, write_json
from cifutils.targets import get_target
from cifutils.training import (
    load_checkpoint,
    remove_checkpoint,
)

from .config import (
    MODELS,
    SIGMA0S,
    VARIANTS,
    MogConfig,
    _differences_text,
    cell_name,
    config_differences,
    result_path,
)
from .estimators import estimator_study
from .evaluation import estimate_text
from .training import run_cell

__all__ = ["main"]


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = cli.ArgumentParser(
        prog="python -m cifutils.experiments mog",
        description="VI on the 9-component Gaussian mixture: NSF vs CIF-NSF (Figure 1).",
    )
    p.add_argument(
        "--model",
        choices=tuple(VARIANTS),
        default=MODELS[0],
        help="cif-nsf-af: CIF-NSF with the indexed affine before each spline (the authors' "
        "code; the default); cif-nsf: the slides' order, spline then affine; affine-nsf: the "
        "control, an NSF with a learnable affine before each spline and no index u",
    )
    p.add_argument(
        "--models",
        choices=tuple(VARIANTS),
        nargs="+",
        default=None,
        help=f"with --all: these models (default: Figure 1's {' and '.join(MODELS)})",
    )
    p.add_argument("--sigma0", type=cli.POSITIVE, default=1.0)
    p.add_argument("--seed", type=cli.SEED, default=0)
    p.add_argument(
        "--budget", type=cli.budget, default=None, help="smoke, book or paper ($CIFUTILS_BUDGET)"
    )
    p.add_argument("--steps", type=cli.count(1), default=None, help="override the budget's steps")
    p.add_argument("--batch", type=cli.count(1), default=None, help="override the budget's batch")
    p.add_argument(
        "--all",
        action="store_true",
        help="run every (seed, model, sigma0) cell of the budget in turn, seed 0 "
        "first; finished cells are skipped",
    )
    p.add_argument(
        "--seeds",
        type=cli.SEED,
        nargs="+",
        default=None,
        help="with --all: only these seeds (default: the budget's mog_seeds)",
    )
    p.add_argument(
        "--estimator",
        action="store_true",
        help="run the estimator study on the trained cell given by "
        "--model cif-nsf --sigma0 --seed (trains it first if needed)",
    )
    p.add_argument(
        "--estimator-max-rows",
        type=cli.count(1),
        default=None,
        help="skip marginal estimates needing more than this many backward passes (N * M) "
        "per repetition (M = N = 10,000 is 1e8 passes: hours on a CPU)",
    )
    p.add_argument(
        "--workers",
        type=cli.count(1),
        default=1,
        help="estimator study on the CPU: run its repetitions in this many single-thread "
        "processes (the numbers do not depend on it)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="estimator study: pass the backward passes through torch.compile",
    )
    p.add_argument("--results", default=None, help="results folder (default: results/)")
    p.add_argument("--runs", default="runs", help="checkpoint folder (default: runs/)")
    p.add_argument("--checkpoint-every", type=cli.count(1), default=500)
    p.add_argument(
        "--stop-after",
        type=cli.count(1),
        default=None,
        help="stop after this many steps (simulates an interruption; rerun to resume)",
    )
    p.add_argument(
        "--threads",
        type=cli.count(1),
        default=1,
        help="torch CPU threads (default 1: these small models gain nothing from more, and on "
        "a loaded 2-core machine 2 threads measured 2,325 ms per step against 32 ms with 1; "
        "measure before raising it)",
    )
    p.add_argument(
        "--device",
        type=cli.device(),
        default="cpu",
        help="device of the estimator study (training stays on CPU)",
    )
    p.add_argument("--force", action="store_true", help="recompute an existing result")
    p.add_argument(
        "--reevaluate",
        action="store_true",
        help="recompute the metrics of a finished run from its final checkpoint "
        "(same samples: the RNG state is restored) and rewrite its JSON",
    )
    return p.parse_args(list(argv))


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    if args.steps is not None:
        out["steps"] = args.steps
    if args.batch is not None:
        out["batch"] = args.batch
    return out


def _run_one(
    args: argparse.Namespace, model: str, sigma0: float, seed: int, root: Path
) -> tuple[int, VariationalFlow | None]:
    config = MogConfig.from_budget(model, sigma0, seed, args.budget, **_overrides(args))
    if seed != 0:
        config.stored_samples = 0
    out = root / result_path(config.budget, model, sigma0, seed)
    ckpt = Path(args.runs) / "mog" / config.budget / (cell_name(model, sigma0, seed) + ".pt")
    if args.reevaluate:
        if not ckpt.exists() or load_checkpoint(ckpt)["step"] != config.steps:
            print(f"{cell_name(model, sigma0, seed)}: no finished checkpoint, skipped")
            return 0, None
        old = json.loads(out.read_text()) if out.exists() else {}
        result, family = run_cell(config, ckpt)
        for key in ("provenance", "wall_seconds", "ms_per_step", "resumed_at_step"):
            if key in old:
                result[key] = old[key]
        result["reevaluated"] = provenance(asdict(config), "cpu")["date"]
        write_json(out, result)
        print(f"{out.name}: re-evaluated")
        return 0, family
    if out.exists() and not args.force and not args.estimator:
        # A result stands for the configuration it was computed with, overrides included.
        diff = config_differences(json.loads(out.read_text()).get("config", {}), config)
        if not diff:
            print(f"{out}: exists, skipped")
            return 0, None
        print(
            f"{out}: exists but was computed with another configuration "
            f"({_differences_text(diff)}): kept, nothing computed. Rerun with --force to "
            "replace it, or give another --results folder to keep both",
            file=sys.stderr,
        )
        return 1, None
    if args.force and ckpt.exists() and not args.estimator:
        remove_checkpoint(ckpt)
    result, family = run_cell(config, ckpt, args.checkpoint_every, args.stop_after)
    if result is None:
        print(
            f"{cell_name(model, sigma0, seed)}: stopped at step {args.stop_after}; "
            f"checkpoint {ckpt}"
        )
        return 0, None
    if not out.exists() or args.force:
        write_json(out, result)
    m = result["metrics"]
    print(
        f"{out}: ELBO {m['elbo']:.4f} +- {m['elbo_se']:.4f}, marginal "
        f"{estimate_text(m, 'marginal_elbo')}, log Z {estimate_text(m, 'log_z_iw')}, "
        f"modes {m['modes_covered']}, {result['ms_per_step']} ms/step"
    )
    return 0, family


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cifutils.experiments mog``."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    root = Path(args.results) if args.results else results_dir()
    budget = get_budget(args.budget)
    if args.all:
        rc = 0
        for seed in args.seeds if args.seeds is not None else range(budget.mog_seeds):
            for model in args.models or MODELS:
                for sigma0 in SIGMA0S:
                    rc = max(rc, _run_one(args, model, sigma0, seed, root)[0])
        return rc
    rc, family = _run_one(args, args.model, args.sigma0, args.seed, root)
    if args.estimator:
        if family is None or not family.is_cif:
            print("the estimator study needs a finished CIF cell (cif-nsf or cif-nsf-af)")
            return 2
        ns = [n for n in (1, 10, 100, 1_000, 10_000) if n <= budget.mog_estimator_max_n]
        device = torch.device(args.device)
        family = family.to(device)
        rows = 4_000_000 if device.type == "cuda" else 2_000  # backward passes per call
        name = "estimator_" + cell_name(args.model, args.sigma0, args.seed)
        t0 = time.perf_counter()
        study = estimator_study(
            family,
            get_target("mog9"),
            ns,
            budget.mog_estimator_reps,
            chunk_rows=rows,
            max_rows=args.estimator_max_rows,
            seed=10_000 + args.seed,
            workers=args.workers if device.type == "cpu" else 1,
            compiled=args.compile,
            cache=Path(args.runs) / "mog" / budget.name / (name + ".jsonl"),
        )
        config = {
            "model": args.model,
            "sigma0": args.sigma0,
            "seed": args.seed,
            "budget": budget.name,
            "ns": ns,
            "reps": budget.mog_estimator_reps,
            "max_rows": args.estimator_max_rows,
            "threads": args.threads,
            "workers": args.workers,
            "compile": args.compile,
            "chunk_rows": rows,
        }
        study.update(
            provenance=provenance(config, device),
            budget=budget.name,
            wall_seconds=round(time.perf_counter() - t0, 1),
        )
        out = root / "mog" / budget.name / (name + ".json")
        write_json(out, study)
        print(f"{out}: written")
    return rc
