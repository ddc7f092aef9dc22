"""The VAE experiment (Table 1): training with early stopping, checkpoints, test evaluation.

Command line (through the dispatcher)::

    python -m cifutils.experiments vae --dataset mnist --posterior cif-nsf --seed 0 \\
        --budget paper [--arch table1] [--epochs 5] [--test-k 100 1000] [--test-limit N]

``--arch`` picks the model (:data:`cifutils.vae.ARCHITECTURES`): the ``paper`` budget trains
the Table-1 architecture by default, the other budgets the small CPU edition. A Table-1 run
has the architecture in its name (``mnist-gaussian-table1-seed0-paper``); a small run's name
has none (the results committed before the architectures existed are small runs).

A run lives in ``runs/vae/<name>/checkpoint.pt`` (ignored by git) and is checkpointed
atomically after every epoch with the model, the optimizer, every random-number state, the
early-stopping state, the history and the best-validation weights; running the same command
again resumes it, losing at most the epoch in flight. ``--epochs N`` stops this invocation
after ``N`` more epochs (for a long run done in pieces). When the invocation ends, the
best-validation weights are evaluated on the test set and ``results/vae/<name>.json`` is
written with provenance; ``"complete"`` says whether training had finished (early stop or
the epoch cap) or was only partly run.

Training follows REFERENCE.md (Experiment 2): Adam 1e-3, batch 100, one ELBO sample per
image, gradient-norm clip 5, up to ``budget.vae_max_epochs`` epochs, early stopping after
``budget.vae_patience`` epochs without a better validation ELBO.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import cli
from .budgets import get_budget
from .data import load_binarized
from .fast import cache_constants
from .flows import num_parameters
from .objectives import ess_summary, mean_and_stderr
from .results import provenance, results_dir, write_json
from .training import (
    FlatAdam,
    NonFiniteError,
    clipped_parameters,
    get_device,
    load_checkpoint,
    progress_enabled,
    save_checkpoint,
    seed_everything,
)
from .vae import (
    ALL_POSTERIORS,
    ARCHITECTURES,
    LATENT,
    POSTERIORS,
    VAE,
    check_arch,
    iw_log_likelihood,
    make_vae,
)

__all__ = [
    "VAEConfig",
    "device_label",
    "training_loss",
    "new_state",
    "load_run",
    "save_run",
    "end_epoch",
    "train",
    "train_together",
    "default_runs_dir",
    "stored_setting",
    "evaluate",
    "amortization_gap",
    "auxiliary_gap",
    "run",
    "main",
    "SLIDES_TABLE1",
    "collect_results",
    "table1",
    "continued_table",
    "continued_comparison",
    "continued_summary",
    "validation_cells",
    "validation_table",
    "ordering_check",
    "ordering_lines",
]


@dataclass
class VAEConfig:
    """Everything that defines a run (stored in checkpoints and results).

    ``arch`` is the model architecture (``"small"`` or ``"table1"``); ``latent`` defaults to
    its latent dimension. ``clip`` is the gradient-norm bound (None: no clipping; the
    Table-1 Gaussian VAE of :meth:`from_budget` trains without)."""

    dataset: str = "mnist"
    posterior: str = "gaussian"
    seed: int = 0
    budget: str = "book"
    max_epochs: int = 3
    patience: int = 3
    train_limit: int | None = None
    batch_size: int = 100
    lr: float = 1e-3
    clip: float | None = 5.0
    latent: int | None = None
    fast: bool = True
    test_k: list[int] = field(default_factory=lambda: [100])
    test_limit: int | None = None
    large_k_limit: int | None = None
    gap_images: int = 0
    amortization_steps: int = 0
    arch: str = "small"

    def __post_init__(self) -> None:
        check_arch(self.arch)
        if self.posterior not in ALL_POSTERIORS:
            raise ValueError(f"posterior must be one of {ALL_POSTERIORS}, got {self.posterior!r}")
        if self.latent is None:
            self.latent = LATENT[self.arch]

    @classmethod
    def from_budget(cls, budget: str | None = None, **kw) -> VAEConfig:
        """The run's settings from the budget; ``kw`` override them. The ``paper`` budget
        trains the ``"table1"`` architecture unless ``arch`` says otherwise, the others the
        small one; the Table-1 Gaussian VAE trains without gradient clipping (REFERENCE.md)."""
        b = get_budget(budget)
        arch = kw.get("arch") or ("table1" if b.name == "paper" else "small")
        base = dict(
            budget=b.name,
            max_epochs=b.vae_max_epochs,
            patience=b.vae_patience,
            train_limit=b.vae_train_limit,
            test_k=[b.vae_test_k],
            test_limit=b.vae_test_limit,
            arch=arch,
        )
        if arch == "table1" and kw.get("posterior", "gaussian") == "gaussian":
            base["clip"] = None
        return cls(**{**base, **kw, "arch": arch})

    @property
    def name(self) -> str:
        arch = "" if self.arch == "small" else f"-{self.arch}"
        return f"{self.dataset}-{self.posterior}{arch}-seed{self.seed}-{self.budget}"


def device_label(device: torch.device | str, compiled: bool = False) -> str:
    """``"cpu"``, ``"cpu (torch.compile)"`` or ``"cuda (NVIDIA H100 80GB HBM3)"``: where (and
    how) epochs ran, for provenance."""
    device = torch.device(device)
    label = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"
    return f"{label} (torch.compile)" if compiled else label


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


_EVAL_ONLY = {"test_k", "test_limit", "large_k_limit", "gap_images", "amortization_steps"}

#: What a setting missing from an older checkpoint or result was (before it existed).
_LEGACY = {"arch": "small"}


def stored_setting(config: dict, key: str):
    """Setting ``key`` of a stored run configuration; for a setting that older checkpoints
    and results lack, the value it had before it existed (a run saved before ``arch``
    existed is small)."""
    return config.get(key, _LEGACY.get(key))


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
    judged by the last epoch's time (as :func:`cifutils.vae_multi.train_many`).

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


def default_runs_dir() -> Path:
    """``runs/vae`` of this checkout, where the command line (run from the repository root)
    keeps its checkpoints; outside a checkout (an installed package), ``runs/vae`` of the
    working directory."""
    root = Path(__file__).resolve().parent.parent
    return (root if (root / "pyproject.toml").exists() else Path.cwd()) / "runs" / "vae"


def train_together(
    cfgs: list[VAEConfig],
    runs_dir: str | Path,
    device: torch.device | str = "cpu",
    splits=None,
    compiled: bool = False,
    side_by_side: bool | None = None,
    log=print,
) -> dict[str, tuple[VAE, dict]]:
    """Train (or resume) every run of ``cfgs`` to its end in ``<runs_dir>/<name>/`` and return
    ``{name: (best-validation VAE on device, state)}``.

    ``side_by_side`` (default: on a CUDA device) trains the runs together with
    :func:`cifutils.vae_multi.train_many`, which on a GPU records each run's step as a CUDA
    graph and replays the runs on their own streams (eager PyTorch is launch-bound on these
    small models); otherwise the runs train one after the other with :func:`train`, through
    ``torch.compile`` when ``compiled``. Both write the same checkpoints."""
    device = torch.device(device)
    side_by_side = device.type == "cuda" if side_by_side is None else side_by_side
    if side_by_side:
        from .vae_multi import train_many

        train_many(cfgs, runs_dir, device, log=log)
    more = 0 if side_by_side else None  # side by side: only load the best weights
    return {
        cfg.name: train(cfg, Path(runs_dir) / cfg.name, more, splits, log, device, compiled)
        for cfg in cfgs
    }


@torch.no_grad()
def auxiliary_gap(
    vae: VAE, images: torch.Tensor, num_z: int = 5, num_u: int = 50, return_ess: bool = False
) -> tuple[float, float] | tuple[float, float, torch.Tensor]:
    """CIF only: mean and stderr of ``log q_aux(z, u) - log q_Z(z)`` over ``z ~ q(. | x)``,
    i.e. the estimated looseness of the auxiliary ELBO against the marginal ELBO,
    ``E_q[KL(q(u | z, x) || r(u | z, x))]``. ``log q_Z`` is the ``num_u``-sample
    importance-sampling estimate (in float64), biased low, so the gap is biased low too.
    With ``return_ess``, also each point's effective sample size over its ``num_u``
    weights (the same estimate either way)."""
    post = copy.deepcopy(vae.posterior).double()
    x = images.double()
    out = post.forward_sample(num_z, x)
    rows = x.repeat_interleave(num_z, dim=0)
    log_marginal, ess = post.marginal_log_prob(out.z, rows, num_u_samples=num_u, return_ess=True)
    mean, se = mean_and_stderr(out.log_q - log_marginal)
    return (mean, se, ess) if return_ess else (mean, se)


def amortization_gap(
    vae: VAE,
    images: torch.Tensor,
    steps: int = 100,
    num_samples: int = 10,
    eval_samples: int = 500,
    lr: float = 1e-3,
) -> tuple[float, float]:
    """Mean and stderr over ``images`` of ``ELBO(q_x*) - ELBO(q)``, where ``q_x*`` is the
    posterior network fine-tuned on the single image ``x`` for ``steps`` Adam steps with the
    decoder fixed: an estimate (from below) of the amortization gap of Cremer et al. (2018)."""
    gaps = []
    for x in images.split(1):
        local = copy.deepcopy(vae)
        local.decoder.requires_grad_(False)
        with torch.no_grad():
            before = local.log_weights(x, eval_samples).mean()
        opt = torch.optim.Adam(local.posterior.parameters(), lr=lr)
        for _ in range(steps):
            loss = -local.log_weights(x, num_samples).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            gaps.append(local.log_weights(x, eval_samples).mean() - before)
    return mean_and_stderr(torch.stack(gaps))


def evaluate(vae: VAE, cfg: VAEConfig, splits=None, seed: int = 1234) -> dict:
    """Test metrics of the (best-validation) ``vae``: the IW bound for each K in
    ``cfg.test_k``, the test ELBO and, when asked, the gaps. Seeded, so repeatable."""
    splits = splits or load_binarized(cfg.dataset, limit=cfg.train_limit)
    test = splits.test
    n = len(test) if cfg.test_limit is None else min(cfg.test_limit, len(test))
    gen = torch.Generator().manual_seed(seed)
    device = next(vae.parameters()).device
    images = test.binarize(torch.arange(n), generator=gen).to(device)
    torch.manual_seed(seed)
    # samples per call of the IW bound: small on a CPU, large enough to fill a GPU
    per_call = 200_000 if device.type == "cuda" else 10_000
    metrics: dict = {"test_images": n}
    with torch.no_grad():
        mean, se = mean_and_stderr(torch.cat([vae.elbo(b) for b in images.split(cfg.batch_size)]))
    metrics["test_elbo"] = {"mean": mean, "stderr": se}
    for k in cfg.test_k:
        use = images if k <= 100 or cfg.large_k_limit is None else images[: cfg.large_k_limit]
        batch = max(1, per_call // k)
        chunk = k if device.type == "cuda" else 100
        mean, se, _, ess = iw_log_likelihood(
            vae, use, k, batch_size=batch, chunk_size=chunk, return_ess=True
        )
        metrics[f"test_iw_k{k}"] = {"mean": mean, "stderr": se, "images": use.shape[0]}
        metrics[f"test_iw_k{k}"]["ess"] = ess_summary(ess, k)
    subset = images[: cfg.gap_images]
    if cfg.gap_images and vae.posterior.is_cif:
        mean, se, ess = auxiliary_gap(vae, subset, num_u=50, return_ess=True)
        metrics["aux_vs_marginal_gap"] = {"mean": mean, "stderr": se, "images": cfg.gap_images}
        metrics["aux_vs_marginal_gap"]["ess"] = ess_summary(ess, 50)
    if cfg.gap_images and cfg.amortization_steps:
        mean, se = amortization_gap(vae, subset, steps=cfg.amortization_steps)
        metrics["amortization_gap"] = {
            "mean": mean,
            "stderr": se,
            "images": cfg.gap_images,
            "steps": cfg.amortization_steps,
        }
    return metrics


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
    """Train/resume on ``device`` (``compiled``, ``time_limit``: see :func:`train`), evaluate
    there, and write ``<out_dir>/<name>.json``; returns the record. Its provenance names the
    evaluation device; ``train_devices`` counts the epochs run on each device (a run may be
    continued elsewhere). With ``eval_if_complete``, a run that has not finished training
    (early stop or epoch cap) is neither evaluated nor written: its checkpoint waits for the
    next invocation. With ``save_weights``, the evaluated best-validation weights are also
    written in half precision to ``<out_dir>/weights/<name>.pt``, their SHA-256 recorded
    under ``"weights"`` (:func:`cifutils.vae_weights.save_weights`)."""
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
            from .vae_weights import save_weights as save

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
        "--gap-images", type=cli.count(0), default=0, help="test images for the gap estimates"
    )
    p.add_argument("--amortization-steps", type=cli.count(0), default=0)
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


#: The slides' Table 1 -- test log-likelihood in nats, mean and std over three runs.
SLIDES_TABLE1 = {
    ("mnist", "gaussian"): (-87.37, 0.15),
    ("mnist", "nsf"): (-82.95, 0.11),
    ("mnist", "cif-nsf"): (-82.22, 0.13),
    ("fashion-mnist", "gaussian"): (-217.82, 0.07),
    ("fashion-mnist", "nsf"): (-215.45, 0.08),
    ("fashion-mnist", "cif-nsf"): (-214.50, 0.11),
}


def collect_results(
    budgets=("paper",),
    seeds=(0, 1, 2),
    metric: str = "test_iw_k100",
    folder: str = "vae",
    arch: str = "small",
) -> list[dict]:
    """The committed ``results/<folder>`` records of every (dataset, posterior) cell of
    Table 1 trained with the architecture ``arch`` (by default the small one), one row per
    found run: dataset, posterior, architecture, seed, budget, epochs, best epoch, complete,
    stopped early, metric mean and stderr, test images, device, and the validation ELBO per
    epoch (``val_elbo``)."""
    from .results import load_result

    fetch = not (results_dir() / folder).exists()  # on Colab: fetch committed files
    rows = []
    for dataset, posterior in SLIDES_TABLE1:
        for budget in budgets:
            for seed in seeds:
                cfg = VAEConfig(dataset, posterior, seed, budget, arch=arch)
                rec = load_result(f"{folder}/{cfg.name}.json", fetch)
                if rec is None or metric not in rec.get("metrics", {}):
                    continue
                m = rec["metrics"][metric]
                rows.append(
                    {
                        "dataset": dataset,
                        "posterior": posterior,
                        "arch": stored_setting(rec["provenance"]["config"], "arch"),
                        "seed": seed,
                        "budget": budget,
                        "epochs": rec["epochs_run"],
                        "best_epoch": rec["best_epoch"],
                        "max_epochs": rec["provenance"]["config"]["max_epochs"],
                        "complete": rec["complete"],
                        "stopped_early": rec["stopped_early"],
                        "mean": m["mean"],
                        "stderr": m["stderr"],
                        "test_images": m.get("images", rec["metrics"]["test_images"]),
                        "device": rec["provenance"]["device"],
                        "trained_on": ", ".join(rec.get("train_devices") or {"cpu": 0}),
                        "val_elbo": rec.get("history", {}).get("val_elbo", []),
                    }
                )
    return rows


def _cell(rows: list[dict], dataset: str, posterior: str) -> list[dict]:
    """The rows of one (dataset, posterior) cell, in their order."""
    return [r for r in rows if (r["dataset"], r["posterior"]) == (dataset, posterior)]


def table1(rows: list[dict]):
    """Table 1 as a pandas DataFrame: ours (mean over seeds, with the spread over seeds if
    several, else the test-set standard error) next to the slides' values."""
    import pandas as pd

    out = []
    for (dataset, posterior), (ref, ref_sd) in SLIDES_TABLE1.items():
        cell = _cell(rows, dataset, posterior)
        if cell:
            means = np.array([r["mean"] for r in cell])
            spread = means.std(ddof=1) if len(cell) > 1 else cell[0]["stderr"]
            ours = f"{means.mean():.2f} ± {spread:.2f}"
            epochs = ", ".join(str(r["epochs"]) for r in cell)
            where = ", ".join(sorted({d for r in cell for d in r["trained_on"].split(", ")}))
            note = (
                f"{cell[0]['budget']}; {len(cell)} seed(s); {epochs} of "
                f"{cell[0]['max_epochs']} epochs; {cell[0]['test_images']:,} test images; "
                f"trained on {where}"
            )
        else:
            ours, note = "not run", ""
        out.append(
            {
                "dataset": dataset,
                "posterior": posterior,
                "ours": ours,
                "slides": f"{ref:.2f} ± {ref_sd:.2f}",
                "run": note,
            }
        )
    return pd.DataFrame(out)


