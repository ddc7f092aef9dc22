"""Pretrained VAE weights: saved in half precision beside a run's result, checked by hash.

A finished run of the VAE experiment can keep its best-validation weights as
``results/vae/weights/<name>.pt`` (``python -m cifutils.experiments vae ... --save-weights``):
the floating-point tensors of the state dict in float16 (half the bytes of float32; the
integer buffers, such as the random permutations, as they are), and the file's SHA-256 in
the run's ``results/vae/<name>.json`` under ``"weights"``. :func:`load_weights` rebuilds the
model from the configuration recorded in that JSON, checks the file against the recorded
hash and loads the weights (back in float32): a notebook can then evaluate or plot a
trained model without training it.

Rounding to float16 changes each weight by at most a relative ``2^-11``; the reloaded model is
close to, not equal to, the evaluated one (the test metrics in the JSON are those of the
float32 weights).

:func:`pretrained_models` loads the committed ones of a dataset and seed (skipping the runs that
have not finished yet) and :func:`pretrained_table` evaluates them on a few test images, so
chapter 6 can show the trained Table-1 models in seconds; :func:`committed_runs` gives chapter
6 at the ``paper`` budget the finished runs themselves (models, training records and test
metrics) instead of training them again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from cifutils.results import (
    fetch_committed,
    load_result,
    note_read,
    repository_raw,
    results_dir,
)

from .config import VAEConfig, stored_setting
from .model import POSTERIORS, VAE, iw_log_likelihood, make_vae

__all__ = [
    "WeightsMismatchError",
    "sha256_of",
    "save_weights",
    "load_weights",
    "pretrained_models",
    "committed_runs",
    "pretrained_table",
]


class WeightsMismatchError(ValueError):
    """A weights file whose SHA-256 is not the one its result records."""


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(model: nn.Module, name: str, folder: str | Path) -> dict:
    """Write ``model``'s state dict to ``<folder>/weights/<name>.pt``, floating-point tensors
    in float16, and return what the result JSON records: ``file`` (relative to ``folder``),
    ``sha256``, ``bytes`` and ``dtype``."""
    state = {
        k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu())
        for k, v in model.state_dict().items()
    }
    relative = Path("weights") / f"{name}.pt"
    path = Path(folder) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return {
        "file": relative.as_posix(),
        "sha256": sha256_of(path),
        "bytes": path.stat().st_size,
        "dtype": "float16",
    }


def _run_record(
    dataset: str, posterior: str, seed: int, arch: str, budget: str, folder
) -> tuple[dict | None, str, Path | None]:
    """The result of a run, where it was read from, and the folder that holds its files:
    ``folder``, else this checkout's ``results/vae``, else (outside a checkout: Colab) the
    repository's committed copy, with no local folder."""
    name = VAEConfig(dataset, posterior, seed, budget, arch=arch).name
    local = Path(folder) if folder is not None else results_dir() / "vae"
    if folder is not None or local.exists():
        result = local / f"{name}.json"
        record = json.loads(result.read_text()) if result.exists() else None
        if record is not None:
            note_read("results", result)
        return record, str(result), local
    return (
        load_result(f"vae/{name}.json", fetch=True),
        f"{repository_raw()}/results/vae/{name}.json",
        None,
    )


