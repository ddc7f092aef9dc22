"""Evaluating a trained VAE on the test set: the importance-weighted bounds of Table 1, the
auxiliary gap of a CIF posterior and the amortization gap.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from cifutils.data import load_binarized
from cifutils.objectives import ess_summary, mean_and_stderr

from .config import VAEConfig
from .model import (
    VAE,
    iw_log_likelihood,
)

__all__ = ["evaluate", "amortization_gap", "amortization_gap_curve", "auxiliary_gap"]


@torch.no_grad()
def auxiliary_gap(
    vae: VAE, images: torch.Tensor, num_z: int = 5, num_u: int = 50, return_ess: bool = False
) -> tuple[float, float] | tuple[float, float, torch.Tensor]:
    """CIF only: mean and stderr of ``log q_aux(z, u) - log q_Z(z)`` over ``z ~ q(. | x)``,
    i.e. the estimated looseness of the auxiliary ELBO against the marginal ELBO,
    ``E_q[KL(q(u | z, x) || r(u | z, x))]``. ``log q_Z`` is the ``num_u``-sample
    importance-sampling estimate (in float64), biased low, so the gap is biased low too.
    With ``return_ess``, also each point's effective sample size over its ``num_u``
    weights (the same estimate either way)."""
    post = copy.deepcopy(vae.posterior).double()
    x = images.double()
    out = post.forward_sample(num_z, x)
    rows = x.repeat_interleave(num_z, dim=0)
    log_marginal, ess = post.marginal_log_prob(out.z, rows, num_u_samples=num_u, return_ess=True)
    mean, se = mean_and_stderr(out.log_q - log_marginal)
    return (mean, se, ess) if return_ess else (mean, se)


def amortization_gap(
    vae: VAE,
    images: torch.Tensor,
    steps: int = 100,
    num_samples: int = 10,
    eval_samples: int = 500,
    lr: float = 1e-3,
) -> tuple[float, float]:
    """Mean and stderr over ``images`` of ``ELBO(q_x*) - ELBO(q)``, where ``q_x*`` is the
    posterior network fine-tuned on the single image ``x`` for ``steps`` Adam steps with the
    decoder fixed: an estimate (from below) of the amortization gap of Cremer et al. (2018).

    Each ELBO is the mean of ``eval_samples`` log-weights
    (:meth:`~cifutils.experiments.vae.model.VAE.log_weights`; for a CIF posterior the
    auxiliary ELBO), each step maximizes the mean of ``num_samples`` of them with Adam at
    learning rate ``lr``. Draws from torch's global generator, so ``torch.manual_seed``
    makes it repeatable. Needs two images or more (for the standard error)."""
    return amortization_gap_curve(vae, images, [steps], num_samples, eval_samples, lr)[steps]


def amortization_gap_curve(
    vae: VAE,
    images: torch.Tensor,
    steps: Sequence[int],
    num_samples: int = 10,
    eval_samples: int = 500,
    lr: float = 1e-3,
) -> dict[int, tuple[float, float]]:
    """:func:`amortization_gap` read after each number of refinement steps in ``steps``,
    from one refinement per image: ``{n: (mean, stderr)}``, in increasing ``n``.

    A gain that still grows between the last two counts says the refinement has not
    converged, and the estimate is a loose lower bound. With a single count this is
    :func:`amortization_gap`, draw for draw; more counts spend one more ELBO evaluation
    each, so the draws of the later steps differ."""
    counts = sorted(set(steps))
    if not counts or counts[0] < 0:
        raise ValueError(f"steps must be non-negative counts, got {list(steps)}")
    gaps = []
    for x in images.split(1):
        local = copy.deepcopy(vae)
        local.decoder.requires_grad_(False)
        with torch.no_grad():
            before = local.log_weights(x, eval_samples).mean()
        opt = torch.optim.Adam(local.posterior.parameters(), lr=lr)
        row = []
        for step in range(counts[-1] + 1):
            if step in counts:
                with torch.no_grad():
                    row.append(local.log_weights(x, eval_samples).mean() - before)
            if step == counts[-1]:
                break
            loss = -local.log_weights(x, num_samples).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        gaps.append(torch.stack(row))
    gaps = torch.stack(gaps)
    return {n: mean_and_stderr(gaps[:, i]) for i, n in enumerate(counts)}


def evaluate(vae: VAE, cfg: VAEConfig, splits=None, seed: int = 1234) -> dict:
    """Test metrics of the (best-validation) ``vae``: the IW bound for each K in
    ``cfg.test_k``, the test ELBO and, when asked, the gaps. Seeded, so repeatable."""
    splits = splits or load_binarized(cfg.dataset, limit=cfg.train_limit)
    test = splits.test
    n = len(test) if cfg.test_limit is None else min(cfg.test_limit, len(test))
    gen = torch.Generator().manual_seed(seed)
    device = next(vae.parameters()).device
    images = test.binarize(torch.arange(n), generator=gen).to(device)
    torch.manual_seed(seed)
    # samples per call of the IW bound: small on a CPU, large enough to fill a GPU
    per_call = 200_000 if device.type == "cuda" else 10_000
    metrics: dict = {"test_images": n}
    with torch.no_grad():
        mean, se = mean_and_stderr(torch.cat([vae.elbo(b) for b in images.split(cfg.batch_size)]))
    metrics["test_elbo"] = {"mean": mean, "stderr": se}
    for k in cfg.test_k:
        use = images if k <= 100 or cfg.large_k_limit is None else images[: cfg.large_k_limit]
        batch = max(1, per_call // k)
        chunk = k if device.type == "cuda" else 100
        mean, se, _, ess = iw_log_likelihood(
            vae, use, k, batch_size=batch, chunk_size=chunk, return_ess=True
        )
        metrics[f"test_iw_k{k}"] = {"mean": mean, "stderr": se, "images": use.shape[0]}
        metrics[f"test_iw_k{k}"]["ess"] = ess_summary(ess, k)
    subset = images[: cfg.gap_images]
    if cfg.gap_images and vae.posterior.is_cif:
        mean, se, ess = auxiliary_gap(vae, subset, num_u=50, return_ess=True)
        metrics["aux_vs_marginal_gap"] = {"mean": mean, "stderr": se, "images": cfg.gap_images}
        metrics["aux_vs_marginal_gap"]["ess"] = ess_summary(ess, 50)
    if cfg.gap_images and cfg.amortization_steps:
        mean, se = amortization_gap(vae, subset, steps=cfg.amortization_steps)
        metrics["amortization_gap"] = {
            "mean": mean,
            "stderr": se,
            "images": cfg.gap_images,
            "steps": cfg.amortization_steps,
        }
    return metrics
