"""Tests of the VAE chapter's code: models, the fast spline path, training and evaluation."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cifutils.data import BinarizedImages, BinarizedSplits
from cifutils.experiments import vae as vx
from cifutils.experiments.vae import cli as vae_cli
from cifutils.experiments.vae import config as vae_config
from cifutils.experiments.vae import iw_log_likelihood, make_vae
from cifutils.experiments.vae import training as vae_training
from cifutils.experiments.vae.fast_layers import accelerate
from cifutils.experiments.vae.networks import ImageRNet
from cifutils.fast import FastRQAutoregressive, rq_spline
from cifutils.flows import num_parameters, rq_autoregressive_step
from cifutils.training import load_checkpoint


def _perturbed_step(dtype: torch.dtype, seed: int = 0, hidden: int = 44, context=None):
    torch.manual_seed(seed)
    step = rq_autoregressive_step(20, hidden, 8, 3.0, 2, context_features=context).to(dtype)
    with torch.no_grad():  # move away from the near-identity initialization
        for p in step.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return step


def _inputs(dtype: torch.dtype, n: int = 400) -> torch.Tensor:
    x = 2.5 * torch.randn(n, 20, dtype=dtype)  # about a quarter lies in the linear tails
    x[0, :4] = torch.tensor([-3.0, 3.0, -3.0001, 3.0001], dtype=dtype)  # the boundaries
    return x


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_fast_spline_equals_nflows(dtype, tol):
    slow = _perturbed_step(dtype)
    fast = accelerate(copy.deepcopy(slow))
    assert type(fast) is FastRQAutoregressive
    x = _inputs(dtype)
    y0, l0 = slow(x)
    y1, l1 = fast(x)
    assert l1.shape == (x.shape[0],)
    torch.testing.assert_close(y1, y0, atol=tol, rtol=tol)
    torch.testing.assert_close(l1, l0, atol=tol, rtol=tol)
    g0 = torch.autograd.grad((y0.sum() + l0.sum()), list(slow.parameters()))
    g1 = torch.autograd.grad((y1.sum() + l1.sum()), list(fast.parameters()))
    for a, b in zip(g0, g1):
        torch.testing.assert_close(b, a, atol=100 * tol, rtol=100 * tol)


def test_fast_spline_inverse_round_trip():
    fast = accelerate(_perturbed_step(torch.float64))
    x = _inputs(torch.float64)
    y, lad = fast(x)
    x_back, lad_inv = fast.inverse(y)
    torch.testing.assert_close(x_back, x, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(lad_inv, -lad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("context", [None, 5])
def test_fast_spline_inverse_equals_nflows(context):
    # the fused inverse takes shortcuts when there is no context (the first feature's
    # parameters computed once for all rows): both cases against nflows
    slow = _perturbed_step(torch.float64, context=context)
    fast = accelerate(copy.deepcopy(slow))
    ctx = None if context is None else torch.randn(400, context, dtype=torch.float64)
    with torch.no_grad():
        y, _ = slow(_inputs(torch.float64), ctx)
        x0, l0 = slow.inverse(y, ctx)
        x1, l1 = fast.inverse(y, ctx)
    torch.testing.assert_close(x1, x0, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(l1, l0, atol=1e-8, rtol=1e-8)


def test_fast_spline_inverse_in_float32_is_as_accurate_as_nflows():
    """In float32 these ill-conditioned layers lose digits over the 20 passes of the
    inverse; measured against the float64 inverse, the fused version must lose no more than
    nflows. Which of the two ends closer on one layer is decided by rounding (and so differs
    between CPUs: either wins about half the time), hence the comparison over 16 layers:
    the geometric mean of the error ratio fused / nflows must stay below 2 (a real loss of
    precision, or a wrong inverse, gives ratios of orders of magnitude)."""
    log_ratios = []
    for seed in range(16):
        slow = _perturbed_step(torch.float32, seed=seed)
        fast = accelerate(copy.deepcopy(slow))
        exact = accelerate(copy.deepcopy(slow).double())
        with torch.no_grad():
            y, _ = slow(_inputs(torch.float32))
            x_ref, l_ref = exact.inverse(y.double())
            errors = []
            for layer in (slow, fast):
                x, lad = layer.inverse(y)
                errors.append(
                    max((x.double() - x_ref).abs().max(), (lad.double() - l_ref).abs().max())
                )
        assert torch.isfinite(errors[1]), seed
        log_ratios.append(torch.log(errors[1] / errors[0]).item())
    assert np.exp(np.mean(log_ratios)) < 2.0, np.exp(log_ratios).round(2)


def test_spline_is_identity_in_the_tails():
    params = torch.randn(5, 3, 23)
    x = torch.tensor([[-5.0, 4.0, 10.0]]).repeat(5, 1)
    y, lad = rq_spline(x, params, 8, 3.0)
    assert torch.equal(y, x) and torch.equal(lad, torch.zeros(5))


def test_accelerate_keeps_weights_and_function():
    torch.manual_seed(3)
    slow = make_vae("cif-nsf", fast=False)
    torch.manual_seed(3)
    fast = make_vae("cif-nsf", fast=True)
    assert slow.state_dict().keys() == fast.state_dict().keys()
    for a, b in zip(slow.state_dict().values(), fast.state_dict().values()):
        assert torch.equal(a, b)
    x = (torch.rand(4, 1, 28, 28) < 0.3).float()
    torch.manual_seed(0)
    w0 = slow.log_weights(x, 3)
    torch.manual_seed(0)
    w1 = fast.log_weights(x, 3)
    torch.testing.assert_close(w1, w0, atol=1e-3, rtol=1e-5)


def test_parameter_counts_match_the_paper():
    counts = {k: num_parameters(make_vae(k)) for k in ("gaussian", "nsf", "cif-nsf")}
    assert counts == {"gaussian": 95_953, "nsf": 391_393, "cif-nsf": 381_843}
    for kind, paper in (("gaussian", 96e3), ("nsf", 396e3), ("cif-nsf", 386e3)):
        assert abs(counts[kind] / paper - 1) < 0.03
    assert abs(counts["cif-nsf"] / counts["nsf"] - 1) < 0.03


@pytest.mark.parametrize("kind", ["gaussian", "nsf", "cif-nsf"])
def test_shapes_and_bounds(kind):
    torch.manual_seed(0)
    vae = make_vae(kind)
    x = (torch.rand(3, 1, 28, 28) < 0.3).float()
    assert vae.log_weights(x, 5).shape == (3, 5)
    assert vae.elbo(x).shape == (3,)
    assert vae.reconstruct(x).shape == (3, 1, 28, 28)
    assert vae.sample(2).shape == (2, 1, 28, 28)
    # A log-likelihood of a binary image is below 0, and the K-sample bound is at most
    # log-mean-exp of its own weights, which is >= their mean (Jensen), chunking included.
    torch.manual_seed(1)
    mean, se, per_image = iw_log_likelihood(vae, x, num_samples=50, chunk_size=20)
    assert per_image.shape == (3,) and se > 0 and mean < 0
    torch.manual_seed(1)
    w = torch.cat([vae.log_weights(x, 20), vae.log_weights(x, 20), vae.log_weights(x, 10)], 1)
    torch.testing.assert_close(per_image, torch.logsumexp(w, 1) - np.log(50))
    assert (per_image >= w.mean(1) - 1e-4).all()


def test_r_net_uses_the_image():
    net = ImageRNet(20, 2)
    w = torch.randn(6, 20)
    x = (torch.rand(6, 1, 28, 28) < 0.5).float()
    out = net(w, x)
    assert out.shape == (6, 4)
    assert not torch.allclose(out, net(w, 1 - x))


def _fake_splits(n: int = 100, seed: int = 0) -> BinarizedSplits:
    rng = np.random.default_rng(seed)

    def make(m: int) -> BinarizedImages:
        return BinarizedImages(rng.integers(0, 256, size=(m, 28, 28), dtype=np.uint8))

    return BinarizedSplits(train=make(n), val=make(n // 2), test=make(n // 2))


def test_resume_equals_uninterrupted(tmp_path):
    cfg = vx.VAEConfig(posterior="cif-nsf", max_epochs=2, patience=5, batch_size=50)
    splits = _fake_splits()
    full, s_full = vx.train(cfg, tmp_path / "a", splits=splits, log=lambda *_: None)
    part, s_part = vx.train(cfg, tmp_path / "b", epochs=1, splits=splits, log=lambda *_: None)
    assert s_part["epoch"] == 1 and not s_part["done"]
    resumed, s_res = vx.train(cfg, tmp_path / "b", splits=splits, log=lambda *_: None)
    assert s_res["epoch"] == s_full["epoch"] == 2 and s_res["done"]
    assert s_res["history"] == s_full["history"] | {"epoch_s": s_res["history"]["epoch_s"]}
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert {"model", "optimizer", "data_rng", "torch_rng", "state", "best_model"} <= ckpt.keys()
    with pytest.raises(ValueError, match="other settings"):
        vx.train(vx.VAEConfig(posterior="nsf", max_epochs=2), tmp_path / "b", splits=splits)


def test_early_stopping_keeps_the_best_epoch(tmp_path, monkeypatch):
    vals = iter([-100.0, -90.0, -95.0, -96.0, -80.0])  # epoch 2 best; 2 bad epochs follow

    def fake_epoch(vae, data, opt, cfg, gen, train, device=None, loss_fn=None):
        return -200.0 if train else next(vals)

    monkeypatch.setattr(vae_training, "_epoch", fake_epoch)
    cfg = vx.VAEConfig(max_epochs=10, patience=2)
    _, state = vx.train(cfg, tmp_path, splits=_fake_splits(20), log=lambda *_: None)
    assert state["done"] and state["epoch"] == 4 and state["best_epoch"] == 2
    assert state["best_val"] == -90.0


def test_time_limit_stops_before_an_epoch_that_would_overrun(tmp_path, monkeypatch):
    clock = [0.0]  # fake seconds; every training epoch takes 10 of them

    def fake_epoch(vae, data, opt, cfg, gen, train, device=None, loss_fn=None):
        clock[0] += 10.0 if train else 0.0
        return -100.0 if train else -100.0 + clock[0]  # always improving

    monkeypatch.setattr(vae_training, "_epoch", fake_epoch)
    monkeypatch.setattr(vae_training, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    cfg = vx.VAEConfig(max_epochs=10, patience=2)
    splits, quiet = _fake_splits(20), lambda *_: None
    _, state = vx.train(cfg, tmp_path, splits=splits, log=quiet, time_limit=25.0)
    # epochs 1 and 2 end at 10 and 20 s; a third would end at 30 > 25
    assert state["epoch"] == 2 and not state["done"]
    _, state = vx.train(cfg, tmp_path, splits=splits, log=quiet, time_limit=5.0)
    assert state["epoch"] == 3  # the first epoch of an invocation always runs
    _, state = vx.train(cfg, tmp_path, splits=splits, log=quiet)
    assert state["epoch"] == 10 and state["done"]


def test_eval_if_complete_waits_for_the_end_of_training(tmp_path, monkeypatch):
    monkeypatch.setattr(vae_cli, "load_binarized", lambda *a, **k: _fake_splits(100))
    out = tmp_path / "out" / "mnist-gaussian-seed0-smoke.json"
    argv = ["--budget", "smoke", "--runs-dir", str(tmp_path / "runs"), "--out-dir"]
    argv += [str(tmp_path / "out"), "--test-k", "5", "--test-limit", "10", "--eval-if-complete"]
    vx.main(argv + ["--epochs", "0"])  # training unfinished: nothing evaluated or written
    assert not out.exists()
    vx.main(argv)  # trains to the end of the (one-epoch) smoke budget, then evaluates
    rec = json.loads(out.read_text())
    assert rec["complete"] and rec["epochs_run"] == 1 and "metrics" in rec


def test_command_line_writes_result(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(vae_cli, "load_binarized", lambda *a, **k: _fake_splits(100))
    argv = [
        "--posterior",
        "nsf",
        "--budget",
        "smoke",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--out-dir",
        str(tmp_path / "out"),
        "--test-k",
        "5",
        "200",
        "--test-limit",
        "20",
        "--large-k-limit",
        "8",
    ]
    assert vx.main(argv) == 0
    rec = json.loads((tmp_path / "out" / "mnist-nsf-seed0-smoke.json").read_text())
    assert rec["budget"] == "smoke" and rec["epochs_run"] == 1 and rec["complete"]
    assert rec["provenance"]["config"]["posterior"] == "nsf"
    assert {"git_commit", "torch_version", "device", "date"} <= rec["provenance"].keys()
    assert rec["provenance"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    m = rec["metrics"]
    assert m["test_images"] == 20 and m["test_iw_k200"]["images"] == 8
    assert m["test_iw_k5"]["mean"] > m["test_elbo"]["mean"] - 3 * m["test_elbo"]["stderr"]
    assert "mnist-nsf-seed0-smoke" in capsys.readouterr().out


def test_gap_estimates_run():
    torch.manual_seed(0)
    vae = make_vae("cif-nsf")
    x = (torch.rand(2, 1, 28, 28) < 0.3).float()
    mean, se = vx.auxiliary_gap(vae, x, num_z=2, num_u=5)
    assert np.isfinite(mean) and se >= 0
    mean, se = vx.amortization_gap(vae, x, steps=2, num_samples=2, eval_samples=10)
    assert np.isfinite(mean)


def test_amortization_gap_curve_reads_one_refinement_along_the_way():
    torch.manual_seed(0)
    vae = make_vae("gaussian")
    before = [p.detach().clone() for p in vae.parameters()]
    x = (torch.rand(3, 1, 28, 28) < 0.3).float()
    kw = dict(num_samples=2, eval_samples=20)
    torch.manual_seed(1)
    single = vx.amortization_gap(vae, x, steps=4, **kw)
    torch.manual_seed(1)
    assert vx.amortization_gap_curve(vae, x, [4], **kw) == {4: single}  # draw for draw
    torch.manual_seed(1)
    curve = vx.amortization_gap_curve(vae, x, (4, 0, 2), **kw)
    assert list(curve) == [0, 2, 4] and all(np.isfinite(m) and s >= 0 for m, s in curve.values())
    # the trained model is left as it was: each image refines its own copy
    assert all(torch.equal(a, b) for a, b in zip(before, vae.parameters()))
    with pytest.raises(ValueError, match="steps"):
        vx.amortization_gap_curve(vae, x, [-1])


def test_real_loader_feeds_the_model(tmp_path):
    from cifutils.data import DataNotFoundError, load_binarized

    try:
        splits = load_binarized("mnist", limit=50, download=False)
    except DataNotFoundError:
        pytest.skip("MNIST files not present (set CIFUTILS_DATA)")
    x = next(splits.train.batches(10))
    assert x.shape == (10, 1, 28, 28) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert make_vae("gaussian").elbo(x).shape == (10,)


def test_fast_r_net_equals_the_convolutional_one():
    from cifutils.experiments.vae.fast_layers import FastImageRNet

    torch.manual_seed(0)
    slow = ImageRNet(20, 2).double()
    fast = accelerate(copy.deepcopy(slow))
    assert type(fast) is FastImageRNet
    w = torch.randn(30, 20, dtype=torch.float64)
    x = (torch.rand(30, 1, 28, 28) < 0.4).double()
    torch.testing.assert_close(fast(w, x), slow(w, x))
    g0 = torch.autograd.grad(slow(w, x).pow(2).sum(), list(slow.parameters()))
    g1 = torch.autograd.grad(fast(w, x).pow(2).sum(), list(fast.parameters()))
    for a, b in zip(g0, g1):
        torch.testing.assert_close(b, a)
    x[:, :, :14] = 1 - x[:, :, :14]  # in place: the cached patches must not be reused
    torch.testing.assert_close(fast(w, x), slow(w, x))


@pytest.mark.parametrize("samples", [1, 4])
def test_grouped_r_networks_equal_the_convolutional_ones(samples):
    """A flow of fast r-networks prepares the image parts of all layers at once, per image
    rather than per sample: the same weights, values and gradients as the convolutions."""
    from cifutils.experiments.vae.fast_layers import ImageContext

    torch.manual_seed(0)
    slow = make_vae("cif-nsf", fast=False).double()
    fast = make_vae("cif-nsf").double()
    fast.load_state_dict(slow.state_dict())
    x = (torch.rand(5, 1, 28, 28) < 0.3).double()
    contexts = fast.posterior._cif_contexts(x, samples)
    assert len(contexts) == 10 and all(isinstance(c, ImageContext) for c in contexts)
    assert contexts[0].image.shape == (5, 196, 8)  # per image, not per sample
    per_layer = make_vae("cif-nsf").double()
    per_layer.load_state_dict(slow.state_dict())
    per_layer.posterior.group_contexts = False
    assert torch.equal(
        per_layer.posterior._cif_contexts(x, samples)[0], x.repeat_interleave(samples, 0)
    )
    grads = []
    for vae in (slow, fast, per_layer):
        torch.manual_seed(1)
        loss = vae.log_weights(x, samples).pow(2).mean()
        grads.append([loss, *torch.autograd.grad(loss, list(vae.parameters()))])
    for a, b, c in zip(*grads):
        torch.testing.assert_close(b, a)
        torch.testing.assert_close(c, a)


def test_fast_encoder_and_decoder_equal_the_convolutional_ones():
    """The matrix-product encoder and decoder give the convolutions' outputs and gradients
    (parameters and, for the decoder, its input), and the same function after training
    moves the weights away from their initialization."""
    from cifutils.experiments.vae.fast_layers import FastDecoder, FastEncoder
    from cifutils.experiments.vae.networks import Decoder, Encoder

    torch.manual_seed(0)
    x = (torch.rand(12, 1, 28, 28) < 0.4).double()
    z = torch.randn(12, 20, dtype=torch.float64, requires_grad=True)
    for slow, inputs, cls in (
        (Encoder(20).double(), x, FastEncoder),
        (Decoder(20).double(), z, FastDecoder),
    ):
        with torch.no_grad():
            for p in slow.parameters():
                p.add_(0.3 * torch.randn_like(p))
        fast = accelerate(copy.deepcopy(slow))
        assert type(fast) is cls
        y0, y1 = slow(inputs), fast(inputs)
        assert y1.shape == y0.shape
        torch.testing.assert_close(y1, y0)
        weights = torch.randn_like(y0)
        wrt0 = list(slow.parameters()) + ([z] if inputs is z else [])
        wrt1 = list(fast.parameters()) + ([z] if inputs is z else [])
        g0 = torch.autograd.grad((y0 * weights).sum(), wrt0)
        g1 = torch.autograd.grad((y1 * weights).sum(), wrt1)
        for a, b in zip(g0, g1):
            torch.testing.assert_close(b, a)


def test_flat_adam_is_adam_and_reads_its_checkpoints():
    """FlatAdam's updates are plain Adam's; its state dict is plain Adam's format both ways
    (a checkpoint of either resumes with the other); zeroing keeps the gradient views."""
    from cifutils.training import FlatAdam

    torch.manual_seed(0)
    ref = make_vae("nsf", layers=2, hidden=8)
    flat_vae = copy.deepcopy(ref)
    plain, flat = torch.optim.Adam(ref.parameters(), lr=1e-2, fused=True), FlatAdam(flat_vae, 1e-2)
    x = (torch.rand(8, 1, 28, 28) < 0.3).float()
    for step in range(4):
        for vae, opt in ((ref, plain), (flat_vae, flat)):
            torch.manual_seed(step)
            loss = -vae.elbo(x).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    assert all(p.grad is not None for p in flat_vae.parameters())  # still views of flat.grad
    moved = [(a - b).abs().max().item() for a, b in zip(ref.parameters(), flat_vae.parameters())]
    assert max(moved) < 1e-5
    start = [p.detach().clone() for p in make_vae("nsf", layers=2, hidden=8).parameters()]
    assert max((a - b).abs().max().item() for a, b in zip(start, flat_vae.parameters())) > 1e-3

    saved = flat.state_dict()
    assert saved["param_groups"][0]["params"] == list(range(len(list(ref.parameters()))))
    for i, s in plain.state_dict()["state"].items():
        for key in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(saved["state"][i][key], s[key], atol=1e-5, rtol=1e-4)
    other = FlatAdam(copy.deepcopy(ref), 1e-2)
    other.load_state_dict(plain.state_dict())  # an old checkpoint's plain Adam state
    torch.testing.assert_close(
        other.optimizer.state[other.flat]["exp_avg"],
        torch.cat([s["exp_avg"].reshape(-1) for s in plain.state_dict()["state"].values()]),
    )
    back = torch.optim.Adam(copy.deepcopy(ref).parameters(), lr=1e-2, fused=True)
    back.load_state_dict(saved)  # and the other way round
    with pytest.raises(ValueError, match="does not match"):
        FlatAdam(make_vae("gaussian"), 1e-2).load_state_dict(saved)


def test_compiled_training_loss_equals_eager(needs_a_compiler):
    """The whole CIF-VAE loss through torch.compile (one graph: ``fullgraph=True`` fails on
    any graph break) gives the eager loss and gradients, on two different batches. (The
    compiled code draws its noise with its own generator unless told to use eager's.)"""
    from torch._inductor import config

    torch.manual_seed(0)
    vae = make_vae("cif-nsf", layers=2, hidden=8)
    eager, compiled = vx.training_loss(vae), vx.training_loss(vae, compiled=True)
    params = list(vae.parameters())
    with config.patch(fallback_random=True):
        for seed in (1, 2):
            x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) < 0.3
            x = x.float()
            torch.manual_seed(seed)
            l1 = compiled(x)
            g1 = torch.autograd.grad(l1, params)
            torch.manual_seed(seed)
            l0 = eager(x)
            g0 = torch.autograd.grad(l0, params)
            torch.testing.assert_close(l1, l0, atol=1e-4, rtol=1e-4)
            for a, b in zip(g1, g0):
                torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