def continued_table(long_rows: list[dict], short_rows: list[dict], k1000_rows=()):
    """The runs trained on past Table 1's epochs (``long_rows``, from
    ``collect_results(folder="vae/long")``), one row each: epochs run (and why training
    ended), best-validation epoch, the K = 100 bound with its standard error over test
    images, the K = 1,000 bound where ``k1000_rows`` has it, then the mean over seeds of
    the same (dataset, posterior) cell of ``short_rows`` (Table 1's shorter runs) and the
    slides' value (a pandas DataFrame)."""
    import pandas as pd

    def key(r):
        return r["dataset"], r["posterior"], r["seed"]

    large = {key(r): r for r in k1000_rows}
    out = []
    for r in long_rows:
        cell = _cell(short_rows, r["dataset"], r["posterior"])
        if r["stopped_early"]:
            ended = "early stop"
        elif r["complete"]:
            ended = "epoch cap"
        else:
            ended = "not finished"
        big = large.get(key(r))
        short = np.mean([s["mean"] for s in cell]) if cell else float("nan")
        out.append(
            {
                "dataset": r["dataset"],
                "posterior": r["posterior"],
                "seed": r["seed"],
                "epochs": f"{r['epochs']} of {r['max_epochs']} ({ended})",
                "best epoch": r["best_epoch"],
                "K=100": f"{r['mean']:.2f} ± {r['stderr']:.2f}",
                "K=1000": f"{big['mean']:.2f} ({big['test_images']:,} images)" if big else "",
                "Table 1 cell": (
                    f"{short:.2f} ({', '.join(str(s['epochs']) for s in cell)} epochs)"
                    if cell
                    else ""
                ),
                "slides": f"{SLIDES_TABLE1[key(r)[:2]][0]:.2f}",
            }
        )
    return pd.DataFrame(out)


