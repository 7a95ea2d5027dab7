"""ISMRMRD raw data with several readouts per frame, noise scans, and the trajectory checks."""

from __future__ import annotations

import h5py
import ismrmrd
import numpy as np
import pytest
from ismrmrd import xsd

from mrf_monai.acquisition.trajectory import golden_angle_radial
from mrf_monai.io.ismrmrd import RawDataError, RawSubject, read_raw, write_raw
from mrf_monai.io.raw_write import NOISE_SAMPLES_PER_ACQUISITION
from mrf_monai.physics.sequence import MRFSequence

N_COILS, N_FRAMES, N_READOUTS, N_SAMPLES = 2, 6, 3, 40
NOISE_FLAG_BIT = 1 << 18  # ACQ_IS_NOISE_MEASUREMENT = flag 19


def make_subject(n_slices=2, noise_samples=0, seed=0, matrix=(32, 32), scale=1.0) -> RawSubject:
    rng = np.random.default_rng(seed)
    seq = MRFSequence("FISP", np.linspace(5, 60, N_FRAMES), 10.0, 2.0, 20.0, name="radial test")
    shape = (n_slices, N_COILS, N_FRAMES, N_READOUTS * N_SAMPLES)
    kspace = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    spokes, index = golden_angle_radial(N_FRAMES, N_READOUTS, N_SAMPLES)
    traj = np.broadcast_to(
        scale * spokes.reshape(N_FRAMES, -1, 2), (n_slices, N_FRAMES, N_READOUTS * N_SAMPLES, 2)
    )
    noise = None
    if noise_samples:
        noise = (
            rng.standard_normal((N_COILS, noise_samples)) + 1j * rng.standard_normal((N_COILS, noise_samples))
        ).astype(np.complex64)
    return RawSubject(
        kspace,
        traj.copy(),
        np.broadcast_to(index + 7, (n_slices, N_FRAMES, N_READOUTS)).copy(),
        seq,
        matrix,
        (220.0, 220.0, 4.0),
        [[0.0, 0.0, 4.0 * s] for s in range(n_slices)],
        readouts_per_frame=N_READOUTS,
        noise=noise,
        trajectory_type="radial",
        dwell_us=2.5,
        noise_dwell_us=5.0,
        relative_noise_bandwidth=0.79,
    )


def _rewrite_records(path, mutate):
    with h5py.File(path, "a") as f:
        records = mutate(f["dataset/data"][()])
        del f["dataset/data"]
        f["dataset"].create_dataset("data", data=records, maxshape=(None,))


def _expect(path, *words, **kwargs):
    with pytest.raises(RawDataError) as info:
        read_raw(path, **kwargs)
    msg = str(info.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_multi_readout_round_trip_with_noise(tmp_path):
    sub = make_subject(noise_samples=100)
    back = read_raw(write_raw(tmp_path / "raw.h5", sub))
    assert back.readouts_per_frame == N_READOUTS and back.samples_per_readout == N_SAMPLES
    assert back.kspace.shape == (2, N_COILS, N_FRAMES, N_READOUTS * N_SAMPLES)
    np.testing.assert_array_equal(back.kspace, sub.kspace)
    np.testing.assert_array_equal(back.traj, sub.traj)
    np.testing.assert_array_equal(back.interleaf, sub.interleaf)
    np.testing.assert_array_equal(back.noise, sub.noise)
    np.testing.assert_array_equal(back.readouts(1), sub.traj[1].reshape(N_FRAMES, N_READOUTS, N_SAMPLES, 2))
    assert back.trajectory_type == "radial" and back.sequence == sub.sequence
    assert (back.dwell_us, back.noise_dwell_us) == (2.5, 5.0)
    assert back.relative_noise_bandwidth == pytest.approx(0.79)


def test_one_acquisition_per_readout_in_file_order(tmp_path):
    sub = make_subject(noise_samples=100)
    path = write_raw(tmp_path / "raw.h5", sub)
    with ismrmrd.Dataset(str(path), "dataset", mode="r") as dset:
        header = xsd.CreateFromDocument(dset.read_xml_header())
        n = dset.number_of_acquisitions()
        noise = dset.read_acquisition(0)
        acqs = [dset.read_acquisition(i) for i in range(1, n)]
    assert header.encoding[0].trajectory == xsd.trajectoryType.RADIAL
    assert n == 1 + 2 * N_FRAMES * N_READOUTS
    assert noise.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) and noise.trajectory_dimensions == 0
    np.testing.assert_array_equal(noise.data, sub.noise)
    k = 0
    for s in range(2):
        for t in range(N_FRAMES):
            for r in range(N_READOUTS):
                acq = acqs[k]
                assert (acq.idx.slice, acq.idx.repetition) == (s, t)
                assert acq.idx.kspace_encode_step_1 == sub.interleaf[s, t, r]
                cut = slice(r * N_SAMPLES, (r + 1) * N_SAMPLES)
                np.testing.assert_array_equal(acq.data, sub.kspace[s, :, t, cut])
                np.testing.assert_array_equal(acq.traj, sub.traj[s, t, cut])
                k += 1