def load_weights(
    dataset: str,
    posterior: str,
    seed: int,
    arch: str = "table1",
    budget: str = "paper",
    folder: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> VAE:
    """The trained VAE of run (``dataset``, ``posterior``, ``seed``, ``arch``, ``budget``),
    built as its result JSON in ``folder`` (default ``results/vae``) records and loaded with
    its saved weights, in float32 and in evaluation mode. Outside a checkout (no
    ``results/vae``, as on Colab) the committed result is read from the repository and the
    weights file is downloaded once (:func:`~cifutils.results.fetch_committed`).

    Raises:
        FileNotFoundError: no result, or a result without saved weights, or no weights file.
        WeightsMismatchError: the weights file's SHA-256 differs from the recorded one (the
            message names the file).
    """
    record, result, local = _run_record(dataset, posterior, seed, arch, budget, folder)
    if record is None:
        raise FileNotFoundError(f"no result {result}")
    return _load_recorded(record, result, local, device)


def _load_recorded(record: dict, result: str, local: Path | None, device="cpu") -> VAE:
    """:func:`load_weights` once the run's result ``record`` (read from ``result``; its files
    in ``local``, or None outside a checkout) is in hand."""
    if "weights" not in record:
        raise FileNotFoundError(f"{result} records no saved weights")
    relative = record["weights"]["file"]
    path = local / relative if local is not None else fetch_committed(f"vae/{relative}")
    if path is None or not path.exists():
        where = path or f"{repository_raw()}/results/vae/{relative}"
        raise FileNotFoundError(f"weights file {where} (recorded in {result}) is missing")
    note_read("weights", path if local is not None else f"results/vae/{relative}")
    found, expected = sha256_of(path), record["weights"]["sha256"]
    if found != expected:
        fix = (
            f"Restore the committed one (git checkout -- {path}) or write it again by "
            "evaluating the run with --save-weights"
            if local is not None
            else "Delete it to download it again"
        )
        raise WeightsMismatchError(
            f"{path}: SHA-256 {found} differs from {expected} recorded in {result}: the file "
            f"is damaged or belongs to another run. {fix}"
        )
    config = record["provenance"]["config"]
    vae = make_vae(
        config["posterior"],
        config["latent"],
        fast=config.get("fast", True),
        arch=stored_setting(config, "arch"),
    )
    state = torch.load(path, map_location="cpu", weights_only=True)
    vae.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return vae.to(device).eval()


def pretrained_models(
    dataset: str,
    seed: int = 0,
    arch: str = "table1",
    budget: str = "paper",
    folder: str | Path | None = None,
    posteriors: Iterable[str] = POSTERIORS,
) -> dict[str, VAE]:
    """``{posterior: VAE}`` for each of ``posteriors`` whose run (``dataset``, ``seed``,
    ``arch``, ``budget``) has a committed result with saved weights, loaded by
    :func:`load_weights` (on the CPU, in evaluation mode). A run without a result, or whose
    result saved no weights (it has not finished), is left out; a weights file that is
    recorded but missing or damaged raises, as in :func:`load_weights`."""
    models = {}
    for kind in posteriors:
        record, result, local = _run_record(dataset, kind, seed, arch, budget, folder)
        if record is not None and "weights" in record:
            models[kind] = _load_recorded(record, result, local)
    return models


def committed_runs(
    cfgs: Iterable[VAEConfig], device: torch.device | str = "cpu", folder: str | Path | None = None
) -> dict[str, tuple[VAE, dict, dict]] | None:
    """The committed, finished runs of ``cfgs`` as ``{name: (VAE, state, metrics)}``, or None
    unless every one of them has a result that finished training (``complete``) and saved its
    weights: then the runs are to be trained (or resumed) instead.

    Each VAE is loaded by :func:`load_weights` (float16 weights back in float32, on
    ``device``, in evaluation mode); ``state`` holds what
    :func:`~cifutils.experiments.vae.training.train` returns about a run, read from the
    result: ``epoch``, ``seconds``, ``best_val``, ``best_epoch``, ``done``, ``devices`` and
    ``history``; ``metrics`` are the test metrics the result records (evaluated with the
    float32 weights)."""
    runs = {}
    for cfg in cfgs:
        record, result, local = _run_record(
            cfg.dataset, cfg.posterior, cfg.seed, cfg.arch, cfg.budget, folder
        )
        if record is None or not record.get("complete") or "weights" not in record:
            return None
        state = {
            "epoch": record["epochs_run"],
            "seconds": record["train_seconds"],
            "best_val": record["best_val_elbo"],
            "best_epoch": record["best_epoch"],
            "done": True,
            "devices": record.get("train_devices", []),
            "history": record["history"],
        }
        runs[cfg.name] = (_load_recorded(record, result, local, device), state, record["metrics"])
    return runs


def pretrained_table(
    models: Mapping[str, VAE],
    images,
    dataset: str,
    seed: int = 0,
    k: int = 100,
    arch: str = "table1",
    budget: str = "paper",
    folder: str | Path | None = None,
    posteriors: Iterable[str] = POSTERIORS,
) -> pd.DataFrame:
    """One row per posterior: the ``K = k`` importance-weighted bound of ``models[posterior]``
    on ``images`` (already binarized), mean ± standard error over them, the seconds it took,
    and beside it the bound that the run's result records on its test images and the run's
    best epoch. A posterior missing from ``models`` reads "not committed yet"."""
    rows = {}
    for kind in posteriors:
        if kind not in models:
            rows[kind] = {"on these images": "not committed yet"}
            continue
        start = time.perf_counter()
        mean, stderr, _ = iw_log_likelihood(models[kind], images, k)
        seconds = time.perf_counter() - start
        record, _, _ = _run_record(dataset, kind, seed, arch, budget, folder)
        full = record["metrics"][f"test_iw_k{k}"]
        rows[kind] = {
            "on these images": f"{mean:.2f} ± {stderr:.2f}",
            "seconds": f"{seconds:.1f}",
            "the run's result": f"{full['mean']:.2f} ± {full['stderr']:.2f}",
            "test images": f"{full['images']:,}",
            "best epoch": str(record["best_epoch"]),
        }
    table = pd.DataFrame.from_dict(rows, orient="index").fillna("")
    table.index.name = "posterior"
    return table