def test_compiled_training_is_recorded(tmp_path, needs_a_compiler):
    cfg = vx.VAEConfig(posterior="gaussian", max_epochs=1, batch_size=50)
    _, state = vx.train(cfg, tmp_path, splits=_fake_splits(100), log=lambda *_: None, compiled=True)
    assert state["devices"] == {"cpu (torch.compile)": 1}
    assert np.isfinite(state["history"]["train_elbo"][0])


def test_default_runs_dir(tmp_path, monkeypatch):
    root = Path(vae_config.__file__).resolve().parents[3]
    assert vx.default_runs_dir() == root / "runs" / "vae"  # in this checkout
    monkeypatch.setattr(
        vae_config, "__file__", str(tmp_path / "site-packages/cifutils/experiments/vae/config.py")
    )
    monkeypatch.chdir(tmp_path)  # an installed package: the working directory's runs/vae
    assert vx.default_runs_dir() == tmp_path / "runs" / "vae"


@pytest.mark.parametrize("side_by_side", [False, True])
def test_train_together_returns_the_best_weights_of_each_run(tmp_path, monkeypatch, side_by_side):
    """Both ways of training the chapter's live runs (one after the other, or side by side as
    on a GPU, here eagerly on the CPU) train every run to its end and return the VAE with
    the weights that the checkpoint keeps as the best."""
    from cifutils.experiments.vae import multi as vae_multi

    splits = _fake_splits(100)
    monkeypatch.setattr(vae_multi, "load_binarized", lambda name, limit=None: splits)
    cfgs = [
        vx.VAEConfig(posterior=p, max_epochs=2, patience=5, batch_size=50)
        for p in ("gaussian", "cif-nsf")
    ]
    quiet = lambda *_: None  # noqa: E731
    out = vx.train_together(cfgs, tmp_path, "cpu", splits, side_by_side=side_by_side, log=quiet)
    assert list(out) == [c.name for c in cfgs]
    for cfg in cfgs:
        vae, state = out[cfg.name]
        assert state["done"] and state["epoch"] == 2 and not vae.training
        best = load_checkpoint(tmp_path / cfg.name / "checkpoint.pt")["best_model"]
        for name, value in vae.state_dict().items():
            assert torch.equal(value, best[name]), name


