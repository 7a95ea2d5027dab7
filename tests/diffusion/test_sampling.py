# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""DDIM / DDPM reverse processes against analytic noise predictors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mrf_monai.diffusion.model import build_scheduler
from mrf_monai.diffusion.sampling import ReverseProcess, alphas_cumprod_from, sample, sampling_timesteps

ABAR = alphas_cumprod_from()  # linear 1e-4 .. 0.02, T = 1000, float64


class PointOracle(nn.Module):
    """Exact noise predictor when the clean image is a known function of the condition,
    ``x0 = 2 cond + 1``: ``eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``."""

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        c = x.shape[1] // 2
        x_t, cond = x[:, :c], x[:, c:]
        a = ABAR.to(x.device)[timesteps].to(x.dtype).view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * (2 * cond + 1)) / (1 - a).sqrt()


class GaussianOracle(nn.Module):
    """Exact MMSE noise predictor for data ``x0 | cond ~ N(cond, s^2)`` (independent pixels), and
    optionally the exact reverse-step variance of a given reverse process as improved-DDPM ``v``."""

    def __init__(self, s: float, process: ReverseProcess | None = None) -> None:
        super().__init__()
        self.s, self.process = s, process

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        c = x.shape[1] // 2
        x_t, mu = x[:, :c], x[:, c:]
        a = float(ABAR[int(timesteps[0])])
        var_t = a * self.s**2 + 1 - a
        eps = math.sqrt(1 - a) * (x_t - math.sqrt(a) * mu) / var_t
        if self.process is None:
            return eps
        p = self.process
        i = int((p.timesteps == int(timesteps[0])).nonzero()[0, 0])
        # the true q(x_s | x_t) is Gaussian: var = beta_tilde + coef_x0^2 Var(x0 | x_t)
        var_x0 = self.s**2 * (1 - a) / var_t
        true_var = math.exp(float(p._log_beta_tilde[i])) + float(p._coef_x0[i]) ** 2 * var_x0
        lb, lbt = float(p._log_beta[i]), float(p._log_beta_tilde[i])
        v = 2 * (math.log(true_var) - lbt) / (lb - lbt) - 1
        return torch.cat([eps, torch.full_like(eps, v)], dim=1)


def test_timestep_spacing():
    ts = sampling_timesteps(50)
    assert ts[0] == 999 and ts[-1] == 0 and ts.numel() == 50
    assert bool((ts[:-1] > ts[1:]).all())
    assert torch.equal(sampling_timesteps(1000), torch.arange(999, -1, -1))
    lead = sampling_timesteps(50, spacing="leading")
    assert lead[0] == 980 and lead[-1] == 0
    with pytest.raises(ValueError):
        sampling_timesteps(0)


def test_logsnr_spacing():
    lam = 0.5 * torch.log(ABAR / (1 - ABAR))
    for n in (2, 5, 10, 20, 37, 100, 999, 1000):
        ts = sampling_timesteps(n, spacing="logsnr", alphas_cumprod=ABAR)
        assert ts.numel() == n and ts[0] == 999 and ts[-1] == 0
        assert bool((ts[:-1] > ts[1:]).all())
    assert torch.equal(sampling_timesteps(1000, spacing="logsnr"), torch.arange(999, -1, -1))
    # where the timesteps are fine enough, the steps are even in lambda to within one timestep
    ts = sampling_timesteps(10, spacing="logsnr")
    steps = lam[ts[1:]] - lam[ts[:-1]]
    assert float(steps.max() - steps.min()) < 0.1 * float(steps.mean())
    # it follows the schedule it is given
    cosine = alphas_cumprod_from(build_scheduler(schedule="cosine"))
    assert not torch.equal(sampling_timesteps(10, spacing="logsnr", alphas_cumprod=cosine), ts)
    with pytest.raises(ValueError, match="spacing"):
        sampling_timesteps(10, spacing="karras")
    with pytest.raises(ValueError, match="shape"):
        sampling_timesteps(10, spacing="logsnr", alphas_cumprod=ABAR[:500])


