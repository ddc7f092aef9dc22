"""Training utilities: seeding, device choice, a guarded fit loop, checkpoints.

:func:`fit` runs Adam with gradient-norm clipping on any ``loss_fn(step)``. It refuses to
continue from a non-finite loss or gradient: it raises :class:`NonFiniteError` naming the
step *before* the optimizer touches the weights, so a model never carries NaN parameters.
:func:`fit_vi` is the reverse-KL special case used throughout the book. :class:`FlatAdam`
is Adam over a module whose parameters live in one flat tensor (the VAE experiment's
optimizer on the CPU). :func:`save_checkpoint` writes a sha256 beside each checkpoint and
keeps the one it replaces; :func:`load_checkpoint` refuses a file that does not match.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .objectives import elbo, log_weights, mean_and_stderr

__all__ = [
    "NonFiniteError",
    "History",
    "seed_everything",
    "get_device",
    "progress_enabled",
    "fit",
    "fit_vi",
    "estimate_elbo",
    "CheckpointError",
    "UnverifiedCheckpointWarning",
    "checksum_path",
    "previous_path",
    "save_checkpoint",
    "remove_checkpoint",
    "load_checkpoint",
    "FlatAdam",
    "clipped_parameters",
]

#: Environment variables read here.
DEVICE_ENV = "CIFUTILS_DEVICE"
PROGRESS_ENV = "CIFUTILS_PROGRESS"


class NonFiniteError(ValueError):
    """A loss or gradient became NaN or infinite; the message names the step."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted (damaged, truncated, unreadable); the message
    names the file and says how to proceed."""


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint was loaded without a checksum to verify it against."""


