# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Per-component scaling of the diffusion data and the x0 correction hook (data consistency)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mrf_monai.diffusion.inferer import DiffusionSamplingInferer
from mrf_monai.diffusion.sampling import alphas_cumprod_from, sample
from mrf_monai.diffusion.scaling import channel_scale_from_hyper_parameters, measure_channel_scale

ABAR = alphas_cumprod_from()


class ZeroEps(nn.Module):
    """Predicts zero noise: on its own, DDIM then returns ``x_T / sqrt(abar_T)``-like garbage."""

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, : x.shape[1] // 2])


def test_measure_channel_scale_equalises_components():
    g = torch.Generator().manual_seed(0)
    sizes = torch.tensor([1.0, 0.1, 0.01])
    items = []
    for _ in range(4):
        c = torch.randn(3, 8, 8, generator=g, dtype=torch.complex64) * sizes[:, None, None]
        items.append({"image": torch.cat([c.real, c.imag])})
    w = measure_channel_scale(items, target_rms=0.5)
    assert w.shape == (6,)
    assert torch.equal(w[:3], w[3:])  # one factor per complex component
    scaled = torch.stack([it["image"] for it in items]) * w[None, :, None, None]
    power = scaled[:, :3] ** 2 + scaled[:, 3:] ** 2
    rms = power.mean(dim=(0, 2, 3)).sqrt()
    assert torch.allclose(rms, torch.full((3,), 0.5), rtol=1e-4)
    assert channel_scale_from_hyper_parameters({"data": {"channel_scale": w.tolist()}}).allclose(w)
    assert channel_scale_from_hyper_parameters({}) is None


@pytest.mark.parametrize("n_steps", [5, 20])
def test_x0_transform_is_applied_at_every_step(n_steps):
    """A transform that returns the true image makes DDIM land on it whatever the network says."""
    truth = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    calls = []

    def oracle(x0: torch.Tensor, i: int) -> torch.Tensor:
        calls.append(i)
        return truth

    out = sample(
        ZeroEps(),
        torch.zeros_like(truth),
        n_steps=n_steps,
        x0_transform=oracle,
        generator=torch.Generator().manual_seed(0),
    )
    assert calls == list(range(n_steps))
    assert torch.allclose(out, truth, atol=1e-5)
    plain = sample(
        ZeroEps(), torch.zeros_like(truth), n_steps=n_steps, generator=torch.Generator().manual_seed(0)
    )
    assert not torch.allclose(plain, truth, atol=1e-2)


def test_whole_slice_transform_sees_the_unpadded_slice():
    truth = torch.randn(1, 4, 23, 29, generator=torch.Generator().manual_seed(2))
    shapes = []

    def oracle(x0: torch.Tensor, i: int) -> torch.Tensor:
        shapes.append(tuple(x0.shape))
        return truth.expand_as(x0)

    sampler = DiffusionSamplingInferer(mode="whole", n_steps=4, progress=False)
    out = sampler.sample_slice(ZeroEps(), torch.zeros(4, 23, 29), n_samples=2, seed=0, x0_transform=oracle)
    assert set(shapes) == {(2, 4, 23, 29)}
    assert torch.allclose(out, truth.expand(2, -1, -1, -1), atol=1e-5)
    patch = DiffusionSamplingInferer(mode="patch", roi_size=16, n_steps=4, progress=False)
    with pytest.raises(ValueError, match="whole"):
        patch.sample_slice(ZeroEps(), torch.zeros(4, 23, 29), n_samples=1, x0_transform=oracle)


def test_v_prediction_network_is_converted_to_eps():
    from mrf_monai.diffusion.losses import DiffusionLoss
    from mrf_monai.diffusion.model import build_model, build_scheduler, predict_eps_and_var

    torch.manual_seed(0)
    net = build_model(
        rank=1,
        learn_sigma=False,
        channels=(8, 8),
        attention_levels=(False, False),
        num_res_blocks=1,
        num_head_channels=8,
        norm_num_groups=8,
        prediction_type="v",
    ).eval()
    sch = build_scheduler()
    x0, noise = torch.randn(3, 2, 8, 8), torch.randn(3, 2, 8, 8)
    t = torch.tensor([0, 500, 999])
    x_t = sch.add_noise(original_samples=x0, noise=noise, timesteps=t)
    cond = torch.randn(3, 2, 8, 8)
    with torch.no_grad():
        raw = net(torch.cat([x_t, cond], 1), timesteps=t)
        eps, var = predict_eps_and_var(net, x_t, t, cond, sch.alphas_cumprod)
    a = sch.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert var is None
    assert torch.allclose(eps, (1 - a).sqrt() * x_t + a.sqrt() * raw, atol=1e-5)
    # the v loss: errors in eps weighted by 1 / abar_t equal errors in v
    v_true = a.sqrt() * noise - (1 - a).sqrt() * x0
    loss = DiffusionLoss(sch, loss_type="mse", prediction_type="v")(eps, noise, t)["loss"]
    assert torch.allclose(loss, ((raw - v_true) ** 2).mean(), rtol=1e-3)