def test_train_many_matches_the_single_run_format(tmp_path, monkeypatch):
    """Runs trained together (eagerly on the CPU) leave checkpoints the single-run loop
    resumes, stop at the epoch cap, and keep one history entry per epoch."""
    from cifutils.experiments.vae import multi as vae_multi

    splits = {"mnist": _fake_splits(100, 0), "fashion-mnist": _fake_splits(120, 1)}
    monkeypatch.setattr(vae_multi, "load_binarized", lambda name, limit=None: splits[name])
    cfgs = [
        vx.VAEConfig(dataset="mnist", posterior="cif-nsf", max_epochs=2, patience=5, batch_size=50),
        vx.VAEConfig(dataset="fashion-mnist", posterior="gaussian", max_epochs=3, batch_size=50),
    ]
    states = vae_multi.train_many(cfgs, tmp_path, "cpu", log=lambda *_: None)
    assert [states[c.name]["epoch"] for c in cfgs] == [2, 3]
    for cfg in cfgs:
        st = states[cfg.name]
        assert st["done"] and len(st["history"]["val_elbo"]) == st["epoch"]
        assert st["devices"] == {"cpu": st["epoch"]}
        assert all(np.isfinite(st["history"]["train_elbo"]))
    # the gaussian run's ELBO improves over its three epochs of training
    hist = states[cfgs[1].name]["history"]["train_elbo"]
    assert hist[-1] > hist[0]
    # the single-run loop picks a checkpoint up: one more epoch after raising the cap
    more = vx.VAEConfig(**{**dataclasses.asdict(cfgs[0]), "max_epochs": 3})
    with pytest.raises(ValueError, match="other settings"):
        vx.train(more, tmp_path / cfgs[0].name, splits=splits["mnist"], log=lambda *_: None)
    _, st = vx.train(cfgs[0], tmp_path / cfgs[0].name, splits=splits["mnist"], log=print)
    assert st["epoch"] == 2 and st["done"]  # already done: nothing more to run
    # a time limit of zero runs no epoch, and duplicate runs are refused
    fresh = [vx.VAEConfig(posterior="gaussian", seed=5, max_epochs=2, batch_size=50)]
    states = vae_multi.train_many(fresh, tmp_path, "cpu", time_limit=0.0, log=lambda *_: None)
    assert states[fresh[0].name]["epoch"] == 0
    with pytest.raises(ValueError, match="distinct"):
        vae_multi.train_many(fresh * 2, tmp_path, "cpu")
    with pytest.raises(ValueError, match="CUDA"):
        vae_multi.train_many(fresh, tmp_path, "cpu", graphs=True)