@dataclass
class History:
    """The record of a :func:`fit` run.

    Attributes:
        steps: step indices at which ``loss`` was recorded.
        loss: the loss at those steps.
        metrics: other scalars returned by ``loss_fn``, by name, aligned with ``steps``.
        seconds: wall-clock time spent inside :func:`fit` (summed over resumed calls).
    """

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "loss": self.loss,
            "metrics": self.metrics,
            "seconds": self.seconds,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> History:
        return cls(
            list(state["steps"]), list(state["loss"]), dict(state["metrics"]), state["seconds"]
        )


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices); ``seed`` in
    ``[0, 2**32)``, NumPy's range (larger seeds were silently reduced modulo ``2**32``)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """The device to compute on: ``prefer``, else ``$CIFUTILS_DEVICE``, else CUDA when
    available, else CPU."""
    choice = prefer or os.environ.get(DEVICE_ENV)
    if choice:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {choice!r} was requested but CUDA is not available")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def progress_enabled() -> bool:
    """Whether progress bars are shown: ``$CIFUTILS_PROGRESS`` (default on); ``make execute``
    turns them off so that the rendered book carries no progress-bar text."""
    return os.environ.get(PROGRESS_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def _is_positive(value: Any, finite: bool = False) -> bool:
    """Whether ``value`` (a number, NumPy or 0-d torch scalar) is ``> 0``: NaN is not."""
    try:
        x = float(value)
    except (TypeError, ValueError, RuntimeError):
        return False
    return x > 0 and (math.isfinite(x) or not finite)


def fit(
    module: nn.Module,
    loss_fn: Callable[[int], Tensor | tuple[Tensor, dict[str, float]]],
    steps: int,
    lr: float = 1e-3,
    clip: float | None = 5.0,
    optimizer: torch.optim.Optimizer | None = None,
    start_step: int = 0,
    history: History | None = None,
    record_every: int = 1,
    progress: bool | None = None,
    desc: str | None = None,
    callback: Callable[[int, History], None] | None = None,
) -> History:
    """Minimize ``loss_fn`` over ``module``'s parameters with Adam and gradient clipping.

    Each step ``i`` in ``[start_step, steps)``: ``loss = loss_fn(i)`` (a scalar, or a scalar
    and a dict of metrics), backpropagate, clip the global gradient norm to ``clip``, step.

    Args:
        module: owner of the parameters (used to build Adam if ``optimizer`` is None).
        loss_fn: ``step -> loss`` or ``step -> (loss, metrics)``.
        steps: the step index to stop at (total steps, including earlier resumed ones).
        lr: Adam learning rate.
        clip: maximum gradient norm, or None for no clipping.
        optimizer: an existing optimizer (e.g. restored from a checkpoint).
        start_step: first step index, for resuming.
        history: a :class:`History` to extend, for resuming.
        record_every: record the loss every this many steps.
        progress: show a tqdm bar; default :func:`progress_enabled`.
        desc: label of the progress bar.
        callback: called as ``callback(step, history)`` after every step (e.g. to checkpoint).

    Returns:
        The :class:`History`.

    Raises:
        NonFiniteError: the loss or the gradient norm is not finite at some step; the
            parameters are left as they were before that step.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not _is_positive(lr, finite=True):
        raise ValueError(f"lr must be a finite positive number, got {lr!r}")
    if clip is not None and not _is_positive(clip):
        raise ValueError(f"clip must be a positive number (inf: no limit) or None, got {clip!r}")
    params = [p for p in module.parameters() if p.requires_grad]
    if optimizer is None:
        optimizer = torch.optim.Adam(params, lr=lr)
    history = history if history is not None else History()
    show = progress_enabled() if progress is None else progress
    # tqdm.auto warns (with a machine path) in kernels without ipywidgets even when the bar
    # is disabled; the plain bar is imported when nothing is shown.
    if show:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    bar = tqdm(range(start_step, steps), desc=desc, disable=not show, leave=False, mininterval=0.5)
    t0 = time.perf_counter()
    try:
        for step in bar:
            try:
                out = loss_fn(step)
            except ValueError as err:
                err.add_note(f"raised by loss_fn at step {step}")
                raise
            loss, metrics = out if isinstance(out, tuple) else (out, {})
            if not torch.isfinite(loss):
                raise NonFiniteError(f"step {step}: the loss is {loss.item()}; training stopped")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(params, clip)
            else:
                grads = [p.grad.pow(2).sum() for p in params if p.grad is not None]
                norm = torch.stack(grads).sum().sqrt() if grads else torch.zeros(())
            if not torch.isfinite(norm):
                raise NonFiniteError(
                    f"step {step}: the gradient norm is {norm.item()}; training stopped "
                    "before the update, so the parameters are unchanged"
                )
            optimizer.step()
            if step % record_every == 0 or step == steps - 1:
                history.steps.append(step)
                history.loss.append(loss.item())
                for key, value in metrics.items():
                    history.metrics.setdefault(key, []).append(float(value))
                if show:
                    bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if callback is not None:
                callback(step, history)
    finally:
        bar.close()
        history.seconds += time.perf_counter() - t0
    return history


def fit_vi(
    family: nn.Module,
    log_p: Callable[[Tensor], Tensor],
    steps: int,
    num_samples: int = 256,
    lr: float = 1e-3,
    clip: float | None = 5.0,
    **kwargs: Any,
) -> History:
    """Fit a variational family to an unnormalized ``log_p`` by maximizing the (auxiliary)
    ELBO ``E_q[log p(z) - log q(z)]`` with ``num_samples`` reparameterized samples per step.

    ``kwargs`` go to :func:`fit`. The history records the loss ``-ELBO``.
    """

    def loss_fn(step: int) -> Tensor:
        z, log_q = family.sample_and_log_prob(num_samples)
        return -elbo(log_p(z), log_q)

    return fit(family, loss_fn, steps, lr=lr, clip=clip, **kwargs)


