"""Tests of the residual U-Net baseline: network, padding, training, checkpoints, inference."""

from __future__ import annotations

import pytest
import torch

from mrf_monai.baselines.unet import (
    UNetTrainer,
    build_unet,
    load_model,
    load_unet_checkpoint,
    pad_to_multiple,
    predict_padded,
    save_unet_checkpoint,
    unet_hyper_parameters,
)
from mrf_monai.engines import default_train_transforms, find_last_checkpoint
from mrf_monai.io.weights import load_training_checkpoint
from mrf_monai.transforms.intensity import condition_scale

TINY = {"rank": 2, "channels": [8, 16], "strides": [2], "num_res_units": 1}


def _pairs(n_items: int = 6, n: int = 32, rank: int = 2, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Normalised training pairs: piecewise-constant subspace images and their gridding through a
    real undersampled spiral subspace operator (``A^H D A c``, the simulator's condition)."""
    from mrf_monai.acquisition.density import pipe_menon_dcf
    from mrf_monai.acquisition.operators import SubspaceNufftOperator
    from mrf_monai.acquisition.trajectory import mrf_spiral_trajectory

    g = torch.Generator().manual_seed(seed)
    traj, _ = mrf_spiral_trajectory(24, matrix=n, samples_per_readout=96)
    q, _ = torch.linalg.qr(torch.randn(24, rank, dtype=torch.complex64, generator=g))
    op = SubspaceNufftOperator(traj, q, (n, n), None, pipe_menon_dcf(torch.as_tensor(traj), (n, n)))
    items = []
    for _ in range(n_items):
        c = torch.zeros(rank, n, n, dtype=torch.complex64)
        for _ in range(4):
            x0, y0 = torch.randint(0, n - 8, (2,), generator=g).tolist()
            w, h = torch.randint(4, 14, (2,), generator=g).tolist()
            val = torch.complex(torch.randn(rank, generator=g), torch.randn(rank, generator=g))
            c[:, x0 : x0 + w, y0 : y0 + h] += val[:, None, None]
        cond = op.grid_normal(c)
        scale = condition_scale(cond)
        items.append(
            {
                "image": torch.cat([c.real, c.imag]) / scale,
                "cond": torch.cat([cond.real, cond.imag]) / scale,
            }
        )
    return items


def _trainer(data, out_dir, model_kwargs=TINY, lr=1e-2, loss=None, **kw) -> UNetTrainer:
    """A trainer with the objects a bundle config builds: network, optimiser, loss."""
    net = build_unet(**model_kwargs, init_seed=0)
    args = dict(
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=lr),
        loss_function=torch.nn.L1Loss() if loss is None else loss,
        train_dataset=data,
        output_dir=out_dir,
        batch_size=4,
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    args.update(kw)
    return UNetTrainer(**args)


@torch.no_grad()
def _dataset_loss(trainer: UNetTrainer, data: list[dict[str, torch.Tensor]]) -> float:
    net = trainer.network
    return sum(
        float(trainer.loss_function(predict_padded(net, d["cond"][None]), d["image"][None])) for d in data
    )


def test_residual_unet_shapes_padding_and_identity_residual():
    net = build_unet(**TINY)
    assert net.divisor == 2
    x = torch.randn(2, 4, 30, 22)
    padded, crop = pad_to_multiple(x, 16)
    assert padded.shape[-2:] == (32, 32)
    torch.testing.assert_close(padded[..., crop[0], crop[1]], x)
    y = predict_padded(net, x)
    assert y.shape == x.shape
    # the network predicts a residual: with a zeroed last layer it is the identity
    for p in net.unet.parameters():
        torch.nn.init.zeros_(p)
    torch.testing.assert_close(predict_padded(net, x), x)
    with pytest.raises(ValueError, match="channels"):
        net(torch.zeros(1, 3, 16, 16))


def test_tiny_training_reduces_loss_and_checkpoint_roundtrip(tmp_path):
    data = _pairs()
    trainer = _trainer(
        data,
        tmp_path / "run",
        max_steps=24,
        train_transforms=default_train_transforms(patch_size=None),
        checkpoint_every=12,
        val_dataset=data,
        val_every=12,
        model_path=tmp_path / "model.pt",
        sequence="abc123",  # a sequence key (the list of pairs has no basis or sequence)
    )
    before = _dataset_loss(trainer, data)
    summary = trainer.run()
    assert summary["step"] == 24 and len(summary["losses"]) == 24
    after = _dataset_loss(trainer, data)
    assert after < 0.85 * before
    # the network beats the identity (the aliased condition) on whole items
    identity = sum(trainer.loss_function(d["cond"][None], d["image"][None]) for d in data)
    assert after < identity
    assert (tmp_path / "run" / "checkpoints" / "checkpoint_00000024.pt").is_file()
    assert len(summary["history"]) == 2 and summary["best_metric"] < float("inf")
    model, ckpt = load_unet_checkpoint(tmp_path / "model.pt")
    assert ckpt["hyper_parameters"]["sequence_key"] == "abc123"
    assert ckpt["hyper_parameters"]["data"]["basis"] is None
    assert ckpt["hyper_parameters"]["model"] == unet_hyper_parameters(**TINY)
    assert ckpt["hyper_parameters"]["training"]["loss"] == "l1"
    net, hp = load_model(tmp_path / "model.pt")
    assert hp["format"] == "mrf_monai.baselines.unet/2" and hp["step"] in (12, 24)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), model.state_dict().values()))
    # resuming at max_steps does nothing more and restores the step
    again = _trainer(data, tmp_path / "run", max_steps=24)
    assert again.run()["step"] == 24