def _continued_cells(long_rows: list[dict], short_rows: list[dict]) -> dict:
    """Per (dataset, posterior) with finished continued runs: the runs (``runs``), their
    mean (``longer``), the mean of the same cell of ``short_rows`` (``short``) and, for two
    or more seeds, how far apart they end (``spread``). A run stopped by a time limit
    (not ``complete``) is left out until it is continued."""
    finished = [r for r in long_rows if r.get("complete", True)]
    cells = {}
    for dataset, posterior in SLIDES_TABLE1:
        cell = _cell(finished, dataset, posterior)
        if not cell:
            continue
        ours = [r["mean"] for r in cell]
        short = _cell(short_rows, dataset, posterior)
        cells[dataset, posterior] = {
            "runs": cell,
            "longer": float(np.mean(ours)),
            "short": float(np.mean([r["mean"] for r in short])) if short else float("nan"),
            "spread": max(ours) - min(ours) if len(cell) > 1 else None,
        }
    return cells


def continued_comparison(long_rows: list[dict], short_rows: list[dict]) -> list[str]:
    """Lines reading the continued runs against Table 1, per dataset: each posterior's mean
    over its continued runs (with their seeds and, for two or more, how far apart they are),
    its gain over the same cell of ``short_rows`` (the 63-epoch runs) and its distance to the
    slides; then NSF - Gaussian and CIF-NSF - NSF, trained longer, at 63 epochs and in the
    slides, beside the larger spread over seeds of the two cells. Only runs whose training
    finished (``complete``) count; a run stopped by a time limit is left out until it is
    continued."""
    cells = _continued_cells(long_rows, short_rows)
    lines = []
    for dataset in ("mnist", "fashion-mnist"):
        for q in POSTERIORS:
            if (dataset, q) not in cells:
                continue
            c = cells[dataset, q]
            seeds = ", ".join(str(r.get("seed", "?")) for r in c["runs"])
            if c["spread"] is not None:
                which = f"seeds {seeds}, {c['spread']:.2f} apart"
            else:
                which = f"seed {seeds}"
            lines.append(
                f"{dataset} {q}, {len(c['runs'])} run(s) trained longer ({which}): "
                f"{c['longer']:.2f} nats, {c['longer'] - c['short']:+.2f} over Table 1's "
                f"63-epoch cell, {c['longer'] - SLIDES_TABLE1[dataset, q][0]:+.2f} from the "
                "slides"
            )
        for rich, plain in (("nsf", "gaussian"), ("cif-nsf", "nsf")):
            if (dataset, rich) in cells and (dataset, plain) in cells:
                r, p = cells[dataset, rich], cells[dataset, plain]
                slides = SLIDES_TABLE1[dataset, rich][0] - SLIDES_TABLE1[dataset, plain][0]
                spreads = [c["spread"] for c in (r, p) if c["spread"] is not None]
                beside = (
                    f"seeds of a cell up to {max(spreads):.2f} apart"
                    if spreads
                    else "one seed each, no spread over seeds yet"
                )
                lines.append(
                    f"{dataset}: {rich} - {plain} = {r['longer'] - p['longer']:+.2f} nats "
                    f"trained longer ({beside}), {r['short'] - p['short']:+.2f} at 63 "
                    f"epochs, {slides:+.2f} in the slides"
                )
    return lines