def test_log_of_many_runs_is_read_back(tmp_path):
    from cifutils.experiments.vae import figures as plotting
    from cifutils.experiments.vae import multi as vae_multi

    log = (
        "2 runs ready on cuda in 1.0 s\n"
        "epoch done in 1.0 s (2 active); val ELBO: mnist-nsf-seed0 -130.5, mnist-nsf-seed1 -129.4\n"
        "epoch done in 1.0 s (2 active); val ELBO: mnist-nsf-seed0 -120.0, mnist-nsf-seed1 -121.0\n"
        "time limit: stopping after 2 s\n"
        "mnist-nsf-seed0-paper: 2 epochs, best -120.00 (epoch 2), partial\n"
        "mnist-nsf-seed1-paper: 2 epochs, best -121.00 (epoch 2), done\n"
    )
    runs = vae_multi.parse_log(log)
    assert runs["mnist-nsf-seed0-paper"]["val_elbo"] == [-130.5, -120.0]
    assert (
        runs["mnist-nsf-seed1-paper"]["complete"] and not runs["mnist-nsf-seed0-paper"]["complete"]
    )
    table = vx.validation_table(runs)
    assert table.loc[0, "best validation ELBO"] == "-120.50 ± 0.71" and table.loc[0, "seeds"] == 2
    ax = plotting.plot_validation_curves(runs, "mnist")
    assert len(ax.lines) == 2 and ax.get_xlabel() == "epoch"
    with pytest.raises(ValueError, match="finished early"):
        vae_multi.parse_log(log.replace("(2 active)", "(1 active)", 1))
    with pytest.raises(ValueError, match="epochs logged"):
        vae_multi.parse_log(log.replace("2 epochs, best -120.00", "3 epochs, best -120.00"))
    # the summary a training call writes holds the same fields
    states = {"mnist-nsf-seed0-paper": vx.new_state()}
    rec = vae_multi.summary(states, "cpu", "python -m cifutils.experiments vae-many")
    assert rec["runs"]["mnist-nsf-seed0-paper"]["epochs"] == 0
    assert rec["provenance"]["config"]["command"].endswith("vae-many")


