# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Diffusion algebra and the L_simple / hybrid losses of :mod:`mrf_monai.diffusion.losses`."""

from __future__ import annotations

import math

import pytest
import torch

from mrf_monai.diffusion.losses import (
    DiffusionLoss,
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
    model_log_variance,
    normal_kl,
    p_mean_variance,
    predict_x0_from_eps,
    q_posterior_mean_variance,
    schedule_tables,
)
from mrf_monai.diffusion.model import build_scheduler


@pytest.fixture
def sched():
    return build_scheduler()


def test_tables_match_closed_form(sched):
    tab = schedule_tables(sched)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    t = 500
    assert torch.allclose(tab["posterior_variance"][t], betas[t] * (1 - ab[t - 1]) / (1 - ab[t]))
    assert tab["posterior_variance"][0] == 0
    assert tab["posterior_log_variance_clipped"][0] == tab["posterior_log_variance_clipped"][1]


def test_x0_roundtrip(sched):
    x0, noise, t = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5), torch.tensor([0, 400, 999])
    x_t = sched.add_noise(x0, noise, t)
    assert torch.allclose(predict_x0_from_eps(x_t, t, noise, sched), x0, atol=2e-3)


def test_posterior_matches_monai_ddpm_step(sched):
    """Mean and variance of p(x_{t-1}|x_t) with fixed-small variance equal MONAI's DDPM step."""
    torch.manual_seed(0)
    x_t, eps = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    t = 500
    p = p_mean_variance(x_t, torch.full((2,), t), eps, None, sched)
    gen = torch.Generator().manual_seed(3)
    monai_prev, _ = sched.step(eps, t, x_t, generator=gen)
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(3))
    ours = p["mean"] + torch.exp(0.5 * p["log_variance"]) * z
    assert torch.allclose(ours, monai_prev, atol=1e-5)


def test_learned_log_variance_interpolates(sched):
    tab = schedule_tables(sched)
    t = torch.tensor([0, 1, 700])
    ones = torch.ones(3, 2, 1, 1)
    assert torch.allclose(model_log_variance(ones, t, sched).flatten(0)[::2], tab["log_betas"][t].float())
    assert torch.allclose(
        model_log_variance(-ones, t, sched).flatten(0)[::2], tab["posterior_log_variance_clipped"][t].float()
    )
    mid = model_log_variance(0 * ones, t, sched).flatten(0)[::2].double()
    assert torch.allclose(
        mid, 0.5 * (tab["log_betas"][t] + tab["posterior_log_variance_clipped"][t]), atol=1e-6
    )


def test_normal_kl_against_torch():
    m1, m2 = torch.randn(10), torch.randn(10)
    lv1, lv2 = torch.randn(10), torch.randn(10)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, torch.exp(0.5 * lv1)),
        torch.distributions.Normal(m2, torch.exp(0.5 * lv2)),
    )
    assert torch.allclose(normal_kl(m1, lv1, m2, lv2), ref, atol=1e-5)
    assert torch.allclose(normal_kl(m1, lv1, m1, lv1), torch.zeros(10), atol=1e-7)


def test_decoders():
    x, mean, log_scale = torch.randn(20), torch.randn(20), torch.randn(20) * 0.3
    ref = torch.distributions.Normal(mean, torch.exp(log_scale)).log_prob(x)
    assert torch.allclose(gaussian_log_likelihood(x, mean, log_scale), ref, atol=1e-5)
    # the 256 bins of [-1, 1] carry the whole probability mass
    grid = torch.linspace(-1, 1, 256)
    for mu, ls in [(0.0, -2.0), (0.7, -1.0), (-1.2, -3.0)]:
        lp = discretized_gaussian_log_likelihood(grid, torch.full_like(grid, mu), torch.full_like(grid, ls))
        assert abs(float(lp.exp().sum()) - 1.0) < 1e-4


def test_mse_loss(sched):
    loss = DiffusionLoss(sched, loss_type="mse")
    eps, noise = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    out = loss(eps, noise, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(out["loss"], ((eps - noise) ** 2).mean())
    assert out["vlb"] == 0


def test_hybrid_loss_terms_and_gradients(sched):
    torch.manual_seed(0)
    loss = DiffusionLoss(sched, loss_type="hybrid", vlb_weight=0.001)
    x0, noise = torch.randn(4, 2, 4, 4), torch.randn(4, 2, 4, 4)
    t = torch.tensor([0, 1, 300, 999])
    x_t = sched.add_noise(x0, noise, t)
    # exact eps and v = -1 (posterior variance): KL terms vanish for t > 0
    v = -torch.ones_like(x0)
    vlb = loss.vlb_terms(x0, x_t, t, noise, v)
    assert torch.allclose(vlb[1:], torch.zeros(3), atol=1e-4)
    # t = 0: continuous Gaussian NLL in bits/dim
    p = p_mean_variance(x_t[:1], t[:1], noise[:1], v[:1], sched)
    nll = -gaussian_log_likelihood(x0[:1], p["mean"], 0.5 * p["log_variance"]).mean() / math.log(2)
    assert torch.allclose(vlb[0], nll, atol=1e-5)

    eps = (noise + 0.3 * torch.randn_like(noise)).requires_grad_(True)
    v = (0.2 * torch.randn_like(noise)).requires_grad_(True)
    out = loss(eps, noise, t, x0, x_t, v)
    # lambda * T = 1 for T = 1000
    assert torch.allclose(out["loss"], out["mse"] + out["vlb"], atol=1e-6)
    # stop-gradient: the vlb term trains only v, the mse term only eps
    out["vlb"].backward(retain_graph=True)
    assert eps.grad is None and v.grad is not None and v.grad.abs().sum() > 0
    v.grad = None
    out["mse"].backward()
    assert v.grad is None and eps.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        loss(eps, noise, t)


def test_hybrid_weight_scales_with_timesteps():
    s = build_scheduler(num_train_timesteps=100)
    loss = DiffusionLoss(s, vlb_weight=0.001)
    x0, noise = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4)
    t = torch.tensor([10, 50])
    x_t = s.add_noise(x0, noise, t)
    v = torch.zeros_like(x0)
    out = loss(noise + 0.1, noise, t, x0, x_t, v)
    assert torch.allclose(out["loss"], out["mse"] + 0.1 * out["vlb"], atol=1e-6)
    with pytest.raises(ValueError):
        DiffusionLoss(s, loss_type="l1")
    _ = q_posterior_mean_variance(x0, x_t, t, s)