def continued_summary(long_rows: list[dict], short_rows: list[dict]) -> dict[str, float | str]:
    """The figures the chapter's reading of the continued runs quotes, as one flat dict (the
    notebook glues them into its prose, so the text follows the committed results).

    Over the finished runs: how many (``runs``), how many stopped early and after how many
    epochs (``early``, ``early_min``, ``early_max``), how many ran to the epoch cap (``cap``),
    the smallest and largest gain of a cell over its 63-epoch mean (``gain_min``,
    ``gain_max``), and, of the pairs of runs of one cell that trained for different numbers of
    epochs (``pairs``), in how many the longer one ends higher (``longer_higher``).

    Per dataset (prefix ``mnist_`` or ``fashion_``), where its cells have runs: the Gaussian
    VAE's distance below the slides (``gauss_below``) and its seeds' spread
    (``gauss_spread``); each richer posterior's lead over the simpler one (``nsf_lead``,
    ``cif_lead``), the slides' lead (``..._slides``), its seeds (``nsf_seeds``,
    ``cif_seeds``), the largest spread over seeds of the two flows (``flow_spread``, 0.0
    with one seed each) and whether the CIF-NSF's lead is "larger than" or "no larger than"
    that spread (``cif_vs_spread``)."""
    cells = _continued_cells(long_rows, short_rows)
    runs = [r for c in cells.values() for r in c["runs"]]
    early = [r["epochs"] for r in runs if r["stopped_early"]]
    gains = [c["longer"] - c["short"] for c in cells.values()]
    out = {
        "runs": len(runs),
        "early": len(early),
        "cap": len(runs) - len(early),
    }
    if early:
        out.update(early_min=min(early), early_max=max(early))
    if gains:
        out.update(gain_min=min(gains), gain_max=max(gains))
    pairs = [
        (a, b)
        for c in cells.values()
        for i, a in enumerate(c["runs"])
        for b in c["runs"][i + 1 :]
        if a["epochs"] != b["epochs"]
    ]
    out["pairs"] = len(pairs)
    out["longer_higher"] = sum(
        (a["epochs"] > b["epochs"]) == (a["mean"] > b["mean"]) for a, b in pairs
    )
    for dataset, prefix in (("mnist", "mnist_"), ("fashion-mnist", "fashion_")):
        g, n, c = (cells.get((dataset, q)) for q in POSTERIORS)
        if g:
            out[prefix + "gauss_below"] = SLIDES_TABLE1[dataset, "gaussian"][0] - g["longer"]
            out[prefix + "gauss_spread"] = g["spread"] or 0.0
        for key, rich, plain, (a, b) in (
            ("nsf", n, g, ("nsf", "gaussian")),
            ("cif", c, n, ("cif-nsf", "nsf")),
        ):
            if rich and plain:
                out[prefix + key + "_lead"] = rich["longer"] - plain["longer"]
                out[prefix + key + "_lead_slides"] = (
                    SLIDES_TABLE1[dataset, a][0] - SLIDES_TABLE1[dataset, b][0]
                )
        for key, cell in (("nsf", n), ("cif", c)):
            if cell:
                out[prefix + key + "_seeds"] = len(cell["runs"])
        if n or c:
            out[prefix + "flow_spread"] = max([x["spread"] or 0.0 for x in (n, c) if x])
        if prefix + "cif_lead" in out:
            beyond = out[prefix + "cif_lead"] > out[prefix + "flow_spread"]
            out[prefix + "cif_vs_spread"] = "larger than" if beyond else "no larger than"
    return out


