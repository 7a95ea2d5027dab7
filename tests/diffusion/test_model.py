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
    load_model,
    model_hyper_parameters,
    predict_eps_and_var,
    save_model,
    scheduler_from_checkpoint,
    scheduler_hyper_parameters,
)
from mrf_monai.io.weights import WeightsFileError, save_training_checkpoint

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


def test_factories_record_their_arguments_and_seed_the_weights():
    net = build_model(rank=1, init_seed=3, **TINY)
    assert net.hyper_parameters == model_hyper_parameters(rank=1, **TINY)
    again = build_model(rank=1, init_seed=3, **TINY)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), again.parameters()))
    state = torch.get_rng_state()
    build_model(rank=1, init_seed=4, **TINY)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched
    sched = build_scheduler(num_train_timesteps=500, beta_end=0.03)
    assert sched.hyper_parameters == scheduler_hyper_parameters(500, beta_end=0.03)
    assert torch.allclose(build_scheduler(**sched.hyper_parameters).betas, sched.betas)


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    hp = model_hyper_parameters(rank=1, learn_sigma=True, **TINY)
    net = build_model(**hp)
    ema = build_model(**hp)
    for p in ema.parameters():
        torch.nn.init.normal_(p, std=0.05)
    scheduler = {"num_train_timesteps": 500, "beta_end": 0.03}
    # exported weights: plain state dict + JSON
    path = save_model(tmp_path / "model.pt", ema, {"scheduler": scheduler, "step": 7})
    assert (tmp_path / "model.json").is_file()
    # a training checkpoint: EMA ("state_dict") and raw weights ("model") in one safe dictionary
    ckpt_path = save_training_checkpoint(
        tmp_path / "checkpoint_00000007.pt",
        {
            "format": CHECKPOINT_FORMAT,
            "hyper_parameters": {"model": hp, "scheduler": scheduler},
            "state_dict": ema.state_dict(),
            "model": net.state_dict(),
            "step": 7,
        },
    )
    x, cond, t = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8), torch.tensor([1])
    ema.eval()
    net.eval()
    for source in (path, ckpt_path):
        loaded = load_checkpoint_model(source)
        assert not loaded.training
        assert torch.equal(
            predict_eps_and_var(loaded, x, t, cond)[0], predict_eps_and_var(ema, x, t, cond)[0]
        )
        sched = scheduler_from_checkpoint(source)
        assert sched.num_train_timesteps == 500 and abs(float(sched.betas[-1]) - 0.03) < 1e-7
    raw = load_checkpoint_model(ckpt_path, weights="model")
    assert torch.equal(predict_eps_and_var(raw, x, t, cond)[0], predict_eps_and_var(net, x, t, cond)[0])
    model, hyper = load_model(path)
    assert hyper["model"] == hp and hyper["format"] == CHECKPOINT_FORMAT and hyper["step"] == 7
    assert scheduler_from_checkpoint(hyper).num_train_timesteps == 500
    torch.save({"weights": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        load_checkpoint_model(tmp_path / "bad.pt")
    torch.save(ema.state_dict(), tmp_path / "no_json.pt")  # weights without their hyper-parameters
    with pytest.raises(FileNotFoundError, match="no_json.json"):
        load_model(tmp_path / "no_json.pt")
    # the pickled single dictionary of older releases: refused with what to do
    torch.save(
        {
            "format": "mrf_monai.diffusion/1",
            "hyper_parameters": {"model": hp},
            "state_dict": ema.state_dict(),
        },
        tmp_path / "old.pt",
    )
    with pytest.raises(WeightsFileError, match="re-export"):
        load_model(tmp_path / "old.pt")


def test_shipped_weights_rebuild_the_shipped_network():
    """bundles/mrf_iddpm/models/model.pt + model.json (loaded with weights_only=True)."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bundles" / "mrf_iddpm" / "models" / "model.pt"
    net, hp = load_model(path)
    assert hp["format"] == CHECKPOINT_FORMAT and hp["model"]["prediction_type"] == "v"
    assert hp["model"]["channels"] == [32, 64, 64] and hp["data"]["patch_size"] == [32, 32]
    assert net.in_channels == 20 and net.out_channels == 20 and not net.training
    assert len(hp["data"]["channel_scale"]) == 10 and hp["data"]["basis"].shape == (200, 5)
    sched = scheduler_from_checkpoint(hp)
    assert sched.num_train_timesteps == 1000
    x, c = torch.zeros(1, 10, 32, 32), torch.zeros(1, 10, 32, 32)
    eps, v = predict_eps_and_var(net, x, torch.tensor([10]), c, sched.alphas_cumprod)
    assert torch.isfinite(eps).all() and v is not None and torch.isfinite(v).all()
