"""Tests of the Table-1 architecture: the residual decoder, the LU-linear flow stacks, their
parameter counts against REFERENCE.md, the fast path, configuration and run names, resuming,
saved weights, and the sweep command."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cifutils.cif import CIFLayer
from cifutils.data import BinarizedImages, BinarizedSplits, DataNotFoundError, load_binarized
from cifutils.experiments import vae as vx
from cifutils.experiments.vae import cli as vae_cli
from cifutils.experiments.vae import (
    iw_log_likelihood,
    make_vae,
    parameter_counts,
)
from cifutils.experiments.vae.fast_layers import FastImageRNet, accelerate
from cifutils.experiments.vae.networks import ImageRNet, ResDecoder
from cifutils.experiments.vae.sweep import sweep_commands
from cifutils.experiments.vae.weights import WeightsMismatchError, load_weights
from cifutils.fast import FastRQAutoregressive
from cifutils.flows import LULinear
from cifutils.training import checksum_path

ROOT = Path(__file__).resolve().parents[1]
QUIET = lambda *_: None  # noqa: E731


def _images(n: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=g) < 0.3).to(dtype)


def _fake_splits(n: int = 100, seed: int = 0) -> BinarizedSplits:
    rng = np.random.default_rng(seed)

    def make(m: int) -> BinarizedImages:
        return BinarizedImages(rng.integers(0, 256, size=(m, 28, 28), dtype=np.uint8))

    return BinarizedSplits(train=make(n), val=make(n // 2), test=make(n // 2))


def test_res_decoder_shapes_and_size():
    dec = ResDecoder(32)
    h = dec.linear(torch.randn(5, 32)).view(-1, 128, 4, 4)
    sizes = []
    for block in dec.blocks:
        h = block(h)
        sizes.append(tuple(h.shape[1:]))
    assert sizes == [
        (128, 4, 4),
        (64, 7, 7),
        (64, 7, 7),
        (32, 14, 14),
        (32, 14, 14),
        (16, 28, 28),
    ]
    assert dec(torch.randn(5, 32)).shape == (5, 1, 28, 28)
    assert sum(p.numel() for p in dec.parameters()) == 842_641
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in dec.modules())


#: REFERENCE.md, Experiment 2, "Parameter counts by formula".
REFERENCE_TOTALS = {
    "gaussian": 943_193,
    "nsf": 1_379_729,
    "nsf-32": 1_250_489,
    "cif-nsf": 1_345_339,
}
REFERENCE_FLOWS = {"gaussian": 0, "nsf": 436_536, "nsf-32": 307_296, "cif-nsf": 402_146}


@pytest.mark.parametrize("kind", sorted(REFERENCE_TOTALS))
def test_table1_parameter_counts_match_the_reference(kind):
    """Exact: the formulas of REFERENCE.md count what these modules hold (MADE's full
    masked matrices, as nflows stores them; d^2 + d per LU-linear layer), so there is no
    tolerance to allow for."""
    parts = parameter_counts(make_vae(kind, arch="table1"))
    assert parts["encoder"] == 100_552 and parts["decoder"] == 842_641
    extras = parts["cif_st"] + parts["cif_q"] + parts["cif_r"]
    assert parts["flow"] + extras == REFERENCE_FLOWS[kind]
    assert parts["total"] == REFERENCE_TOTALS[kind]
    if kind == "cif-nsf":  # per layer: s/t 844, q 484, r 8,157 (9,485)
        assert (parts["cif_st"], parts["cif_q"], parts["cif_r"]) == (8_440, 4_840, 81_570)


def test_small_model_is_still_the_default_and_unchanged():
    """The CPU edition stays what it was: same seed, same weights as a model built by name."""
    for kind in ("gaussian", "nsf", "cif-nsf"):
        torch.manual_seed(4)
        a = make_vae(kind)
        torch.manual_seed(4)
        b = make_vae(kind, arch="small")
        assert a.latent == 20 and type(a.decoder).__name__ == "FastDecoder"
        for x, y in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(x, y)
        assert not any(isinstance(m, LULinear) for m in a.modules())


def test_table1_flow_layout():
    torch.manual_seed(0)
    post = make_vae("cif-nsf", arch="table1").posterior
    kinds = [type(m).__name__ for m in post.layers]
    assert kinds[:2] == ["RandomPermutation", "LULinear"]
    assert kinds[2:] == ["CIFLayer", "LULinear", "RandomPermutation"] * 10
    cif = [m for m in post.layers if isinstance(m, CIFLayer)]
    assert all(m.transform.order == "affine-first" and m.dim_u == 2 for m in cif)
    assert all(type(m.transform.flow) is FastRQAutoregressive for m in cif)
    assert all(type(m.r_u.net) is FastImageRNet and m.r_u.net.embed.in_features == 32 for m in cif)
    perms = [m._permutation for m in post.layers if type(m).__name__ == "RandomPermutation"]
    assert len(perms) == 11 and not all(torch.equal(p, perms[0]) for p in perms)
    nsf = make_vae("nsf", arch="table1").posterior
    assert sum(isinstance(m, LULinear) for m in nsf.layers) == 11


def test_table1_lu_layers_start_at_the_identity():
    """At initialization every LU-linear layer is the identity (to float32 rounding of
    ``softplus(c) + eps = 1``: about 1e-7 per diagonal entry, 32 of them)."""
    torch.manual_seed(0)
    post = make_vae("nsf", arch="table1").posterior
    w = torch.randn(6, 32)
    for m in post.layers:
        if isinstance(m, LULinear):
            y, lad = m(w)
            torch.testing.assert_close(y, w, atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(lad, torch.zeros(6), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["gaussian", "nsf", "nsf-32", "cif-nsf"])
def test_table1_shapes_bounds_and_gradients(kind):
    torch.manual_seed(0)
    vae = make_vae(kind, arch="table1")
    x = _images(3)
    assert vae.latent == 32
    assert vae.log_weights(x, 4).shape == (3, 4)
    assert vae.reconstruct(x).shape == (3, 1, 28, 28) and vae.sample(2).shape == (2, 1, 28, 28)
    mean, se, per_image = iw_log_likelihood(vae, x, num_samples=8, chunk_size=4)
    assert per_image.shape == (3,) and mean < 0 and se > 0
    (-vae.elbo(x).mean()).backward()
    missing = [n for n, p in vae.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, missing[:5]


@pytest.mark.parametrize("grouped", [True, False])
def test_table1_fast_path_equals_the_plain_model(grouped):
    """The CIF-NSF VAE of Table 1 in float64: the fused spline layers, the fast encoder and
    r-networks (32-dimensional v, affine-first CIF layers) give the plain model's values
    and gradients."""
    torch.manual_seed(0)
    slow = make_vae("cif-nsf", arch="table1", fast=False).double()
    with torch.no_grad():  # move away from the near-identity initialization
        for p in slow.parameters():
            p.add_(0.02 * torch.randn_like(p))
    fast = accelerate(copy.deepcopy(slow))
    assert type(fast.posterior.base.encoder).__name__ == "FastEncoder"
    assert type(fast.decoder) is ResDecoder  # the residual decoder stays plain torch
    fast.posterior.group_contexts = grouped
    x = _images(3, dtype=torch.float64)
    torch.manual_seed(1)
    w0 = slow.log_weights(x, 2)
    g0 = torch.autograd.grad(w0.sum(), list(slow.parameters()))
    torch.manual_seed(1)
    w1 = fast.log_weights(x, 2)
    g1 = torch.autograd.grad(w1.sum(), list(fast.parameters()))
    torch.testing.assert_close(w1, w0, atol=1e-9, rtol=1e-9)
    for (name, _), a, b in zip(slow.named_parameters(), g0, g1):
        torch.testing.assert_close(b, a, atol=1e-8, rtol=1e-7, msg=name)


def test_table1_gap_estimates_run_through_the_inverses():
    """The marginal-density estimate inverts every layer: LU-linear solves, spline
    inverses and the affine-first CIF layers' split inverse, in float64."""
    torch.manual_seed(0)
    vae = make_vae("cif-nsf", arch="table1")
    mean, se = vx.auxiliary_gap(vae, _images(2), num_z=2, num_u=3)
    assert np.isfinite(mean) and se >= 0


