"""Objectives as pure functions: known values and streaming equals one-shot."""

from __future__ import annotations

import math

import pytest
import torch

from cifutils.objectives import (
    auxiliary_elbo,
    elbo,
    iw_bound,
    iw_bound_chunked,
    log_weights,
    logmeanexp,
    mean_and_stderr,
    streaming_logmeanexp,
)


def test_elbo_is_the_mean_log_weight():
    log_p = torch.tensor([-1.0, -2.0, -3.0])
    log_q = torch.tensor([0.5, -1.0, -1.0])
    assert elbo(log_p, log_q).item() == pytest.approx((-1.5 - 1.0 - 2.0) / 3)
    assert auxiliary_elbo(log_p, log_q).item() == pytest.approx(elbo(log_p, log_q).item())


def test_logmeanexp_is_stable_and_exact():
    x = torch.tensor([1000.0, 1000.0 + math.log(3.0)], dtype=torch.float64)
    assert logmeanexp(x).item() == pytest.approx(1000.0 + math.log(2.0))
    y = torch.randn(7, 5, dtype=torch.float64)
    torch.testing.assert_close(logmeanexp(y, 1), y.exp().mean(1).log())


def test_iw_bound_with_one_sample_is_the_elbo_and_grows_with_k():
    log_w = torch.randn(50, 200, dtype=torch.float64)
    torch.testing.assert_close(iw_bound(log_w[:, :1]).mean(), log_w[:, 0].mean())
    # For any fixed numbers, log mean exp >= mean (Jensen), with equality iff all equal.
    assert (iw_bound(log_w) >= log_w.mean(dim=1)).all()


def test_chunked_bound_equals_one_shot():
    log_w = torch.randn(3, 5000, dtype=torch.float64) * 3
    position = {"next": 0}

    def draw(k: int) -> torch.Tensor:
        start = position["next"]
        position["next"] += k
        return log_w[:, start : start + k]

    chunked = iw_bound_chunked(draw, 5000, chunk_size=700)
    torch.testing.assert_close(chunked, iw_bound(log_w))
    torch.testing.assert_close(
        streaming_logmeanexp([log_w[:, :10], log_w[:, 10:]], dim=1), logmeanexp(log_w, 1)
    )


def test_non_finite_log_p_is_reported_by_name():
    with pytest.raises(ValueError, match="log_p"):
        log_weights(torch.tensor([0.0, float("nan")]), torch.zeros(2))
    with pytest.raises(ValueError, match="log_q"):
        elbo(torch.zeros(2), torch.tensor([float("inf"), 0.0]))
    with pytest.raises(ValueError, match="differ"):
        elbo(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="log_p"):
        elbo(torch.zeros(2, dtype=torch.long), torch.zeros(2))
    with pytest.raises(ValueError, match="num_samples"):
        iw_bound_chunked(lambda k: torch.zeros(k), 0)


def test_mean_and_stderr():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mean, se = mean_and_stderr(x)
    assert mean == pytest.approx(2.5)
    assert se == pytest.approx(x.std().item() / 2)


def test_effective_sample_size_known_answers():
    from cifutils.objectives import (
        MIN_ESS,
        effective_sample_size,
        ess_summary,
        max_normalized_weight,
    )

    equal = torch.zeros(3, 50, dtype=torch.float64)
    assert torch.allclose(effective_sample_size(equal), torch.full((3,), 50.0, dtype=torch.float64))
    one = torch.tensor([0.0, -1e3, -1e3, -1e3], dtype=torch.float64)
    assert effective_sample_size(one).item() == pytest.approx(1.0)
    assert max_normalized_weight(one).item() == pytest.approx(1.0)
    two = torch.log(torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64))  # 16 / 6
    assert effective_sample_size(two, dim=0).item() == pytest.approx(16 / 6)
    assert max_normalized_weight(two, dim=0).item() == pytest.approx(0.5)
    report = ess_summary(torch.tensor([1.0, 20.0, 30.0, 40.0]), 50)
    assert report["low_fraction"] == 0.25 and not report["reliable"]
    assert report["threshold"] == MIN_ESS and report["median"] == 20.0
    assert ess_summary(torch.tensor(11.0), 50)["reliable"]


def test_chunked_bound_with_ess_is_the_same_bound():
    from cifutils.objectives import effective_sample_size

    log_w = torch.randn(3, 1000, dtype=torch.float64) * 2
    chunks = iter(log_w.split(300, dim=-1))
    bound, ess = iw_bound_chunked(lambda k: next(chunks), 1000, chunk_size=300, return_ess=True)
    chunks = iter(log_w.split(300, dim=-1))
    assert torch.equal(bound, iw_bound_chunked(lambda k: next(chunks), 1000, chunk_size=300))
    assert torch.allclose(ess, effective_sample_size(log_w))
