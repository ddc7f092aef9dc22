"""Tests of the run cards: the read log, the record ``make execute`` keeps, and the card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from docutils.core import publish_doctree
from docutils.nodes import admonition, system_message, table

from cifutils import runcard
from cifutils.results import READ_LOG_ENV, load_result, note_read

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "01_variational_inference.ipynb"


def test_note_read_is_silent_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(READ_LOG_ENV, raising=False)
    note_read("data", tmp_path / "x")  # nothing to write to, nothing raised
    assert list(tmp_path.iterdir()) == []


def test_loaders_note_what_they_read(monkeypatch, tmp_path):
    log = tmp_path / "reads"
    monkeypatch.setenv(READ_LOG_ENV, str(log))
    monkeypatch.setenv("CIFUTILS_RESULTS", str(tmp_path / "results"))
    (tmp_path / "results" / "mog").mkdir(parents=True)
    (tmp_path / "results" / "mog" / "a.json").write_text('{"x": 1}')
    assert load_result("mog/a.json", fetch=False) == {"x": 1}
    assert load_result("mog/missing.json", fetch=False) is None  # not read, not noted
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines == [{"kind": "results", "path": str(tmp_path / "results" / "mog" / "a.json")}]


def test_load_result_fetches_by_default_only_outside_a_checkout(monkeypatch, tmp_path, served):
    """``fetch=None``: a checkout (a results folder) reads its own files only; without one
    (Colab) the repository's copy is read; ``fetch`` True or False overrides either way."""
    from cifutils import results

    root, url = served
    (root / "results" / "mog").mkdir(parents=True)
    (root / "results" / "mog" / "r.json").write_text('{"remote": true}')
    monkeypatch.setenv(results.RAW_ENV, url)
    checkout = tmp_path / "results"
    checkout.mkdir()
    monkeypatch.setenv("CIFUTILS_RESULTS", str(checkout))
    assert not results.outside_checkout()
    assert load_result("mog/r.json") is None
    assert load_result("mog/r.json", fetch=True) == {"remote": True}
    monkeypatch.setenv("CIFUTILS_RESULTS", str(tmp_path / "absent"))
    assert results.outside_checkout()
    assert load_result("mog/r.json") == {"remote": True}
    assert load_result("mog/r.json", fetch=False) is None
    assert load_result("mog/other.json") is None  # not served: None, no error


def test_summary_groups_and_dedupes(tmp_path):
    log = tmp_path / "reads"
    rows = [
        ("data", "/d/mnist/train-images-idx3-ubyte.gz"),
        ("data", "/d/mnist/t10k-images-idx3-ubyte.gz"),
        ("data", "/d/fashion-mnist/t10k-images-idx3-ubyte.gz"),
        ("results", str(ROOT / "results/mog/paper/a.json")),
        ("results", str(ROOT / "results/mog/paper/a.json")),  # read twice, counted once
        ("results", str(ROOT / "results/mog/paper/b.json")),
        ("results", str(ROOT / "results/vae/c.json")),
        ("weights", str(ROOT / "results/vae/weights/c.pt")),
    ]
    log.write_text("".join(json.dumps({"kind": k, "path": p}) + "\n" for k, p in rows))
    assert runcard.summarize_reads(log) == {
        "data": ["fashion-mnist", "mnist"],
        "results": {"results/mog/paper": 2, "results/vae": 1},
        "weights": ["results/vae/weights/c.pt"],
    }
    log.write_text(json.dumps({"kind": "video", "path": "x"}) + "\n")
    with pytest.raises(ValueError, match="video"):
        runcard.summarize_reads(log)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"budget": "huge"}, ValueError, "budget"),
        ({"seconds": -1.0}, ValueError, "seconds"),
        ({"seconds": float("nan")}, ValueError, "seconds"),
        ({"notebook": "notebooks/none.ipynb"}, FileNotFoundError, "none.ipynb"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, kwargs, error, match):
    args = {"notebook": NOTEBOOK, "budget": "smoke", "seconds": 3.0, **kwargs}
    with pytest.raises(error, match=match):
        runcard.record_execution(tmp_path / "rec.json", **args)
    assert not (tmp_path / "rec.json").exists()