def test_table1_nsf_density_by_inversion_equals_the_sampled_one():
    """Known answer: for the explicit NSF, ``log q(z | x)`` computed backwards through the
    layers (LU solves, spline inverses, permutations) equals the one accumulated while
    sampling, once the LU layers are away from the identity."""
    torch.manual_seed(0)
    post = make_vae("nsf", arch="table1").posterior.double()
    with torch.no_grad():
        for m in post.layers:
            if isinstance(m, LULinear):
                for p in m.parameters():
                    p.add_(0.05 * torch.randn_like(p))
    x = _images(3, dtype=torch.float64)
    with torch.no_grad():
        out = post.forward_sample(2, x)
        log_q = post.marginal_log_prob(out.z, x.repeat_interleave(2, dim=0))
    torch.testing.assert_close(log_q, out.log_q, atol=1e-8, rtol=1e-10)


def test_fast_r_net_with_a_32_dimensional_input():
    torch.manual_seed(0)
    slow = ImageRNet(32, 2).double()
    fast = accelerate(copy.deepcopy(slow))
    w = torch.randn(12, 32, dtype=torch.float64)
    x = _images(12, dtype=torch.float64)
    torch.testing.assert_close(fast(w, x), slow(w, x))


def test_config_architecture_by_budget_and_names():
    paper = vx.VAEConfig.from_budget("paper", posterior="nsf")
    assert (paper.arch, paper.latent, paper.clip) == ("table1", 32, 5.0)
    assert paper.name == "mnist-nsf-table1-seed0-paper"
    gauss = vx.VAEConfig.from_budget("paper", posterior="gaussian")
    assert gauss.clip is None  # the Table-1 Gaussian VAE trains unclipped (REFERENCE.md)
    small = vx.VAEConfig.from_budget("paper", posterior="gaussian", arch="small")
    assert (small.arch, small.latent, small.clip) == ("small", 20, 5.0)
    assert small.name == "mnist-gaussian-seed0-paper"  # the committed results' names
    for budget in ("smoke", "book"):
        assert vx.VAEConfig.from_budget(budget).arch == "small"
    named = vx.VAEConfig(posterior="nsf-32", arch="table1", seed=2, budget="book")
    assert named.name == "mnist-nsf-32-table1-seed2-book"


