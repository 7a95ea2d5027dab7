"""LoadRawSubject(d): raw.h5 -> tensors, one slice or all."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrf_monai.io.ismrmrd import RawSubject, write_raw
from mrf_monai.physics.sequence import MRFSequence
from mrf_monai.transforms.io import LoadRawSubject, LoadRawSubjectd


@pytest.fixture
def raw_file(tmp_path):
    rng = np.random.default_rng(3)
    shape = (2, 2, 6, 16)
    kspace = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    traj = rng.uniform(-0.5, 0.5, (2, 6, 16, 2)).astype(np.float32)
    seq = MRFSequence("FISP", np.linspace(10, 40, 6), 12.0, 2.0, 20.0)
    sub = RawSubject(
        kspace, traj, np.zeros((2, 6), int), seq, (8, 8), (200.0, 200.0, 5.0), [[0, 0, 0], [0, 0, 5.0]]
    )
    return write_raw(tmp_path / "sub-01" / "raw.h5", sub), sub


def test_load_one_slice_and_all(raw_file):
    path, sub = raw_file
    one = LoadRawSubject(slice_index=1)(path)
    assert one["kspace"].shape == (2, 6, 16) and one["kspace"].dtype == torch.complex64
    np.testing.assert_array_equal(one["kspace"].numpy(), sub.kspace[1])
    assert one["traj"].shape == (6, 16, 2) and one["traj"].dtype == torch.float32
    np.testing.assert_allclose(one["affine"].numpy(), sub.affine(1))
    assert (
        one["sequence"] == sub.sequence and one["meta"]["slice_index"] == 1 and one["meta"]["n_slices"] == 2
    )
    every = LoadRawSubject()(path)
    assert every["kspace"].shape == (2, 2, 6, 16)
    np.testing.assert_allclose(every["affine"].numpy(), sub.affine())
    with pytest.raises(IndexError, match="slice 5"):
        LoadRawSubject()(path, 5)


def test_dict_form_with_slice_key(raw_file):
    path, sub = raw_file
    d = LoadRawSubjectd(keys="raw", slice_key="slice")({"raw": path, "slice": 0, "label": "01"})
    assert d["raw"] == path and d["label"] == "01"
    np.testing.assert_array_equal(d["kspace"].numpy(), sub.kspace[0])
    assert set(d) >= {"kspace", "traj", "interleaf", "sequence", "affine", "meta"}
    assert d["readouts_per_frame"] == 1 and d["noise"] is None and d["dcf"] is None


def test_multi_readout_noise_and_trajectory_file(tmp_path):
    """Several readouts per frame, the noise scan and a trajectory file's dcf reach the tensors."""
    from mrf_monai.io.trajectory_file import write_trajectory_file

    rng = np.random.default_rng(4)
    shape = (2, 3, 5, 4 * 12)  # 4 readouts of 12 samples per frame
    kspace = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    traj = rng.uniform(-0.5, 0.5, (5, 4, 12, 2)).astype(np.float32)
    noise = (rng.standard_normal((3, 30)) + 1j * rng.standard_normal((3, 30))).astype(np.complex64)
    seq = MRFSequence("FISP", np.linspace(10, 40, 5), 12.0, 2.0, 20.0)
    sub = RawSubject(
        kspace,
        np.broadcast_to(traj.reshape(1, 5, 48, 2), (2, 5, 48, 2)),
        np.broadcast_to(np.arange(20).reshape(5, 4), (2, 5, 4)),
        seq,
        (8, 8),
        (200.0, 200.0, 5.0),
        [[0, 0, 0], [0, 0, 5.0]],
        readouts_per_frame=4,
        noise=noise,
    )
    path = write_raw(tmp_path / "sub-01" / "raw.h5", sub, include_trajectory=False)
    dcf = rng.uniform(0.5, 1.5, (5, 4, 12)).astype(np.float32)
    tfile = write_trajectory_file(tmp_path / "traj.npz", traj, dcf)
    one = LoadRawSubject(slice_index=1, trajectory=tfile)(path)
    assert one["kspace"].shape == (3, 5, 48) and one["readouts_per_frame"] == 4
    np.testing.assert_array_equal(one["traj"].numpy(), traj.reshape(5, 48, 2))
    np.testing.assert_array_equal(one["interleaf"].numpy(), np.arange(20).reshape(5, 4))
    np.testing.assert_array_equal(one["noise"].numpy(), noise)
    np.testing.assert_array_equal(one["dcf"].numpy(), dcf.reshape(5, 48))
    assert one["meta"]["samples_per_readout"] == 12
    d = LoadRawSubjectd(keys="raw", trajectory_key="traj_file")({"raw": path, "traj_file": tfile})
    assert d["kspace"].shape == (2, 3, 5, 48) and d["dcf"].shape == (2, 5, 48)
    with pytest.raises(ValueError, match="trajectory=FILE"):
        LoadRawSubject()(path)
    # an already read subject
    assert (
        LoadRawSubject(0)(sub)["readouts_per_frame"] == 4 and LoadRawSubject(0)(sub)["meta"]["path"] is None
    )
