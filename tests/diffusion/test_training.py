# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""MRF-IDDPM training on the shared engine: determinism, exact resume, EMA, checkpoints, validation, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mrf_monai.diffusion.ema import ExponentialMovingAverage
from mrf_monai.diffusion.losses import DiffusionLoss
from mrf_monai.diffusion.model import build_model, build_scheduler, load_checkpoint_model, predict_eps_and_var
from mrf_monai.diffusion.training import DiffusionTrainer
from mrf_monai.engines import (
    SeededTransformDataset,
    StepBatchSampler,
    default_train_transforms,
    find_last_checkpoint,
    mape,
)
from mrf_monai.io.weights import load_training_checkpoint, load_weights

TINY_MODEL = {
    "rank": 1,
    "channels": [8, 16],
    "attention_levels": [False, True],
    "num_res_blocks": 1,
    "num_head_channels": 8,
    "norm_num_groups": 8,
    "dropout": 0.1,
}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _pairs(n=4, size=20, channels=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ref = torch.randn(channels, size, size, generator=g)
        out.append({"image": ref, "cond": ref + 0.5 * torch.randn(channels, size, size, generator=g)})
    return out


def _trainer(out_dir, max_steps, data, model_kwargs=TINY_MODEL, lr=1e-3, loss_type="hybrid", **kw):
    """A trainer with the objects a bundle config builds: network, optimiser, loss."""
    network = build_model(**model_kwargs, init_seed=0)
    loss = DiffusionLoss(
        build_scheduler(), loss_type=loss_type, prediction_type=model_kwargs.get("prediction_type", "epsilon")
    )
    args = dict(
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), lr=lr),
        loss_function=loss,
        train_dataset=data,
        output_dir=out_dir,
        max_steps=max_steps,
        batch_size=2,
        ema_decay=0.9,
        train_transforms=default_train_transforms(patch_size=(8, 8)),
        checkpoint_every=3,
        log_every=1,
        val_dataset=data,
        val_roi=(8, 8),
        val_every=3,
        val_ddim_steps=2,
        progress=False,
        tensorboard=False,
    )
    args.update(kw)
    return DiffusionTrainer(**args)


def test_seeded_transforms_and_sampler():
    data = _pairs(3)
    ds = SeededTransformDataset(data, default_train_transforms(patch_size=(8, 8)))
    a, b = ds[(1, 123)], ds[(1, 123)]
    assert a["image"].shape == (2, 8, 8) and a["cond"].shape == (2, 8, 8)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["cond"], b["cond"])
    # image and cond are cropped/flipped jointly: the crop of cond - image is the same crop of the noise
    others = [ds[(1, s)]["image"] for s in range(5)]
    assert any(not torch.equal(o, a["image"]) for o in others)
    s0 = StepBatchSampler(10, 4, seed=0, process_rank=0, start_step=0, max_steps=5)
    s1 = StepBatchSampler(10, 4, seed=0, process_rank=1, start_step=0, max_steps=5)
    resumed = StepBatchSampler(10, 4, seed=0, process_rank=0, start_step=2, max_steps=5)
    assert list(s0)[2:] == list(resumed)
    assert list(s0) != list(s1)
    assert len(resumed) == 3


def test_joint_crop_keeps_pairs_aligned():
    ref = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(2, 16, 16)
    ds = SeededTransformDataset(
        [{"image": ref, "cond": 2 * ref}], default_train_transforms(patch_size=(8, 8))
    )
    for seed in range(4):
        item = ds[(0, seed)]
        assert torch.equal(torch.as_tensor(item["cond"]), 2 * torch.as_tensor(item["image"]))


def test_ema_update():
    net = torch.nn.Linear(3, 2)
    ema = ExponentialMovingAverage(net, decay=0.9)
    before = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net)
    for b, p, q in zip(before, net.parameters(), ema.module.parameters()):
        assert torch.allclose(q, 0.9 * b + 0.1 * p)
    warm = ExponentialMovingAverage(net, decay=0.9999, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1)
    state = ema.state_dict()
    fresh = ExponentialMovingAverage(torch.nn.Linear(3, 2), decay=0.9)
    fresh.load_state_dict(state)
    assert fresh.num_updates == 1
    assert all(torch.equal(a, b) for a, b in zip(fresh.module.parameters(), ema.module.parameters()))


