"""The protocol record: from raw data, JSON round trip, stable key, differences in words."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrf_monai.acquisition.protocol import Protocol
from mrf_monai.acquisition.trajectory import golden_angle_radial, mrf_spiral_trajectory
from mrf_monai.io.ismrmrd import RawSubject, read_raw, write_raw
from mrf_monai.physics.sequence import MRFSequence, fisp_mrf_jiang2015


def radial_protocol(n_frames=25, spokes=4, samples=64, coils=8) -> Protocol:
    seq = MRFSequence("FISP", np.linspace(4, 50, n_frames), 12.0, 2.5, 40.0)
    traj, index = golden_angle_radial(n_frames, spokes, samples)
    return Protocol(
        seq, traj.reshape(n_frames, -1, 2), spokes, (32, 32), (200.0, 200.0, 4.0), coils, "radial", index
    )


def spiral_protocol(n_frames=20) -> Protocol:
    traj, index = mrf_spiral_trajectory(n_frames, 32, 128)
    return Protocol(
        fisp_mrf_jiang2015(1000).truncate(n_frames),
        traj,
        1,
        (32, 32),
        (230.0, 230.0, 5.0),
        1,
        "spiral",
        index[:, None],
    )


def test_from_raw_reads_every_field(tmp_path):
    p = radial_protocol()
    rng = np.random.default_rng(0)
    kspace = rng.standard_normal((2, 3, p.n_frames, p.n_samples)).astype(np.complex64)
    raw = RawSubject(
        kspace,
        np.broadcast_to(p.trajectory, (2, *p.trajectory.shape)),
        np.broadcast_to(p.interleaf, (2, *p.interleaf.shape)),
        p.sequence,
        p.matrix,
        p.fov_mm,
        [[0, 0, 0], [0, 0, 4.0]],
        trajectory_type="radial",
    )
    back = Protocol.from_raw(read_raw(write_raw(tmp_path / "raw.h5", raw)))
    assert back.n_coils == 3 and back.readouts_per_frame == 4 and back.samples_per_readout == 64
    assert back.matrix == (32, 32) and back.fov_mm == (200.0, 200.0, 4.0) and back.trajectory_type == "radial"
    np.testing.assert_array_equal(back.trajectory, p.trajectory)
    np.testing.assert_array_equal(back.interleaf, p.interleaf)
    assert back.differences(p) == ["3 coils vs 8"] and back.replace(n_coils=8) == p
    assert Protocol.from_raw(raw, n_coils=8).key() == p.key()
    raw.traj = raw.traj.copy()
    raw.traj[1, 3, 5] += 0.01
    with pytest.raises(ValueError, match="slice 1 has another trajectory than slice 0"):
        Protocol.from_raw(raw)


def test_json_round_trip_and_key():
    p = radial_protocol()
    d = json.loads(json.dumps(p.to_dict()))
    q = Protocol.from_dict(d)
    assert q == p and q.key() == p.key() == d["key"] and len(p.key()) == 12
    np.testing.assert_array_equal(q.trajectory, p.trajectory)
    np.testing.assert_array_equal(q.interleaf, p.interleaf)
    assert q.sequence == p.sequence and q.fov_mm == p.fov_mm and q.n_coils == 8
    assert "radial (4 readouts x 64 samples per frame)" in p.summary() and p.key() in p.summary()
    # compact form (for HDF5 attributes): the array must be given back, and is checked against the key
    small = json.loads(json.dumps(p.to_dict(include_trajectory=False)))
    assert "data" not in small["trajectory"] and len(json.dumps(small)) < 4000
    assert Protocol.from_dict(small, trajectory=p.trajectory) == p
    with pytest.raises(ValueError, match="no trajectory data"):
        Protocol.from_dict(small)
    with pytest.raises(ValueError, match="hashes to"):
        Protocol.from_dict(small, trajectory=p.trajectory[:, ::-1])
    bad = dict(d, trajectory=dict(d["trajectory"], sha256="0" * 64))
    with pytest.raises(ValueError, match="SHA-256"):
        Protocol.from_dict(bad)
    with pytest.raises(ValueError, match="lacks field"):
        Protocol.from_dict({"sequence": d["sequence"]})


def test_key_is_stable_under_float_noise_and_changes_with_content():
    p = radial_protocol()
    as_float64 = p.replace(trajectory=p.trajectory.astype(np.float64))
    assert as_float64.key() == p.key() and as_float64.differences(p) == []
    # times and angles are compared rounded to 1e-4 ms / deg; the name is not compared
    tiny = MRFSequence("FISP", p.sequence.flip_angle_deg + 1e-9, 12.0 + 1e-9, 2.5, 40.0, name="x")
    assert p.replace(sequence=tiny) == p and p.replace(sequence=tiny).differences(p) == []
    for change in (
        dict(n_coils=4),
        dict(matrix=(48, 48)),
        dict(fov_mm=(210.0, 210.0, 4.0)),
        dict(trajectory=p.trajectory * 0.9),
        dict(sequence=MRFSequence("FISP", p.sequence.flip_angle_deg, 12.0, 2.5, 41.0)),
    ):
        assert p.replace(**change).key() != p.key(), change
    # the same content built twice hashes the same (no dependence on memory layout or dtype)
    assert Protocol.from_dict(p.to_dict()).key() == radial_protocol().key()


def test_differences_in_words():
    radial = radial_protocol(n_frames=25)
    spiral = spiral_protocol(n_frames=20)
    got = radial.differences(spiral)
    assert got[:5] == [
        "25 frames vs 20",
        got[1],
        "TR 12 ms vs 10 ms",
        "TE 2.5 ms vs 1.908 ms",
        "TI 40 ms vs 18 ms",
    ]
    assert got[1].startswith("flip angles (differ by up to") and got[1].endswith("over the first 20 frames)")
    assert got[5:] == [
        "trajectory (radial, 4 readouts per frame vs spiral, 1)",
        "FOV 200 x 200 x 4 mm vs 230 x 230 x 5 mm",
        "8 coils vs 1",
    ]
    assert radial.differences(spiral, ignore=("sequence", "coils", "fov")) == [got[5]]
    assert radial.differences(radial.replace(trajectory=radial.trajectory * 0.5)) == [
        "trajectory (same layout, k-space positions differ by up to 0.25 cycles per pixel)"
    ]
    fewer = radial_protocol(samples=32)
    assert radial.differences(fewer, ignore=("sequence",)) == ["trajectory (64 vs 32 samples per readout)"]
    with pytest.raises(ValueError, match="unknown protocol aspect"):
        radial.differences(spiral, ignore=("colour",))


def test_sequence_differences():
    a = MRFSequence("FISP", [10.0, 20.0, 30.0], 10.0, 2.0, 18.0, name="a")
    assert a.differences(MRFSequence("FISP", [10.0, 20.0, 30.0], 10.0, 2.0, 18.0, name="b")) == []
    b = MRFSequence("FISP", [10.0, 25.0, 30.0, 40.0], [10.0, 11.0, 10.0, 10.0], 2.5, None)
    assert a.differences(b) == [
        "3 frames vs 4",
        "flip angles (differ by up to 5 deg over the first 3 frames)",
        "TR (per-frame values differ by up to 1 ms over the first 3 frames)",
        "TE 2 ms vs 2.5 ms",
        "TI 18 ms vs none (no inversion)",
    ]
    # a TR change only (it used to read "(50 frames, unnamed) than the raw data (50 frames, unnamed)")
    c = MRFSequence("FISP", [10.0, 20.0, 30.0], 10.5, 2.0, 18.0)
    assert a.differences(c) == ["TR 10 ms vs 10.5 ms"]
    assert a.differences(MRFSequence("FISP", [10.0, 20.0, 30.0], 10.0 + 1e-9, 2.0, 18.0)) == [
        "TR 10.0 ms vs 10.000000001 ms"
    ]
    assert a.differences(MRFSequence("FISP", [10.0, 20.0, 30.0], 10.0 + 1e-9, 2.0, 18.0), rtol=1e-6) == []


def test_protocol_validation():
    p = radial_protocol()
    with pytest.raises(ValueError, match="T = 25 frames"):
        Protocol(p.sequence, p.trajectory[:10], 4)
    with pytest.raises(ValueError, match="positive divisor"):
        Protocol(p.sequence, p.trajectory, 3)
    with pytest.raises(ValueError, match="NaN"):
        Protocol(p.sequence, np.full_like(p.trajectory, np.nan), 4)
    assert not p.trajectory.flags.writeable
    default = Protocol.default(n_frames=20, matrix=32, samples_per_readout=128)
    assert default == spiral_protocol(20) and default.readouts().shape == (20, 1, 128, 2)


def test_trajectory_label_alone_is_not_a_difference():
    p = radial_protocol()
    relabelled = p.replace(trajectory_type="other")
    assert relabelled == p and relabelled.differences(p) == []