def validation_cells(runs: dict) -> dict[tuple[str, str], list[dict]]:
    """The runs of a ``vae-many`` summary grouped by (dataset, posterior), in Table 1's
    order and by name within a cell; cells without runs are left out."""
    cells = {}
    for dataset, posterior in SLIDES_TABLE1:
        prefix = f"{dataset}-{posterior}-seed"
        cell = [r for name, r in sorted(runs.items()) if name.startswith(prefix)]
        if cell:
            cells[dataset, posterior] = cell
    return cells


def validation_table(runs: dict):
    """Best validation ELBO of each (dataset, posterior) of a ``vae-many`` summary: mean and
    standard deviation over seeds, the seeds and the epochs run (a pandas DataFrame)."""
    import pandas as pd

    out = []
    for (dataset, posterior), cell in validation_cells(runs).items():
        best = np.array([r["best_val_elbo"] for r in cell])
        spread = f" ± {best.std(ddof=1):.2f}" if len(cell) > 1 else ""
        out.append(
            {
                "dataset": dataset,
                "posterior": posterior,
                "best validation ELBO": f"{best.mean():.2f}{spread}",
                "seeds": len(cell),
                "epochs": ", ".join(str(r["epochs"]) for r in cell),
            }
        )
    return pd.DataFrame(out)