def test_image_patches_are_computed_once_per_image(monkeypatch):
    """The encoder and the r-networks of the ten CIF layers share one im2col of the images
    (not of their rows repeated per sample); the same unchanged images passed again reuse
    it, and a changed image (new tensor or an in-place write) is never served stale patches."""
    from cifutils.experiments.vae import fast_layers as fast

    torch.manual_seed(0)
    vae = make_vae("cif-nsf")
    slow = make_vae("cif-nsf", fast=False)
    slow.load_state_dict(vae.state_dict())
    calls = []
    unfold = fast.F.unfold
    monkeypatch.setattr(fast.F, "unfold", lambda *a, **k: calls.append(1) or unfold(*a, **k))
    monkeypatch.setattr(fast, "_UPSAMPLED_PATCHES", {})  # as in a fresh process

    def check(images, samples=1):
        torch.manual_seed(1)
        got = vae.log_weights(images, samples)
        torch.manual_seed(1)
        torch.testing.assert_close(got, slow.log_weights(images, samples), atol=1e-4, rtol=1e-4)

    x = (torch.rand(6, 1, 28, 28) < 0.3).float()
    check(x)
    assert len(calls) == 2  # the constant unit maps' patches (first call only), the images'
    check(x, 5)
    assert len(calls) == 2  # the same images: nothing recomputed
    other = 1 - x
    check(other, 3)  # a new image tensor
    other.mul_(0.0)
    check(other)  # the same tensor changed in place
    assert len(calls) == 4  # once per new or changed batch (the slow model convolves)


