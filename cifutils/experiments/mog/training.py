"""Running one cell of the mixture experiment: training with checkpoints (resumable,
bit-for-bit on CPU), evaluation, the JSON result; and loading the committed results.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cifutils.budgets import get_budget
from cifutils.families import VariationalFlow
from cifutils.flows import num_parameters
from cifutils.results import load_result, provenance
from cifutils.targets import get_target
from cifutils.training import (
    History,
    fit,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)

from .config import (
    MODELS,
    SIGMA0S,
    MogConfig,
    _differences_text,
    build_model,
    cell_name,
    config_differences,
    result_path,
)
from .evaluation import downsample_curve, encode_samples, evaluate, spline_inside

__all__ = ["run_cell", "load_cell", "committed_results", "collect_results"]


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def run_cell(
    config: MogConfig,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 500,
    stop_after: int | None = None,
    progress: bool | None = None,
) -> tuple[dict[str, Any] | None, VariationalFlow]:
    """Train and evaluate one cell (on CPU); resume from ``checkpoint`` when it exists.

    Args:
        config: the run.
        checkpoint: file for the model, optimizer, history, step and the torch / numpy /
            python RNG states, written atomically every ``checkpoint_every`` steps and at
            the end. A resumed run reproduces the uninterrupted one exactly on CPU.
        stop_after: stop (after checkpointing) once this many steps are done in total, as
            if interrupted; the result is then None.
        progress: show a progress bar.

    Returns:
        The JSON-ready result (None if stopped early) and the trained model.
    """
    t_start = time.perf_counter()
    target = get_target(config.target)
    seed_everything(config.seed)
    family = build_model(config.model, config.sigma0)
    optimizer = torch.optim.Adam(family.parameters(), lr=config.lr)
    history, start, train_seconds = History(), 0, 0.0
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        state = load_checkpoint(path)
        diff = config_differences(state["config"], config)
        if diff:
            raise ValueError(
                f"checkpoint {path} belongs to another configuration ({_differences_text(diff)})"
                "; delete it to start this one, or use another checkpoint folder"
            )
        family.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = History.from_state_dict(state["history"])
        start, train_seconds = state["step"], state.get("train_seconds", 0.0)
        _set_rng_state(state["rng"])
    end = config.steps if stop_after is None else min(config.steps, stop_after)

    t_fit = time.perf_counter()

    def elapsed() -> float:
        # Training time over all resumed segments (History.seconds only updates at the end).
        return train_seconds + time.perf_counter() - t_fit

    def save(step_done: int) -> None:
        if path is not None:
            save_checkpoint(
                path,
                {
                    "config": asdict(config),
                    "model": family.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": history.state_dict(),
                    "step": step_done,
                    "rng": _rng_state(),
                    "train_seconds": elapsed(),
                },
            )

    def loss_fn(step: int) -> Tensor:
        z, log_q = family.sample_and_log_prob(config.batch)
        return (log_q - target.log_prob(z)).mean()

    def callback(step: int, hist: History) -> None:
        if (step + 1) % checkpoint_every == 0 and step + 1 < end:
            save(step + 1)

    family.train()
    if start < end:
        fit(
            family,
            loss_fn,
            end,
            clip=config.clip,
            optimizer=optimizer,
            start_step=start,
            history=history,
            progress=progress,
            callback=callback,
            desc=cell_name(config.model, config.sigma0, config.seed),
        )
        save(end)
    total = elapsed() if start < end else train_seconds
    if end < config.steps:
        return None, family
    metrics = evaluate(family, target, config)
    samples = family.sample(config.stored_samples) if config.stored_samples else None
    metrics["spline_inside"] = spline_inside(family, config.eval_samples)
    result = {
        "experiment": "mog",
        "budget": config.budget,
        "config": asdict(config),
        "provenance": provenance(asdict(config), "cpu"),
        "seed": config.seed,
        "num_parameters": num_parameters(family),
        "train_seconds": round(total, 2),
        "wall_seconds": round(time.perf_counter() - t_start, 2),
        "ms_per_step": round(1000 * total / max(1, config.steps), 3),
        "resumed_at_step": start,
        "metrics": metrics,
        "curve": downsample_curve(history.steps, [-x for x in history.loss]),
        "samples": None if samples is None else encode_samples(samples),
    }
    return result, family


def load_cell(
    model: str, sigma0: float, seed: int, budgets: Sequence[str] = ("paper", "book")
) -> dict[str, Any] | None:
    """The committed result of a cell from the first budget in ``budgets`` that has one
    (fetched from the repository outside a checkout, as :func:`committed_results` does)."""

    for b in budgets:
        res = load_result(result_path(b, model, sigma0, seed))
        if res is not None:
            return res
    return None


def committed_results(
    source: str,
    seeds: Sequence[int] | None = None,
    fetch: bool | None = None,
    models: Sequence[str] = MODELS,
) -> dict[tuple[str, float, int], dict[str, Any]]:
    """The committed results of budget ``source`` under ``results/mog/<source>/``:
    ``(model, sigma0, seed) -> result`` for every cell of ``models`` found (seeds
    ``0 .. mog_seeds - 1`` unless ``seeds`` is given). Nothing is trained; missing cells are
    simply absent. ``fetch`` (default: only outside a checkout, e.g. on Colab) also tries
    the repository."""

    seeds = range(get_budget(source).mog_seeds) if seeds is None else seeds
    found = {}
    for seed in seeds:
        for m in models:
            for s in SIGMA0S:
                r = load_result(result_path(source, m, s, seed), fetch=fetch)
                if r is not None:
                    found[(m, s, seed)] = r
    return found


def collect_results(
    budget: str, sources: Sequence[str] = ("paper", "book"), progress: bool | None = None
) -> tuple[str, dict[tuple[str, float, int], dict[str, Any]]]:
    """Every cell's result, for the chapter: from the first budget in ``sources`` whose
    six seed-0 cells are all committed under ``results/mog/`` (with every seed found), else
    trained live at ``budget`` (seed 0 only, no checkpoints).

    Returns:
        The budget the results came from and ``(model, sigma0, seed) -> result``.
    """
    for source in sources:
        first = committed_results(source, seeds=[0])
        if len(first) == len(MODELS) * len(SIGMA0S):
            return source, committed_results(source)
    live = {}
    for m in MODELS:
        for s in SIGMA0S:
            live[(m, s, 0)], _ = run_cell(
                MogConfig.from_budget(m, s, 0, budget), None, progress=progress
            )
    return get_budget(budget).name, live