def test_schedule_matches_training_scheduler():
    assert torch.allclose(alphas_cumprod_from(build_scheduler()), ABAR, rtol=1e-6)


@pytest.mark.parametrize("method,eta", [("ddim", 0.0), ("ddim", 1.0), ("ddpm", 0.0)])
def test_exact_oracle_recovers_x0(method, eta):
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    out = sample(PointOracle(), cond, n_steps=50, method=method, eta=eta, generator=g)
    assert out.shape == cond.shape and out.dtype == cond.dtype
    torch.testing.assert_close(out, 2 * cond + 1, rtol=1e-9, atol=1e-9)


def test_clip_clamps_x0():
    cond = torch.full((1, 2, 4, 4), 3.0, dtype=torch.float64)  # x0 = 7, clipped to 2
    out = sample(PointOracle(), cond, n_steps=10, clip=2.0, generator=torch.Generator().manual_seed(0))
    assert float(out.abs().max()) <= 2.0 + 1e-9


def test_ddpm_full_chain_gaussian_distribution():
    mu, s = 1.5, 0.5
    cond = torch.full((1, 2, 64, 64), mu)
    out = sample(
        GaussianOracle(s), cond, n_steps=1000, method="ddpm", generator=torch.Generator().manual_seed(1)
    )
    assert abs(float(out.mean()) - mu) < 0.03
    assert abs(float(out.std()) / s - 1) < 0.05


def test_ddim_deterministic_ode_gaussian_distribution():
    mu, s = -0.5, 0.7
    cond = torch.full((1, 2, 64, 64), mu)
    g = torch.Generator().manual_seed(2)
    out = sample(GaussianOracle(s), cond, n_steps=50, method="ddim", generator=g)
    assert abs(float(out.mean()) - mu) < 0.03
    assert abs(float(out.std()) / s - 1) < 0.05
    again = sample(GaussianOracle(s), cond, n_steps=50, generator=torch.Generator().manual_seed(2))
    assert torch.equal(out, again)


def test_ddpm_learned_variance_is_exact_with_few_steps():
    """With the exact posterior variance as ``v`` the respaced 20-step chain is exact for
    Gaussian data; with the fixed small variance it is visibly too narrow."""
    mu, s, k = 0.3, 0.6, 20
    cond = torch.full((1, 2, 64, 64), mu)
    process = ReverseProcess(ABAR, n_steps=k, method="ddpm")
    learned = sample(
        GaussianOracle(s, process), cond, n_steps=k, method="ddpm", generator=torch.Generator().manual_seed(3)
    )
    fixed = sample(
        GaussianOracle(s), cond, n_steps=k, method="ddpm", generator=torch.Generator().manual_seed(3)
    )
    assert abs(float(learned.mean()) - mu) < 0.03
    assert abs(float(learned.std()) / s - 1) < 0.04
    assert float(fixed.std()) < 0.9 * float(learned.std())


def test_invalid_arguments():
    with pytest.raises(ValueError):
        ReverseProcess(ABAR, method="euler")
    with pytest.raises(ValueError):
        sample(PointOracle(), torch.zeros(2, 8, 8))


def test_full_chain_matches_training_posterior():
    """With K = T the DDPM step is exactly the training code's posterior and learned variance."""
    from mrf_monai.diffusion.losses import model_log_variance, q_posterior_mean_variance

    sched = build_scheduler()
    p = ReverseProcess(alphas_cumprod_from(sched), n_steps=1000, method="ddpm")
    g = torch.Generator().manual_seed(4)
    x_t, x0, v = (torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    for i in (0, 500, 998):
        t = torch.full((3,), int(p.timesteps[i]))
        a = ABAR[t[0]]
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        mean, _, _ = q_posterior_mean_variance(x0, x_t, t, sched)
        logvar = model_log_variance(v, t, sched)
        z = torch.randn(x_t.shape, generator=g, dtype=torch.float64)
        torch.testing.assert_close(p.step(x_t, i, eps, v, z), mean + torch.exp(0.5 * logvar) * z)
