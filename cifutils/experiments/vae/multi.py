"""Several VAE runs of Table 1 trained side by side, on a GPU as replays of CUDA graphs.

Why: the models are small (batches of 100 images, a 20-dimensional latent), so on a GPU a
training step is a few thousand tiny kernels and eager PyTorch spends nearly all its time
launching them; a GPU then trains no faster than one CPU core. Here each run's whole step
(binarization, forward, backward, gradient clipping, Adam) is recorded once as a CUDA graph and
replayed, which removes the launch cost, and each run replays on its own CUDA stream, so the
graphs of different runs execute concurrently and fill the GPU. On a CPU the same loop runs
eagerly (that is how the tests exercise it).

The runs, their settings and their checkpoints are exactly those of
:mod:`cifutils.experiments.vae` (same ``runs/vae/<name>/checkpoint.pt`` format, one checkpoint
per run written atomically after every epoch, same early stopping), so a run started here can
be continued or evaluated by the single-run command::

    python -m cifutils.experiments vae --dataset mnist --posterior nsf --seed 0 \\
        --budget paper --epochs 0 --device cuda --test-k 100 1000

What differs is only where the random numbers come from: the dynamic binarization and the ELBO
noise are drawn on the device from its one generator, shared by the runs (batch order still
comes from each run's own generator). A set of runs is therefore repeatable only as a whole,
and resuming one is not bit-for-bit (nor is any CUDA training with atomics in its backward).
The history's ``epoch_s`` is the wall time of the epoch of all the runs together. A run whose
epoch produced a non-finite ELBO is stopped with its last checkpoint kept and reported.

Command line::

    python -m cifutils.experiments vae-many --datasets mnist fashion-mnist \\
        --posteriors gaussian nsf cif-nsf --seeds 0 1 2 --budget paper --device cuda \\
        --time-limit 20
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from cifutils import cli
from cifutils.data import load_binarized
from cifutils.results import provenance, write_json
from cifutils.training import clipped_parameters, get_device

from .config import VAEConfig
from .model import ALL_POSTERIORS, ARCHITECTURES, POSTERIORS, VAE
from .training import end_epoch, load_run, save_run, train

__all__ = ["train_many", "train_together", "summary", "parse_log", "main"]


@dataclass
class _Run:
    """One run's model, optimizer, state and the device-side buffers its steps read."""

    cfg: VAEConfig
    path: Path
    vae: VAE
    opt: torch.optim.Optimizer
    gen: torch.Generator
    state: dict
    best: dict
    train_probs: Tensor  # (N, 1, 28, 28) grey levels, on the device
    val_probs: Tensor
    idx: Tensor  # (B,) the batch's image indices: the graphs' input
    train_sum: Tensor  # 0-d accumulators of the epoch's ELBO sums
    val_sum: Tensor
    stream: torch.cuda.Stream | None = None
    graphs: dict = field(default_factory=dict)
    order: Tensor | None = None

    @property
    def params(self) -> list[Tensor]:
        return clipped_parameters(self.opt, self.vae)

    def train_body(self) -> None:
        """One training step on the batch ``idx`` (what the train graph records)."""
        x = torch.bernoulli(self.train_probs.index_select(0, self.idx))
        elbo = self.vae.elbo(x)
        (-elbo.mean()).backward()
        if self.cfg.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip)
        self.opt.step()
        self.train_sum += elbo.detach().sum()

    @torch.no_grad()
    def val_body(self, idx: Tensor | None = None) -> None:
        """Add the ELBO of the validation batch ``idx`` to ``val_sum``."""
        x = torch.bernoulli(self.val_probs.index_select(0, self.idx if idx is None else idx))
        self.val_sum += self.vae.elbo(x).sum()


