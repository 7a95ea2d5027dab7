# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Network, schedule and checkpoint helpers of :mod:`mrf_monai.diffusion.model`."""

from __future__ import annotations

import pytest
import torch

from mrf_monai.diffusion.model import (
    CHECKPOINT_FORMAT,
    build_ddim_scheduler,
    build_model,
    build_scheduler,
    load_checkpoint_model,
    model_hyper_parameters,
    predict_eps_and_var,
    scheduler_from_checkpoint,
)

TINY = dict(
    channels=(8, 16), attention_levels=(False, True), num_res_blocks=1, num_head_channels=8, norm_num_groups=8
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_channels_and_split(learn_sigma):
    torch.manual_seed(0)
    rank = 2
    net = build_model(rank=rank, learn_sigma=learn_sigma, **TINY)
    assert net.in_channels == 4 * rank
    assert net.out_channels == (4 * rank if learn_sigma else 2 * rank)
    x = torch.randn(3, 2 * rank, 8, 8)
    cond = torch.randn(3, 2 * rank, 8, 8)
    eps, v = predict_eps_and_var(net, x, torch.tensor([0, 10, 999]), cond)
    assert eps.shape == x.shape
    assert (v is not None) == learn_sigma
    if learn_sigma:
        assert v.shape == x.shape
    # int, scalar tensor and per-sample timesteps give the same result
    e1, _ = predict_eps_and_var(net, x, 7, cond)
    e2, _ = predict_eps_and_var(net, x, torch.tensor(7), cond)
    e3, _ = predict_eps_and_var(net, x, torch.full((3,), 7), cond)
    assert torch.equal(e1, e2) and torch.equal(e1, e3)


def test_condition_is_second_and_used():
    torch.manual_seed(0)
    net = build_model(rank=1, **TINY)
    # the zero-initialised output layer would hide any dependence: randomise it
    torch.nn.init.normal_(net.out[2].conv.weight, std=0.1)
    x, cond = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8)
    t = torch.tensor([5])
    eps, _ = predict_eps_and_var(net, x, t, cond)
    direct = net(torch.cat([x, cond], 1), timesteps=t)
    assert torch.equal(eps, direct[:, :2])
    eps_other, _ = predict_eps_and_var(net, x, t, cond + 1.0)
    assert not torch.allclose(eps, eps_other)
    with pytest.raises(ValueError):
        predict_eps_and_var(net, x, t, cond[..., :4])


def test_dropout_keeps_parameter_names_and_is_active_in_training():
    torch.manual_seed(0)
    plain = build_model(rank=1, **TINY)
    drop = build_model(rank=1, dropout=0.5, **TINY)
    assert plain.state_dict().keys() == drop.state_dict().keys()
    drop.load_state_dict(plain.state_dict())
    for m in drop.modules():  # make the residual branches matter
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=0.2)
    x, cond, t = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8), torch.tensor([3])
    drop.train()
    a, _ = predict_eps_and_var(drop, x, t, cond)
    b, _ = predict_eps_and_var(drop, x, t, cond)
    assert not torch.allclose(a, b)
    drop.eval()
    a, _ = predict_eps_and_var(drop, x, t, cond)
    b, _ = predict_eps_and_var(drop, x, t, cond)
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        build_model(dropout=1.0)


def test_default_model_is_the_agreed_size():
    net = build_model()
    assert net.in_channels == 20 and net.out_channels == 20
    assert list(net.block_out_channels) == [64, 128, 128]


def test_linear_schedule():
    s = build_scheduler()
    assert s.num_train_timesteps == 1000
    assert torch.allclose(s.betas, torch.linspace(1e-4, 0.02, 1000))
    x0, noise = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    t = torch.tensor([0, 999])
    ab = (
        torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[t]
        .float()
        .view(2, 1, 1, 1)
    )
    assert torch.allclose(s.add_noise(x0, noise, t), ab.sqrt() * x0 + (1 - ab).sqrt() * noise, atol=1e-6)
    ddim = build_ddim_scheduler(num_train_timesteps=100, beta_end=0.05)
    assert torch.allclose(ddim.betas, torch.linspace(1e-4, 0.05, 100))
    assert not s.clip_sample


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    hp = model_hyper_parameters(rank=1, learn_sigma=True, **TINY)
    net = build_model(**hp)
    ema = build_model(**hp)
    for p in ema.parameters():
        torch.nn.init.normal_(p, std=0.05)
    path = tmp_path / "model.pt"
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "hyper_parameters": {"model": hp, "scheduler": {"num_train_timesteps": 500, "beta_end": 0.03}},
            "state_dict": ema.state_dict(),
            "model": net.state_dict(),
        },
        path,
    )
    loaded = load_checkpoint_model(path)
    assert not loaded.training
    x, cond, t = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8), torch.tensor([1])
    ema.eval()
    net.eval()
    assert torch.equal(predict_eps_and_var(loaded, x, t, cond)[0], predict_eps_and_var(ema, x, t, cond)[0])
    raw = load_checkpoint_model(path, weights="model")
    assert torch.equal(predict_eps_and_var(raw, x, t, cond)[0], predict_eps_and_var(net, x, t, cond)[0])
    sched = scheduler_from_checkpoint(path)
    assert sched.num_train_timesteps == 500 and abs(float(sched.betas[-1]) - 0.03) < 1e-7
    torch.save({"weights": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError):
        load_checkpoint_model(tmp_path / "bad.pt")
