"""simulate_subject writes data-contract subject folders; k-space and noise are right."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mrf_monai.acquisition.nufft import Nufft2D
from mrf_monai.io.ismrmrd import read_raw
from mrf_monai.io.subjects import read_reference
from mrf_monai.phantoms import sample_subject_maps, slice_position_mm, split_slices
from mrf_monai.simulation.subjects import (
    choose_slices,
    noise_sigma,
    protocol_slice_maps,
    simulate_kspace,
    simulate_subject,
    simulate_time_series,
)

from .conftest import MATRIX, N_FRAMES, N_SAMPLES


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    d = simulate_subject(
        out,
        "01",
        seed=3,
        n_slices=2,
        n_frames=N_FRAMES,
        n_coils=2,
        noise=0.01,
        split="test",
        matrix=MATRIX,
        samples_per_readout=N_SAMPLES,
    )
    return d


def test_subject_folder_follows_the_contract(subject):
    assert subject.name == "sub-01"
    assert (subject / "raw.h5").is_file()
    for suffix in ("T1map", "T2map", "PDmap", "mask"):
        assert (subject / "ref" / f"sub-01_{suffix}.nii.gz").is_file()
    raw = read_raw(subject / "raw.h5")
    assert raw.kspace.shape == (2, 2, N_FRAMES, N_SAMPLES)
    assert raw.matrix == (MATRIX, MATRIX) and raw.fov_mm == (230.0, 230.0, 5.0)
    assert raw.sequence.n_frames == N_FRAMES and raw.sequence.sequence_type == "FISP"
    assert raw.larmor_hz == pytest.approx(127.73e6, rel=1e-3)  # 3 T
    card = json.loads((subject / "sim.json").read_text())
    z = card["template_slices"]
    assert all(s in split_slices("test") for s in z) and card["seed"] == 3 and card["split"] == "test"
    assert card["phantom_world"] is None  # today's phantoms (validation seeds record their draw)
    assert card["samples_per_readout"] == N_SAMPLES and "n_samples" not in card
    assert np.allclose(raw.position_mm, [slice_position_mm(s, MATRIX) for s in z])
    assert np.allclose(raw.read_dir, [1, 0, 0]) and np.allclose(raw.slice_dir, [0, 0, 1])
    ref = read_reference(subject)
    assert ref["t1_s"].shape == (MATRIX, MATRIX, 2) and ref["mask"].dtype == bool
    maps = sample_subject_maps(3, z[1], MATRIX, "test")
    assert np.allclose(ref["t1_s"][..., 1], maps["t1_s"]) and np.array_equal(
        ref["mask"][..., 1], maps["mask"]
    )
    assert np.allclose(ref["pd"][..., 1], np.abs(maps["pd"]), atol=1e-6)
    assert np.allclose(ref["affine"], raw.affine())


def test_noise_level_matches_definition(subject, tmp_path):
    clean = simulate_subject(
        tmp_path,
        "01",
        seed=3,
        n_slices=2,
        n_frames=N_FRAMES,
        n_coils=2,
        noise=0.0,
        split="test",
        matrix=MATRIX,
        samples_per_readout=N_SAMPLES,
    )
    k_noisy = read_raw(subject / "raw.h5").kspace
    k_clean = read_raw(clean / "raw.h5").kspace
    sigmas = json.loads((subject / "sim.json").read_text())["noise"]["sigma_per_slice"]
    for s in range(2):
        n = k_noisy[s] - k_clean[s]
        assert np.sqrt(np.mean(np.abs(n) ** 2)) == pytest.approx(sigmas[s], rel=0.05)
        # sigma is 1 % of the mean |k-space centre| (first sample of each spiral: k = 0)
        assert sigmas[s] == pytest.approx(0.01 * np.abs(k_clean[s][:, :, 0]).mean(), rel=0.02)


def test_time_series_is_exact_epg_per_voxel(sequence):
    from mrf_monai.physics.epg import simulate_fisp

    maps = sample_subject_maps(1, 74, 32, "test", check_split=False)
    x = simulate_time_series(maps["t1_s"], maps["t2_s"], maps["pd"], sequence)
    assert x.shape == (N_FRAMES, 32, 32)
    i, j = np.argwhere(maps["mask"])[0]
    one = simulate_fisp(torch.tensor([maps["t1_s"][i, j]]), torch.tensor([maps["t2_s"][i, j]]), sequence)[0]
    assert torch.allclose(x[:, i, j], one * complex(maps["pd"][i, j]), atol=1e-6)
    assert (x[:, np.abs(maps["pd"]) == 0] == 0).all()


def test_kspace_uses_each_frames_own_readout():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(
        (rng.normal(size=(5, 24, 24)) + 1j * rng.normal(size=(5, 24, 24))).astype(np.complex64)
    )
    traj = rng.uniform(-0.5, 0.5, size=(5, 30, 2)).astype(np.float32)
    k = simulate_kspace(img, traj, frames_per_call=2)
    for t in range(5):
        ref = Nufft2D(traj[t], (24, 24)).forward(img[t])
        assert torch.allclose(k[0, t], ref, atol=1e-4 * ref.abs().max())
    maps = torch.ones(3, 24, 24, dtype=torch.complex64) * torch.tensor([1, 2j, -1])[:, None, None]
    kc = simulate_kspace(img, traj, maps, frames_per_call=3)
    assert torch.allclose(kc[1], 2j * k[0], atol=1e-4 * k.abs().max())
    assert noise_sigma(img, None, 0.5) == pytest.approx(0.5 * float(img.sum((-2, -1)).abs().mean()), rel=1e-5)


def test_choose_slices_equally_spaced_and_reproducible():
    a = choose_slices(4, "test", 3)
    assert np.array_equal(a, choose_slices(4, "test", 3))
    assert len(set(np.diff(a))) == 1 and all(z in split_slices("test") for z in a)
    many = choose_slices(4, "test", 12)
    assert len(many) == 12 and all(z in split_slices("test") for z in many)
    with pytest.raises(ValueError, match="n_slices must be between"):
        choose_slices(0, "val", 11)


def test_bad_label_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="alphanumeric"):
        simulate_subject(tmp_path, "a-b", 0, n_frames=4, matrix=32, samples_per_readout=64)


# ----------------------------------------------------------------- protocols (issue 14)


def radial_protocol(matrix=32, spokes=4, samples=64, n_frames=N_FRAMES, coils=2, fov_mm=230.0, sequence=None):
    from mrf_monai.acquisition.protocol import Protocol
    from mrf_monai.acquisition.trajectory import golden_angle_radial
    from mrf_monai.physics.sequence import fisp_mrf_jiang2015

    seq = sequence if sequence is not None else fisp_mrf_jiang2015(1000).truncate(n_frames)
    traj, index = golden_angle_radial(seq.n_frames, spokes, samples)
    return Protocol(
        seq,
        traj.reshape(seq.n_frames, -1, 2),
        spokes,
        (matrix, matrix),
        (fov_mm, fov_mm, 4.0),
        coils,
        "radial",
        index,
    )


def test_subject_of_a_protocol_has_exactly_its_protocol(tmp_path):
    from mrf_monai.acquisition.protocol import Protocol

    prot = radial_protocol(matrix=32, spokes=4, samples=64, coils=3, fov_mm=200.0)
    d = simulate_subject(tmp_path, "7", seed=2, noise=0.0, protocol=prot)
    raw = read_raw(d / "raw.h5")
    assert raw.kspace.shape == (1, 3, N_FRAMES, 4 * 64) and raw.readouts_per_frame == 4
    assert raw.fov_mm == (200.0, 200.0, 4.0) and raw.trajectory_type == "radial"
    assert Protocol.from_raw(raw) == prot and Protocol.from_raw(raw).differences(prot) == []
    card = json.loads((d / "sim.json").read_text())
    assert card["protocol"]["key"] == prot.key() and card["readouts_per_frame"] == 4
    # coils overridden; the other settings may not contradict the protocol
    assert (
        read_raw(simulate_subject(tmp_path, "8", 2, n_coils=1, noise=0.0, protocol=prot) / "raw.h5").n_coils
        == 1
    )
    with pytest.raises(ValueError, match="contradict the protocol.*30 frames vs the protocol's 40"):
        simulate_subject(tmp_path, "9", 2, n_frames=30, protocol=prot)
    # the frames' k-space is the NUFFT of the frame images on all the frame's readouts
    maps, _ = protocol_slice_maps(2, card["template_slices"][0], (32, 32), (200.0, 200.0), "test")
    x = simulate_time_series(maps["t1_s"], maps["t2_s"], maps["pd"], prot.sequence)
    k1 = Nufft2D(prot.trajectory[5].copy(), (32, 32)).forward(x[5])
    one_coil = read_raw(tmp_path / "sub-8" / "raw.h5").kspace[0, 0, 5]
    np.testing.assert_allclose(one_coil, k1.numpy(), atol=2e-4 * float(k1.abs().max()))


def test_protocol_maps_keep_the_anatomy_size_on_another_fov():
    full, m = protocol_slice_maps(3, 74, (64, 64), (230.0, 230.0), "test")
    assert m == 64 and np.array_equal(full["t1_s"], sample_subject_maps(3, 74, 64, "test")["t1_s"])
    # FOV 115 mm on 32 voxels: the same 3.6 mm voxels, centre crop of the 64-voxel phantom
    crop, m = protocol_slice_maps(3, 74, (32, 32), (115.0, 115.0), "test")
    assert m == 64 and crop["t1_s"].shape == (32, 32)
    np.testing.assert_array_equal(crop["t1_s"], full["t1_s"][16:48, 16:48])
    assert crop["fractions"].shape[-2:] == (32, 32)
    # FOV 460 mm on 32 voxels: the 16-voxel phantom, zero-padded
    pad, m = protocol_slice_maps(3, 74, (32, 32), (460.0, 460.0), "test")
    small = sample_subject_maps(3, 74, 16, "test")
    assert m == 16 and np.array_equal(pad["t1_s"][8:24, 8:24], small["t1_s"]) and pad["t1_s"][:8].max() == 0
    with pytest.raises(ValueError, match="square pixels"):
        protocol_slice_maps(3, 74, (32, 16), (230.0, 230.0), "test")


def _svdmrf_mape(subject_dir, dictionary):
    """T1 and T2 MAPE (%) in the brain mask of the SVD-MRF maps of a one-slice subject."""
    from mrf_monai.baselines.svdmrf import SVDMRFReconstructor
    from mrf_monai.evaluation.metrics import mape
    from mrf_monai.matching import match_dictionary

    raw = read_raw(subject_dir / "raw.h5")
    maps = match_dictionary(SVDMRFReconstructor()(raw, 0, dictionary)["tsmi"], dictionary)
    ref = read_reference(subject_dir)
    mask = ref["mask"][..., 0]
    return (
        mape(maps["t1_s"].numpy(), ref["t1_s"][..., 0], mask),
        mape(maps["t2_s"].numpy(), ref["t2_s"][..., 0], mask),
    )


def test_fully_sampled_multi_readout_subjects_reconstruct_with_svdmrf(tmp_path):
    """Issue 14 acceptance: fully sampled frames of several readouts each give accurate maps.

    * Cartesian lines as readouts (32 per frame, 32 x 32, 2 coils): gridding is exact, so the
      maps are as good as matching the exact compressed TSMI (0.7 % T1, 0.9 % T2 here).
    * Golden-angle radial, 110 spokes of 128 samples per frame (64 x 64, 2 coils), another
      sequence (60 frames, TR 30 ms): measured 3.65 % T1, 3.54 % T2 (gridding of the sharp phantom
      is not exact: the k-space corners are not sampled).
    """
    from mrf_monai.acquisition.protocol import Protocol
    from mrf_monai.physics.dictionary import build_dictionary, t1t2_grid
    from mrf_monai.physics.sequence import MRFSequence, fisp_mrf_jiang2015

    t1, t2 = t1t2_grid(step=0.03)
    seq = fisp_mrf_jiang2015(1000).truncate(N_FRAMES)
    k = (np.arange(32) - 16) / 32
    lines = np.stack(np.meshgrid(k, k, indexing="ij"), -1).transpose(1, 0, 2).reshape(-1, 2)  # line j: ky_j
    cart = Protocol(
        seq, np.broadcast_to(lines, (N_FRAMES, 32 * 32, 2)), 32, (32, 32), (230.0, 230.0, 5.0), 2, "cartesian"
    )
    d = simulate_subject(tmp_path, "1", seed=5, noise=0.0, protocol=cart)
    assert read_raw(d / "raw.h5").readouts_per_frame == 32
    t1_mape, t2_mape = _svdmrf_mape(d, build_dictionary(seq, t1, t2, rank=5))
    print(f"cartesian lines, 32 readouts/frame: T1 MAPE {t1_mape:.2f} %, T2 MAPE {t2_mape:.2f} %")
    assert t1_mape < 1.5 and t2_mape < 1.5

    n = 60
    other = MRFSequence("FISP", 10 + 50 * np.abs(np.sin(2 * np.pi * np.arange(n) / n)), 30.0, 2.0, 20.0)
    radial = radial_protocol(matrix=64, spokes=110, samples=128, coils=2, sequence=other)
    d = simulate_subject(tmp_path, "2", seed=5, noise=0.0, protocol=radial)
    t1_mape, t2_mape = _svdmrf_mape(d, build_dictionary(other, t1, t2, rank=5))
    print(f"golden-angle radial, 110 spokes/frame: T1 MAPE {t1_mape:.2f} %, T2 MAPE {t2_mape:.2f} %")
    assert t1_mape < 5.0 and t2_mape < 5.0


def test_failed_write_leaves_no_subject_folder(tmp_path, monkeypatch):
    """Issue 18: a write error (a full disk) leaves neither an empty nor a half-written sub-X/."""
    import errno

    import mrf_monai.io.subjects as io_subjects

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_subjects, "write_reference", full_disk)  # fails after raw.h5 was written
    with pytest.raises(OSError, match="No space left"):
        simulate_subject(tmp_path, "1", 0, n_frames=4, matrix=32, samples_per_readout=64, noise=0.0)
    assert list(tmp_path.iterdir()) == []  # raw.h5 was written into the hidden folder, now gone
    monkeypatch.undo()
    # a re-run over an earlier folder replaces the outputs and keeps the user's own files
    d = simulate_subject(tmp_path, "1", 0, n_frames=4, matrix=32, samples_per_readout=64, noise=0.0)
    (d / "notes.txt").write_text("mine")
    (d / "ref" / "sub-1_T1map.nii.gz").write_bytes(b"stale")
    d = simulate_subject(tmp_path, "1", 0, n_frames=4, matrix=32, samples_per_readout=64, noise=0.0)
    assert (d / "notes.txt").read_text() == "mine"
    assert read_reference(d)["t1_s"].shape == (32, 32, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub-1"]


def test_the_readout_keyword_is_samples_per_readout(tmp_path):
    """``n_samples`` (now the diffusion sample count only) is no keyword of the simulators."""
    from mrf_monai.simulation import SimulatedPairDataset
    from mrf_monai.simulation.subjects import subject_protocol

    with pytest.raises(TypeError, match="n_samples"):
        simulate_subject(tmp_path, "1", 0, n_frames=4, matrix=32, n_samples=64)
    with pytest.raises(TypeError, match="n_samples"):
        subject_protocol(4, 32, n_samples=64)
    with pytest.raises(TypeError, match="n_samples"):
        SimulatedPairDataset(None, matrix=32, n_samples=64)
    assert list(tmp_path.iterdir()) == []
    assert subject_protocol(4, 32, samples_per_readout=64).samples_per_readout == 64