def test_unknown_architecture_or_posterior_names_the_argument(capsys):
    with pytest.raises(ValueError, match="arch"):
        vx.VAEConfig(arch="large")
    with pytest.raises(ValueError, match="arch"):
        make_vae("gaussian", arch="large")
    with pytest.raises(ValueError, match="posterior"):
        vx.VAEConfig(posterior="nsf-64")
    with pytest.raises(SystemExit):
        vx.main(["--arch", "large"])
    assert "--arch" in capsys.readouterr().err


def test_committed_results_load_as_small():
    """The results committed before architectures existed lack the field: small."""
    rows = vx.collect_results()
    assert rows and {r["arch"] for r in rows} == {"small"}
    long = vx.collect_results(folder="vae/long")
    assert long and {r["arch"] for r in long} == {"small"}
    table1 = vx.collect_results(arch="table1")  # the Table-1 runs' names carry "-table1"
    assert {r["arch"] for r in table1} <= {"table1"}
    assert ("mnist", "gaussian", 0) in {(r["dataset"], r["posterior"], r["seed"]) for r in table1}
    assert vx.stored_setting({}, "arch") == "small"


def test_checkpoint_without_arch_resumes_as_small(tmp_path):
    cfg = vx.VAEConfig(posterior="gaussian", max_epochs=2, patience=5, batch_size=50)
    splits = _fake_splits()
    vx.train(cfg, tmp_path, epochs=1, splits=splits, log=QUIET)
    path = tmp_path / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=False)
    del ckpt["config"]["arch"]  # as written before the field existed
    torch.save(ckpt, path)
    checksum_path(path).unlink()  # ... and before checksums: loaded with a warning
    _, state = vx.train(cfg, tmp_path, splits=splits, log=QUIET)
    assert state["epoch"] == 2 and state["done"]
    with pytest.raises(ValueError, match="arch"):
        vx.train(vx.VAEConfig(arch="table1", max_epochs=3), tmp_path, splits=splits, log=QUIET)


def _table1_splits():
    try:
        return load_binarized("mnist", limit=300, download=False)
    except DataNotFoundError:
        return _fake_splits(300)


def test_table1_smoke_run_resumes_as_if_uninterrupted(tmp_path):
    """Two tiny epochs on 300 images (real MNIST when present) of the Table-1 CIF-NSF:
    one invocation of two epochs equals two of one, bit for bit."""
    cfg = vx.VAEConfig.from_budget(
        "smoke", posterior="cif-nsf", arch="table1", train_limit=300, max_epochs=2, patience=5
    )
    splits = _table1_splits()
    full, s_full = vx.train(cfg, tmp_path / "a", splits=splits, log=QUIET)
    _, s_part = vx.train(cfg, tmp_path / "b", epochs=1, splits=splits, log=QUIET)
    assert s_part["epoch"] == 1 and not s_part["done"]
    resumed, s_res = vx.train(cfg, tmp_path / "b", splits=splits, log=QUIET)
    assert s_res["epoch"] == s_full["epoch"] == 2 and s_res["done"]
    assert s_res["history"]["val_elbo"] == s_full["history"]["val_elbo"]
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert np.isfinite(s_full["history"]["train_elbo"]).all()


