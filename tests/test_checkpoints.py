"""Checkpoints detect damage: a sha256 beside each one, verified on load; a damaged,
truncated, empty or garbage file is refused with its name and how to proceed; the previous
checkpoint is kept; checkpoints written before checksums load with a warning."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from cifutils.experiments import main as experiments
from cifutils.experiments import vae as vx
from cifutils.training import (
    CheckpointError,
    UnverifiedCheckpointWarning,
    checksum_path,
    load_checkpoint,
    previous_path,
    save_checkpoint,
)


def _state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return {"model": torch.nn.Linear(16, 16).state_dict(), "step": seed}


def _flip_bit_in_a_tensor(path: Path) -> None:
    """Flip one bit in the middle of the first tensor's bytes (stored uncompressed in
    torch's zip format), leaving the archive itself valid."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if "/data/" in i.filename)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack(
        "<HH", raw[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def test_save_writes_a_sha256sum_file_and_keeps_the_previous(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, _state(0))
    digest, name = checksum_path(path).read_text().split()
    assert name == "c.pt" and digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not previous_path(path).exists()
    save_checkpoint(path, _state(1))
    assert load_checkpoint(path)["step"] == 1
    assert load_checkpoint(previous_path(path))["step"] == 0  # with its own checksum
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "c.pt",
        "c.pt.prev",
        "c.pt.prev.sha256",
        "c.pt.sha256",
    ]


def test_a_flipped_bit_in_a_weight_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, _state(0))
    save_checkpoint(path, _state(1))
    _flip_bit_in_a_tensor(path)
    # What happened before checksums: the damaged file loads, with a wrong weight.
    silently = torch.load(path, weights_only=False)["model"]["weight"]
    assert not torch.equal(silently, _state(1)["model"]["weight"])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert f"checkpoint {path} is damaged" in msg
    assert f"delete {path}" in msg and f"mv {previous_path(path)} {path}" in msg


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b"",  # empty
        lambda b: os.urandom(len(b)),  # garbage
    ],
    ids=["truncated", "empty", "garbage"],
)
@pytest.mark.parametrize("with_checksum", [True, False])
def test_damaged_files_name_the_file(tmp_path, damage, with_checksum):
    path = tmp_path / "c.pt"
    save_checkpoint(path, _state(0))
    path.write_bytes(damage(path.read_bytes()))
    if not with_checksum:  # a legacy checkpoint: no checksum, the load itself fails
        checksum_path(path).unlink()
    with pytest.raises(CheckpointError) as info, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_checkpoint(path)
    kind = "damaged" if with_checksum else "unreadable"
    assert f"checkpoint {path} is {kind}" in str(info.value)
    assert f"delete {path}" in str(info.value)
    assert any(w.category is UnverifiedCheckpointWarning for w in caught) != with_checksum


def test_garbage_checksum_file_is_named(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, _state(0))
    checksum_path(path).write_text("not a checksum\n")
    with pytest.raises(CheckpointError, match=f"checksum file {checksum_path(path)}"):
        load_checkpoint(path)


def test_legacy_checkpoint_loads_with_a_warning_then_gains_a_checksum(tmp_path):
    path = tmp_path / "c.pt"
    torch.save(_state(0), path)  # as written before checksums
    with pytest.warns(UnverifiedCheckpointWarning, match="no checksum"):
        assert load_checkpoint(path)["step"] == 0
    save_checkpoint(path, _state(1))
    assert load_checkpoint(path)["step"] == 1 and checksum_path(path).exists()
    assert not checksum_path(previous_path(path)).exists()  # the legacy one kept as is
    with pytest.warns(UnverifiedCheckpointWarning):
        assert load_checkpoint(previous_path(path))["step"] == 0


def _mog(tmp_path: Path, runs: str, results: str, *extra: str) -> list[str]:
    return [
        "mog",
        "--model",
        "nsf",
        "--budget",
        "smoke",
        "--steps",
        "4",
        "--checkpoint-every",
        "1",
        "--runs",
        str(tmp_path / runs),
        "--results",
        str(tmp_path / results),
        *extra,
    ]


def test_mog_refuses_a_damaged_checkpoint_and_resumes_from_the_previous(tmp_path, capsys):
    rel = "mog/smoke/nsf_sigma1_seed0.json"
    assert experiments(_mog(tmp_path, "r1", "a")) == 0  # the uninterrupted reference
    assert experiments(_mog(tmp_path, "r2", "b", "--stop-after", "2")) == 0
    ckpt = tmp_path / "r2" / "mog" / "smoke" / "nsf_sigma1_seed0.pt"
    _flip_bit_in_a_tensor(ckpt)
    capsys.readouterr()
    assert experiments(_mog(tmp_path, "r2", "b")) == 1
    err = capsys.readouterr().err
    assert f"mog: error: checkpoint {ckpt} is damaged" in err and "mv " in err
    assert not (tmp_path / "b" / rel).exists()
    # Following the message: restore the previous checkpoint (step 1), then resume.
    os.replace(previous_path(ckpt), ckpt)
    os.replace(checksum_path(previous_path(ckpt)), checksum_path(ckpt))
    assert experiments(_mog(tmp_path, "r2", "b")) == 0
    a, b = (json.loads((tmp_path / x / rel).read_text()) for x in "ab")
    assert b["resumed_at_step"] == 1
    assert a["metrics"] == b["metrics"] and a["curve"] == b["curve"]


def test_vae_run_refuses_damaged_weights(tmp_path):
    """The path by which the chapters load trained VAEs (train -> load_run)."""
    cfg = vx.VAEConfig(posterior="gaussian", max_epochs=1)
    path = tmp_path / cfg.name / "checkpoint.pt"
    cpu = torch.device("cpu")
    vx.save_run(cfg, path, *vx.load_run(cfg, path, cpu))
    vx.load_run(cfg, path, cpu)  # verified: loads
    _flip_bit_in_a_tensor(path)
    with pytest.raises(CheckpointError, match="is damaged"):
        vx.load_run(cfg, path, cpu)
    checksum_path(path).unlink()  # without a checksum, the damage would go unseen
    with pytest.warns(UnverifiedCheckpointWarning):
        vx.load_run(cfg, path, cpu)


def test_restore_instructions_fit_a_previous_checkpoint_without_checksum(tmp_path):
    path = tmp_path / "c.pt"
    torch.save(_state(0), path)  # legacy
    save_checkpoint(path, _state(1))  # the legacy one becomes .prev, without a checksum
    _flip_bit_in_a_tensor(path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert f"mv {previous_path(path)} {path} && rm {checksum_path(path)}" in msg
    assert ".prev.sha256" not in msg
