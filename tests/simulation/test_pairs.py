"""On-the-fly training pairs: table accuracy, consistency with the raw-data path, items."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mrf_monai.acquisition.density import pipe_menon_dcf
from mrf_monai.acquisition.operators import SubspaceNufftOperator
from mrf_monai.io.ismrmrd import read_raw
from mrf_monai.phantoms import sample_subject_maps
from mrf_monai.physics.epg import simulate_fisp
from mrf_monai.simulation import CompressedSignalTable, SimulatedPairDataset, simulate_subject
from mrf_monai.transforms.complex import complex_to_channels

from .conftest import MATRIX, N_FRAMES, N_SAMPLES


def test_signal_table_matches_exact_epg(sequence, dictionary):
    basis = dictionary.basis
    table = CompressedSignalTable(sequence, basis, step=0.01, t1_range_s=(0.6, 1.5), t2_range_s=(0.03, 0.12))
    g = torch.Generator().manual_seed(0)
    t1 = torch.exp(torch.empty(300).uniform_(np.log(0.6), np.log(1.5), generator=g))
    t2 = torch.minimum(torch.exp(torch.empty(300).uniform_(np.log(0.03), np.log(0.12), generator=g)), t1)
    exact = simulate_fisp(t1.double(), t2.double(), sequence).to(torch.complex64) @ basis.conj()
    approx = table(t1, t2)
    rel = (approx - exact).norm(dim=1) / exact.norm(dim=1)
    assert rel.max() < 1e-4, rel.max()
    # nodes are exact
    n = table(torch.tensor([0.6 * np.exp(0.07)]), torch.tensor([0.03 * np.exp(0.11)]))
    e = (
        simulate_fisp(
            torch.tensor([0.6 * np.exp(0.07)]).float(), torch.tensor([0.03 * np.exp(0.11)]).float(), sequence
        )
        @ basis.conj()
    )
    assert torch.allclose(n, e, rtol=1e-4, atol=1e-6)


def test_signal_table_cache(tmp_path, sequence, dictionary):
    a = CompressedSignalTable(sequence, dictionary.basis, 0.05, (0.5, 1.0), (0.05, 0.1), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("signal_table_*.pt"))) == 1
    b = CompressedSignalTable(sequence, dictionary.basis, 0.05, (0.5, 1.0), (0.05, 0.1), cache_dir=tmp_path)
    assert torch.equal(a.table, b.table)


def test_condition_matches_gridding_of_the_raw_file(tmp_path, pair_dataset, dictionary):
    """Same phantom: the pair's condition equals the gridding of simulate_subject's raw.h5."""
    ds = pair_dataset
    d = simulate_subject(
        tmp_path,
        "07",
        seed=7,
        n_slices=1,
        n_frames=N_FRAMES,
        noise=0.0,
        split="test",
        matrix=MATRIX,
        n_samples=N_SAMPLES,
    )
    raw = read_raw(d / "raw.h5")
    z = json.loads((d / "sim.json").read_text())["template_slices"][0]
    traj = torch.from_numpy(raw.traj[0])
    assert torch.equal(traj, ds.traj)  # the same trajectory
    op = SubspaceNufftOperator(traj, dictionary.basis, raw.matrix, dcf=pipe_menon_dcf(traj, raw.matrix))
    gridded = op.grid(torch.from_numpy(raw.kspace[0]))
    pair = ds.make_pair(7, z)
    rel = float((pair["condition"] - gridded).norm() / gridded.norm())
    print(f"noise-free relative difference pair condition vs gridded raw.h5: {rel:.4f}")
    assert rel < 0.02
    # and the normalised channels follow the shared convention
    scale = torch.quantile(gridded[0].abs().flatten(), 0.99)
    assert float(pair["scale"]) == pytest.approx(float(scale), rel=0.02)


def test_noise_statistics_match_the_raw_path(tmp_path, make_dataset, pair_dataset):
    ds = make_dataset(noise=0.02)
    clean = pair_dataset
    z = 74
    noise_pair = ds.make_pair(5, z)["condition"] - clean.make_pair(5, z)["condition"]
    a = simulate_subject(
        tmp_path,
        "1",
        5,
        slices=[z],
        n_frames=N_FRAMES,
        noise=0.02,
        split="test",
        matrix=MATRIX,
        n_samples=N_SAMPLES,
    )
    b = simulate_subject(
        tmp_path,
        "2",
        5,
        slices=[z],
        n_frames=N_FRAMES,
        noise=0.0,
        split="test",
        matrix=MATRIX,
        n_samples=N_SAMPLES,
    )
    op = clean.operator
    noise_raw = op.grid(torch.from_numpy(read_raw(a / "raw.h5").kspace[0] - read_raw(b / "raw.h5").kspace[0]))
    for r in (0, 2):
        ratio = float(noise_pair[r].abs().pow(2).mean() / noise_raw[r].abs().pow(2).mean())
        assert 0.8 < ratio < 1.25, (r, ratio)


def test_items_are_normalised_reproducible_and_distinct(pair_dataset):
    ds = pair_dataset
    assert len(ds) == 8
    a, b, c = ds[0], ds[0], ds[1]
    assert a["image"].shape == a["cond"].shape == (10, MATRIX, MATRIX)
    assert a["image"].dtype == a["cond"].dtype == torch.float32
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["cond"], b["cond"])
    assert not torch.equal(a["image"], c["image"])
    assert a["slice_index"] in ds._slices.tolist()
    # scale: the 0.99 quantile of |cond[0]| of the normalised condition is 1
    c0 = torch.complex(a["cond"][0], a["cond"][5])
    assert float(torch.quantile(c0.abs().flatten(), 0.99)) == pytest.approx(1.0, rel=1e-4)
    # reference is the subspace compression of PD x EPG: component 0 carries most energy
    img = torch.complex(a["image"][:5], a["image"][5:])
    energy = img.abs().pow(2).sum((-2, -1))
    assert energy[0] > 0.5 * energy.sum()
    with pytest.raises(IndexError):
        ds[8]


def test_patches_are_crops_of_the_whole_slice(make_dataset, pair_dataset):
    ds = make_dataset(patch_size=16)
    p = ds[3]
    full = pair_dataset[3]
    i0, j0 = p["patch_origin"]
    assert p["image"].shape == (10, 16, 16)
    assert torch.allclose(p["image"], full["image"][:, i0 : i0 + 16, j0 : j0 + 16])
    assert torch.allclose(p["cond"], full["cond"][:, i0 : i0 + 16, j0 : j0 + 16])


def test_channels_layout():
    c = torch.tensor([[[1 + 2j]], [[3 + 4j]]], dtype=torch.complex64)
    assert complex_to_channels(c).flatten().tolist() == [1, 3, 2, 4]


def test_arguments_are_checked(dictionary):
    with pytest.raises(ValueError, match="rank must be between"):
        SimulatedPairDataset(dictionary, rank=9, matrix=MATRIX, n_samples=N_SAMPLES)
    with pytest.raises(ValueError, match="split must be one of"):
        SimulatedPairDataset(dictionary, split="dev", matrix=MATRIX, n_samples=N_SAMPLES)


def test_condition_with_coils_matches_the_raw_path(tmp_path, make_dataset, dictionary):
    ds = make_dataset(n_coils=3)
    d = simulate_subject(
        tmp_path,
        "3",
        seed=2,
        slices=[74],
        n_frames=N_FRAMES,
        n_coils=3,
        noise=0.0,
        split="test",
        matrix=MATRIX,
        n_samples=N_SAMPLES,
    )
    raw = read_raw(d / "raw.h5")
    traj = torch.from_numpy(raw.traj[0])
    op = SubspaceNufftOperator(
        traj, dictionary.basis, raw.matrix, coil_maps=ds.coil_maps, dcf=pipe_menon_dcf(traj, raw.matrix)
    )
    gridded = op.grid(torch.from_numpy(raw.kspace[0]))
    pair = ds.make_pair(2, 74)
    assert float((pair["condition"] - gridded).norm() / gridded.norm()) < 0.02
    # the coil-combined reference is the single-coil one (maps normalised to sum |S|^2 = 1)
    assert torch.allclose(pair["reference"], ds.reference(sample_subject_maps(2, 74, MATRIX, "test")))