def _snapshot(run: _Run) -> tuple[list[Tensor], dict]:
    params = [p.detach().clone() for p in run.vae.parameters()]
    state = {
        id(p): {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
        for p, s in run.opt.state.items()
    }
    return params, state


def _restore(run: _Run, saved: tuple[list[Tensor], dict]) -> None:
    """Put parameters and optimizer state back, in place (the graphs hold their addresses);
    optimizer state created by the warm-up is reset to that of a fresh Adam (zeros)."""
    params, state = saved
    with torch.no_grad():
        for p, value in zip(run.vae.parameters(), params, strict=True):
            p.copy_(value)
        for p, s in run.opt.state.items():
            old = state.get(id(p), {})
            for k, v in s.items():
                if torch.is_tensor(v) and k in old:
                    v.copy_(old[k])
                elif torch.is_tensor(v):
                    v.zero_()
        run.train_sum.zero_()
        run.val_sum.zero_()


def _capture(run: _Run, batch: int, warmup: int = 2) -> None:
    """Record the run's train and validation steps as CUDA graphs on its own stream. The
    warm-up steps that must precede a capture are undone afterwards."""
    saved = _snapshot(run)
    run.stream = torch.cuda.Stream()
    run.stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(run.stream):
        run.idx.copy_(torch.arange(batch, device=run.idx.device))
        for _ in range(warmup):
            run.opt.zero_grad(set_to_none=True)
            run.train_body()
            run.val_body()
    torch.cuda.synchronize()
    run.opt.zero_grad(set_to_none=True)  # backward in the graph then writes fresh gradients
    for name, body in (("train", run.train_body), ("val", run.val_body)):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=run.stream):
            body()
        run.graphs[name] = graph
    torch.cuda.synchronize()
    _restore(run, saved)