def _bench_vae():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "bench_vae.py"
    spec = importlib.util.spec_from_file_location("bench_vae", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_flop_counts_of_the_benchmark():
    """Chapter 6 explains the CIF-NSF's cost by its arithmetic: the benchmark's count must
    show more than twice the NSF's matrix-product FLOPs (the r-networks on the image)."""
    bench = _bench_vae()
    flops = {kind: bench.step_flops(kind) for kind in ("gaussian", "nsf", "cif-nsf")}
    assert flops["gaussian"] < flops["nsf"] < flops["cif-nsf"]
    assert 2.0 < flops["cif-nsf"] / flops["nsf"] < 3.5, flops


def test_benchmark_compares_grouped_and_per_layer_r_networks(capsys):
    _bench_vae().compare_grouping(steps=1, repeats=2, images=2, compiled=False)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" grouped ")[0].strip() for line in lines] == [
        "train, fast layers",
        "eval, K=100",
    ]
    assert all("per layer / grouped, paired: median" in line for line in lines)


def _record(dataset, posterior, seed, epochs, k100, k1000=None, stopped=False):
    metrics = {"test_images": 10_000, "test_iw_k100": {"mean": k100, "stderr": 0.2}}
    if k1000 is not None:
        metrics["test_iw_k1000"] = {"mean": k1000, "stderr": 0.2, "images": 1000}
    return {
        "dataset": dataset,
        "posterior": posterior,
        "seed": seed,
        "epochs_run": epochs,
        "best_epoch": epochs - 50 if stopped else epochs,
        "complete": stopped,
        "stopped_early": stopped,
        "train_devices": {"cpu": epochs},
        "provenance": {"config": {"max_epochs": 1000}, "device": "cpu"},
        "metrics": metrics,
        "history": {"val_elbo": [-100.0] * epochs},
    }


def test_continued_comparison_reads_gains_and_leads():
    def row(posterior, mean, seed=0):
        return {"dataset": "mnist", "posterior": posterior, "mean": mean, "seed": seed}

    short = [row("gaussian", -98.0), row("gaussian", -97.0), row("nsf", -95.0)]
    unfinished = {**row("nsf", -80.0, seed=1), "complete": False}  # stopped by a time limit
    long = [row("gaussian", -96.0), row("nsf", -91.0), unfinished]
    lines = vx.continued_comparison(long, short)
    assert len(lines) == 3  # no CIF-NSF and no Fashion-MNIST runs: no lines for them
    assert lines[0].startswith(
        "mnist gaussian, 1 run(s) trained longer (seed 0): -96.00 nats, +1.50 "
    )
    assert "-8.63 from the slides" in lines[0]  # slides: -87.37
    assert lines[1].startswith("mnist nsf, 1 run(s) trained longer (seed 0): -91.00 nats")
    assert lines[2].startswith("mnist: nsf - gaussian = +5.00 nats trained longer (one seed each")
    assert "+2.50 at 63" in lines[2] and lines[2].endswith("+4.42 in the slides")
    # a second finished NSF seed: the cell's mean, its seeds and how far apart they are
    lines = vx.continued_comparison([*long, row("nsf", -91.5, seed=2)], short)
    assert lines[1].startswith(
        "mnist nsf, 2 run(s) trained longer (seeds 0, 2, 0.50 apart): -91.25"
    )
    assert "= +4.75 nats trained longer (seeds of a cell up to 0.50 apart)" in lines[2]


