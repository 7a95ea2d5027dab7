# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Sliding-window / whole-slice diffusion sampling of a slice."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mrf_monai.diffusion.inferer import DiffusionSamplingInferer
from mrf_monai.diffusion.model import build_model
from mrf_monai.diffusion.sampling import alphas_cumprod_from

ABAR = alphas_cumprod_from()


class PointOracle(nn.Module):
    """Exact noise predictor for ``x0 = 2 cond + 1`` (pixel-wise, so any window gives the truth)."""

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        c = x.shape[1] // 2
        a = ABAR.to(x.device)[timesteps].to(x.dtype).view(-1, 1, 1, 1)
        return (x[:, :c] - a.sqrt() * (2 * x[:, c:] + 1)) / (1 - a).sqrt()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread (and the CPUs are shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(
        rank=1,
        channels=(8, 8),
        attention_levels=(False, False),
        num_res_blocks=1,
        num_head_channels=8,
        norm_num_groups=8,
    ).eval()


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"blend": "constant"},
        {"overlap": 0.0},
        {"method": "ddpm", "n_steps": 8},
        {"eta": 1.0},
        {"blend_every_step": True},
        {"mode": "whole"},
    ],
)
def test_blending_covers_every_pixel_exactly(kwargs):
    """With an exact pixel-wise predictor every mode returns x0 on every pixel of an odd-sized
    slice: the windows cover the slice and the blending weights are normalised."""
    cond = torch.randn(1, 4, 37, 29, generator=torch.Generator().manual_seed(0))
    sampler = DiffusionSamplingInferer(roi_size=(16, 16), sw_batch_size=5, **{"n_steps": 5, **kwargs})
    out = sampler.sample_slice(PointOracle(), cond, n_samples=2, seed=3)
    assert out.shape == (2, 4, 37, 29)
    torch.testing.assert_close(out, (2 * cond + 1).expand(2, -1, -1, -1), rtol=1e-4, atol=1e-4)


def test_window_count():
    s = DiffusionSamplingInferer()
    assert s.n_windows((230, 230)) == 49  # stride 32
    assert DiffusionSamplingInferer(overlap=0.25).n_windows((230, 230)) == 25  # stride 48
    assert DiffusionSamplingInferer(mode="whole").n_windows((230, 230)) == 1


@pytest.mark.parametrize("kwargs", [{}, {"method": "ddpm"}, {"mode": "whole"}])
def test_tiny_model_seeded_samples(tiny_model, kwargs):
    cond = torch.randn(2, 24, 24, generator=torch.Generator().manual_seed(1))
    sampler = DiffusionSamplingInferer(roi_size=(16, 16), n_steps=3, sw_batch_size=4, **kwargs)
    a = sampler.sample_slice(tiny_model, cond, n_samples=2, seed=7)
    assert a.shape == (2, 2, 24, 24) and a.dtype == torch.float32
    assert bool(torch.isfinite(a).all())
    # the two samples use different noise
    assert float((a[0] - a[1]).abs().mean()) > 1e-3 * float(a.abs().mean())
    # reproducible, and sample k does not depend on K nor on how windows are batched
    sampler1 = DiffusionSamplingInferer(roi_size=(16, 16), n_steps=3, sw_batch_size=1, **kwargs)
    b = sampler1.sample_slice(tiny_model, cond, n_samples=1, seed=7)
    torch.testing.assert_close(b, a[:1], rtol=1e-4, atol=1e-4 * float(a.abs().max()))
    c = sampler.sample_slice(tiny_model, cond, n_samples=1, seed=8)
    assert not torch.allclose(c, a[:1])


def test_invalid_arguments(tiny_model):
    with pytest.raises(ValueError):
        DiffusionSamplingInferer(mode="tiles")
    with pytest.raises(ValueError):
        DiffusionSamplingInferer(overlap=1.0)
    with pytest.raises(ValueError):
        DiffusionSamplingInferer(roi_size=16).sample_slice(tiny_model, torch.zeros(2, 2, 16, 16))