def test_resume_is_exact_and_time_budget_stops_and_resumes(tmp_path):
    """Bit-exact resume (as for MRF-IDDPM) and max_time_s: a spent budget ends the run at a step
    with a checkpoint, and a resumed run finishes exactly like the uninterrupted one."""
    data = _pairs(4, n=16)
    kw = dict(train_transforms=default_train_transforms(patch_size=(8, 8)), batch_size=2, checkpoint_every=3)
    kw["model_kwargs"] = {**TINY, "dropout": 0.2}  # dropout draws from the (per-step seeded) global RNG
    full = _trainer(data, tmp_path / "full", max_steps=6, **kw)
    full.run()
    part = _trainer(data, tmp_path / "part", max_steps=3, **kw)
    part.run()
    resumed = _trainer(data, tmp_path / "part", max_steps=6, **kw)
    resumed.run()
    assert resumed.step == 6
    for (k, a), b in zip(full.network.state_dict().items(), resumed.network.state_dict().values()):
        assert torch.equal(a, b), k

    # a budget that is spent after the first step: the run stops at step 1, checkpoints, exports
    timed = _trainer(data, tmp_path / "timed", max_steps=6, max_time_s=1e-9, **kw)
    summary = timed.run()
    assert summary["step"] == 1 and len(summary["losses"]) == 1
    assert find_last_checkpoint(tmp_path / "timed" / "checkpoints").name == "checkpoint_00000001.pt"
    assert (tmp_path / "timed" / "model_final.pt").is_file()
    # resume without a budget: the same weights as the uninterrupted run
    rest = _trainer(data, tmp_path / "timed", max_steps=6, **kw)
    assert rest.run()["step"] == 6
    for (k, a), b in zip(full.network.state_dict().items(), rest.network.state_dict().values()):
        assert torch.equal(a, b), k
    ckpt = load_training_checkpoint(tmp_path / "timed" / "checkpoints" / "checkpoint_00000006.pt")
    assert ckpt["step"] == 6 and ckpt["format"] == "mrf_monai.baselines.unet/2" and len(ckpt["rng"]) == 1