def test_continued_summary_gives_the_figures_the_prose_quotes():
    def row(posterior, mean, seed=0, epochs=300, dataset="mnist", early=True):
        return {
            "dataset": dataset,
            "posterior": posterior,
            "mean": mean,
            "seed": seed,
            "epochs": epochs,
            "stopped_early": early,
            "complete": True,
        }

    short = [row("gaussian", -98.0), row("nsf", -95.0), row("cif-nsf", -94.0)]
    long = [
        row("gaussian", -96.0, epochs=400),
        row("gaussian", -96.4, seed=1, epochs=250),
        row("nsf", -91.0),
        row("nsf", -91.3, seed=2),
        row("cif-nsf", -90.9, epochs=1000, early=False),  # ran to the cap
        {**row("cif-nsf", -80.0, seed=1), "complete": False},  # not finished: left out
        row("gaussian", -239.0, dataset="fashion-mnist"),
    ]
    s = vx.continued_summary(long, short)
    assert (s["runs"], s["early"], s["cap"]) == (6, 5, 1)
    assert (s["early_min"], s["early_max"]) == (250, 400)
    # gaussian 400 vs 250 epochs: the longer ends higher; the NSF seeds trained equally long
    assert (s["pairs"], s["longer_higher"]) == (1, 1)
    assert s["gain_min"] == pytest.approx(1.8)  # gaussian: -96.2 against -98.0
    assert s["gain_max"] == pytest.approx(3.85)  # nsf: -91.15 against -95.0
    assert s["mnist_gauss_below"] == pytest.approx(96.2 - 87.37)
    # each cell's distance below the slides: gaussian 8.83, nsf 8.20, cif-nsf 8.68
    assert s["mnist_below_min"] == pytest.approx(91.15 - 82.95)
    assert s["mnist_below_max"] == pytest.approx(96.2 - 87.37)
    assert s["mnist_gauss_spread"] == pytest.approx(0.4)
    assert s["mnist_nsf_lead"] == pytest.approx(5.05)
    assert s["mnist_nsf_lead_slides"] == pytest.approx(4.42)
    assert s["mnist_cif_lead"] == pytest.approx(0.25)
    assert s["mnist_cif_lead_slides"] == pytest.approx(0.73)
    assert (s["mnist_nsf_seeds"], s["mnist_cif_seeds"]) == (2, 1)
    assert s["mnist_flow_spread"] == pytest.approx(0.3)
    assert s["mnist_cif_vs_spread"] == "no larger than"  # +0.25 against 0.3
    wider = vx.continued_summary([*long, row("cif-nsf", -89.9, seed=2)], short)
    assert wider["mnist_cif_lead"] == pytest.approx(0.75) and wider[
        "mnist_flow_spread"
    ] == pytest.approx(1.0)
    assert wider["mnist_cif_vs_spread"] == "no larger than"
    one_each = vx.continued_summary([long[0], long[2], long[4]], short)  # lead +0.10, no spread
    assert one_each["mnist_cif_vs_spread"] == "larger than"
    # Fashion-MNIST has only a Gaussian run: its distance, no leads
    assert s["fashion_gauss_spread"] == 0.0 and "fashion_nsf_lead" not in s
    assert "fashion_flow_spread" not in s
    # without shorter runs to compare with: the same figures, but no gains
    alone = vx.continued_summary(long)
    assert "gain_min" not in alone and "gain_max" not in alone
    assert alone["mnist_cif_lead"] == pytest.approx(s["mnist_cif_lead"])
    assert (alone["runs"], alone["pairs"]) == (6, 1)
    # the comparison lines read the same cells
    lines = vx.continued_comparison(long, short)
    assert "cif-nsf - nsf = +0.25 nats" in "\n".join(lines)


def test_amortization_table_and_summary_read_live_and_committed_gaps():
    live = {
        "gaussian": {5: (2.0, 0.5), 10: (3.0, 0.4)},
        "nsf": {5: (0.5, 0.3), 10: (1.5, 0.3)},
        "cif-nsf": {5: (1.0, 0.6), 10: (2.5, 0.5)},
    }

    def row(dataset, posterior, mean, seed):
        return {"dataset": dataset, "posterior": posterior, "mean": mean, "seed": seed}

    rows = [
        row("mnist", "gaussian", 5.0, 0),
        row("mnist", "gaussian", 4.0, 1),
        row("mnist", "nsf", 4.0, 0),
        row("mnist", "nsf", 4.2, 1),
        row("mnist", "cif-nsf", 4.5, 0),
        row("mnist", "cif-nsf", 4.3, 1),
        row("fashion-mnist", "gaussian", 2.0, 0),  # no flows: left out of the summary
        row("fashion-mnist", "nsf", 1.0, 0),
        row("fashion-mnist", "nsf", 1.4, 1),
    ]
    rows = [{**r, "test_images": 10, "steps": 50, "stderr": 0.25} for r in rows]
    table = vx.amortization_table(live, 8, "live, smoke", "mnist", {"63 epochs": rows})
    assert table.index.names == ["models", "dataset"] and list(table["steps"]) == [5, 10, 50, 50]
    assert list(table.loc[("live, smoke", "mnist"), "nsf"]) == ["0.50 ± 0.30", "1.50 ± 0.30"]
    first = table.loc[("63 epochs", "mnist")]
    assert (first["gaussian"], first["nsf"], first["images"]) == ("4.50 ± 0.71", "4.10 ± 0.14", 10)
    assert first["±"] == "std. deviation over seeds 0, 1"
    fashion = table.loc[("63 epochs", "fashion-mnist")]  # one seed: ± its standard error
    assert (fashion["gaussian"], fashion["nsf"]) == ("2.00 ± 0.25", "1.20 ± 0.28")
    assert fashion["cif-nsf"] == "not trained yet"
    assert fashion["±"] == "std. deviation over seeds 0, 1; a single run: std. error over images"
    alone = vx.amortization_table(live, 8, "live", "mnist", {"one": rows[-3:-2]})
    assert alone.loc[("one", "fashion-mnist"), "±"] == "std. error over images (one run: seed 0)"
    s = vx.amortization_summary(live, 8, {"63 epochs": rows})
    assert (s["gap_images"], s["gap_first_steps"], s["gap_steps"]) == (8, 5, 10)
    assert (s["gap_nsf"], s["gap_nsf_se"], s["gap_rise_cif"]) == (1.5, 0.3, 1.5)
    # 3.0 - 1.5 > 2 * hypot(0.4, 0.3) = 1.0, but 3.0 - 2.5 is not
    assert (s["gap_live_verdict"], s["gap_live_claim"]) == ("do not both lie", "does not show it")
    live["cif-nsf"][10] = (1.0, 0.3)
    s2 = vx.amortization_summary(live, 8, {})
    assert (s2["gap_live_verdict"], s2["gap_live_claim"]) == ("both lie", "does not show it")
    live["nsf"][5], live["cif-nsf"][5] = (1.3, 0.3), (0.8, 0.3)  # both rose by 0.2 < 0.3
    assert vx.amortization_summary(live, 8, {})["gap_live_claim"] == "shows it"
    assert (s["gap_flows_below"], s["gap_flow_cases"]) == (2, 2)
    assert (s["gap_flow_lead_min"], s["gap_flow_lead_max"]) == pytest.approx((0.1, 0.4))
    assert (s["gap_cif_below"], s["gap_cif_cases"]) == (0, 1)


def test_committed_amortization_gaps_are_read_for_every_run():
    committed = vx.committed_amortization_gaps()
    assert list(committed)[-1] == "CPU edition"  # the Table-1 architecture's, once it has some
    rows = committed["CPU edition"]  # the command line's --gap-images 10 --amortization-steps 50
    assert len(rows) == 18 and {(r["test_images"], r["steps"]) for r in rows} == {(10, 50)}


