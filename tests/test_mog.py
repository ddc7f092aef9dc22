"""Tests of the Gaussian-mixture experiment (cifutils.experiments.mog): CLI, resume, provenance,
metrics."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from cifutils.experiments import mog
from cifutils.experiments.mog import estimators as mog_estimators
from cifutils.targets import get_target


def tiny(model: str = "cif-nsf", sigma0: float = 1.0, seed: int = 0, **kw) -> mog.MogConfig:
    sizes = dict(
        steps=6,
        batch=64,
        eval_samples=400,
        marginal_points=40,
        marginal_u_samples=8,
        iw_k=20,
        stored_samples=50,
    )
    sizes.update(kw)
    return mog.MogConfig.from_budget(model, sigma0, seed, "smoke", **sizes)


def test_parameter_counts_match_the_paper():
    assert sum(p.numel() for p in mog.build_model("nsf", 1.0).parameters()) == 29_190
    assert sum(p.numel() for p in mog.build_model("cif-nsf", 1.0).parameters()) == 31_680
    with pytest.raises(ValueError, match="model"):
        mog.build_model("maf", 1.0)


def test_coverage_sums_to_one_and_kl_known_answers():
    target = get_target("mog9")
    frac, kl = mog.coverage(target, target.means.float())
    assert math.isclose(sum(frac), 1.0) and kl == pytest.approx(0.0, abs=1e-12)
    frac, kl = mog.coverage(target, torch.zeros(10, 2))
    assert math.isclose(sum(frac), 1.0) and kl == pytest.approx(math.log(9))


def test_downsample_curve_keeps_at_most_points():
    curve = mog.downsample_curve(range(1000), np.arange(1000.0), points=300)
    assert len(curve["step"]) == len(curve["elbo"]) == 300
    assert curve["step"][-1] == 999
    # Bin means of a ramp: increasing, the first bin is the mean of steps 0..3.
    assert np.all(np.diff(curve["elbo"]) > 0) and curve["elbo"][0] == pytest.approx(1.5)


def test_samples_round_trip():
    z = torch.tensor([[1.234, -0.5], [0.0, 2.0]])
    np.testing.assert_allclose(mog.decode_samples(mog.encode_samples(z)), [[1.23, -0.5], [0, 2]])


def test_resume_equals_uninterrupted(tmp_path):
    config = tiny()
    full, _ = mog.run_cell(config, tmp_path / "a.pt", checkpoint_every=2, progress=False)
    partial, _ = mog.run_cell(
        config, tmp_path / "b.pt", checkpoint_every=2, stop_after=3, progress=False
    )
    assert partial is None
    resumed, _ = mog.run_cell(config, tmp_path / "b.pt", checkpoint_every=2, progress=False)
    assert resumed["curve"] == full["curve"]
    assert resumed["metrics"] == full["metrics"]
    assert resumed["samples"] == full["samples"]


def test_checkpoint_of_another_config_is_refused(tmp_path):
    mog.run_cell(tiny(steps=2), tmp_path / "c.pt", progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        mog.run_cell(tiny(steps=2, seed=1), tmp_path / "c.pt", progress=False)


@pytest.mark.parametrize("model", mog.ABLATION)
def test_metrics_sanity(model):
    # A few more steps so that q is a reasonable proposal; sigma_0 = 1.
    config = tiny(
        model, steps=30, batch=128, eval_samples=2_000, marginal_points=200, marginal_u_samples=30
    )
    result, family = mog.run_cell(config, None, progress=False)
    m = result["metrics"]
    assert math.isclose(sum(m["coverage"]), 1.0, abs_tol=1e-4)
    assert 0 <= m["coverage_kl"] <= math.log(9) + 1e-9
    # The (auxiliary) ELBO lower-bounds log Z = 0 within Monte Carlo error.
    assert m["elbo"] <= 3 * m["elbo_se"]
    if model == "nsf":
        # Exact density: the marginal ELBO is the ELBO (different samples).
        assert abs(m["marginal_elbo"] - m["elbo"]) < 4 * math.hypot(
            m["elbo_se"], m["marginal_elbo_se"]
        )
    else:
        # marginal ELBO >= auxiliary ELBO, up to MC error (and the upward bias of the
        # finite-M estimator only helps).
        assert m["marginal_elbo"] >= m["elbo"] - 4 * math.hypot(m["elbo_se"], m["marginal_elbo_se"])
    for key in ("elbo", "marginal_elbo", "log_z_iw", "log_z_all"):
        assert math.isfinite(m[key])
    # The CIF's extras: s/t, q and r nets; the control adds a shift and a log-scale (2 x 2)
    # per layer to the NSF's 29,190.
    counts = {"cif-nsf": 31_680, "cif-nsf-af": 31_680, "affine-nsf": 29_210, "nsf": 29_190}
    assert result["num_parameters"] == counts[model]


def test_cli_writes_json_with_provenance(tmp_path, capsys):
    from cifutils.experiments import main

    args = [
        "mog",
        "--model",
        "nsf",
        "--sigma0",
        "10",
        "--seed",
        "1",
        "--budget",
        "smoke",
        "--steps",
        "3",
        "--results",
        str(tmp_path / "res"),
        "--runs",
        str(tmp_path / "runs"),
        "--threads",
        "1",
    ]
    assert main(args) == 0
    path = tmp_path / "res" / "mog" / "smoke" / "nsf_sigma10_seed1.json"
    result = json.loads(path.read_text())
    prov = result["provenance"]
    for key in ("git_commit", "device", "torch_version", "date", "config", "num_threads"):
        assert key in prov
    assert prov["config"]["steps"] == 3 and prov["config"]["sigma0"] == 10.0
    assert result["seed"] == 1 and result["budget"] == "smoke"
    assert result["samples"] is None  # only seed 0 keeps samples
    assert result["wall_seconds"] > 0 and len(result["curve"]["step"]) == 3
    assert (tmp_path / "runs" / "mog" / "smoke" / "nsf_sigma10_seed1.pt").exists()
    # A second call finds the result and skips the cell.
    assert main(args) == 0
    assert "skipped" in capsys.readouterr().out
    # Re-evaluating from the final checkpoint restores the RNG: the same metrics.
    assert main([*args, "--reevaluate"]) == 0
    again = json.loads(path.read_text())
    assert again["metrics"] == result["metrics"] and "reevaluated" in again
    assert 0 <= again["metrics"]["far_fraction"] <= 1


def test_cli_interrupted_run_resumes(tmp_path):
    from cifutils.experiments import main

    common = [
        "mog",
        "--model",
        "cif-nsf",
        "--budget",
        "smoke",
        "--steps",
        "4",
        "--checkpoint-every",
        "1",
        "--threads",
        "1",
        "--runs",
        str(tmp_path / "runs"),
    ]
    assert main(common + ["--results", str(tmp_path / "a")]) == 0
    assert (
        main(
            common
            + [
                "--results",
                str(tmp_path / "b"),
                "--runs",
                str(tmp_path / "r2"),
                "--stop-after",
                "2",
            ]
        )
        == 0
    )
    rel = "mog/smoke/cif-nsf_sigma1_seed0.json"
    assert not (tmp_path / "b" / rel).exists()
    assert main(common + ["--results", str(tmp_path / "b"), "--runs", str(tmp_path / "r2")]) == 0
    a = json.loads((tmp_path / "a" / rel).read_text())
    b = json.loads((tmp_path / "b" / rel).read_text())
    assert a["metrics"] == b["metrics"] and a["curve"] == b["curve"]


def test_estimator_study_shapes_and_bias_direction():
    torch.manual_seed(0)
    family = mog.build_model("cif-nsf", 1.0)
    study = mog.estimator_study(family, get_target("mog9"), [1, 16], reps=3)
    for key in ("aux_mean", "aux_std", "marg_N_mean", "marg_N_std", "marg_sqrtN_mean"):
        assert len(study[key]) == 2 and all(math.isfinite(v) for v in study[key])


def test_estimator_study_skips_what_exceeds_max_rows_and_plots_the_rest():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cifutils.experiments.mog.figures import (
        plot_estimator_differences,
        plot_estimator_study,
    )

    torch.manual_seed(0)
    family = mog.build_model("cif-nsf", 1.0)
    # N = 16: M = N needs 256 passes per repetition (skipped), M = sqrt(N) 64 (run)
    study = mog.estimator_study(family, get_target("mog9"), [1, 16], reps=2, max_rows=100)
    assert study["skipped"] == [{"rule": "N", "n": 16, "rows_per_rep": 256}]
    assert study["marg_N_mean"][1] is None and study["marg_N_std"][1] is None
    assert all(math.isfinite(v) for v in study["marg_sqrtN_mean"] + study["marg_N_mean"][:1])
    fig, (ax, ax2) = plt.subplots(1, 2)
    plot_estimator_study(study, ax)
    plot_estimator_differences(study, ax2)
    sizes = [len(bars.lines[0].get_xdata()) for bars in ax.containers]
    diff_sizes = [len(bars.lines[0].get_xdata()) for bars in ax2.containers]
    plt.close(fig)
    assert sizes == [2, 1, 2]  # auxiliary, M = N (drawn at N = 1 only), M = sqrt(N)
    assert diff_sizes == [1, 2]
    # the difference is paired: its mean is the difference of the two means
    for i in (0, 1):
        gap = study["marg_sqrtN_mean"][i] - study["aux_mean"][i]
        assert math.isclose(study["diff_sqrtN_mean"][i], gap, abs_tol=1e-9)


@pytest.mark.parametrize("chunk_rows", [1, 5, 64, 1000])
@pytest.mark.parametrize("m", [1, 7, 50])
def test_marginal_log_q_keeps_each_point_with_its_own_rows(chunk_rows, m):
    # A log weight that depends on the point only: log q_hat_M must give that value back
    # for every point, however the n * M rows are cut into calls (points per call, or
    # several calls per point when M > chunk_rows).
    calls = []

    def log_weights(rows):
        calls.append(rows.shape[0])
        return 3 * rows[:, 0] - rows[:, 1]

    z = torch.randn(9, 2, dtype=torch.float64)
    out = mog_estimators._marginal_log_q(log_weights, z, m, chunk_rows)
    torch.testing.assert_close(out, 3 * z[:, 0] - z[:, 1])
    assert max(calls) <= max(chunk_rows, m) and sum(calls) == 9 * m
    if m > chunk_rows:
        assert max(calls) == chunk_rows


def _study(tmp_path=None, **kw):
    torch.manual_seed(0)
    family = mog.build_model("cif-nsf", 1.0)
    cache = None if tmp_path is None else tmp_path / "study.jsonl"
    args = dict(ns=[1, 16, 64], reps=3, chunk_rows=50, seed=7, cache=cache)
    args.update(kw)
    return mog.estimator_study(family, get_target("mog9"), **args)


def test_study_values_are_what_the_lines_print():
    live = _study()  # computed here: no trained run to quote
    v = mog.study_values(live)
    lines = mog.study_lines(live)
    assert v["study_n"] == 64 and v["study_reps"] == 3
    assert f"auxiliary {v['study_aux']:.4f}, marginal {v['study_marg']:.4f}" in lines[0]
    assert f"paired difference {v['study_diff']:+.4f} (std {v['study_diff_std']:.4f})" in lines[0]
    assert f"{v['study_m_gap']:+.6f} (std {v['study_m_gap_std']:.6f})" in lines[2]
    assert math.isnan(v["study_eval_gap"]) and math.isnan(v["study_eval_gap_se"])
    committed = mog.committed_study(("paper", "book"))
    if committed is None:
        pytest.skip("no committed estimator study")
    v = mog.study_values(committed)
    last = mog.study_lines(committed)[-1]
    assert last.startswith("the same run's evaluation")
    assert f"({v['study_eval_gap']:+.4f} +- {v['study_eval_gap_se']:.4f})" in last
    assert 0 < v["study_eval_gap_se"] < 1


def test_committed_study_is_fetched_outside_a_checkout(tmp_path, monkeypatch, served):
    """On Colab (no results/ folder) the committed estimator study and the run it used come
    from the repository, as the cells do; a checkout never fetches, and a study the
    repository lacks gives None (the chapter then computes a live one)."""
    from cifutils import results

    root, url = served
    study = {**_study(), "budget": "paper", "provenance": {"device": "cpu"}, "wall_seconds": 60}
    remote = root / "results" / "mog" / "paper"
    remote.mkdir(parents=True)
    (remote / "estimator_cif-nsf_sigma1_seed0.json").write_text(json.dumps(study))
    (remote / "cif-nsf_sigma1_seed0.json").write_text(json.dumps({"metrics": {"x": 1.5}}))
    monkeypatch.setenv(results.RAW_ENV, url)
    monkeypatch.setenv(results.READ_LOG_ENV, str(tmp_path / "reads.jsonl"))
    checkout = tmp_path / "checkout-results"
    checkout.mkdir()
    monkeypatch.setenv("CIFUTILS_RESULTS", str(checkout))
    assert mog.committed_study(("paper", "book")) is None  # a checkout: local files only
    monkeypatch.setenv("CIFUTILS_RESULTS", str(tmp_path / "no-checkout"))
    fetched = mog.committed_study(("paper", "book"))
    assert fetched is not None and fetched["units"] == study["units"]
    assert mog_estimators._study_run(fetched) == {"x": 1.5}
    assert mog.load_cell("cif-nsf", 1.0, 0) == {"metrics": {"x": 1.5}}
    assert mog.committed_study(("book",)) is None
    reads = (tmp_path / "reads.jsonl").read_text()
    assert "results/mog/paper/estimator_cif-nsf_sigma1_seed0.json" in reads


def test_estimator_study_resumes_from_its_cache_and_splits_over_workers(tmp_path):
    whole = _study()
    assert len(whole["units"]) == 9 and whole["reps"] == 3
    # interrupted: only some repetitions reached the cache; the rerun computes the rest
    _study(tmp_path)
    cache = tmp_path / "study.jsonl"
    lines = cache.read_text().splitlines()
    assert len(lines) == 1 + 9  # header + one line per (N, repetition)
    cache.write_text("\n".join(lines[:4]) + "\n")
    resumed = _study(tmp_path)
    assert resumed == whole
    assert len(cache.read_text().splitlines()) == 10
    # two worker processes: the same numbers (each repetition has its own seed)
    assert _study(workers=2) == whole
    # a cache written for another study is not used
    other = _study(tmp_path, seed=8)
    assert other["aux_mean"] != whole["aux_mean"]
    assert json.loads(cache.read_text().splitlines()[0])["seed"] == 8


def test_compiled_estimator_repetition_equals_eager(needs_a_compiler):
    from cifutils.fast import accelerate

    torch.manual_seed(0)
    family = accelerate(mog.build_model("cif-nsf", 1.0).double())
    target, Unit = get_target("mog9"), mog_estimators._EstimatorUnit
    # N = 16: M = N and M = sqrt(N) both fill calls of exactly 64 rows, the compiled shape
    eager = Unit(family, target, ("N", "sqrtN"), 64, None, 7, compiled=False)
    compiled = Unit(family, target, ("N", "sqrtN"), 64, None, 7, compiled=True)
    a, b = eager((16, 0)), compiled((16, 0))
    assert compiled._fn is not None  # the compiled path ran
    assert a.keys() == b.keys() == {"n", "rep", "aux", "marg_N", "marg_sqrtN"}
    for key in a:
        assert math.isclose(a[key], b[key], rel_tol=1e-9, abs_tol=1e-9), (key, a, b)


def test_layer_posteriors_are_normalized_and_kl_nonnegative():
    torch.manual_seed(0)
    family = mog.build_model("cif-nsf", 1.0)
    out = mog.layer_posteriors(
        family, num_points=4, u_grid=torch.linspace(-8, 8, 161), num_u_samples=4
    )
    assert len(out) == 5
    for layer in out:
        du = layer["u"][1] - layer["u"][0]
        mass = np.exp(np.array(layer["log_q"])).sum(1) * du
        np.testing.assert_allclose(mass, 1.0, rtol=1e-6)
        assert layer["kl"] > -1e-6
        assert np.mean(layer["kl_points"]) == pytest.approx(layer["kl"])


def test_posterior_values_are_what_the_lines_print():
    torch.manual_seed(0)
    family = mog.build_model("cif-nsf", 1.0)
    post = mog.layer_posteriors(
        family, num_points=6, u_grid=torch.linspace(-8, 8, 81), num_u_samples=4
    )
    metrics = {"elbo": -0.3, "elbo_se": 0.03, "marginal_elbo": -0.2, "marginal_elbo_se": 0.04}
    v = mog.posterior_values(post, metrics)
    kls = [layer["kl"] for layer in post]
    assert v["post_kl_sum"] == pytest.approx(sum(kls))
    assert v["post_kl_min"] == min(kls) and v["post_kl_max"] == max(kls)
    # the per-point sums: every layer's KL at the same forward sample
    sums = np.array([layer["kl_points"] for layer in post]).sum(0)
    assert v["post_kl_sum_se"] == pytest.approx(sums.std(ddof=1) / math.sqrt(6))
    assert v["post_gap"] == pytest.approx(0.1) and v["post_gap_se"] == pytest.approx(0.05)
    last = mog.posterior_lines(post, metrics)[-1]
    assert f"{v['post_kl_sum']:.3f} +- {v['post_kl_sum_se']:.3f}" in last
    assert "0.100 +- 0.050" in last


#: Figure 1's CIF-NSF (the claims and comparisons are about it).
CIF = mog.MODELS[0]


def fake_results(elbos: dict, seeds=(0,), modes=9, se=0.01, budget="book", device="cpu"):
    """Synthetic results: ``elbos[(model, sigma0)]`` is a list with one ELBO per seed."""
    out = {}
    for (m, s), values in elbos.items():
        for seed, value in zip(seeds, values):
            out[(m, s, seed)] = {
                "budget": budget,
                "config": {"steps": 2_000, "batch": 500},
                "provenance": {"device": device, "torch_version": "2.x", "git_commit": "abcdef123"},
                "metrics": {
                    "elbo": value,
                    "elbo_se": se,
                    "modes_covered": modes if m.startswith("cif") else 9 - (s != 1.0),
                    "far_fraction": 0.5 if (m, s) == ("nsf", 10.0) else 0.0,
                },
            }
    return out


def test_provenance_note_reads_budget_seeds_and_device():
    res = fake_results(
        {(m, s): [-0.1, -0.2, -0.3] for m in mog.MODELS for s in mog.SIGMA0S},
        seeds=(0, 1, 2),
        device="cuda:0",
    )
    note = mog.provenance_note(res, width=None, detail=True)
    assert "budget book (2,000 steps x 500 samples)" in note
    assert "seeds 0, 1, 2, 18 runs" in note and "device cuda:0" in note
    assert "commit abcdef1" in note
    short = mog.provenance_note(res, width=None)  # the chapter's line: no versions, no commits
    assert short == "budget book (2,000 steps x 500 samples), seeds 0, 1, 2, 18 runs, device cuda:0"


def test_compare_models_verdicts_use_the_right_standard_error():
    # One seed: Monte Carlo error 0.01 each, so 0.1 apart is significant, 0.02 is a tie.
    elbos = {
        (CIF, 0.1): [-0.1],
        ("nsf", 0.1): [-0.2],
        (CIF, 1.0): [-0.21],
        ("nsf", 1.0): [-0.19],
        (CIF, 10.0): [-0.5],
        ("nsf", 10.0): [-0.1],
    }
    cmp = mog.compare_models(fake_results(elbos))
    assert [cmp[s]["verdict"] for s in mog.SIGMA0S] == [CIF, "tie", "nsf"]
    assert cmp[1.0]["se"] == pytest.approx(math.hypot(0.01, 0.01)) and cmp[1.0]["seeds"] == 1
    # Three seeds: the error is across seeds (std / sqrt(3)), not the Monte Carlo one.
    spread = {k: [v[0] - 0.3, v[0], v[0] + 0.3] for k, v in elbos.items()}
    cmp = mog.compare_models(fake_results(spread, seeds=(0, 1, 2)))
    assert cmp[0.1]["verdict"] == "tie" and cmp[0.1]["seeds"] == 3
    assert cmp[0.1]["se"] == pytest.approx(math.hypot(0.3, 0.3) / math.sqrt(3))


def test_check_claims_and_findings_follow_the_numbers():
    good = {(CIF, s): [-0.1] for s in mog.SIGMA0S}
    good.update({("nsf", 0.1): [-1.5], ("nsf", 1.0): [-0.2], ("nsf", 10.0): [-900.0]})
    claims = mog.check_claims(fake_results(good))
    assert all(claims.values()), claims
    bad = {k: [-0.1] for k in good}  # everything tied
    claims = mog.check_claims(fake_results(bad, modes=6))
    assert not claims["CIF-NSF covers all 9 modes at every sigma_0, every run"]
    assert not claims["NSF's ELBO is significantly lower at sigma_0 = 10 than at 1"]
    assert claims["CIF-NSF's ELBO is significantly below NSF's at no sigma_0"]
    lines = mog.findings(fake_results(good), width=None)
    assert len(lines) == 3 and "CIF-NSF higher" in lines[2] and "50.0% far" in lines[2]
    assert "Monte Carlo, one run" in lines[0]


def test_summary_table_and_side_by_side():
    elbos = {(m, s): [-0.1, -0.3] for m in mog.MODELS for s in mog.SIGMA0S}
    res = fake_results(elbos, seeds=(0, 1))
    table = mog.summary_table(res, ["seeds", "ELBO (aux. for CIF)"])
    assert list(table.columns) == ["seeds", "ELBO (aux. for CIF)"]
    assert table.loc[("1", "NSF"), "ELBO (aux. for CIF)"] == "-0.200 ± 0.141"
    both = mog.side_by_side({"a": res, "b": fake_results({k: [-0.1] for k in elbos})})
    assert list(both.columns.levels[0]) == ["a", "b"] and len(both) == 6


def test_committed_results_loads_without_training(tmp_path, monkeypatch):
    from cifutils import results as results_mod

    monkeypatch.setattr(results_mod, "results_dir", lambda: tmp_path)
    assert mog.committed_results("book") == {}
    path = tmp_path / mog.result_path("book", "nsf", 10.0, 2)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"seed": 2}))
    assert mog.committed_results("book") == {("nsf", 10.0, 2): {"seed": 2}}


def test_claims_and_findings_with_a_missing_cell():
    elbos = {(m, s): [-0.1] for m in mog.MODELS for s in mog.SIGMA0S}
    del elbos[("nsf", 10.0)]
    res = fake_results(elbos)
    claims = mog.check_claims(res)
    assert claims["NSF's ELBO is significantly lower at sigma_0 = 10 than at 1"] is None
    assert claims["NSF's ELBO is significantly lower at sigma_0 = 0.1 than at 1"] is False
    assert mog.findings(res)[2] == "sigma_0 = 10: no run of NSF"
    assert 10.0 not in mog.compare_models(res)


def test_notes_are_wrapped_for_the_page():
    res = fake_results({(m, s): [-0.1] for m in mog.MODELS for s in mog.SIGMA0S})
    note = mog.provenance_note(res, "Figure 1:", width=40)
    assert note.startswith("Figure 1: budget book") and "\n    " in note
    assert all(len(line) <= 40 for line in note.splitlines())
    assert all(len(x) <= 40 for e in mog.findings(res, width=40) for x in e.splitlines())


def test_chapter2_learning_rate_script_runs(capsys, monkeypatch):
    """benchmarks/nsf_mog9_lr.py (behind chapter 2's learning rate) on a tiny fit: one line
    per (rate, seed) with the ELBO and the least-visited mode's share, a share of samples."""
    import importlib.util
    import re
    import sys
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "nsf_mog9_lr.py"
    spec = importlib.util.spec_from_file_location("nsf_mog9_lr", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["nsf_mog9_lr.py", "--lrs", "1e-2", "--seeds", "0", "1", "--steps", "2"]
    monkeypatch.setattr(sys, "argv", argv + ["--batch", "16", "--eval", "200"])
    script.main()
    rows = re.findall(
        r"seed (\d): ELBO (-?\d+\.\d+) \+- \d+\.\d+, least-visited mode (\S+),",
        capsys.readouterr().out,
    )
    assert [r[0] for r in rows] == ["0", "1"]
    assert all(0.0 <= float(r[2]) <= 1 / 9 for r in rows)


def test_spline_inside_reads_the_first_splines_input():
    """The first spline of the NSF reads the base sample: from sigma_0 = 10 the share inside
    [-3, 3]^2 is P(|N(0, 100)| <= 3)^2 = 0.056 (binomial error); a CIF with the affine first
    reads the affine's output instead, so its share differs at initialization."""
    torch.manual_seed(0)
    n = 20_000
    nsf = mog.spline_inside(mog.build_model("nsf", 10.0), n)
    exact = mog.first_spline_inside("nsf", 10.0, [{}])
    assert exact == pytest.approx(0.0556, abs=1e-4) and len(nsf) == 5
    assert abs(nsf[0] - exact) < 5 * math.sqrt(exact * (1 - exact) / n)
    af = mog.spline_inside(mog.build_model("cif-nsf-af", 10.0), n)
    assert abs(af[0] - exact) > 0.01
    # Measured values win over the formula; no formula for the affine-first order.
    assert mog.first_spline_inside("nsf", 10.0, [{"spline_inside": [0.5]}]) == 0.5
    assert mog.first_spline_inside("cif-nsf-af", 10.0, [{}]) is None


def test_order_findings_compare_the_pairs():
    elbos = {(m, s): [-0.1] for m in mog.ABLATION for s in mog.SIGMA0S}
    elbos[("cif-nsf", 10.0)] = [-0.9]
    del elbos[("affine-nsf", 0.1)]
    lines = mog.order_findings(fake_results(elbos), width=None)
    assert "no run of NSF + affine (no u)" in lines[0]
    assert "CIF-NSF (affine first) higher" in lines[2] and "difference +0.800" in lines[2]
    assert "tie" in lines[1]


def test_ess_flags_the_degenerate_marginal_estimate_of_a_tiny_sigma0(tmp_path, capsys):
    """At sigma_0 = 1e-4 the r-proposal misses the narrow set of u that reach each z: every
    point's ESS is about 1 and the marginal ELBO (positive, above log Z = 0) is flagged.
    At sigma_0 = 1, after a few more steps and with M = 100, it is not flagged."""
    from cifutils.experiments import main
    from cifutils.objectives import MIN_ESS

    bad, _ = mog.run_cell(tiny(sigma0=1e-4, marginal_u_samples=50), None, progress=False)
    report = bad["metrics"]["ess"]["marginal_elbo"]
    assert not report["reliable"] and report["median"] < MIN_ESS and report["samples"] == 50
    assert mog.estimate_text(bad["metrics"], "marginal_elbo").startswith("not meaningful (")
    good, _ = mog.run_cell(tiny(steps=30, marginal_u_samples=100), None, progress=False)
    assert good["metrics"]["ess"]["marginal_elbo"]["reliable"]
    assert good["metrics"]["ess"]["log_z_iw"]["samples"] == 20
    json.dumps(bad)  # JSON-ready
    table = mog.summary_table({("cif-nsf", 1.0, 0): bad})
    assert table["marginal ELBO"].iloc[0].endswith("(not meaningful: low ESS)")
    # Results written before ESS reports print and tabulate their numbers as before.
    old = {k: v for k, v in good["metrics"].items() if k != "ess"}
    assert mog.estimate_text(old, "marginal_elbo") == f"{old['marginal_elbo']:.4f}"
    assert "low ESS" not in mog.summary_table({("nsf", 1.0, 0): {"metrics": old}}).to_string()
    args = ["mog", "--sigma0", "0.0001", "--budget", "smoke", "--steps", "2"]
    assert main([*args, "--results", str(tmp_path), "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "marginal not meaningful (" in out and "log Z " in out and "ESS median" in out


def test_an_overridden_result_never_stands_in_for_the_standard_one(tmp_path, capsys):
    from cifutils.experiments import main

    common = ["mog", "--model", "nsf", "--budget", "smoke", "--results", str(tmp_path / "res")]
    common += ["--runs", str(tmp_path / "runs")]
    path = tmp_path / "res" / "mog" / "smoke" / "nsf_sigma1_seed0.json"
    assert main([*common, "--steps", "3"]) == 0
    capsys.readouterr()
    # The smoke budget's own run (20 steps) finds the 3-step result: refused, not skipped.
    assert main(common) == 1
    out, err = capsys.readouterr()
    assert "skipped" not in out
    assert f"{path}: exists but was computed with another configuration (steps 3 there, 20 " in err
    assert "--force" in err and json.loads(path.read_text())["config"]["steps"] == 3
    assert main([*common, "--batch", "7", "--steps", "3"]) == 1
    assert "batch 100 there, 7 asked" in capsys.readouterr().err
    assert main([*common, "--steps", "3"]) == 0  # the same configuration: skipped
    assert "exists, skipped" in capsys.readouterr().out
    assert main([*common, "--force"]) == 0
    assert json.loads(path.read_text())["config"]["steps"] == 20
    assert main(common) == 0 and "exists, skipped" in capsys.readouterr().out
    # A checkpoint of another configuration is still refused, naming the difference.
    with pytest.raises(ValueError, match=r"another configuration \(steps 20 there, 5 asked\)"):
        mog.run_cell(
            mog.MogConfig.from_budget("nsf", 1.0, 0, "smoke", steps=5),
            tmp_path / "runs" / "mog" / "smoke" / "nsf_sigma1_seed0.pt",
        )


def test_config_differences_treats_missing_fields_as_defaults():
    config = tiny()
    stored = {k: v for k, v in dataclasses.asdict(config).items() if k != "target"}
    assert mog.config_differences(stored, config) == {}
    assert mog.config_differences({**stored, "steps": 99}, config) == {"steps": (99, 6)}
    # Results and checkpoints written before `order` existed: derived from the model.
    old = {k: v for k, v in dataclasses.asdict(config).items() if k != "order"}
    assert mog.config_differences(old, config) == {}
    assert mog.config_differences(old, tiny("cif-nsf-af")) == {
        "model": ("cif-nsf", "cif-nsf-af"),
        "order": ("spline-first", "affine-first"),
    }


@pytest.mark.parametrize("model", ["cif-nsf", "cif-nsf-af", "affine-nsf"])
def test_fast_layers_give_the_same_model_in_every_arrangement(model):
    """cifutils.fast's fused spline (forward and inverse) inside either order of a CIF layer
    and inside the control: the same samples, densities and marginal estimates (float64)."""
    import copy

    from cifutils.fast import FastRQAutoregressive, accelerate

    torch.manual_seed(0)
    plain = mog.build_model(model, 1.0).double()
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fast = accelerate(copy.deepcopy(plain))
    assert any(isinstance(m, FastRQAutoregressive) for m in fast.modules())
    torch.manual_seed(1)
    a = plain.forward_sample(64)
    torch.manual_seed(1)
    b = fast.forward_sample(64)
    assert torch.allclose(a.z, b.z, atol=1e-10) and torch.allclose(a.log_q, b.log_q, atol=1e-9)
    z = a.z.detach()
    with torch.no_grad():
        torch.manual_seed(2)
        ma = plain.marginal_log_prob(z, num_u_samples=8)
        torch.manual_seed(2)
        mb = fast.marginal_log_prob(z, num_u_samples=8)
    assert torch.allclose(ma, mb, atol=1e-8)


def test_order_summary_names_each_figure():
    elbos = {(m, s): [-0.1, -0.3] for m in mog.ABLATION for s in mog.SIGMA0S}
    del elbos[("affine-nsf", 10.0)]
    out = mog.order_summary(fake_results(elbos, seeds=(0, 1)))
    assert out["af_elbo_01"] == pytest.approx(-0.2) and out["af_seeds"] == 2
    assert out["nsf_far_10"] == pytest.approx(50.0) and out["sf_modes_1"] == 9
    assert math.isnan(out["ctrl_elbo_10"]) and out["ctrl_seeds"] == 0
    assert out["nsf_inside_10"] == pytest.approx(100 * math.erf(0.3 / math.sqrt(2)) ** 2)
    # metrics the fake runs did not record give NaN; recorded ones are averaged over seeds
    assert math.isnan(out["af_logz_1"]) and math.isnan(out["af_margin_1"])
    results = fake_results(elbos, seeds=(0, 1))
    for (m, _, seed), r in results.items():
        r["metrics"].update(
            marginal_elbo=r["metrics"]["elbo"] + 0.01 * (seed + 1) * m.startswith("cif"),
            log_z_iw=-0.01 * seed,
            coverage_kl=0.1 + seed,
        )
    out = mog.order_summary(results)
    assert out["af_margin_1"] == pytest.approx(0.015) and out["nsf_margin_1"] == 0
    assert out["sf_logz_10"] == pytest.approx(-0.005) and out["nsf_covkl_01"] == pytest.approx(0.6)
    assert math.isnan(out["ctrl_logz_10"])