def _step(run: _Run, kind: str, order: Tensor, start: int, batch: int) -> None:
    """Queue (graph) or run (eager) one train or validation step on ``order[start:+batch]``."""
    if run.graphs:
        with torch.cuda.stream(run.stream):
            run.idx.copy_(order[start : start + batch])
            run.graphs[kind].replay()
        return
    run.idx.copy_(order[start : start + batch])
    if kind == "train":
        run.opt.zero_grad(set_to_none=True)
        run.train_body()
    else:
        run.val_body()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_many(
    cfgs: list[VAEConfig],
    runs_dir: str | Path = "runs/vae",
    device: torch.device | str = "cpu",
    time_limit: float | None = None,
    epochs: int | None = None,
    graphs: bool | None = None,
    log=print,
) -> dict[str, dict]:
    """Train (or resume) the runs ``cfgs`` together until each is done (early stop or the
    epoch cap), ``epochs`` more epochs have run, or ``time_limit`` seconds would be exceeded
    by one more epoch (judged by the last epoch's time). ``graphs`` (default: on CUDA)
    records each run's steps as CUDA graphs. Returns ``{name: state}``; a run stopped by a
    non-finite ELBO has ``state["failed"]`` set (its checkpoint is the last good epoch)."""
    device = torch.device(device)
    graphs = device.type == "cuda" if graphs is None else graphs
    if graphs and device.type != "cuda":
        raise ValueError("CUDA graphs need a CUDA device")
    names = [c.name for c in cfgs]
    if len(set(names)) != len(names):
        raise ValueError(f"the runs must be distinct, got {names}")
    batch = cfgs[0].batch_size
    if any(c.batch_size != batch for c in cfgs):
        raise ValueError("all runs must share one batch size")
    start_time = time.perf_counter()
    data = {}
    runs: list[_Run] = []
    for cfg in cfgs:
        key = (cfg.dataset, cfg.train_limit)
        if key not in data:
            splits = load_binarized(cfg.dataset, limit=cfg.train_limit)
            data[key] = (splits.train.probs.to(device), splits.val.probs.to(device))
        path = Path(runs_dir) / cfg.name / "checkpoint.pt"
        vae, opt, gen, state, best = load_run(cfg, path, device, capturable=graphs)
        zero = torch.zeros((), device=device)
        run = _Run(cfg, path, vae, opt, gen, state, best, *data[key],
                   idx=torch.zeros(batch, dtype=torch.long, device=device),
                   train_sum=zero.clone(), val_sum=zero.clone())  # fmt: skip
        if state["epoch"]:
            log(f"resumed {cfg.name} after epoch {state['epoch']}")
        if graphs and not state["done"]:
            _capture(run, batch)
        runs.append(run)
    log(f"{len(runs)} runs ready on {device} in {time.perf_counter() - start_time:.1f} s")
    active = [r for r in runs if not r.state["done"]]
    done_now, last = 0, 0.0
    while active and (epochs is None or done_now < epochs):
        elapsed = time.perf_counter() - start_time
        if time_limit is not None and elapsed + last > time_limit:
            log(f"time limit: stopping after {elapsed:.0f} s")
            break
        t0 = time.perf_counter()
        n_train = min(r.train_probs.shape[0] for r in active) // batch * batch
        n_val = min(r.val_probs.shape[0] for r in active)
        val_order = torch.arange(n_val, device=device)
        for r in active:
            perm = torch.randperm(r.train_probs.shape[0], generator=r.gen)
            r.order = perm.to(device)
            if r.stream is not None:
                r.stream.wait_stream(torch.cuda.current_stream())
        for start in range(0, n_train, batch):
            for r in active:
                _step(r, "train", r.order, start, batch)
        full = n_val // batch * batch
        for start in range(0, full, batch):
            for r in active:
                _step(r, "val", val_order, start, batch)
        _sync(device)
        for r in active:
            if full < n_val:  # a last, smaller validation batch: eagerly
                r.val_body(val_order[full:])
        _sync(device)
        last = time.perf_counter() - t0
        done_now += 1
        for r in list(active):
            tr, val = r.train_sum.item() / n_train, r.val_sum.item() / n_val
            r.train_sum.zero_()
            r.val_sum.zero_()
            if not (math.isfinite(tr) and math.isfinite(val)):
                r.state["failed"] = f"non-finite ELBO in epoch {r.state['epoch'] + 1}"
                log(f"{r.cfg.name}: {r.state['failed']}; stopped at its last checkpoint")
                active.remove(r)
                continue
            if end_epoch(r.cfg, r.state, tr, val, last, device):
                r.best = {k: v.detach().clone() for k, v in r.vae.state_dict().items()}
            save_run(r.cfg, r.path, r.vae, r.opt, r.gen, r.state, r.best)
            if r.state["done"]:
                active.remove(r)
        summary = ", ".join(
            f"{r.cfg.name.rsplit('-', 1)[0]} {r.state['history']['val_elbo'][-1]:.1f}"
            for r in runs
            if r.state["history"]["val_elbo"]
        )
        log(f"epoch done in {last:.1f} s ({len(active)} active); val ELBO: {summary}")
    return {r.cfg.name: r.state for r in runs}


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
    :func:`train_many`, which on a GPU records each run's step as a CUDA
    graph and replays the runs on their own streams (eager PyTorch is launch-bound on these
    small models); otherwise the runs train one after the other with
    :func:`~cifutils.experiments.vae.training.train`, through ``torch.compile`` when
    ``compiled``. Both write the same checkpoints."""
    device = torch.device(device)
    side_by_side = device.type == "cuda" if side_by_side is None else side_by_side
    if side_by_side:
        train_many(cfgs, runs_dir, device, log=log)
    more = 0 if side_by_side else None  # side by side: only load the best weights
    return {
        cfg.name: train(cfg, Path(runs_dir) / cfg.name, more, splits, log, device, compiled)
        for cfg in cfgs
    }


def summary(states: dict[str, dict], device, command: str) -> dict:
    """A JSON-ready record of a ``train_many`` call: provenance and, per run, the epochs, the
    best validation ELBO and its epoch, whether it finished, and the per-epoch histories."""
    cfg = {"command": command}
    return {
        "provenance": provenance(cfg, device),
        "runs": {
            name: {
                "epochs": st["epoch"],
                "best_val_elbo": st["best_val"],
                "best_epoch": st["best_epoch"],
                "complete": st["done"],
                "failed": st.get("failed"),
                "devices": st["devices"],
                "val_elbo": st["history"]["val_elbo"],
                "train_elbo": st["history"]["train_elbo"],
                "epoch_s": st["history"]["epoch_s"],
            }
            for name, st in states.items()
        },
    }


def parse_log(text: str) -> dict[str, dict]:
    """Per-run validation ELBOs (one per epoch, as printed: one decimal) and the final
    summaries (best validation ELBO, two decimals) read back from the printed log of a
    ``vae-many`` command, for runs made before :func:`summary` files were written. Only valid
    while every run stayed active (the log prints a finished run's last value again):
    checked."""
    runs: dict[str, dict] = {}
    finals = re.findall(r"^(\S+): (\d+) epochs, best (\S+) \(epoch (\d+)\), (\w+)$", text, re.M)
    for name, epochs, best, best_epoch, flag in finals:
        runs[name] = {
            "epochs": int(epochs),
            "best_val_elbo": float(best),
            "best_epoch": int(best_epoch),
            "complete": flag == "done",
            "val_elbo": [],
        }
    for active, body in re.findall(r"\((\d+) active\); val ELBO: (.*)$", text, re.M):
        if int(active) != len(runs):
            raise ValueError("a run finished early: the log repeats its last value")
        for item in body.split(", "):
            short, value = item.rsplit(" ", 1)
            (name,) = [n for n in runs if n.rsplit("-", 1)[0] == short]
            runs[name]["val_elbo"].append(float(value))
    for name, run in runs.items():
        if len(run["val_elbo"]) != run["epochs"]:
            raise ValueError(f"{name}: {len(run['val_elbo'])} epochs logged, {run['epochs']} run")
    return runs


def main(argv: list[str] | None = None) -> int:
    p = cli.ArgumentParser(
        prog="python -m cifutils.experiments vae-many",
        description="Train several VAE runs of Table 1 together (CUDA graphs on a GPU).",
    )
    p.add_argument("--datasets", nargs="+", choices=["mnist", "fashion-mnist"], default=["mnist"])
    p.add_argument("--posteriors", nargs="+", choices=ALL_POSTERIORS, default=list(POSTERIORS))
    p.add_argument(
        "--arch",
        choices=ARCHITECTURES,
        default=None,
        help="small or table1 (default: table1 for the paper budget, small otherwise)",
    )
    p.add_argument("--seeds", nargs="+", type=cli.SEED, default=[0])
    p.add_argument(
        "--budget", type=cli.budget, default=None, help="smoke | book | paper ($CIFUTILS_BUDGET)"
    )
    p.add_argument(
        "--device",
        type=cli.device(allow_auto=True),
        default="auto",
        help="cuda, cpu or auto (default)",
    )
    p.add_argument("--time-limit", type=cli.POSITIVE, default=None, help="minutes of training")
    p.add_argument("--epochs", type=cli.count(0), default=None, help="stop after N more epochs")
    p.add_argument("--no-graphs", action="store_true", help="eager steps even on CUDA")
    p.add_argument("--runs-dir", default="runs/vae")
    p.add_argument("--threads", type=cli.count(1), default=1, help="torch CPU threads")
    p.add_argument("--summary", default=None, help="write a JSON summary of the runs here")
    p.add_argument(
        "--from-log",
        default=None,
        help="train nothing: read the printed log of an earlier call and write --summary "
        "(for runs made before summaries existed); --commit names that call's commit",
    )
    p.add_argument("--commit", default=None, help="with --from-log: the run's git commit")
    a = p.parse_args(argv)
    if a.from_log:
        text = Path(a.from_log).read_text()
        bench = Path(a.from_log).with_name("bench.log")
        dev = re.search(r"^device: (.*)$", bench.read_text(), re.M) if bench.exists() else None
        record = {
            "source_log": a.from_log,
            "git_commit": a.commit,
            "device": dev.group(1) if dev else None,
            "runs": parse_log(text),
        }
        write_json(a.summary, record)
        return 0
    torch.set_num_threads(a.threads)
    device = get_device(None if a.device == "auto" else a.device)
    cfgs = [
        VAEConfig.from_budget(a.budget, dataset=d, posterior=q, seed=s, arch=a.arch)
        for d in a.datasets
        for q in a.posteriors
        for s in a.seeds
    ]
    limit = None if a.time_limit is None else 60 * a.time_limit
    graphs = False if a.no_graphs else None
    states = train_many(cfgs, a.runs_dir, device, limit, a.epochs, graphs)
    if a.summary:
        command = "python -m cifutils.experiments vae-many " + " ".join(argv or sys.argv[1:])
        write_json(a.summary, summary(states, device, command))
    for name, st in states.items():
        flag = st.get("failed") or ("done" if st["done"] else "partial")
        best = f"best {st['best_val']:.2f} (epoch {st['best_epoch']})"
        print(f"{name}: {st['epoch']} epochs, {best}, {flag}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    os.sys.exit(main())
