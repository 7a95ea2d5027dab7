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
        samples_per_readout=N_SAMPLES,
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
        samples_per_readout=N_SAMPLES,
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
        samples_per_readout=N_SAMPLES,
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
        SimulatedPairDataset(dictionary, rank=9, matrix=MATRIX, samples_per_readout=N_SAMPLES)
    with pytest.raises(ValueError, match="split must be one of"):
        SimulatedPairDataset(dictionary, split="dev", matrix=MATRIX, samples_per_readout=N_SAMPLES)


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
        samples_per_readout=N_SAMPLES,
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


def test_pairs_for_a_protocol_match_the_raw_path(tmp_path, dictionary, table_cache):
    """protocol=: a radial protocol (4 spokes per frame, FOV 200 mm, 2 coils) sets the trajectory,
    matrix, FOV and coils; the pair's condition is the gridding of simulate_subject's raw.h5."""
    from mrf_monai.acquisition.protocol import Protocol
    from mrf_monai.acquisition.trajectory import golden_angle_radial

    traj, index = golden_angle_radial(N_FRAMES, 4, 64)
    prot = Protocol(
        dictionary.sequence,
        traj.reshape(N_FRAMES, -1, 2),
        4,
        (32, 32),
        (200.0, 200.0, 4.0),
        2,
        "radial",
        index,
    )
    common = dict(split="test", length=2, table_step=0.03, noise=0.0, cache_dir=table_cache)
    ds = SimulatedPairDataset(dictionary, protocol=prot, **common)
    assert (ds.matrix, ds.n_coils, tuple(ds.traj.shape), ds.fov_mm) == (
        32,
        2,
        (N_FRAMES, 256, 2),
        prot.fov_mm,
    )
    d = simulate_subject(tmp_path, "5", seed=4, slices=[74], noise=0.0, protocol=prot)
    raw = read_raw(d / "raw.h5")
    t = torch.from_numpy(raw.traj[0])
    op = SubspaceNufftOperator(
        t, dictionary.basis, raw.matrix, coil_maps=ds.coil_maps, dcf=pipe_menon_dcf(t, raw.matrix)
    )
    gridded = op.grid(torch.from_numpy(raw.kspace[0]))
    rel = float((ds.make_pair(4, 74)["condition"] - gridded).norm() / gridded.norm())
    assert rel < 0.02, rel
    assert ds[0]["image"].shape == (10, 32, 32)
    # the protocol of a raw file, by path; coils overridden
    by_path = SimulatedPairDataset(dictionary, protocol=d / "raw.h5", n_coils=1, **common)
    assert torch.equal(by_path.traj, ds.traj) and by_path.n_coils == 1 and by_path.protocol == prot
    with pytest.raises(ValueError, match="matrix = 48 contradicts the protocol's 32 x 32"):
        SimulatedPairDataset(dictionary, protocol=prot, matrix=48, **common)
    with pytest.raises(ValueError, match="differs from the dictionary's.*20 frames vs 40"):
        short = prot.sequence.truncate(20)
        SimulatedPairDataset(
            dictionary, protocol=Protocol(short, prot.trajectory[:20], 4, (32, 32)), **common
        )


def test_recipe_reaches_the_phantom_and_noise_range_sets_each_items_level(make_dataset, dictionary):
    """recipe=: the phantoms are the recipe's (as sample_subject_maps draws them); noise_range: a
    per-item level, log-uniform in the range, from the item's own stream; defaults unchanged."""
    from mrf_monai.phantoms.recipe import PhantomRecipe

    wide = PhantomRecipe.wide()
    ds = make_dataset(split="train", length=6, noise=4e-4, recipe=wide.to_dict(), noise_range=[0.5, 5.0])
    assert ds.recipe == wide and ds.noise_range == (0.5, 5.0)  # a config's dict and list are accepted
    seed, z = ds.item_phantom(2)
    maps = sample_subject_maps(seed, z, MATRIX, "train", recipe=wide)
    assert torch.equal(ds.make_pair(seed, z)["reference"], ds.reference(maps))
    factors = [ds.item_noise(i) / ds.noise for i in range(6)]
    assert all(0.5 <= f <= 5.0 for f in factors) and len(set(factors)) == 6
    assert factors == [ds.item_noise(i) / ds.noise for i in range(6)]  # reproducible
    item = ds[2]  # simulated at the item's level
    assert torch.equal(item["cond"], ds.make_pair(seed, z, noise=ds.noise * factors[2])["cond"])
    # sigma is linear in the level; the noise realisation is the item's, only scaled
    p1, p3 = ds.make_pair(seed, z, noise=1e-3), ds.make_pair(seed, z, noise=3e-3)
    assert p3["sigma"] == pytest.approx(3 * p1["sigma"], rel=1e-6)
    clean = ds.make_pair(seed, z, noise=0.0)["condition"]
    assert torch.allclose(p3["condition"] - clean, 3 * (p1["condition"] - clean), rtol=1e-3, atol=1e-6)
    # today's world: PhantomRecipe() and no noise_range give exactly the default items
    default, same = (
        make_dataset(split="train", length=2, noise=4e-4),
        make_dataset(split="train", length=2, noise=4e-4, recipe=PhantomRecipe()),
    )
    assert default.item_noise(1) == default.noise == 4e-4
    assert torch.equal(default[1]["cond"], same[1]["cond"]) and torch.equal(
        default[1]["image"], same[1]["image"]
    )
    with pytest.raises(ValueError, match="noise_range must be"):
        make_dataset(noise_range=(0.0, 2.0))
    with pytest.raises(ValueError, match="noise_range must be"):
        make_dataset(noise_range=(3.0, 2.0))
    with pytest.raises(ValueError, match="unknown phantom recipe key"):
        make_dataset(recipe={"synthetic_share": 0.5})


def test_reserved_validation_seeds_are_refused_for_training(make_dataset):
    """Dataset seeds 2**20.. hold the OOD validation subjects: refused for training (also a length that
    reaches them), drawn with their validation kind's fixed recipe for split="val"."""
    from mrf_monai.phantoms.recipe import VALIDATION_SEED_START

    with pytest.raises(ValueError, match="reserved"):
        make_dataset(split="train", seed=2**20)
    with pytest.raises(ValueError, match="reserved"):
        make_dataset(split="train", seed=2**20 - 1, length=2**32 + 1)
    val = make_dataset(split="val", seed=2**20, length=1)
    seed, z = val.item_phantom(0)
    assert seed == VALIDATION_SEED_START  # validation subject 0 of the "deformed" kind
    deformed = sample_subject_maps(seed, z, MATRIX, "val")  # the kind's fixed recipe
    assert torch.equal(val.make_pair(seed, z)["reference"], val.reference(deformed))