@torch.no_grad()
def estimate_elbo(
    family: nn.Module,
    log_p: Callable[[Tensor], Tensor],
    num_samples: int = 10_000,
    chunk_size: int = 10_000,
) -> tuple[float, float]:
    """The (auxiliary) ELBO of ``family`` for ``log_p`` by Monte Carlo, with its standard
    error: ``(mean, stderr)`` of ``log p(z) - log q(z)`` over ``num_samples`` draws."""
    for name, value in (("num_samples", num_samples), ("chunk_size", chunk_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    parts = []
    left = num_samples
    while left > 0:
        k = min(chunk_size, left)
        z, log_q = family.sample_and_log_prob(k)
        parts.append(log_weights(log_p(z), log_q))
        left -= k
    return mean_and_stderr(torch.cat(parts))


def checksum_path(path: str | os.PathLike) -> Path:
    """The checksum file of a checkpoint: ``<path>.sha256``, in ``sha256sum`` format (so
    ``sha256sum -c checkpoint.pt.sha256`` checks it from its folder)."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def previous_path(path: str | os.PathLike) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint it replaced: ``<path>.prev`` (with
    its own ``<path>.prev.sha256``)."""
    path = Path(path)
    return path.with_name(path.name + ".prev")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_new(path: Path, data: bytes) -> Path:
    """``data`` in a new temporary file beside ``path``, flushed to disk; returns its path."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _keep_previous(path: Path) -> None:
    """Keep ``path`` and its checksum as ``<path>.prev`` before it is replaced: a hard link
    (a copy where links are not supported), so ``path`` itself never goes missing."""
    prev, side = previous_path(path), checksum_path(path)
    for src, dst in ((path, prev), (side, checksum_path(prev))):
        if not src.exists():
            dst.unlink(missing_ok=True)  # a legacy checkpoint: no checksum to pair with it
            continue
        tmp = dst.with_name(dst.name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` with :func:`torch.save` atomically and with a checksum.

    The bytes go to a temporary file in the same folder, are read back and compared with
    their sha256, and only then renamed over ``path``; the checkpoint it replaces is kept as
    ``<path>.prev``; last, ``<path>.sha256`` (:func:`checksum_path`) is written atomically.
    :func:`load_checkpoint` verifies the checksum, so a damaged file is refused instead of
    resumed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    digest = _sha256(data)
    tmp = _write_new(path, data)
    try:
        if _sha256(tmp.read_bytes()) != digest:
            raise CheckpointError(f"{path}: the checkpoint read back differs from what was written")
        if path.exists():
            _keep_previous(path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    side_tmp = _write_new(checksum_path(path), f"{digest}  {path.name}\n".encode())
    os.replace(side_tmp, checksum_path(path))


def remove_checkpoint(path: str | os.PathLike) -> None:
    """Delete a checkpoint with its checksum and its kept previous version (to restart)."""
    path = Path(path)
    for p in (path, checksum_path(path), previous_path(path), checksum_path(previous_path(path))):
        p.unlink(missing_ok=True)


def _how_to_proceed(path: Path) -> str:
    prev, side = previous_path(path), checksum_path(path)
    delete = f"{path} and {side}" if side.exists() else f"{path}"
    text = f"To restart the run from the beginning, delete {delete}"
    if prev.exists():
        restore = f"mv {prev} {path}"
        if checksum_path(prev).exists():
            restore += f" && mv {checksum_path(prev)} {side}"
        elif side.exists():
            restore += f" && rm {side}"  # the kept one predates checksums
        text += (
            f"; or restore the previous checkpoint (one save earlier; checked on load): {restore}"
        )
    return text + "."


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, after checking its sha256.

    A checkpoint without a checksum file (written before checksums were kept) is loaded
    with an :class:`UnverifiedCheckpointWarning`; its next save writes one.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file does not match its checksum, or cannot be read or
            unpickled; the message names the file and says how to proceed.
    """
    path = Path(path)
    side = checksum_path(path)
    data = path.read_bytes()
    if side.exists():
        recorded = side.read_text(errors="replace").split()
        expected = recorded[0].lower() if recorded else ""
        if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
            raise CheckpointError(
                f"checksum file {side} of checkpoint {path} is unreadable (no sha256 in it). "
                + _how_to_proceed(path)
            )
        actual = _sha256(data)
        if actual != expected:
            raise CheckpointError(
                f"checkpoint {path} is damaged: its sha256 is {actual[:16]}... but {side.name} "
                f"records {expected[:16]}... ({len(data):,} bytes on disk). "
                + _how_to_proceed(path)
            )
    else:
        warnings.warn(
            f"checkpoint {path} has no checksum file {side.name} (written before checksums "
            "were kept): loaded unverified; its next save writes one",
            UnverifiedCheckpointWarning,
            stacklevel=2,
        )
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({len(data):,} bytes; {type(err).__name__}: "
            f"{str(err)[:200]}). " + _how_to_proceed(path)
        ) from err


class FlatAdam:
    """Adam (fused kernel) over all parameters of ``module``, stored as views of one flat
    tensor, with their gradients as views of one flat gradient.

    The updates are those of ``torch.optim.Adam(module.parameters(), fused=True)`` (Adam is
    elementwise); the difference is speed: zeroing, clipping and the step are one operation
    each, not one per parameter tensor, which matters for small models with many small
    tensors (the Table-1 flows have 128 to 308). The module's parameters are re-pointed in
    place (same objects, same names, same values), so move the module to its device *before*
    building this, and do not set their ``.grad`` to ``None``: :meth:`zero_grad` zeroes in
    place, and backward accumulates into the views.

    :meth:`state_dict` and :meth:`load_state_dict` use ``torch.optim.Adam``'s per-parameter
    format, so checkpoints are interchangeable with a plain Adam's.

    Attributes:
        flat: the flat parameter (``flat.grad`` holds all gradients), e.g. for
            ``torch.nn.utils.clip_grad_norm_([opt.flat], max_norm)``.
    """

    def __init__(self, module: nn.Module, lr: float = 1e-3) -> None:
        self.params = [p for p in module.parameters() if p.requires_grad]
        with torch.no_grad():
            flat = torch.cat([p.reshape(-1) for p in self.params])
        self.flat = nn.Parameter(flat)
        self.flat.grad = torch.zeros_like(flat)
        self._slices = []
        offset = 0
        for p in self.params:
            n = p.numel()
            self._slices.append((offset, n))
            p.data = self.flat.data[offset : offset + n].view_as(p)
            p.grad = self.flat.grad[offset : offset + n].view_as(p)
            offset += n
        self.optimizer = torch.optim.Adam([self.flat], lr=lr, fused=True)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero all gradients in place (``set_to_none`` is accepted and ignored)."""
        self.flat.grad.zero_()

    def step(self) -> None:
        self.optimizer.step()

    def state_dict(self) -> dict:
        """``torch.optim.Adam``'s state dict for the per-tensor parameters."""
        flat_sd = self.optimizer.state_dict()
        group = {**flat_sd["param_groups"][0], "params": list(range(len(self.params)))}
        state = {}
        flat_state = flat_sd["state"].get(0)
        if flat_state:
            for i, (p, (offset, n)) in enumerate(zip(self.params, self._slices)):
                state[i] = {
                    key: value.clone()
                    if key == "step"
                    else value[offset : offset + n].view_as(p).clone()
                    for key, value in flat_state.items()
                }
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state dict in ``torch.optim.Adam``'s per-parameter format (the parameters
        in ``module.parameters()`` order, e.g. from :meth:`state_dict` or a plain Adam)."""
        group = dict(state_dict["param_groups"][0])
        ids = group["params"]
        if len(state_dict["param_groups"]) != 1 or len(ids) != len(self.params):
            raise ValueError("the optimizer state does not match this module's parameters")
        group["params"] = [0]
        flat_state = {}
        per_param = [state_dict["state"].get(i) for i in ids]
        if any(per_param):
            if not all(per_param):
                raise ValueError("the optimizer state covers only some parameters")
            steps = {float(s["step"]) for s in per_param}
            if len(steps) != 1:
                raise ValueError("the parameters' Adam steps differ; cannot flatten them")
            flat_state[0] = {"step": per_param[0]["step"].clone()}
            for key in ("exp_avg", "exp_avg_sq"):
                flat_state[0][key] = torch.cat([s[key].reshape(-1) for s in per_param])
        self.optimizer.load_state_dict({"state": flat_state, "param_groups": [group]})


def clipped_parameters(optimizer, module: nn.Module) -> list[Tensor]:
    """The tensors whose gradient norm is clipped before ``optimizer`` steps: a
    :class:`FlatAdam`'s one flat parameter, otherwise every trainable parameter of
    ``module``."""
    flat = getattr(optimizer, "flat", None)
    return [flat] if flat is not None else [p for p in module.parameters() if p.requires_grad]