def ordering_lines(rows: list[dict], nsf_gain: bool = False) -> list[str]:
    """:func:`ordering_check` for each dataset of ``rows`` (from :func:`collect_results`)
    whose three cells each have two or more seeds (a spread over seeds needs two); the
    datasets short of that are left out."""
    lines = []
    for dataset in ("mnist", "fashion-mnist"):
        values = {q: np.array([r["mean"] for r in _cell(rows, dataset, q)]) for q in POSTERIORS}
        if all(len(v) > 1 for v in values.values()):
            lines.append(ordering_check(dataset, values, nsf_gain))
    return lines


def ordering_check(dataset: str, values: dict[str, np.ndarray], nsf_gain: bool = False) -> str:
    """One line checking Table 1's ordering Gaussian < NSF < CIF-NSF on per-seed ``values``
    (``{posterior: array over seeds}``): the ordering of the means, CIF-NSF's lead over the
    NSF next to each one's standard deviation over seeds, and with ``nsf_gain`` the NSF's
    lead over the Gaussian."""
    m = {q: np.mean(v) for q, v in values.items()}
    line = (
        f"{dataset}: Gaussian < NSF < CIF-NSF as in Table 1: "
        f"{m['gaussian'] < m['nsf'] < m['cif-nsf']}; CIF-NSF - NSF = "
        f"{m['cif-nsf'] - m['nsf']:+.2f} nats (seed std {np.std(values['nsf'], ddof=1):.2f} "
        f"and {np.std(values['cif-nsf'], ddof=1):.2f})"
    )
    if nsf_gain:
        line += f"; NSF - Gaussian = {m['nsf'] - m['gaussian']:+.2f} nats"
    return line
