"""ISMRMRD raw data: round trips, geometry and every error path of ``read_raw``."""

from __future__ import annotations

import h5py
import ismrmrd
import numpy as np
import pytest
from ismrmrd import xsd

from mrf_monai.io.ismrmrd import (
    RawDataError,
    RawSubject,
    build_header,
    read_raw,
    sequence_from_header,
    sequence_to_header,
    write_raw,
)
from mrf_monai.physics.sequence import MRFSequence

NX, NY, N_COILS, N_FRAMES, N_SAMPLES = 16, 12, 2, 10, 32


def make_subject(n_slices: int = 1, seed: int = 0, tr_ms=10.0, ti_ms=18.0) -> RawSubject:
    rng = np.random.default_rng(seed)
    seq = MRFSequence("FISP", np.linspace(5, 60, N_FRAMES), tr_ms, 1.9, ti_ms, name="test")
    shape = (n_slices, N_COILS, N_FRAMES, N_SAMPLES)
    kspace = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    traj = rng.uniform(-0.5, 0.5, (n_slices, N_FRAMES, N_SAMPLES, 2)).astype(np.float32)
    interleaf = np.tile(np.arange(N_FRAMES) % 3, (n_slices, 1))
    position = np.array([[3.0, -2.0, 10.0 + 6.0 * s] for s in range(n_slices)])
    return RawSubject(
        kspace,
        traj,
        interleaf,
        seq,
        (NX, NY),
        (240.0, 180.0, 5.0),
        position,
        read_dir=(1, 0, 0),
        phase_dir=(0, 1, 0),
        slice_dir=(0, 0, 1),
        larmor_hz=123_200_000.0,
    )


def test_round_trip(tmp_path):
    sub = make_subject(n_slices=2)
    path = write_raw(tmp_path / "raw.h5", sub)
    assert path.is_file() and not list(tmp_path.glob(".*tmp-*"))
    back = read_raw(path)
    np.testing.assert_array_equal(back.kspace, sub.kspace)
    np.testing.assert_array_equal(back.traj, sub.traj)
    np.testing.assert_array_equal(back.interleaf, sub.interleaf)
    assert back.interleaf.shape == (2, N_FRAMES, 1) and back.readouts_per_frame == 1
    assert back.noise is None and back.dcf is None and back.trajectory_type == "spiral"
    assert back.kspace.dtype == np.complex64 and back.traj.dtype == np.float32
    assert back.sequence == sub.sequence and back.sequence.ti_ms == 18.0
    assert back.matrix == (NX, NY) and back.fov_mm == (240.0, 180.0, 5.0)
    np.testing.assert_allclose(back.position_mm, sub.position_mm, atol=1e-5)
    np.testing.assert_allclose(back.slice_dir, [0, 0, 1])
    assert back.larmor_hz == 123_200_000.0 and back.path == path


def test_written_file_follows_contract_for_ismrmrd_readers(tmp_path):
    sub = make_subject()
    write_raw(tmp_path / "raw.h5", sub)
    with ismrmrd.Dataset(str(tmp_path / "raw.h5"), "dataset", mode="r") as dset:
        header = xsd.CreateFromDocument(dset.read_xml_header())
        assert dset.number_of_acquisitions() == N_FRAMES
        acq = dset.read_acquisition(4)
    enc = header.encoding[0]
    assert (enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y, enc.encodedSpace.matrixSize.z) == (
        NX,
        NY,
        1,
    )
    assert enc.encodedSpace.fieldOfView_mm.z == 5.0 and enc.trajectory == xsd.trajectoryType.SPIRAL
    assert header.experimentalConditions.H1resonanceFrequency_Hz == 123_200_000
    assert header.sequenceParameters.TR == [10.0] and header.sequenceParameters.sequence_type == "FISP"
    assert len(header.sequenceParameters.flipAngle_deg) == N_FRAMES
    assert acq.idx.repetition == 4 and acq.idx.slice == 0 and acq.idx.kspace_encode_step_1 == 4 % 3
    assert acq.data.shape == (N_COILS, N_SAMPLES) and acq.traj.shape == (N_SAMPLES, 2)
    np.testing.assert_array_equal(acq.data, sub.kspace[0, :, 4])
    np.testing.assert_array_equal(acq.traj, sub.traj[0, 4])
    np.testing.assert_allclose(list(acq.position), [3.0, -2.0, 10.0])


