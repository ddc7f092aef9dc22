"""Training a VAE of Table 1: the loss, one epoch, early stopping, atomic checkpoints after
every epoch with every random state (resumable), and several runs at once.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict
from pathlib import Path

import torch

from cifutils.data import load_binarized
from cifutils.training import (
    FlatAdam,
    NonFiniteError,
    clipped_parameters,
    load_checkpoint,
    progress_enabled,
    save_checkpoint,
    seed_everything,
)

from .config import _EVAL_ONLY, VAEConfig, device_label, stored_setting
from .fast_layers import cache_constants
from .model import (
    VAE,
    make_vae,
)

__all__ = [
    "training_loss",
    "new_state",
    "load_run",
    "save_run",
    "end_epoch",
    "train",
]


def training_loss(vae: VAE, compiled: bool = False):
    """``x -> -mean ELBO``, the training loss; with ``compiled``, the whole forward pass
    (encoder, flow, decoder) goes through ``torch.compile`` once, so its backward is compiled
    too. Same function, same parameters; the values agree to float rounding. The first
    call compiles (about half a minute for the paper's flows on a CPU; needs a C++
    compiler), later calls reuse it."""

    def loss(x: torch.Tensor) -> torch.Tensor:
        return -vae.elbo(x).mean()

    if not compiled:
        return loss
    cache_constants(vae)  # fixed tensors of the fast layers enter the graph precomputed
    return torch.compile(loss, dynamic=False, fullgraph=True)


def _epoch(
    vae: VAE,
    data,
    opt,
    cfg: VAEConfig,
    gen: torch.Generator,
    train: bool,
    device=None,
    loss_fn=None,
) -> float:
    """One pass over ``data``: trains when ``train`` (with ``loss_fn``, by default the plain
    :func:`training_loss`); returns the mean (auxiliary) ELBO. Batches are drawn (order and
    binarization) with ``gen`` on the CPU, then moved."""
    total, count = 0.0, 0
    params = clipped_parameters(opt, vae)
    loss_fn = loss_fn or training_loss(vae)
    for x in data.batches(cfg.batch_size, shuffle=train, generator=gen, device=device):
        if train:
            loss = loss_fn(x)
            if not torch.isfinite(loss):
                raise NonFiniteError(f"{cfg.name}: non-finite training loss")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            total -= loss.item() * x.shape[0]
        else:
            with torch.no_grad():
                total += vae.elbo(x).sum().item()
        count += x.shape[0]
    return total / count


def new_state() -> dict:
    """The training state of a fresh run (stored in its checkpoint)."""
    return {
        "epoch": 0,
        "best_val": -float("inf"),
        "best_epoch": 0,
        "bad_epochs": 0,
        "done": False,
        "seconds": 0.0,
        "devices": {},
        "history": {"train_elbo": [], "val_elbo": [], "epoch_s": []},
    }


def load_run(cfg: VAEConfig, path: Path, device: torch.device, capturable: bool = False):
    """The model, optimizer, data generator, state and best weights of the run whose
    checkpoint is ``path`` (a fresh, seeded run when it does not exist yet), on ``device``.
    Also restores the torch random states saved with it. Raises if the checkpoint was
    trained with other settings than ``cfg`` (evaluation settings may differ)."""
    seed_everything(cfg.seed)
    vae = make_vae(cfg.posterior, cfg.latent, fast=cfg.fast, arch=cfg.arch).to(device)
    if capturable:  # its step may be recorded in a CUDA graph
        opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr, capturable=True, foreach=True)
    else:  # Adam over one flat tensor: same updates, less per-tensor work on a CPU
        opt = FlatAdam(vae, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    if not path.exists():
        return vae, opt, gen, new_state(), copy.deepcopy(vae.state_dict())
    ckpt = load_checkpoint(path, map_location=device)
    stored = ckpt["config"]
    diff = [
        k for k, v in asdict(cfg).items() if k not in _EVAL_ONLY and stored_setting(stored, k) != v
    ]
    if diff:
        raise ValueError(f"{path} was trained with other settings ({diff}); use another runs dir")
    vae.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    gen.set_state(ckpt["data_rng"].cpu())
    torch.set_rng_state(ckpt["torch_rng"].cpu())
    if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(ckpt["cuda_rng"].cpu(), device)
    state = ckpt["state"]
    state.setdefault("devices", {"cpu": state["epoch"]})  # runs saved before devices were kept
    return vae, opt, gen, state, ckpt["best_model"]


def save_run(cfg: VAEConfig, path: Path, vae, opt, gen, state: dict, best: dict) -> None:
    """Checkpoint a run atomically (the inverse of :func:`load_run`)."""
    device = next(vae.parameters()).device
    save_checkpoint(
        path,
        {
            "config": asdict(cfg),
            "model": vae.state_dict(),
            "optimizer": opt.state_dict(),
            "data_rng": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "state": state,
            "best_model": best,
        },
    )


def end_epoch(
    cfg: VAEConfig,
    state: dict,
    tr: float,
    val: float,
    seconds: float,
    device,
    compiled: bool = False,
):
    """Book-keeping after one epoch: history, early stopping, ``done``, the epoch counted
    under its device (and ``torch.compile`` when used). Returns True when the validation ELBO
    improved (the caller then keeps these weights as the best)."""
    state["epoch"] += 1
    improved = val > state["best_val"]
    if improved:
        state.update(best_val=val, best_epoch=state["epoch"], bad_epochs=0)
    else:
        state["bad_epochs"] += 1
    state["done"] = state["bad_epochs"] >= cfg.patience or state["epoch"] >= cfg.max_epochs
    state["seconds"] += seconds
    label = device_label(device, compiled)
    state["devices"][label] = state["devices"].get(label, 0) + 1
    for key, value in (("train_elbo", tr), ("val_elbo", val), ("epoch_s", seconds)):
        state["history"][key].append(value)
    return improved


def train(
    cfg: VAEConfig,
    run_dir: str | Path,
    epochs: int | None = None,
    splits=None,
    log=print,
    device: torch.device | str = "cpu",
    compiled: bool = False,
    time_limit: float | None = None,
) -> tuple[VAE, dict]:
    """Train (or resume) the run in ``run_dir`` for at most ``epochs`` more epochs, with the
    training loss through ``torch.compile`` when ``compiled`` (see :func:`training_loss`).
    With ``time_limit`` (seconds), no epoch is started that would end past the limit,
    judged by the last epoch's time (as :func:`cifutils.experiments.vae.multi.train_many`).

    Returns the VAE holding the *best-validation* weights and the checkpoint state (epoch,
    history, early-stopping state, ``done``, epochs per device)."""
    path = Path(run_dir) / "checkpoint.pt"
    device = torch.device(device)
    splits = splits or load_binarized(cfg.dataset, limit=cfg.train_limit)
    vae, opt, gen, state, best = load_run(cfg, path, device)
    if state["epoch"]:
        log(f"resumed {cfg.name} after epoch {state['epoch']}")
    done_now, last, start = 0, 0.0, time.perf_counter()
    loss_fn = training_loss(vae, compiled)
    while not state["done"] and (epochs is None or done_now < epochs):
        elapsed = time.perf_counter() - start
        if time_limit is not None and elapsed + last > time_limit:
            log(f"time limit: {cfg.name} stops after {elapsed:.0f} s, at epoch {state['epoch']}")
            break
        t0 = time.perf_counter()
        vae.train()
        tr = _epoch(vae, splits.train, opt, cfg, gen, True, device, loss_fn)
        vae.eval()
        val = _epoch(vae, splits.val, opt, cfg, gen, train=False, device=device)
        done_now += 1
        seconds = last = time.perf_counter() - t0
        if end_epoch(cfg, state, tr, val, seconds, device, compiled):
            best = copy.deepcopy(vae.state_dict())
        save_run(cfg, path, vae, opt, gen, state, best)
        if progress_enabled():
            log(
                f"{cfg.name} epoch {state['epoch']}: train ELBO {tr:.2f}, val ELBO {val:.2f} "
                f"({seconds:.0f} s)"
            )
    vae.load_state_dict(best)
    return vae.eval(), state