def test_record_merges_entries(tmp_path):
    rec = tmp_path / "rec.json"
    runcard.record_execution(rec, NOTEBOOK, "smoke", 12.34, commit="abc")
    runcard.record_execution(rec, NOTEBOOK, "book", 100.0, commit="abc")
    runcard.record_execution(rec, NOTEBOOK, "smoke", 11.0, commit="def")  # replaces
    entries = runcard.load_record(rec)[NOTEBOOK.stem]
    assert set(entries) == {"smoke", "book"}
    device = runcard.device_class()
    assert entries["smoke"][device]["seconds"] == 11.0
    assert entries["smoke"][device]["commit"] == "def"
    assert entries["book"][device]["machine"]["cores"] >= 1
    assert entries["book"][device]["reads"] == {"data": [], "results": {}, "weights": []}
    assert entries["book"][device]["via"] == "make execute"
    runcard.record_execution(rec, NOTEBOOK, "book", 90.0, commit="abc", via=".ci/colab-path")
    assert runcard.load_record(rec)[NOTEBOOK.stem]["book"][device]["via"] == ".ci/colab-path"


def _entry(seconds, cores=2, gpu=None, reads=None):
    machine = {"cpu": "Test CPU", "cores": cores, **({"gpu": gpu} if gpu else {})}
    return {"seconds": seconds, "machine": machine, "reads": reads or {}}


def test_card_lists_every_budget_and_says_what_is_missing():
    reads = {"data": ["mnist"], "results": {"results/vae": 18}, "weights": ["w.pt"]}
    entries = {"smoke": {"cpu": _entry(41)}, "book": {"cpu": _entry(150, reads=reads)}}
    text = runcard.card_rst(entries)
    doc = publish_doctree(text, settings_overrides={"report_level": 5})
    assert not list(doc.findall(system_message))
    (card,) = doc.findall(admonition)
    assert "run-card" in card["classes"]
    assert len(list(doc.findall(table))) == 1
    body = card.astext()
    assert "CPU (2 cores)" in body and "41 s" in body and "2.5 min" in body
    assert body.count("not measured") == 5  # paper on the CPU, and all three on a GPU
    assert "MNIST" in body and "18 files in results/vae/" in body and "1 file(s)" in body
    assert "Test CPU" in body
    assert "Reads (at the book budget):" in " ".join(body.split())  # no stray backquotes
    assert "``" not in body


def test_card_reports_the_gpu_speedup():
    entries = {"book": {"cpu": _entry(300), "gpu": _entry(60, gpu="NVIDIA H200")}}
    body = publish_doctree(runcard.card_rst(entries)).astext()
    assert "NVIDIA H200" in body and "60 s" in body and "up to 5.0x faster" in body
    # each device class says what executed it (entries from before `via` was kept: make execute)
    assert "CPU (Test CPU) by make execute" in body and "the install a Colab reader" not in body
    entries["book"]["gpu"]["via"] = ".ci/colab-path"
    body = " ".join(publish_doctree(runcard.card_rst(entries)).astext().split())
    assert "NVIDIA H200 by .ci/colab-path (the install a Colab reader gets)" in body
    entries["book"]["gpu"]["seconds"] = 290
    assert "no faster than a CPU" in publish_doctree(runcard.card_rst(entries)).astext()


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0 s"), (89, "89 s"), (150, "2.5 min"), (7200, "2.0 h")]
)
def test_format_seconds(seconds, text):
    assert runcard.format_seconds(seconds) == text


def test_command_line_names_the_missing_notebook(tmp_path):
    rec = tmp_path / "rec.json"
    cmd = [sys.executable, "-m", "cifutils.runcard", "record", "nowhere.ipynb"]
    out = subprocess.run(
        [*cmd, "--budget", "smoke", "--seconds", "1", "--record", str(rec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode != 0 and "nowhere.ipynb" in out.stderr
    assert not rec.exists()


def test_committed_record_covers_every_chapter():
    """Every notebook has a CPU time at the smoke and book budgets, so every chapter's card
    has its numbers (the book build also warns about a missing card)."""
    record = runcard.load_record(ROOT / "results" / "execution.json")
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for budget in ("smoke", "book"):
            entry = record.get(nb.stem, {}).get(budget, {}).get("cpu")
            assert entry, f"results/execution.json has no cpu {budget} time for {nb.name}"
            assert entry["seconds"] > 0 and entry["commit"] and entry["machine"]["cpu"]