def _tiny_raw_and_dictionary(n_frames: int = 24, n: int = 24, samples_per_readout: int = 96):
    """A real (small) dictionary and a raw subject of its sequence with a noise-free phantom."""
    import numpy as np

    from mrf_monai.acquisition.operators import SubspaceNufftOperator
    from mrf_monai.acquisition.trajectory import mrf_spiral_trajectory
    from mrf_monai.io.ismrmrd import RawSubject
    from mrf_monai.physics.dictionary import build_dictionary, t1t2_grid
    from mrf_monai.physics.sequence import fisp_mrf_jiang2015

    seq = fisp_mrf_jiang2015(n_frames)
    t1, t2 = t1t2_grid(step=0.3)
    d = build_dictionary(seq, t1, t2, rank=2)
    traj, interleaf = mrf_spiral_trajectory(n_frames, matrix=n, samples_per_readout=samples_per_readout)
    c = torch.zeros(2, n, n, dtype=torch.complex64)
    c[:, 6:18, 5:19] = d.compressed[len(d.compressed) // 2][:, None, None]
    k = SubspaceNufftOperator(traj, d.basis, (n, n)).forward(c)
    raw = RawSubject(
        kspace=k[None].numpy(),
        traj=traj[None],
        interleaf=interleaf[None],
        sequence=seq,
        matrix=(n, n),
        fov_mm=(230.0, 230.0, 5.0),
        position_mm=np.zeros((1, 3)),
    )
    return raw, d


def _bundle_runner(tmp_path, model_path, dictionary, raw):
    """The U-Net bundle's inference components (configs/inference.json) for one tiny subject."""
    from mrf_monai.io.ismrmrd import write_raw
    from mrf_monai.pipeline import build_run

    write_raw(tmp_path / "data" / "sub-01" / "raw.h5", raw)
    return build_run(
        "unet",
        {
            "dataset_dir": str(tmp_path / "data"),
            "output_dir": str(tmp_path / "out"),
            "model_path": str(model_path),
            "dictionary": dictionary,
            "device": "cpu",
            "progress": False,
        },
    )


def _tsmi(runner, raw, dictionary=None):
    """The U-Net's compressed TSMI of slice 0 through the bundle's components."""
    if dictionary is not None:
        next(t for t in runner.preprocessing.transforms if hasattr(t, "provider")).provider.fixed = dictionary
    out, _, _ = runner.process_slice({"raw": raw, "slice": 0, "label": "01"})
    return out["tsmi"]


def test_bundle_inference_normalises_and_checks_compatibility(tmp_path):
    import dataclasses

    from mrf_monai.baselines.unet import training_data_description

    raw, d = _tiny_raw_and_dictionary()
    net = build_unet(**TINY)
    path = save_unet_checkpoint(
        tmp_path / "m.pt", net, unet_hyper_parameters(**TINY), training_data_description(dictionary=d)
    )
    runner = _bundle_runner(tmp_path, path, d, raw)
    tsmi = _tsmi(runner, raw)
    assert tsmi.shape == (2, *raw.matrix) and tsmi.dtype == torch.complex64
    # scale equivariance: the per-slice normalisation makes the estimate 1-homogeneous
    scaled = dataclasses.replace(raw, kspace=raw.kspace * 7.5)
    torch.testing.assert_close(_tsmi(runner, scaled), 7.5 * tsmi, rtol=1e-4, atol=1e-4)
    # a dictionary whose basis differs by column phases: same result, expressed in its basis
    phase = torch.tensor([1.0, -1.0j], dtype=torch.complex64)
    d_rot = dataclasses.replace(d, basis=d.basis * phase, compressed=d.compressed * phase.conj())
    tsmi_rot = _tsmi(runner, raw, d_rot)
    torch.testing.assert_close(tsmi_rot, tsmi * phase.conj()[:, None, None], rtol=1e-4, atol=1e-4)
    # clear errors: rank, sequence, missing weights
    with pytest.raises(ValueError, match="rank"):
        _tsmi(runner, raw, d.truncate_rank(1))
    raw_other = dataclasses.replace(raw, sequence=dataclasses.replace(raw.sequence, te_ms=1.5))
    with pytest.raises(ValueError, match="another"):
        _tsmi(runner, raw_other, d)
    with pytest.raises(ValueError, match="missing.pt.*does not exist"):
        _bundle_runner(tmp_path / "x", tmp_path / "missing.pt", d, raw)


def test_shipped_weights_rebuild_the_shipped_network(tmp_path):
    """bundles/unet_baseline/models/model.pt + model.json (loaded with weights_only=True)."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bundles" / "unet_baseline" / "models" / "model.pt"
    net, hp = load_model(path)
    assert hp["format"] == "mrf_monai.baselines.unet/2" and hp["model"]["channels"] == [32, 64, 128, 256]
    assert hp["rank"] == 5 and hp["data"]["patch_size"] == [64, 64] and hp["training"]["loss"] == "l1"
    assert net.divisor == 8 and not net.training
    assert hp["data"]["basis"].shape == (200, 5) and len(hp["data"]["channel_scale"]) == 10
    from mrf_monai.baselines.unet import PaddedInferer

    x = torch.randn(10, 40, 36, generator=torch.Generator().manual_seed(0))
    out = PaddedInferer(16)(x, net)
    assert out.shape == (1, 10, 40, 36) and torch.isfinite(out).all()