def test_weights_saved_in_half_precision_and_loaded_by_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(vae_cli, "load_binarized", lambda *a, **k: _fake_splits(100))
    out = tmp_path / "out"
    argv = ["--posterior", "nsf", "--arch", "table1", "--budget", "smoke", "--save-weights"]
    argv += ["--runs-dir", str(tmp_path / "runs"), "--out-dir", str(out)]
    argv += ["--test-k", "2", "--test-limit", "4"]
    assert vx.main(argv) == 0
    name = "mnist-nsf-table1-seed0-smoke"
    rec = json.loads((out / f"{name}.json").read_text())
    assert rec["arch"] == "table1" and rec["provenance"]["config"]["latent"] == 32
    assert rec["weights"]["file"] == f"weights/{name}.pt" and rec["weights"]["dtype"] == "float16"
    saved = torch.load(out / rec["weights"]["file"], weights_only=True)
    assert {v.dtype for v in saved.values() if v.is_floating_point()} == {torch.float16}
    # the same weights as the run's best-validation checkpoint, to half precision
    best = torch.load(tmp_path / "runs" / name / "checkpoint.pt", weights_only=False)
    vae = load_weights("mnist", "nsf", 0, "table1", budget="smoke", folder=out)
    assert not vae.training and vae.latent == 32
    for key, value in best["best_model"].items():
        got = vae.state_dict()[key]
        if value.is_floating_point():
            torch.testing.assert_close(got, value, rtol=2**-10, atol=1e-7)
        else:
            assert torch.equal(got, value)  # the random permutations, exactly
    # a changed file is refused, naming it
    path = out / rec["weights"]["file"]
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsMismatchError, match=str(path)):
        load_weights("mnist", "nsf", 0, "table1", budget="smoke", folder=out)
    with pytest.raises(FileNotFoundError, match="no result"):
        load_weights("mnist", "nsf", 1, "table1", budget="smoke", folder=out)


def test_pretrained_models_load_what_is_committed_and_table_says_what_is_not(tmp_path, monkeypatch):
    """Chapter 6's pretrained models: the finished run with weights is loaded and evaluated,
    a run whose result saved no weights and a run without a result are left out (their rows
    say so), and a damaged weights file is refused rather than skipped."""
    monkeypatch.setattr(vae_cli, "load_binarized", lambda *a, **k: _fake_splits(100))
    out = tmp_path / "out"
    common = ["--arch", "table1", "--budget", "smoke", "--runs-dir", str(tmp_path / "runs")]
    common += ["--out-dir", str(out), "--test-k", "2", "--test-limit", "4"]
    assert vx.main(["--posterior", "nsf", "--save-weights", *common]) == 0
    assert vx.main(["--posterior", "gaussian", *common]) == 0  # no --save-weights
    models = vx.pretrained_models("mnist", 0, budget="smoke", folder=out)
    assert list(models) == ["nsf"] and not models["nsf"].training
    x = _fake_splits(100).test.binarize(torch.arange(6), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    table = vx.pretrained_table(models, x, "mnist", k=2, budget="smoke", folder=out)
    assert list(table.index) == list(vx.POSTERIORS)
    assert table.loc["gaussian", "on these images"] == "not committed yet"
    assert table.loc["cif-nsf", "on these images"] == "not committed yet"
    torch.manual_seed(0)
    mean, stderr, _ = vx.iw_log_likelihood(models["nsf"], x, 2)
    assert table.loc["nsf", "on these images"] == f"{mean:.2f} ± {stderr:.2f}"
    rec = json.loads((out / "mnist-nsf-table1-seed0-smoke.json").read_text())
    full = rec["metrics"]["test_iw_k2"]
    assert table.loc["nsf", "the run's result"] == f"{full['mean']:.2f} ± {full['stderr']:.2f}"
    assert table.loc["nsf", "best epoch"] == str(rec["best_epoch"])
    path = out / rec["weights"]["file"]
    path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1]))
    with pytest.raises(WeightsMismatchError, match=str(path)):
        vx.pretrained_models("mnist", 0, budget="smoke", folder=out)


