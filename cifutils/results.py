"""Saved results: provenance, atomic JSON files, and loading them back.

Every number the book shows comes from a JSON file under ``results/`` written by the
experiment command line, with the provenance needed to reproduce it: git commit, budget,
full configuration, seed, device, versions, wall time and date.

A notebook opened on Colab has no ``results/`` folder: :func:`load_result` then fetches the
committed file from the repository at this version's release tag (:data:`REPOSITORY_RAW`), so
the results match the code that the notebook's install cell pinned; :func:`fetch_committed`
downloads a committed binary file (pretrained weights) once into a cache folder.
``$CIFUTILS_REPOSITORY_RAW`` points both at another copy of the repository (a fork, a
mirror, a local server).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import torch

from . import __version__

__all__ = [
    "REPOSITORY",
    "REPOSITORY_REF",
    "REPOSITORY_RAW",
    "RAW_ENV",
    "repository_raw",
    "download",
    "fetch_committed",
    "results_dir",
    "outside_checkout",
    "git_commit",
    "provenance",
    "write_json",
    "load_result",
    "note_read",
    "READ_LOG_ENV",
    "glue",
]

#: The project's repository. Mirrors ``repository.url`` in ``_config.yml`` (a test checks).
REPOSITORY = "https://github.com/cif-vi-book/cif-vi-book"
#: The release tag of this version of cifutils (the ``install_ref`` of ``_config.yml``).
REPOSITORY_REF = f"v{__version__}"
#: Where committed files are served raw at :data:`REPOSITORY_REF`, for notebooks running
#: outside a checkout.
REPOSITORY_RAW = f"https://raw.githubusercontent.com/cif-vi-book/cif-vi-book/{REPOSITORY_REF}"
#: The environment variable that replaces :data:`REPOSITORY_RAW` (the folder above
#: ``results/``, served over HTTP).
RAW_ENV = "CIFUTILS_REPOSITORY_RAW"


def repository_raw() -> str:
    """``$CIFUTILS_REPOSITORY_RAW`` (without a trailing slash) when set, else
    :data:`REPOSITORY_RAW`."""
    return os.environ.get(RAW_ENV, "").rstrip("/") or REPOSITORY_RAW


def results_dir() -> Path:
    """``$CIFUTILS_RESULTS`` or the ``results/`` folder of this checkout."""
    env = os.environ.get("CIFUTILS_RESULTS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "results"


def git_commit() -> str:
    """The commit of this checkout (with ``-dirty`` when it has uncommitted changes), or
    ``"unknown"`` outside a git checkout. ``$CIFUTILS_GIT_COMMIT``, when set, is returned
    instead: for a copy of the checkout without its ``.git`` (as on a rented GPU machine)."""
    if os.environ.get("CIFUTILS_GIT_COMMIT"):
        return os.environ["CIFUTILS_GIT_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def provenance(config: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """A provenance record: ``config`` plus commit, device, versions, host and date.
    ``cpu_capability`` is the vector instruction set of torch's CPU kernels (``"AVX2"``,
    ``"AVX512"``, ...): floating-point rounding, and so a long training run with the same
    seed, differs between them."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "config": dict(config),
        "git_commit": git_commit(),
        "device": str(device),
        "device_name": name or platform.machine(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "num_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: The environment variable naming a file to which the loaders append each file they read
#: (:func:`note_read`; ``make execute`` sets it to build the chapters' run cards).
READ_LOG_ENV = "CIFUTILS_READ_LOG"


def note_read(kind: str, path: str | os.PathLike) -> None:
    """Append ``{"kind": kind, "path": path}`` as one JSON line to the file named by
    ``$CIFUTILS_READ_LOG`` (nothing when it is unset). ``kind`` is ``"data"``, ``"results"``
    or ``"weights"``; :mod:`cifutils.runcard` summarizes the log."""
    log = os.environ.get(READ_LOG_ENV)
    if not log:
        return
    with open(log, "a") as fh:
        fh.write(json.dumps({"kind": kind, "path": str(path)}) + "\n")


def outside_checkout() -> bool:
    """True when there is no :func:`results_dir` (a notebook on Colab, an installed
    package): the loaders then fetch the committed files from the repository."""
    return not results_dir().is_dir()


def load_result(relative: str, fetch: bool | None = None) -> Any | None:
    """Load ``results/<relative>`` (a JSON file) from this checkout; when it is absent and
    ``fetch`` is True, try the committed copy in the repository. ``fetch=None`` (the
    default) fetches only :func:`outside_checkout`. Returns None when neither exists (the
    notebooks then say so instead of showing numbers)."""
    local = results_dir() / relative
    if local.exists():
        note_read("results", local)
        return json.loads(local.read_text())
    if not (outside_checkout() if fetch is None else fetch):
        return None
    try:
        with urllib.request.urlopen(f"{repository_raw()}/results/{relative}", timeout=10) as resp:
            record = json.loads(resp.read().decode())
    except (OSError, ValueError):
        return None
    note_read("results", f"results/{relative}")  # as the repository names it
    return record


def download(url: str, dest: str | os.PathLike, check=None, timeout: float = 60.0) -> None:
    """Fetch ``url`` into ``dest`` through a temporary file in ``dest``'s folder, moved into
    place only when complete and accepted by ``check(temporary path)`` (which raises to
    reject it), so a failed or rejected download leaves nothing behind. Raises what
    ``urlopen`` or ``check`` raise (``OSError`` covers network errors and timeouts)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
        if check is not None:
            check(Path(tmp))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fetch_committed(relative: str) -> Path | None:
    """``results/<relative>`` as committed in the repository (:func:`repository_raw`),
    downloaded once (:func:`download`) into ``$CIFUTILS_CACHE`` (default
    ``~/.cache/cifutils``), under a folder named after the repository's address, and
    returned from there afterwards. None when it cannot be fetched. The caller checks the
    content (the weights loader checks its SHA-256)."""
    base = repository_raw()
    cache = Path(os.environ.get("CIFUTILS_CACHE") or Path.home() / ".cache" / "cifutils")
    tag = hashlib.sha256(base.encode()).hexdigest()[:12]
    path = cache / f"results-{tag}" / relative
    if not path.exists():
        try:
            download(f"{base}/results/{relative}", path)
        except OSError:
            return None
    return path


#: The MIME-type prefix under which a glued value is stored without being shown (the format
#: of myst-nb's ``glue``, which the rendered book reads).
GLUE_HIDDEN = "application/papermill.record/"


def glue(name: str, value: Any) -> None:
    """Store ``value`` in the running notebook's outputs under ``name``, unseen, for the
    book's prose to quote with myst-nb's ``{glue:text}`` role (for example
    ``{glue:text}`gain_min:.1f```). The output has myst-nb's layout, so the book renders it
    without myst-nb installed where the notebook runs (Colab, a laptop). NumPy and torch
    scalars are stored as the Python number they hold."""
    from IPython.core.formatters import format_display_data
    from IPython.display import display

    if hasattr(value, "item"):  # a NumPy or torch scalar: quote its value, not its repr
        value = value.item()
    bundle, metadata = format_display_data(value)
    metadata["scrapbook"] = {"name": name, "mime_prefix": GLUE_HIDDEN}
    display({GLUE_HIDDEN + k: v for k, v in bundle.items()}, raw=True, metadata=metadata)
