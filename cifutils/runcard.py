"""Run cards: how long each chapter takes to execute, on what machine, and what it reads.

``make execute`` runs each notebook with ``$CIFUTILS_READ_LOG`` pointing to an empty file,
times it, and then calls ``python -m cifutils.runcard record``, which adds one entry to the
committed record ``results/execution.json``: per notebook, per budget and per device class
(``cpu`` or ``gpu``), the seconds, the machine, the commit, the date and what the notebook
read from disk. While the variable is set, the library's loaders
(:func:`cifutils.data.load_idx`, :func:`cifutils.results.load_result` and the VAE's weight
loader) append each file they open to it (:func:`cifutils.results.note_read`). The book's
build renders the card at the top of every chapter from the record
(``book/_ext/run_cards.py`` calls :func:`card_rst`): nothing on a card is typed by hand.

The record is rewritten atomically, one entry at a time, so an interrupted ``make execute``
keeps every entry recorded before it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any

from .results import READ_LOG_ENV, git_commit, write_json

__all__ = [
    "BUDGET_ORDER",
    "summarize_reads",
    "device_class",
    "device_description",
    "record_execution",
    "load_record",
    "card_rst",
    "format_seconds",
]

#: The budgets a card shows, in this order.
BUDGET_ORDER = ("smoke", "book", "paper")
ROOT = Path(__file__).resolve().parent.parent
DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def _relative(path: str) -> str:
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return Path(path).as_posix()


def summarize_reads(log: str | os.PathLike) -> dict[str, Any]:
    """What a read log says was read: the data sets (``"data"``), the number of committed
    result files per folder (``"results"``, e.g. ``{"results/mog/paper": 36}``) and the weight
    files (``"weights"``), each sorted."""
    data, results, weights = set(), {}, set()
    seen = set()
    text = Path(log).read_text() if Path(log).exists() else ""
    for line in text.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        kind, path = entry["kind"], _relative(entry["path"])
        if (kind, path) in seen:
            continue
        seen.add((kind, path))
        if kind == "data":
            data.add(Path(path).parent.name)
        elif kind == "results":
            folder = Path(path).parent.as_posix()
            results[folder] = results.get(folder, 0) + 1
        elif kind == "weights":
            weights.add(path)
        else:
            raise ValueError(f"{log}: unknown kind of read {kind!r}")
    return {
        "data": sorted(data),
        "results": dict(sorted(results.items())),
        "weights": sorted(weights),
    }


def device_class() -> str:
    """``"gpu"`` when the notebooks compute on CUDA (:func:`cifutils.training.get_device`,
    which honours ``$CIFUTILS_DEVICE``), else ``"cpu"``."""
    from .training import get_device

    return "gpu" if get_device().type == "cuda" else "cpu"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description() -> dict[str, Any]:
    """The machine: CPU model and core count, the GPU's name when there is one, versions."""
    import torch

    out = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device_class() == "gpu":
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def load_record(path: str | os.PathLike) -> dict[str, Any]:
    """The record at ``path`` (``{}`` when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return {}
    record = json.loads(path.read_text())
    if not isinstance(record, dict):
        raise ValueError(f"{path}: a run-card record is a JSON object, not {type(record)}")
    return record


def record_execution(
    record: str | os.PathLike,
    notebook: str | os.PathLike,
    budget: str,
    seconds: float,
    read_log: str | os.PathLike | None = None,
    commit: str | None = None,
    via: str = "make execute",
) -> dict[str, Any]:
    """Add (or replace) the entry of ``notebook`` x ``budget`` x this machine's device class
    in the record file ``record``, and return it. ``via`` names what executed the notebook
    (``make execute``, or ``.ci/colab-path``: the install a Colab reader gets).

    Raises:
        ValueError: an unknown budget or a negative time (before anything is written).
        FileNotFoundError: ``notebook`` does not exist.
    """
    if budget not in BUDGET_ORDER:
        raise ValueError(f"budget must be one of {BUDGET_ORDER}, got {budget!r}")
    if not seconds >= 0:
        raise ValueError(f"seconds must be a non-negative number, got {seconds!r}")
    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook {notebook} does not exist")
    entry = {
        "seconds": round(float(seconds), 1),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit or git_commit(),
        "machine": device_description(),
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "reads": summarize_reads(read_log or os.devnull),
        "via": via,
    }
    path = Path(record)
    data = load_record(path)
    data.setdefault(notebook.stem, {}).setdefault(budget, {})[device_class()] = entry
    write_json(path, data)
    return entry


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3.5 min`` or ``1.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _reads_text(entries: list[dict[str, Any]]) -> str:
    data, results, weights = set(), {}, set()
    for entry in entries:
        reads = entry.get("reads", {})
        data.update(reads.get("data", []))
        for folder, n in reads.get("results", {}).items():
            results[folder] = max(results.get(folder, 0), n)
        weights.update(reads.get("weights", []))
    parts = []
    if data:
        names = " and ".join(DATASET_NAMES.get(d, d) for d in sorted(data))
        parts.append(f"the {names} data (downloaded on first use, or ``$CIFUTILS_DATA``)")
    if results:
        files = ", ".join(
            f"{n} file{'s' if n > 1 else ''} in ``{folder}/``" for folder, n in results.items()
        )
        parts.append(f"committed results ({files})")
    if weights:
        parts.append(f"pretrained weights: {len(weights)} file(s) under ``results/``")
    return "; ".join(parts) if parts else "nothing: everything is computed in the notebook"


def card_rst(entries: dict[str, Any]) -> str:
    """The run card of one notebook (its part of the record) as reStructuredText: an
    admonition with the time per budget on each device class and what the notebook reads."""
    cpu = [entries[b]["cpu"] for b in BUDGET_ORDER if "cpu" in entries.get(b, {})]
    gpu = [entries[b]["gpu"] for b in BUDGET_ORDER if "gpu" in entries.get(b, {})]
    cores = {e["machine"].get("cores") for e in cpu}
    cpu_head = f"CPU ({cores.pop()} cores)" if len(cores) == 1 else "CPU"
    gpus = sorted({e["machine"].get("gpu", "GPU") for e in gpu})
    gpu_head = gpus[0] if len(gpus) == 1 else "GPU"
    lines = [
        ".. admonition:: Run card",
        "   :class: run-card",
        "",
        "   .. list-table::",
        "      :header-rows: 1",
        "",
        "      * - budget",
        f"        - {cpu_head}",
        f"        - {gpu_head}",
    ]
    for b in BUDGET_ORDER:
        row = [entries.get(b, {}).get(d) for d in ("cpu", "gpu")]
        cells = [format_seconds(e["seconds"]) if e else "not measured" for e in row]
        lines += [f"      * - ``{b}``", f"        - {cells[0]}", f"        - {cells[1]}"]
    speedups = [
        entries[b]["cpu"]["seconds"] / entries[b]["gpu"]["seconds"]
        for b in BUDGET_ORDER
        if {"cpu", "gpu"} <= set(entries.get(b, {})) and entries[b]["gpu"]["seconds"] > 0
    ]
    if speedups:
        best = max(speedups)
        gpu_text = (
            f"up to {best:.1f}x faster than this CPU" if best >= 1.2 else "no faster than a CPU"
        )
    else:
        gpu_text = "not measured; the times above need no GPU"
    models = ", ".join(sorted({e["machine"]["cpu"] for e in cpu}))
    how = []
    for where, done in ((f"CPU ({models})", cpu), (gpu_head, gpu)):
        vias = sorted({e.get("via", "make execute") for e in done})
        if vias:
            how.append(f"on the {where} by {' and '.join(f'``{v}``' for v in vias)}")
    colab = " (the install a Colab reader gets)" if any("colab" in h for h in how) else ""
    book = list(entries.get("book", {}).values())
    # RST cannot nest a literal in bold: the budget goes after the bold label
    reads_label = "**Reads** (at the ``book`` budget):" if book else "**Reads:**"
    lines += [
        "",
        f"   **GPU:** {gpu_text}. {reads_label} {_reads_text(book or cpu + gpu)}.",
        "",
        f"   Each time is one execution of the chapter at that budget (``CIFUTILS_BUDGET``):"
        f" {', '.join(how)}{colab}. Recorded in ``results/execution.json``.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m cifutils.runcard", description="Record a notebook's execution time."
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record", help="add one entry to the record")
    r.add_argument("notebook", help="the executed notebook (.ipynb)")
    r.add_argument("--budget", required=True, choices=BUDGET_ORDER)
    r.add_argument("--seconds", required=True, type=float)
    r.add_argument("--read-log", help=f"the file ${READ_LOG_ENV} pointed to during the run")
    r.add_argument("--record", default=str(ROOT / "results" / "execution.json"))
    r.add_argument(
        "--commit",
        help="the commit the notebooks ran at (default: this checkout's now; `make execute` "
        "passes the one from before it rewrote the first notebook)",
    )
    r.add_argument(
        "--via",
        default="make execute",
        help="what executed the notebook, shown on the card (default: make execute)",
    )
    a = p.parse_args(argv)
    try:
        entry = record_execution(
            a.record, a.notebook, a.budget, a.seconds, a.read_log, commit=a.commit, via=a.via
        )
    except (ValueError, FileNotFoundError) as err:
        p.error(str(err))
    print(f"recorded {Path(a.notebook).stem} {a.budget}: {format_seconds(entry['seconds'])}")


if __name__ == "__main__":
    main()