def test_committed_runs_stand_in_for_training_only_when_all_are_finished(tmp_path, monkeypatch):
    """Chapter 6 at the paper budget: the finished runs with weights come back as (model,
    training record, test metrics) read from their results; one run missing, unfinished or
    without weights gives None (the chapter then trains)."""
    monkeypatch.setattr(vae_cli, "load_binarized", lambda *a, **k: _fake_splits(100))
    out = tmp_path / "out"
    common = ["--arch", "table1", "--budget", "smoke", "--runs-dir", str(tmp_path / "runs")]
    common += ["--out-dir", str(out), "--test-k", "2", "--test-limit", "4"]
    cfgs = [vx.VAEConfig("mnist", q, 0, "smoke", arch="table1") for q in ("gaussian", "nsf")]
    assert vx.main(["--posterior", "nsf", "--save-weights", *common]) == 0
    assert vx.committed_runs(cfgs, folder=out) is None  # no Gaussian result
    assert vx.main(["--posterior", "gaussian", *common]) == 0  # no --save-weights
    assert vx.committed_runs(cfgs, folder=out) is None
    assert vx.main(["--posterior", "gaussian", "--save-weights", "--epochs", "0", *common]) == 0
    runs = vx.committed_runs(cfgs, folder=out)
    assert list(runs) == [c.name for c in cfgs]
    for cfg in cfgs:
        vae, state, metrics = runs[cfg.name]
        rec = json.loads((out / f"{cfg.name}.json").read_text())
        assert not vae.training and vae.latent == 32 and metrics == rec["metrics"]
        assert (state["epoch"], state["best_epoch"]) == (rec["epochs_run"], rec["best_epoch"])
        assert state["best_val"] == rec["best_val_elbo"] and state["history"] == rec["history"]
        reference = load_weights("mnist", cfg.posterior, 0, "table1", budget="smoke", folder=out)
        for key, value in reference.state_dict().items():
            assert torch.equal(vae.state_dict()[key], value)
    assert vx.training_lines({"nsf": runs[cfgs[1].name][1]}, 100)[0].startswith("nsf       1 ")
    path = out / cfgs[0].name
    rec = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**rec, "complete": False}))
    assert vx.committed_runs(cfgs, folder=out) is None  # a partial run is not a finished one


def test_pretrained_models_outside_a_checkout_are_fetched_and_checked(
    tmp_path, monkeypatch, served
):
    """On Colab there is no results/ folder: the committed result is read from the repository
    and the weights file is downloaded once into the cache, checked by its SHA-256; a run with
    no committed result is left out, and a failed download leaves no partial file."""
    from cifutils import results

    root, url = served
    monkeypatch.setattr(vae_cli, "load_binarized", lambda *a, **k: _fake_splits(100))
    out = root / "results" / "vae"
    argv = ["--posterior", "gaussian", "--arch", "table1", "--budget", "smoke", "--save-weights"]
    argv += ["--runs-dir", str(tmp_path / "runs"), "--out-dir", str(out)]
    assert vx.main([*argv, "--test-k", "2", "--test-limit", "4"]) == 0
    local = load_weights("mnist", "gaussian", 0, budget="smoke", folder=out)
    monkeypatch.setenv("CIFUTILS_RESULTS", str(tmp_path / "no-checkout"))
    monkeypatch.setenv(results.RAW_ENV, url + "/")
    monkeypatch.setenv("CIFUTILS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(results.READ_LOG_ENV, str(tmp_path / "reads.jsonl"))
    assert results.repository_raw() == url
    models = vx.pretrained_models("mnist", 0, budget="smoke")
    assert list(models) == ["gaussian"]
    # the run card names what was read as the repository names it, not the cache
    from cifutils.runcard import summarize_reads

    reads = summarize_reads(tmp_path / "reads.jsonl")
    assert reads["weights"] == ["results/vae/weights/mnist-gaussian-table1-seed0-smoke.pt"]
    assert set(reads["results"]) == {"results/vae"}
    for a, b in zip(models["gaussian"].state_dict().values(), local.state_dict().values()):
        assert torch.equal(a, b)
    cached = list((tmp_path / "cache").rglob("*.pt"))
    assert [p.name for p in cached] == ["mnist-gaussian-table1-seed0-smoke.pt"]
    x = _images(3)
    table = vx.pretrained_table(models, x, "mnist", k=2, budget="smoke")
    assert table.loc["nsf", "on these images"] == "not committed yet"
    assert table.loc["gaussian", "best epoch"] != ""
    # a missing file: None, and nothing half-written in the cache
    assert results.fetch_committed("vae/weights/absent.pt") is None
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.startswith(".")]
    # a damaged cached copy is refused, naming it and saying how to recover
    data = bytearray(cached[0].read_bytes())
    data[-100] ^= 1
    cached[0].write_bytes(bytes(data))
    with pytest.raises(WeightsMismatchError, match="Delete it to download it again"):
        vx.pretrained_models("mnist", 0, budget="smoke")


