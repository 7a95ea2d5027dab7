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
        n_samples=N_SAMPLES,
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
        n_samples=N_SAMPLES,
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
        simulate_subject(tmp_path, "a-b", 0, n_frames=4, matrix=32, n_samples=64)