def test_long_noise_scan_is_split_and_rejoined(tmp_path):
    n = 2 * NOISE_SAMPLES_PER_ACQUISITION + 123
    sub = make_subject(n_slices=1, noise_samples=n)
    path = write_raw(tmp_path / "raw.h5", sub)
    with h5py.File(path, "r") as f:
        flags = f["dataset/data"]["head"]["flags"]
    assert int(((flags & NOISE_FLAG_BIT) != 0).sum()) == 3
    np.testing.assert_array_equal(read_raw(path).noise, sub.noise)


def test_readouts_interleaved_across_frames_keep_their_order(tmp_path):
    """Readout r of a frame is its r-th acquisition in file order, wherever the frame's readouts lie."""
    sub = make_subject(n_slices=2)
    path = write_raw(tmp_path / "raw.h5", sub)
    n_fr = 2 * N_FRAMES
    # file order: readout 0 of every (slice, frame), then readout 1 of every frame, ... (frames reversed)
    order = np.array([(f * N_READOUTS + r) for r in range(N_READOUTS) for f in reversed(range(n_fr))])
    _rewrite_records(path, lambda rec: rec[order])
    back = read_raw(path)
    np.testing.assert_array_equal(back.kspace, sub.kspace)
    np.testing.assert_array_equal(back.traj, sub.traj)
    np.testing.assert_array_equal(back.interleaf, sub.interleaf)


def test_frames_with_differing_readout_counts_are_refused(tmp_path):
    path = write_raw(tmp_path / "raw.h5", make_subject())
    drop = (1 * N_FRAMES + 4) * N_READOUTS + 2  # slice 1, frame 4, readout 2
    keep = np.ones(2 * N_FRAMES * N_READOUTS, bool)
    keep[drop] = False
    _rewrite_records(path, lambda rec: rec[keep])
    _expect(path, "slice 1, frame 4 has 2 readout(s)", "slice 0, frame 0 has 3", "same number of readouts")


def test_noise_scan_errors(tmp_path):
    path = write_raw(tmp_path / "raw.h5", make_subject(noise_samples=50))

    def one_coil(rec):
        rec["head"]["active_channels"][0] = 1
        rec["data"][0] = rec["data"][0][: 2 * 50]
        return rec

    _rewrite_records(path, one_coil)
    _expect(path, "noise acquisition 0 has 1 coils", "imaging readouts have 2")
    path = write_raw(tmp_path / "raw2.h5", make_subject(noise_samples=50))

    def poison(rec):
        d = rec["data"][0].copy()
        d[3] = np.inf
        rec["data"][0] = d
        return rec

    _rewrite_records(path, poison)
    _expect(path, "noise scan holds NaN/Inf")