def test_table1_gaussian_trains_side_by_side_unclipped(tmp_path, monkeypatch):
    """vae-many (eager on a CPU) with the Table-1 Gaussian VAE, whose clip is None."""
    from cifutils.experiments.vae import multi as vae_multi

    monkeypatch.setattr(vae_multi, "load_binarized", lambda *a, **k: _fake_splits(100))
    cfg = vx.VAEConfig.from_budget("smoke", arch="table1", batch_size=50)
    cfg.clip = None
    states = vae_multi.train_many([cfg], tmp_path, log=QUIET)
    assert states[cfg.name]["epoch"] == 1


def _bench_table1():
    import importlib.util

    path = ROOT / "benchmarks" / "bench_vae_table1.py"
    spec = importlib.util.spec_from_file_location("bench_vae_table1", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_decoder_flops_of_the_benchmark_match_the_reference():
    """REFERENCE.md: about 24 M multiply-adds per image forward, about 14 GFLOP per training
    step of 100 images forward and backward (backward about twice the forward)."""
    forward, both = _bench_table1().decoder_flops(100)
    assert abs(forward / 2 / 100 / 24e6 - 1) < 0.02
    assert abs(both / 14e9 - 1) < 0.05 and 2.9 < both / forward < 3.1


def test_sweep_lists_every_run_once():
    lines = sweep_commands("paper")
    assert len(lines) == 2 * 4 * 3  # datasets x posteriors (with nsf-32) x seeds
    assert len(set(lines)) == len(lines)
    for line in lines:
        assert "--arch table1" in line and "--budget paper" in line
        assert "--time-limit 60 --eval-if-complete" in line
        assert line.startswith("test -e results/vae/") and "-table1-seed" in line
    small = sweep_commands("book", posteriors=["gaussian"], seeds=[0], datasets=["mnist"])
    assert small == [
        "test -e results/vae/mnist-gaussian-seed0-book.json || python -m cifutils.experiments "
        "vae --dataset mnist --posterior gaussian --seed 0 --budget book --arch small "
        "--time-limit 60 --eval-if-complete --out-dir results/vae"
    ]


def _two_smoke_lines(tmp_path) -> list[str]:
    try:
        load_binarized("mnist", limit=1, download=False)
    except DataNotFoundError:
        pytest.skip("MNIST files not present (set CIFUTILS_DATA)")
    extra = ("--runs-dir", str(tmp_path / "runs"), "--threads", "1")
    return sweep_commands(
        "smoke",
        datasets=["mnist"],
        posteriors=["gaussian", "nsf"],
        seeds=[0],
        python=sys.executable,
        extra=extra,
        out_dir=str(tmp_path / "out"),
    )


def test_two_sweep_commands_run_and_are_not_repeated(tmp_path):
    lines = _two_smoke_lines(tmp_path)
    for line in lines:
        subprocess.run(["bash", "-c", line], cwd=ROOT, check=True, capture_output=True)
    names = ["mnist-gaussian-seed0-smoke", "mnist-nsf-seed0-smoke"]
    for name in names:
        rec = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert rec["complete"] and "test_iw_k10" in rec["metrics"]
    stamps = [(tmp_path / "out" / f"{n}.json").stat().st_mtime_ns for n in names]
    for line in lines:  # again: the results exist, nothing runs
        done = subprocess.run(["bash", "-c", line], cwd=ROOT, check=True, capture_output=True)
        assert done.stdout == b""
    assert stamps == [(tmp_path / "out" / f"{n}.json").stat().st_mtime_ns for n in names]


@pytest.mark.skipif(shutil.which("parallel") is None, reason="GNU parallel is not installed")
def test_sweep_commands_run_under_gnu_parallel(tmp_path):
    lines = _two_smoke_lines(tmp_path)
    subprocess.run(["parallel", "-j", "2"], input="\n".join(lines), text=True, cwd=ROOT, check=True)
    assert len(list((tmp_path / "out").glob("*.json"))) == 2


def test_params_command_prints_every_part(capsys):
    from cifutils.experiments import main

    assert main(["params", "--arch", "table1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "arch",
        "posterior",
        "encoder",
        "decoder",
        "flow",
        "cif_st",
        "cif_q",
        "cif_r",
        "total",
    ]
    rows = {tuple(line.split()[:2]): line.split()[-1] for line in lines[1:]}
    assert rows == {("table1", k): f"{v:,d}" for k, v in REFERENCE_TOTALS.items()}


# -- Table 1 in two blocks: the Table-1 architecture and the CPU edition ----------------------


def _block_record(dataset, posterior, seed, arch, epochs, mean, complete=True, device="cpu"):
    """A result as the command line writes it (cifutils.experiments.vae.cli.run)."""
    cfg = vx.VAEConfig.from_budget("paper", dataset=dataset, posterior=posterior, seed=seed)
    cfg.arch = arch
    return {
        "name": cfg.name,
        "dataset": dataset,
        "posterior": posterior,
        "arch": arch,
        "seed": seed,
        "budget": "paper",
        "epochs_run": epochs,
        "best_epoch": max(1, epochs - 50),
        "complete": complete,
        "stopped_early": complete,
        "train_devices": {device: epochs},
        "provenance": {
            "config": {"arch": arch, "budget": "paper", "max_epochs": 1000},
            "device": device,
        },
        "metrics": {"test_images": 10_000, "test_iw_k100": {"mean": mean, "stderr": 0.2}},
        "history": {"val_elbo": [-100.0] * epochs},
    }


def _write_blocks(root: Path, records: list[tuple[str, dict]]) -> None:
    (root / "vae" / "long").mkdir(parents=True)  # both folders exist: nothing is fetched
    for folder, rec in records:
        cfg = vx.VAEConfig(rec["dataset"], rec["posterior"], rec["seed"], "paper", arch=rec["arch"])
        (root / folder / f"{cfg.name}.json").write_text(json.dumps(rec))


def test_table1_blocks_mark_untrained_and_partial_cells(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFUTILS_RESULTS", str(tmp_path))
    _write_blocks(
        tmp_path,
        [
            ("vae", _block_record("mnist", "gaussian", 0, "table1", 400, -87.0)),
            ("vae", _block_record("mnist", "gaussian", 1, "table1", 300, -88.0, device="cuda")),
            ("vae", _block_record("mnist", "nsf", 2, "table1", 120, -85.0, complete=False)),
            ("vae/long", _block_record("mnist", "gaussian", 0, "small", 393, -96.0)),
            # a small-model file in results/vae (the 63-epoch runs) is not the Table-1 block's
            ("vae", _block_record("mnist", "cif-nsf", 0, "small", 63, -94.0, complete=False)),
        ],
    )
    blocks = vx.table1_blocks()
    assert list(blocks) == ["table1", "small"]
    assert [(r["posterior"], r["seed"]) for r in blocks["table1"]] == [
        ("gaussian", 0),
        ("gaussian", 1),
        ("nsf", 2),
    ]
    assert {r["arch"] for r in blocks["table1"]} == {"table1"}
    assert [(r["posterior"], r["arch"]) for r in blocks["small"]] == [("gaussian", "small")]

    table = vx.table1_by_block(blocks)
    assert table.index.names == ["model", "dataset", "posterior"] and len(table) == 12
    t1, cpu = "Table-1 architecture (latent 32)", "CPU edition (latent 20)"
    assert list(table.index.get_level_values("model").unique()) == [t1, cpu]
    gauss = table.loc[(t1, "mnist", "gaussian")]
    assert gauss["ours"] == "-87.50 ± 0.71" and gauss["runs"] == "2 of 3 seeds"
    assert gauss["slides"] == "-87.37 ± 0.15"
    nsf = table.loc[(t1, "mnist", "nsf")]  # one partial seed: ± its test-set standard error
    assert nsf["ours"] == "-85.00 ± 0.20 (partial)"
    assert nsf["runs"] == "1 of 3 seeds; seed 2 partial (120 of 1,000 epochs)"
    assert table.loc[(t1, "mnist", "cif-nsf"), "ours"] == "not trained yet"
    assert table.loc[(t1, "mnist", "cif-nsf"), "runs"] == "0 of 3 seeds"
    assert table.loc[(cpu, "mnist", "gaussian"), "ours"] == "-96.00 ± 0.20"
    assert table.loc[(cpu, "fashion-mnist", "nsf"), "ours"] == "not trained yet"

    assert vx.table1_caption(blocks["table1"]) == (
        "paper budget; seeds 0, 1, 2; 120-400 epochs of at most 1,000, 2 of 3 runs stopped by "
        "the paper's rule, 1 partial; trained on cpu, cuda; K = 100 bound on 10,000 test "
        "images, evaluated on cpu, cuda"
    )
    assert vx.table1_caption([]) == "not trained yet (no run committed)"
    assert vx.table1_block_lines(blocks) == [
        "Table-1 architecture: no ordering check yet (it needs two seeds in every cell of a "
        "dataset)",
        "CPU edition: no ordering check yet (it needs two seeds in every cell of a dataset)",
    ]
    assert vx.table1_level(blocks) == (
        "So far 2 cells are: the Gaussian VAE on MNIST (seeds 0, 1) reaches -87.50, 0.13 nats "
        "below the slides' -87.37 (the CPU edition: 8.63 below); the NSF on MNIST (seed 2, "
        "partial) reaches -85.00, 2.05 nats below the slides' -82.95."
    )
    assert vx.table1_level({"table1": [], "small": blocks["small"]}) == (
        "No cell of the Table-1 block is trained yet."
    )
    above = {"dataset": "mnist", "posterior": "cif-nsf", "seed": 0, "mean": -82.0, "complete": True}
    assert vx.table1_level({"table1": [above], "small": []}) == (
        "So far 1 cell is: the CIF-NSF on MNIST (seed 0) reaches -82.00, 0.22 nats above the "
        "slides' -82.22."
    )


def test_table1_block_lines_check_the_order_per_block(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFUTILS_RESULTS", str(tmp_path))
    means = {"gaussian": -96.0, "nsf": -92.0, "cif-nsf": -91.5}
    records = [
        ("vae/long", _block_record("mnist", q, s, "small", 300, m + 0.1 * s))
        for q, m in means.items()
        for s in (0, 1)
    ]
    _write_blocks(tmp_path, records)
    lines = vx.table1_block_lines(vx.table1_blocks())
    assert lines[0].startswith("Table-1 architecture: no ordering check yet")
    assert lines[1].startswith("CPU edition, mnist: Gaussian < NSF < CIF-NSF as in Table 1: True")
    assert lines[1].endswith("NSF - Gaussian = +4.00 nats") and len(lines) == 2


def test_a_table1_result_of_the_command_line_fills_its_cell(tmp_path, monkeypatch):
    """The file the command line writes for the Table-1 architecture is the one the block
    reads: one epoch of the paper budget's run (on a few fake images) is a partial run."""
    monkeypatch.setattr(vae_cli, "load_binarized", lambda *a, **k: _fake_splits(100))
    monkeypatch.setenv("CIFUTILS_RESULTS", str(tmp_path / "results"))
    (tmp_path / "results" / "vae" / "long").mkdir(parents=True)
    argv = ["--posterior", "gaussian", "--budget", "paper", "--epochs", "1"]
    argv += ["--runs-dir", str(tmp_path / "runs"), "--test-k", "100", "--test-limit", "2"]
    assert vx.main(argv) == 0  # the paper budget trains the Table-1 architecture
    blocks = vx.table1_blocks()
    (row,) = blocks["table1"]
    assert (row["arch"], row["epochs"], row["complete"]) == ("table1", 1, False)
    table = vx.table1_by_block(blocks)
    cell = table.loc[("Table-1 architecture (latent 32)", "mnist", "gaussian")]
    assert cell["ours"].endswith("(partial)") and cell["runs"].endswith("(1 of 1,000 epochs)")
    caption = vx.table1_caption(blocks["table1"])
    assert caption.startswith("paper budget; seed 0; 1 epoch of at most 1,000, 0 of 1 run stopped")
    assert ", 1 partial; trained on cpu; K = 100 bound on 2 test images" in caption


def test_committed_table1_blocks():
    """The committed files: the CPU edition is complete; the Table-1 architecture's runs,
    where committed, are of that architecture."""
    blocks = vx.table1_blocks()
    assert len(blocks["small"]) == 18 and all(r["complete"] for r in blocks["small"])
    assert {r["arch"] for r in blocks["small"]} == {"small"}
    assert {r["arch"] for r in blocks["table1"]} <= {"table1"}
    caption = vx.table1_caption(blocks["small"])
    assert caption.startswith("paper budget; seeds 0, 1, 2; ")
    assert "18 of 18 runs stopped by the paper's rule; trained on cpu" in caption
