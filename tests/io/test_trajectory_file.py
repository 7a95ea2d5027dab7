"""Trajectory files (data contract section 5): raw files whose acquisitions carry no trajectory."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mrf_monai.io.ismrmrd import RawDataError, read_raw, write_raw
from mrf_monai.io.trajectory_file import (
    TrajectoryData,
    convert_trajectory_units,
    read_trajectory_file,
    write_trajectory_file,
)

from .test_ismrmrd_readouts import N_FRAMES, N_READOUTS, N_SAMPLES, make_subject

SHAPE = (N_FRAMES, N_READOUTS, N_SAMPLES)


@pytest.fixture
def scan(tmp_path):
    """A raw file without trajectories (as scanner converters write them), its subject and arrays."""
    sub = make_subject(n_slices=2)
    path = write_raw(tmp_path / "raw.h5", sub, include_trajectory=False)
    traj = sub.readouts(0).copy()  # (T, R, S, 2)
    dcf = np.random.default_rng(1).uniform(0.1, 2.0, SHAPE).astype(np.float32)
    return path, sub, traj, dcf


def test_raw_file_without_trajectory_says_how_to_give_one(scan):
    path, *_ = scan
    with pytest.raises(
        RawDataError, match=r"no trajectory.*read_raw\(path, trajectory=FILE\) or --trajectory FILE"
    ):
        read_raw(path)


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".h5"])
def test_trajectory_from_numpy_and_hdf5_files(scan, tmp_path, suffix):
    path, sub, traj, dcf = scan
    with_dcf = suffix != ".npy"
    tfile = write_trajectory_file(tmp_path / f"traj{suffix}", traj, dcf if with_dcf else None)
    raw = read_raw(path, trajectory=tfile)
    np.testing.assert_array_equal(raw.traj, sub.traj)
    np.testing.assert_array_equal(raw.kspace, sub.kspace)
    assert raw.readouts_per_frame == N_READOUTS
    if with_dcf:
        assert raw.dcf.shape == (2, N_FRAMES, N_READOUTS * N_SAMPLES)
        np.testing.assert_array_equal(raw.dcf[1], dcf.reshape(N_FRAMES, -1))
    else:
        assert raw.dcf is None


def test_trajectory_file_round_trip(tmp_path, scan):
    _, _, traj, dcf = scan
    for suffix in (".npz", ".h5"):
        back = read_trajectory_file(write_trajectory_file(tmp_path / f"t{suffix}", traj, dcf))
        assert isinstance(back, TrajectoryData) and back.shape == SHAPE
        np.testing.assert_array_equal(back.traj, traj)
        np.testing.assert_array_equal(back.dcf, dcf)
    # plain files written by other tools: an HDF5 dataset 'traj' and a 3-D (frames, samples, 2) array
    with h5py.File(tmp_path / "other.hdf5", "w") as f:
        f["traj"] = traj.astype(np.float64)
    np.testing.assert_array_equal(read_trajectory_file(tmp_path / "other.hdf5").traj, traj)
    np.save(tmp_path / "one.npy", traj[:, 0])
    assert read_trajectory_file(tmp_path / "one.npy").shape == (N_FRAMES, 1, N_SAMPLES)
    with pytest.raises(ValueError, match="only traj"):
        write_trajectory_file(tmp_path / "x.npy", traj, dcf)
    with pytest.raises(ValueError, match="as .npy, .npz, .h5"):
        write_trajectory_file(tmp_path / "x.txt", traj)


def test_trajectory_from_another_ismrmrd_file(scan, tmp_path):
    path, sub, _, _ = scan
    template = write_raw(tmp_path / "template.h5", sub.slice(1))  # a scan of the protocol with traj
    data = read_trajectory_file(template)
    assert data.shape == SHAPE
    np.testing.assert_array_equal(data.interleaf, sub.interleaf[1])
    raw = read_raw(path, trajectory=template)
    np.testing.assert_array_equal(raw.traj, sub.traj)


def test_trajectory_given_for_a_file_that_has_one_replaces_it_with_a_warning(tmp_path, scan):
    _, sub, traj, _ = scan
    path = write_raw(tmp_path / "with.h5", sub)
    other = traj[:, :, ::-1].copy()
    tfile = write_trajectory_file(tmp_path / "t.npy", other)
    with pytest.warns(UserWarning, match="carry their own trajectory; using the one of"):
        raw = read_raw(path, trajectory=tfile)
    np.testing.assert_array_equal(raw.readouts(0), other)


def test_trajectory_array_and_units(scan):
    path, sub, traj, _ = scan
    raw = read_raw(path, trajectory=traj)
    np.testing.assert_array_equal(raw.traj, sub.traj)
    # cycles per mm: k_mm = k_px * matrix / FOV (220 mm, 32 pixels)
    per_mm = traj * 32 / 220.0
    back = read_raw(path, trajectory=per_mm, trajectory_units="per_mm")
    np.testing.assert_allclose(back.traj, sub.traj, atol=1e-6)
    np.testing.assert_allclose(
        convert_trajectory_units(traj * 2 * np.pi * 32 / 220.0, "rad_per_mm", (32, 32), (220.0, 220.0)),
        traj,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="need the matrix and FOV"):
        convert_trajectory_units(traj, "per_mm")


def test_trajectory_file_that_does_not_fit_the_raw_data(scan, tmp_path):
    path, _, traj, _ = scan
    tfile = write_trajectory_file(tmp_path / "t.npy", traj[:, :2])
    with pytest.raises(RawDataError) as info:
        read_raw(path, trajectory=tfile)
    msg = str(info.value)
    for words in (str(tfile), str(path), "(6, 2, 40)", "(6, 3, 40)"):
        assert words in msg, msg


def test_trajectory_file_scaled_by_ten_is_refused(scan, tmp_path):
    path, _, traj, _ = scan
    tfile = write_trajectory_file(tmp_path / "t.npz", 10 * traj)
    with pytest.raises(RawDataError) as info:
        read_raw(path, trajectory=tfile)
    msg = str(info.value)
    for words in (
        str(tfile),
        str(path),
        "|k| = 5 cycles per pixel in frame 0, readout 0",
        "6 frame(s) affected",
    ):
        assert words in msg, msg


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p, t: np.savez(p.with_suffix(".npz"), other=t), ["no key 'traj'", "other"]),
        (lambda p, t: h5py.File(p.with_suffix(".h5"), "w").close(), ["neither a dataset 'traj'"]),
        (lambda p, t: p.with_suffix(".txt").write_text("0 0"), ["trajectory files are NumPy"]),
        (
            lambda p, t: p.with_suffix(".npy").write_bytes(b"\x93NUMPY junk"),
            ["cannot read the trajectory file"],
        ),
        (lambda p, t: np.save(p.with_suffix(".npy"), t[..., :1]), ["(frames, readouts, samples, 2)"]),
        (lambda p, t: np.save(p.with_suffix(".npy"), t + 1j), ["must be a real array"]),
        (lambda p, t: np.save(p.with_suffix(".npy"), np.where(t > 0.4, np.nan, t)), ["NaN/Inf", "frame"]),
        (
            lambda p, t: np.savez(p.with_suffix(".npz"), traj=t, dcf=np.ones(t.shape[:2])),
            ["dcf has shape", "(6, 3, 40)"],
        ),
        (lambda p, t: np.savez(p.with_suffix(".npz"), traj=t, dcf=-np.ones(t.shape[:3])), ["non-negative"]),
    ],
)
def test_bad_trajectory_files(scan, tmp_path, make, words):
    path, _, traj, _ = scan
    make(tmp_path / "t", traj)
    (tfile,) = list(tmp_path.glob("t.*"))
    with pytest.raises(RawDataError) as info:
        read_raw(path, trajectory=tfile)
    msg = str(info.value)
    assert str(tfile) in msg
    for w in words:
        assert w in msg, msg


def test_missing_trajectory_file(scan, tmp_path):
    path, *_ = scan
    with pytest.raises(RawDataError, match="trajectory file not found"):
        read_raw(path, trajectory=tmp_path / "nope.npy")