def test_trajectory_scaled_by_ten_is_refused(tmp_path):
    path = write_raw(tmp_path / "raw.h5", make_subject(scale=10.0))
    msg = _expect(path, "leaves k-space", "|k| = 5 cycles per pixel in slice 0, frame 0", "32 x 32")
    assert "trajectory_units" in msg


def test_trajectory_in_radians_needs_the_unit_option(tmp_path):
    sub = make_subject(scale=2 * np.pi)
    path = write_raw(tmp_path / "raw.h5", sub)
    _expect(path, "look like radians per pixel", "rad_per_pixel")
    back = read_raw(path, trajectory_units="rad_per_pixel")
    np.testing.assert_allclose(back.traj, sub.traj / (2 * np.pi), atol=1e-6)
    with pytest.raises(ValueError, match="unknown trajectory units 'degrees'.*rad_per_pixel"):
        read_raw(path, trajectory_units="degrees")


def test_matrix_that_does_not_fit_the_trajectory(tmp_path):
    # radial spokes designed for 64 x 64 (|k| up to 0.5 there) in cycles per pixel of a 128 matrix
    path = write_raw(tmp_path / "raw.h5", make_subject(matrix=(128, 128), scale=0.5))
    _expect(path, "reaches only |k| = 0.25", "resolves a matrix of about 64 x 64", "matrixSize is 128 x 128")
    # 15 % short of the edge (64 on a 75 matrix): a warning that says what was used
    path = write_raw(tmp_path / "raw75.h5", make_subject(matrix=(75, 75), scale=64 / 75))
    with pytest.warns(UserWarning, match=r"about 64 x 64.*75 x 75 matrix \(2.93 x 2.93 mm voxels\) as given"):
        raw = read_raw(path)
    assert raw.matrix == (75, 75)


def test_square_corners_of_k_space_are_inside(tmp_path):
    sub = make_subject(n_slices=1)
    sub.traj[0, 2, 5] = [0.5, -0.5]  # |k| = 0.71 but each component at the edge: allowed
    sub.traj[0, 3, 7] = [0.5004, 0.0]  # within the 1e-3 tolerance
    np.testing.assert_array_equal(read_raw(write_raw(tmp_path / "raw.h5", sub)).traj, sub.traj)
    sub.traj[0, 4, N_SAMPLES + 1] = [0.0, -0.502]  # frame 4, readout 1
    _expect(write_raw(tmp_path / "bad.h5", sub), "|k| = 0.502", "slice 0, frame 4, readout 1")


def test_subject_validation_of_new_fields():
    sub = make_subject(n_slices=1)
    with pytest.raises(ValueError, match="readouts_per_frame = 7"):
        RawSubject(
            sub.kspace,
            sub.traj,
            np.zeros((1, N_FRAMES)),
            sub.sequence,
            (32, 32),
            sub.fov_mm,
            [[0, 0, 0]],
            readouts_per_frame=7,
        )
    with pytest.raises(ValueError, match=r"interleaf must be \(n_slices, T, readouts_per_frame\)"):
        RawSubject(
            sub.kspace,
            sub.traj,
            np.zeros((1, N_FRAMES)),
            sub.sequence,
            (32, 32),
            sub.fov_mm,
            [[0, 0, 0]],
            readouts_per_frame=3,
        )
    with pytest.raises(ValueError, match="noise must be"):
        RawSubject(
            sub.kspace,
            sub.traj,
            sub.interleaf,
            sub.sequence,
            (32, 32),
            sub.fov_mm,
            [[0, 0, 0]],
            noise=np.zeros((3, 10)),
        )
    with pytest.raises(ValueError, match="dcf must be"):
        RawSubject(
            sub.kspace,
            sub.traj,
            sub.interleaf,
            sub.sequence,
            (32, 32),
            sub.fov_mm,
            [[0, 0, 0]],
            dcf=np.ones((1, N_FRAMES, 5)),
        )
    one = sub.slice(0)
    assert one.readouts_per_frame == N_READOUTS and one.trajectory_type == "radial"
