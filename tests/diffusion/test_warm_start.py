# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Warm-started sampling (``ReverseProcess(start_timestep=...)``, ``diffusion/warm_start.py``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from mrf_monai.acquisition.operators import ToeplitzSubspaceNormal
from mrf_monai.acquisition.problem import SliceProblem
from mrf_monai.baselines.lrtv import LRTVReconstructor
from mrf_monai.diffusion.inferer import DiffusionSamplingInferer
from mrf_monai.diffusion.sampling import ReverseProcess, alphas_cumprod_from
from mrf_monai.diffusion.warm_start import LRTVWarmStart
from mrf_monai.transforms.complex import complex_to_channels

ABAR = alphas_cumprod_from()
REFERENCE = Path(__file__).parent / "data" / "dc_reference.pt"  # a small 2-coil problem (rank 2)


class ZeroNoise(nn.Module):
    """Predicts no noise: DDIM (eta 0) then keeps ``x0_hat = x_t0 / sqrt(abar_t0)`` to the end."""

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, : x.shape[1] // 2])


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def saved_problem() -> tuple[SliceProblem, float, torch.Tensor]:
    ref = torch.load(REFERENCE, weights_only=True)
    normal = ToeplitzSubspaceNormal(ref["kernel_hat"], tuple(ref["grid"].shape[-2:]), ref["coil_maps"])
    return (
        SliceProblem(ref["grid"], ref["grid"], normal, ref["coil_maps"], True),
        float(ref["scale"]),
        ref["channel_scale"],
    )


def test_process_starts_at_the_given_timestep():
    p = ReverseProcess(ABAR, 10, spacing="logsnr", start_timestep=400)
    assert int(p.timesteps[0]) == 400 and int(p.timesteps[-1]) == 0 and len(p) == 10
    assert bool((p.timesteps[:-1] > p.timesteps[1:]).all())
    assert int(ReverseProcess(ABAR, 10).timesteps[0]) == 999  # default: pure noise at T - 1
    x, z = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    a0 = float(ABAR[400])
    torch.testing.assert_close(p.warm_start(x, z), math.sqrt(a0) * x + math.sqrt(1 - a0) * z)
    with pytest.raises(ValueError, match="start_timestep must be in"):
        ReverseProcess(ABAR, 10, start_timestep=1000)
    with pytest.raises(ValueError, match="do not fit"):
        ReverseProcess(ABAR, 10, start_timestep=5)


@pytest.mark.parametrize(
    "kwargs", [{"mode": "whole"}, {"mode": "patch", "roi_size": 8, "blend_every_step": True}]
)
def test_warm_start_begins_from_the_estimate_plus_the_timesteps_noise(kwargs):
    """With a network that predicts no noise the result is exactly ``x_init + sqrt((1 - a0) / a0) z``
    (``z`` the sample's initial noise), and a cold start is ``z / sqrt(abar_{T-1})``."""
    problem, scale, w = saved_problem()
    x_init = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(1))
    common = dict(n_samples=2, n_steps=4, seed=3, **kwargs)
    cold = DiffusionSamplingInferer(**common)(x_init, ZeroNoise())
    z = cold * math.sqrt(float(ABAR[-1]))  # the initial noise of each sample

    def fixed(problem_, scale_, channel_scale):
        assert problem_ is problem and float(scale_) == scale
        return x_init

    warm = DiffusionSamplingInferer(warm_start=fixed, start_timestep=50, **common)
    out = warm(x_init, ZeroNoise(), problem=problem, scale=scale)
    a0 = float(ABAR[50])
    torch.testing.assert_close(out, x_init + math.sqrt((1 - a0) / a0) * z, rtol=1e-4, atol=1e-5)
    assert "t0=50" in repr(warm)


def test_lrtv_warm_start_is_lrtv_in_the_networks_space():
    problem, scale, w = saved_problem()
    x = LRTVReconstructor(0.02, 10, 5).solve(problem.normal, problem.rhs, x0=problem.grid).x
    expected = complex_to_channels(x, dim=0)[None] / scale * w[:, None, None]
    out = LRTVWarmStart(0.02, 10, 5)(problem, torch.tensor(scale), w)
    assert out.shape == (1, 4, 12, 12) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
    # the inferer starts there: with a network that predicts no noise and an early t0, the
    # samples stay within the small forward noise of that timestep around LRTV
    inferer = DiffusionSamplingInferer(
        n_samples=2,
        n_steps=3,
        mode="whole",
        warm_start=LRTVWarmStart(0.02, 10, 5),
        start_timestep=20,
        channel_scale=w,
    )
    samples = inferer(torch.zeros(4, 12, 12), ZeroNoise(), problem=problem, scale=scale)
    sd = math.sqrt((1 - float(ABAR[20])) / float(ABAR[20]))
    assert float((samples - expected).abs().max()) < 6 * sd and float((samples - expected).std()) > 0.5 * sd


def test_warm_start_refusals():
    with pytest.raises(ValueError, match="give warm_start too"):
        DiffusionSamplingInferer(start_timestep=100)
    with pytest.raises(ValueError, match="whole slice's state"):
        DiffusionSamplingInferer(mode="patch", warm_start=LRTVWarmStart(), start_timestep=100)
    with pytest.raises(ValueError, match="first timestep"):
        DiffusionSamplingInferer(mode="whole", warm_start=LRTVWarmStart())
    with pytest.raises(ValueError, match="lam must be"):
        LRTVWarmStart(lam=-1.0)
    inferer = DiffusionSamplingInferer(
        mode="whole", n_steps=2, warm_start=LRTVWarmStart(), start_timestep=100
    )
    with pytest.raises(ValueError, match="problem and scale"):
        inferer(torch.zeros(4, 12, 12), ZeroNoise())
    with pytest.raises(ValueError, match="x_init is the warm start"):
        inferer.sample_slice(ZeroNoise(), torch.zeros(1, 4, 12, 12))
    problem, scale, _ = saved_problem()
    plain = SliceProblem(problem.grid, problem.rhs, problem.normal, problem.coil_maps, False)
    with pytest.raises(ValueError, match="density-compensated"):
        LRTVWarmStart()(plain, scale)