def test_sequence_header_variable_tr_and_no_inversion():
    seq = MRFSequence("FISP", [10.0, 20.0, 30.0], [12.0, 13.0, 14.0], 2.0, None)
    sp = sequence_to_header(seq)
    assert sp.TR == [12.0, 13.0, 14.0] and sp.TI == [] and sp.TE == [2.0]
    assert sequence_from_header(sp) == seq
    sp.TI = [0.0]
    assert sequence_from_header(sp).ti_ms is None


def test_affine_axial_geometry():
    sub = make_subject(n_slices=3)
    aff = sub.affine()
    dx, dy = 240.0 / NX, 180.0 / NY
    # LPS read (1,0,0) -> RAS (-1,0,0); phase (0,1,0) -> (0,-1,0); slices 6 mm apart along +z
    np.testing.assert_allclose(aff[:3, :3], np.diag([-dx, -dy, 6.0]))
    # voxel (Nx//2, Ny//2, s) is the slice centre, converted to RAS
    for s in range(3):
        centre = aff @ np.array([NX // 2, NY // 2, s, 1.0])
        lps = sub.position_mm[s]
        np.testing.assert_allclose(centre[:3], [-lps[0], -lps[1], lps[2]], atol=1e-9)
    one = sub.affine(slice_index=2)
    np.testing.assert_allclose(one[:3, 2], [0, 0, 5.0])
    np.testing.assert_allclose(one @ [NX // 2, NY // 2, 0, 1], [-3.0, 2.0, 22.0, 1.0])
    single = make_subject(n_slices=1).affine()
    np.testing.assert_allclose(single[:3, 2], [0, 0, 5.0])


def test_affine_oblique_directions_are_orthonormal_scaled():
    sub = make_subject()
    c, s = np.cos(0.3), np.sin(0.3)
    sub = RawSubject(
        sub.kspace,
        sub.traj,
        sub.interleaf,
        sub.sequence,
        sub.matrix,
        sub.fov_mm,
        sub.position_mm,
        (c, s, 0),
        (-s, c, 0),
        (0, 0, 1),
    )
    aff = sub.affine()
    np.testing.assert_allclose(aff[:3, 0], [-c * 15.0, -s * 15.0, 0], atol=1e-12)
    np.testing.assert_allclose(aff[:3, 1], [s * 15.0, -c * 15.0, 0], atol=1e-12)


# ----------------------------------------------------------------- error paths


@pytest.fixture
def good_file(tmp_path):
    return write_raw(tmp_path / "raw.h5", make_subject(n_slices=2))


def _rewrite_header(path, mutate):
    with h5py.File(path, "r") as f:
        header = xsd.CreateFromDocument(f["dataset/xml"][0])
    mutate(header)
    with h5py.File(path, "a") as f:
        del f["dataset/xml"]
        f["dataset"].create_dataset(
            "xml", data=[xsd.ToXML(header).encode()], dtype=h5py.special_dtype(vlen=bytes)
        )


def _rewrite_records(path, mutate):
    with h5py.File(path, "a") as f:
        records = f["dataset/data"][()]
        records = mutate(records)
        del f["dataset/data"]
        f["dataset"].create_dataset("data", data=records, maxshape=(None,))


def _expect(path, *words):
    with pytest.raises(RawDataError) as info:
        read_raw(path)
    msg = str(info.value)
    assert str(path) in msg
    for w in words:
        assert w in msg, msg
    return msg


def test_error_missing_file(tmp_path):
    _expect(tmp_path / "nope.h5", "not found")


def test_error_junk_file(tmp_path):
    p = tmp_path / "raw.h5"
    p.write_bytes(b"this is not HDF5 at all" * 100)
    _expect(p, "not an HDF5 file")


def test_error_truncated_file(good_file):
    data = good_file.read_bytes()
    good_file.write_bytes(data[: len(data) // 2])
    _expect(good_file, "truncated")


def test_error_corrupt_inside(good_file):
    data = bytearray(good_file.read_bytes())
    data[2048:2560] = b"\xff" * 512  # damage the symbol table after the superblock
    good_file.write_bytes(bytes(data))
    _expect(good_file, "corrupt")


def test_error_no_dataset_group(tmp_path):
    p = tmp_path / "raw.h5"
    with h5py.File(p, "w") as f:
        f.create_group("other")
    _expect(p, "no ISMRMRD 'dataset' group", "other")


def test_error_no_acquisitions(tmp_path):
    p = tmp_path / "raw.h5"
    with ismrmrd.Dataset(str(p), "dataset", mode="w") as dset:
        dset.write_xml_header(xsd.ToXML(build_header(make_subject())).encode())
    _expect(p, "no acquisitions")


def test_error_unparsable_header(good_file):
    with h5py.File(good_file, "a") as f:
        f["dataset/xml"][0] = b"<ismrmrdHeader><broken"
    _expect(good_file, "XML header cannot be parsed")


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda h: setattr(h, "sequenceParameters", None), ["sequenceParameters"]),
        (lambda h: setattr(h.sequenceParameters, "flipAngle_deg", []), ["flipAngle_deg"]),
        (lambda h: setattr(h.sequenceParameters, "TE", []), ["TE"]),
        (lambda h: setattr(h.sequenceParameters, "TR", [1.0, 2.0]), ["TR"]),
        (
            lambda h: setattr(h.sequenceParameters, "sequence_type", "bSSFP"),
            ["unknown sequence_type", "bSSFP"],
        ),
        (lambda h: setattr(h.sequenceParameters, "sequence_type", None), ["no sequence_type"]),
        (lambda h: setattr(h.encoding[0].encodedSpace.matrixSize, "x", 0), ["matrixSize"]),
        (lambda h: setattr(h.encoding[0].encodedSpace.fieldOfView_mm, "z", 0.0), ["fieldOfView_mm"]),
        (lambda h: setattr(h, "encoding", []), ["no encoding"]),
    ],
)
def test_error_header_fields(good_file, mutate, words):
    _rewrite_header(good_file, mutate)
    _expect(good_file, *words)


def test_error_flip_angle_count_differs(good_file):
    _rewrite_header(
        good_file, lambda h: setattr(h.sequenceParameters, "flipAngle_deg", [10.0] * (N_FRAMES + 3))
    )
    _expect(good_file, "flip angles", "number of frames")
    _rewrite_header(
        good_file, lambda h: setattr(h.sequenceParameters, "flipAngle_deg", [10.0] * (N_FRAMES - 2))
    )
    _expect(good_file, "flip-angle count must equal the number of frames")


def test_error_missing_trajectory(good_file):
    def drop(rec):
        rec["head"]["trajectory_dimensions"][3] = 0
        rec["traj"][3] = np.zeros(0, np.float32)
        return rec

    _rewrite_records(good_file, drop)
    _expect(good_file, "no trajectory", "acquisition 3")


def test_error_nan_samples(good_file):
    def poison(rec):
        d = rec["data"][5].copy()
        d[7] = np.nan
        rec["data"][5] = d
        return rec

    _rewrite_records(good_file, poison)
    _expect(good_file, "NaN/Inf k-space", "frame 5")


def test_error_inconsistent_samples(good_file):
    def shorten(rec):
        rec["head"]["number_of_samples"][6] = N_SAMPLES - 4
        rec["data"][6] = rec["data"][6][: 2 * N_COILS * (N_SAMPLES - 4)]
        rec["traj"][6] = rec["traj"][6][: 2 * (N_SAMPLES - 4)]
        return rec

    _rewrite_records(good_file, shorten)
    _expect(good_file, "inconsistent readouts", "acquisition 6")


def test_error_inconsistent_coils(good_file):
    def one_coil(rec):
        rec["head"]["active_channels"][2] = 1
        rec["data"][2] = rec["data"][2][: 2 * N_SAMPLES]
        return rec

    _rewrite_records(good_file, one_coil)
    _expect(good_file, "inconsistent readouts", "coils")


def test_error_missing_frame(good_file):
    keep = np.ones(2 * N_FRAMES, bool)
    keep[N_FRAMES + 4] = False  # slice 1, frame 4
    _rewrite_records(good_file, lambda rec: rec[keep])
    _expect(good_file, "frame(s) missing", "slice 1, frame 4")


def test_error_duplicated_frame(good_file):
    def dup(rec):
        rec["head"]["idx"]["repetition"][1] = 0
        return rec

    _rewrite_records(good_file, dup)
    # frame 0 now has two readouts and frame 1 none: the missing frame is named, and the doubled one
    _expect(good_file, "frame(s) missing", "slice 0, frame 1", "frame 0 has 2 readouts")


def test_error_missing_slice(good_file):
    def move(rec):
        rec["head"]["idx"]["slice"][N_FRAMES:] = 2
        return rec

    _rewrite_records(good_file, move)
    _expect(good_file, "slice index(es) [1]")


def test_noise_acquisitions_are_not_frames(good_file):
    def add_noise(rec):
        extra = rec[:1].copy()
        extra["head"]["flags"][0] = np.uint64(1 << 18)  # ACQ_IS_NOISE_MEASUREMENT (flag 19)
        extra["head"]["idx"]["repetition"][0] = 0
        return np.concatenate([extra, rec])

    first = read_raw(good_file).kspace[0, :, 0]
    assert read_raw(good_file).noise is None
    _rewrite_records(good_file, add_noise)
    raw = read_raw(good_file)
    assert raw.kspace.shape == (2, N_COILS, N_FRAMES, N_SAMPLES)
    np.testing.assert_array_equal(raw.noise, first)  # the copied readout's samples, (C, N)


def test_failed_write_leaves_no_file(tmp_path):
    sub = make_subject()
    sub.kspace[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_raw(tmp_path / "raw.h5", sub)
    assert list(tmp_path.iterdir()) == []


def test_subject_validation():
    sub = make_subject()
    with pytest.raises(ValueError, match="traj"):
        RawSubject(
            sub.kspace,
            sub.traj[..., :1],
            sub.interleaf,
            sub.sequence,
            sub.matrix,
            sub.fov_mm,
            sub.position_mm,
        )
    with pytest.raises(ValueError, match="frames"):
        RawSubject(
            sub.kspace,
            sub.traj,
            sub.interleaf,
            sub.sequence.truncate(5),
            sub.matrix,
            sub.fov_mm,
            sub.position_mm,
        )


def test_bulk_read_of_a_full_size_slice(tmp_path):
    """A full-size slice (1000 frames, 8 coils, 920 samples) round-trips exactly through the bulk
    reader. Its speed (target < 2 s) is measured by ``benchmarks/bench_io.py``, not here."""
    rng = np.random.default_rng(0)
    seq = MRFSequence("FISP", np.full(1000, 20.0), 10.0, 2.0, 18.0)
    kspace = rng.standard_normal((1, 8, 1000, 920), dtype=np.float32).astype(np.complex64)
    traj = rng.uniform(-0.5, 0.5, (1, 1000, 920, 2)).astype(np.float32)
    path = write_raw(
        tmp_path / "raw.h5",
        RawSubject(
            kspace, traj, np.zeros((1, 1000)), seq, (230, 230), (300.0, 300.0, 5.0), [[0.0, 0.0, 0.0]]
        ),
    )
    back = read_raw(path)
    assert back.kspace.shape == (1, 8, 1000, 920)
    np.testing.assert_array_equal(back.kspace, kspace)
    np.testing.assert_array_equal(back.traj, traj)