def test_resume_is_exact_and_checkpoints_are_complete(tmp_path):
    data = _pairs()
    full = _trainer(tmp_path / "full", 6, data, model_path=tmp_path / "models" / "model.pt")
    summary = full.run()
    assert summary["step"] == 6 and len(summary["history"]) == 2
    part = _trainer(tmp_path / "part", 3, data)
    part.run()
    resumed = _trainer(tmp_path / "part", 6, data)
    resumed.run()
    assert resumed.step == 6
    for (k, a), b in zip(full.network.state_dict().items(), resumed.network.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(full.ema.module.parameters(), resumed.ema.module.parameters()):
        assert torch.equal(a, b)
    # training changed the weights
    fresh = build_model(**TINY_MODEL)
    assert any(not torch.equal(a, b) for a, b in zip(fresh.parameters(), full.network.parameters()))

    last = find_last_checkpoint(tmp_path / "full" / "checkpoints")
    assert last is not None and last.name == "checkpoint_00000006.pt"
    ckpt = torch.load(last, weights_only=True)  # training checkpoints load safely
    for key in ("model", "ema", "optimizer", "lr_scheduler", "step", "rng", "hyper_parameters", "state_dict"):
        assert key in ckpt
    assert ckpt["hyper_parameters"]["model"]["channels"] == [8, 16]
    assert set(load_training_checkpoint(last)) == set(ckpt)
    # the exported model (best by validation) rebuilds without any config and holds EMA weights
    model = load_checkpoint_model(tmp_path / "models" / "model.pt")
    best, best_hp = load_weights(tmp_path / "full" / "checkpoints" / "best.pt")
    best_step = min(summary["history"], key=lambda h: h["metric"])["step"]
    assert best_hp["model"] == ckpt["hyper_parameters"]["model"] and best_hp["step"] == best_step
    assert all(torch.equal(model.state_dict()[k], v) for k, v in best.items())
    # the exported weights are a plain state dict (what monai.bundle ckpt_export loads)
    plain = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert (
        all(isinstance(v, torch.Tensor) for v in plain.values()) and plain.keys() == model.state_dict().keys()
    )
    final = load_checkpoint_model(tmp_path / "full" / "model_final.pt")
    x, c, t = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8), torch.tensor([10])
    assert torch.equal(
        predict_eps_and_var(final, x, t, c)[0], predict_eps_and_var(full.ema.module, x, t, c)[0]
    )


def test_training_reduces_loss(tmp_path):
    """Tiny steps on one fixed pair: the noise-prediction error on a fixed batch goes down."""
    data = _pairs(1, size=8)
    tr = _trainer(
        tmp_path,
        40,
        data,
        train_transforms=None,
        batch_size=8,
        lr=5e-3,
        log_every=40,
        val_dataset=None,
        checkpoint_every=0,
        loss_type="mse",
        model_kwargs={**TINY_MODEL, "dropout": 0.0},
    )
    g = torch.Generator().manual_seed(1)
    x0, cond = data[0]["image"][None].repeat(16, 1, 1, 1), data[0]["cond"][None].repeat(16, 1, 1, 1)
    noise, t = torch.randn(x0.shape, generator=g), torch.linspace(0, 999, 16).long()
    x_t = tr.scheduler.add_noise(x0, noise, t)

    def error():
        with torch.no_grad():
            return float(((predict_eps_and_var(tr.network.eval(), x_t, t, cond)[0] - noise) ** 2).mean())

    before = error()
    tr.run()
    assert error() < 0.8 * before


def test_validation_with_dictionary(tmp_path):
    from mrf_monai.physics.dictionary import build_dictionary, t1t2_grid
    from mrf_monai.physics.sequence import fisp_mrf_jiang2015

    t1, t2 = t1t2_grid(step=0.4)
    d = build_dictionary(fisp_mrf_jiang2015(60), t1, t2, rank=1)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, d.n_atoms, (8, 8), generator=g)
    tsmi = d.compressed[idx].permute(2, 0, 1)  # (R, 8, 8) complex
    ref = torch.cat([tsmi.real, tsmi.imag]).float()
    item = {"image": ref, "cond": ref + 0.01 * torch.randn(ref.shape, generator=g)}
    tr = _trainer(tmp_path, 1, [item], dictionary=d, model_kwargs={**TINY_MODEL, "dropout": 0.0})
    res = tr.validate()
    for k in ("t1_mape", "t2_mape", "cond_t1_mape", "cond_t2_mape"):
        assert res[k] == res[k] and res[k] >= 0  # finite numbers
    assert res["metric"] == pytest.approx(res["t1_mape"] + res["t2_mape"])
    assert res["cond_t1_mape"] < 5.0  # nearly noise-free condition matches almost perfectly
    assert res["images"]["sample"].shape == ref.shape
    assert mape(
        torch.tensor([1.1, 2.0]), torch.tensor([1.0, 2.0]), torch.tensor([True, True])
    ) == pytest.approx(5.0)


