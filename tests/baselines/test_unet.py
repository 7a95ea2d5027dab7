"""Tests of the residual U-Net baseline: network, padding, training, checkpoints, inference."""

from __future__ import annotations

import pytest
import torch

from mrf_monai.baselines.unet import (
    UNetReconstructor,
    UNetTrainer,
    build_unet,
    load_unet_checkpoint,
    pad_to_multiple,
    predict_padded,
    save_unet_checkpoint,
    unet_hyper_parameters,
)
from mrf_monai.transforms.intensity import condition_scale

TINY = {"rank": 2, "channels": [8, 16], "strides": [2], "num_res_units": 1}


def _pairs(n_items: int = 6, n: int = 32, rank: int = 2, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Normalised training pairs: piecewise-constant subspace images and their gridding through a
    real undersampled spiral subspace operator (``A^H D A c``, the simulator's condition)."""
    from mrf_monai.acquisition.density import pipe_menon_dcf
    from mrf_monai.acquisition.operators import SubspaceNufftOperator
    from mrf_monai.acquisition.trajectory import mrf_spiral_trajectory

    g = torch.Generator().manual_seed(seed)
    traj, _ = mrf_spiral_trajectory(24, matrix=n, n_samples=96)
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


@torch.no_grad()
def _dataset_loss(trainer: UNetTrainer, data: list[dict[str, torch.Tensor]]) -> float:
    net = trainer.network
    return sum(float(trainer.loss(predict_padded(net, d["cond"][None]), d["image"][None])) for d in data)


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
    from mrf_monai.diffusion.training import default_train_transforms

    data = _pairs()
    trainer = UNetTrainer(
        data,
        output_dir=tmp_path / "run",
        model_kwargs=TINY,
        loss="l1",
        max_steps=24,
        batch_size=4,
        lr=1e-2,
        train_transforms=default_train_transforms(patch_size=None),
        device="cpu",
        checkpoint_every=12,
        val_dataset=data,
        val_every=12,
        model_path=tmp_path / "model.pt",
        sequence="abc123",  # a sequence key (the list of pairs has no basis or sequence)
        progress=False,
        tensorboard=False,
    )
    before = _dataset_loss(trainer, data)
    summary = trainer.run()
    assert summary["step"] == 24 and len(summary["losses"]) == 24
    after = _dataset_loss(trainer, data)
    assert after < 0.85 * before
    # the network beats the identity (the aliased condition) on whole items
    identity = sum(trainer.loss(d["cond"][None], d["image"][None]) for d in data)
    assert after < identity
    assert (tmp_path / "run" / "checkpoints" / "checkpoint_00000024.pt").is_file()
    assert len(summary["history"]) == 2 and summary["best_metric"] < float("inf")
    model, ckpt = load_unet_checkpoint(tmp_path / "model.pt")
    assert ckpt["hyper_parameters"]["sequence_key"] == "abc123"
    assert ckpt["hyper_parameters"]["data"]["basis"] is None
    assert ckpt["hyper_parameters"]["model"] == unet_hyper_parameters(**TINY)
    assert ckpt["hyper_parameters"]["training"]["loss"] == "l1"
    # resuming at max_steps does nothing more and restores the step
    again = UNetTrainer(
        data,
        output_dir=tmp_path / "run",
        model_kwargs=TINY,
        max_steps=24,
        batch_size=4,
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    assert again.run()["step"] == 24


def _tiny_raw_and_dictionary(n_frames: int = 24, n: int = 24, n_samples: int = 96):
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
    traj, interleaf = mrf_spiral_trajectory(n_frames, matrix=n, n_samples=n_samples)
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


def test_reconstructor_normalises_and_checks_compatibility(tmp_path):
    import dataclasses

    from mrf_monai.baselines.unet import training_data_description

    raw, d = _tiny_raw_and_dictionary()
    net = build_unet(**TINY)
    path = save_unet_checkpoint(
        tmp_path / "m.pt", net, unet_hyper_parameters(**TINY), training_data_description(dictionary=d)
    )
    rec = UNetReconstructor(model_path=path, device="cpu")
    g = torch.Generator().manual_seed(0)
    cond = torch.complex(torch.randn(2, 30, 26, generator=g), torch.randn(2, 30, 26, generator=g))
    out = rec.denoise(cond)
    assert out.shape == cond.shape and out.is_complex()
    # scale equivariance: the per-slice normalisation makes the estimate 1-homogeneous
    torch.testing.assert_close(rec.denoise(7.5 * cond), 7.5 * out, rtol=1e-4, atol=1e-4)
    # the whole slice through the pipeline protocol
    tsmi = rec(raw, 0, d)["tsmi"]
    assert tsmi.shape == (2, *raw.matrix) and tsmi.dtype == torch.complex64
    # a dictionary whose basis differs by column phases: same result, expressed in its basis
    phase = torch.tensor([1.0, -1.0j], dtype=torch.complex64)
    d_rot = dataclasses.replace(d, basis=d.basis * phase, compressed=d.compressed * phase.conj())
    tsmi_rot = rec(raw, 0, d_rot)["tsmi"]
    torch.testing.assert_close(tsmi_rot, tsmi * phase.conj()[:, None, None], rtol=1e-4, atol=1e-4)
    # clear errors: rank, sequence
    with pytest.raises(ValueError, match="rank"):
        rec(raw, 0, d.truncate_rank(1))
    raw_other = dataclasses.replace(raw, sequence=dataclasses.replace(raw.sequence, te_ms=1.5))
    with pytest.raises(ValueError, match="another MRF sequence"):
        rec(raw_other, 0, d)
    with pytest.raises(FileNotFoundError, match="monai.bundle"):
        UNetReconstructor(model_path=tmp_path / "missing.pt")