def test_amortization_gaps_of_a_block_without_estimates_are_left_out(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFUTILS_RESULTS", str(tmp_path))
    (tmp_path / "vae" / "long").mkdir(parents=True)
    rec = _record("mnist", "nsf", 0, 300, -91.0, stopped=True)
    rec["metrics"]["amortization_gap"] = {"mean": 2.5, "stderr": 0.5, "images": 10, "steps": 50}
    (tmp_path / "vae" / "long" / "mnist-nsf-seed0-paper.json").write_text(json.dumps(rec))
    committed = vx.committed_amortization_gaps()
    assert list(committed) == ["CPU edition"]  # no Table-1 architecture runs: left out
    (row,) = committed["CPU edition"]
    assert (row["mean"], row["test_images"], row["steps"]) == (2.5, 10, 50)


def test_ordering_lines_need_two_seeds_in_every_cell():
    def row(dataset, posterior, mean, seed):
        return {"dataset": dataset, "posterior": posterior, "mean": mean, "seed": seed}

    rows = [
        row("mnist", "gaussian", -96.0, 0),
        row("mnist", "gaussian", -96.2, 1),
        row("mnist", "nsf", -92.0, 0),
        row("mnist", "nsf", -91.0, 1),
        row("mnist", "cif-nsf", -91.25, 0),
        row("mnist", "cif-nsf", -91.75, 2),
        row("fashion-mnist", "gaussian", -239.0, 0),  # one cell only: no line
        row("fashion-mnist", "gaussian", -239.2, 1),
    ]
    (line,) = vx.ordering_lines(rows, nsf_gain=True)
    assert line.startswith("mnist: Gaussian < NSF < CIF-NSF as in Table 1: False; ")
    assert "CIF-NSF - NSF = +0.00 nats (seed std 0.71 and 0.35)" in line
    assert line.endswith("NSF - Gaussian = +4.60 nats")
    rows[4]["mean"] = -90.75  # now the CIF-NSF leads
    assert (
        ": True; CIF-NSF - NSF = +0.25 nats (seed std 0.71 and 0.71)"
        in vx.ordering_lines(rows[:6])[0]
    )
    assert vx.ordering_lines(rows[:5]) == []  # the CIF-NSF cell has one seed


def test_table1_and_the_continued_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFUTILS_RESULTS", str(tmp_path))
    (tmp_path / "vae" / "long").mkdir(parents=True)
    for seed, value in enumerate([-98.0, -97.0, -99.0]):
        rec = _record("mnist", "gaussian", seed, 63, value)
        (tmp_path / "vae" / f"mnist-gaussian-seed{seed}-paper.json").write_text(json.dumps(rec))
    rec = _record("mnist", "gaussian", 0, 400, -90.5, k1000=-90.0, stopped=True)
    (tmp_path / "vae" / "long" / "mnist-gaussian-seed0-paper.json").write_text(json.dumps(rec))

    short = vx.collect_results()
    assert [r["seed"] for r in short] == [0, 1, 2] and not any(r["complete"] for r in short)
    table = vx.table1(short).set_index(["dataset", "posterior"])
    assert table.loc[("mnist", "gaussian"), "ours"] == "-98.00 ± 1.00"
    assert table.loc[("mnist", "nsf"), "ours"] == "not run"
    assert table.loc[("mnist", "gaussian"), "run"] == (
        "paper; 3 seed(s); 63, 63, 63 of 1000 epochs; 10,000 test images; trained on cpu"
    )
    # devices are named once per cell, however the runs split their epochs between them
    mixed = [{**r, "trained_on": on} for r, on in zip(short, ["cpu, cuda", "cuda", "cpu"])]
    assert vx.table1(mixed)["run"][0].endswith("trained on cpu, cuda")

    long = vx.collect_results(folder="vae/long")
    assert len(long) == 1 and long[0]["stopped_early"] and long[0]["best_epoch"] == 350
    assert len(long[0]["val_elbo"]) == 400
    large = vx.collect_results(folder="vae/long", metric="test_iw_k1000")
    row = vx.continued_table(long, short, large).iloc[0]
    assert row["epochs"] == "400 of 1000 (early stop)" and row["best epoch"] == 350
    assert row["K=100"] == "-90.50 ± 0.20" and row["K=1000"] == "-90.00 (1,000 images)"
    assert row["Table 1 cell"] == "-98.00 (63, 63, 63 epochs)" and row["slides"] == "-87.37"
    import matplotlib.pyplot as plt

    from cifutils.experiments.vae import figures as plotting

    fig, ax = plt.subplots()
    assert plotting.plot_continued_runs(long, "mnist", ax=ax) is ax
    assert len(ax.lines[0].get_xdata()) == 391 and ax.get_xlabel() == "epoch"
    assert list(ax.lines[1].get_xdata()) == [350]  # the best epoch
    plt.close(fig)


def test_evaluation_reports_the_ess_of_its_importance_sampled_estimates():
    torch.manual_seed(0)
    vae = make_vae("cif-nsf").eval()
    cfg = vx.VAEConfig(posterior="cif-nsf", test_k=[5], test_limit=6, gap_images=2)
    m = vx.evaluate(vae, cfg, _fake_splits(20))
    for key, k in (("test_iw_k5", 5), ("aux_vs_marginal_gap", 50)):
        report = m[key]["ess"]
        assert report["samples"] == k and 1 <= report["min"] <= report["median"] <= k
    json.dumps(m)
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.3))
    torch.manual_seed(1)
    mean, _, bounds = iw_log_likelihood(vae, x, 7, chunk_size=3)
    torch.manual_seed(1)
    mean2, _, bounds2, ess = iw_log_likelihood(vae, x, 7, chunk_size=3, return_ess=True)
    assert mean == mean2 and torch.equal(bounds, bounds2) and ess.shape == (4,)