def test_init_from_starts_a_new_run_and_resuming_takes_precedence(tmp_path):
    """init_from: network, EMA and channel scale from exported weights, fresh optimiser and step 0;
    a run folder with checkpoints resumes bit-exactly (the file is then not even read)."""
    from mrf_monai.io.weights import WeightsFileError

    data = _pairs()
    base = _trainer(tmp_path / "base", 3, data, val_every=0)
    base.run()
    start = tmp_path / "base" / "model_final.pt"
    state, hp = load_weights(start)
    tr = _trainer(tmp_path / "ft", 4, _pairs(seed=1), val_every=0, init_from=start)
    assert tr.step == 0 and not tr.optimizer.state
    assert all(torch.equal(state[k], v) for k, v in tr.network.state_dict().items())
    assert all(torch.equal(state[k], v) for k, v in tr.ema.module.state_dict().items())
    assert torch.equal(tr.channel_scale, torch.tensor(hp["data"]["channel_scale"]))
    assert tr.init_info["step"] == 3 and tr.init_info["channel_scale"] == "init_from"
    tr.run()
    # the same fine-tuning interrupted after 2 steps and resumed (init_from now points nowhere)
    _trainer(tmp_path / "part", 2, _pairs(seed=1), val_every=0, init_from=start).run()
    resumed = _trainer(tmp_path / "part", 4, _pairs(seed=1), val_every=0, init_from=tmp_path / "gone.pt")
    resumed.run()
    for (k, a), b in zip(tr.network.state_dict().items(), resumed.network.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(tr.ema.module.parameters(), resumed.ema.module.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(tr.channel_scale, resumed.channel_scale)
    _, ft_hp = load_weights(tmp_path / "ft" / "model_final.pt")
    _, part_hp = load_weights(tmp_path / "part" / "model_final.pt")
    assert ft_hp["training"]["init_from"] == part_hp["training"]["init_from"] == tr.init_info
    assert ft_hp["training"]["init_from"]["path"] == str(start) and ft_hp["step"] == 4
    assert base.weights_hyper_parameters()["training"]["init_from"] is None  # trained from scratch
    # another network: the error names what differs
    with pytest.raises(WeightsFileError, match=r"channels: \[8, 16\] in the file, \[16, 16\] in the config"):
        _trainer(
            tmp_path / "other", 1, data, init_from=start, model_kwargs={**TINY_MODEL, "channels": [16, 16]}
        )
    with pytest.raises(FileNotFoundError):
        _trainer(tmp_path / "none", 1, data, init_from=tmp_path / "gone.pt")


def test_hybrid_requires_learned_sigma(tmp_path):
    with pytest.raises(ValueError):
        _trainer(tmp_path, 1, _pairs(1), model_kwargs={**TINY_MODEL, "learn_sigma": False})


DDP_SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from mrf_monai.diffusion.losses import DiffusionLoss
    from mrf_monai.diffusion.model import build_model, build_scheduler
    from mrf_monai.diffusion.training import DiffusionTrainer
    from mrf_monai.engines import default_train_transforms
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.randn(2, 16, 16, generator=g), "cond": torch.randn(2, 16, 16, generator=g)}
            for _ in range(4)]
    net = build_model(rank=1, channels=[8, 16], attention_levels=[False, True], num_res_blocks=1,
                      num_head_channels=8, norm_num_groups=8, init_seed=0)
    tr = DiffusionTrainer(net, torch.optim.Adam(net.parameters(), lr=1e-4), DiffusionLoss(build_scheduler()),
                          data, sys.argv[1], max_steps=2, batch_size=2,
                          train_transforms=default_train_transforms(patch_size=(8, 8)), checkpoint_every=2,
                          progress=False, tensorboard=False, num_threads=1, max_time_s=3600)
    tr.run()
    torch.save({"net": tr.network.state_dict(), "batch": tr.loader().batch_sampler.batch(0)},
               f"{sys.argv[1]}/rank{tr.process_rank}.pt")
    dist.destroy_process_group()
    """
)


def test_ddp_two_processes_gloo(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(tmp_path / "run"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "run" / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "run" / "rank1.pt", weights_only=True)
    for k, v in r0["net"].items():
        assert torch.equal(v, r1["net"][k]), k  # DDP kept the replicas in sync
    assert r0["batch"] != r1["batch"]  # each rank draws its own data
    ckpt = load_training_checkpoint(Path(tmp_path / "run" / "checkpoints" / "checkpoint_00000002.pt"))
    assert ckpt["hyper_parameters"]["training"]["world_size"] == 2
    assert len(ckpt["rng"]) == 2
