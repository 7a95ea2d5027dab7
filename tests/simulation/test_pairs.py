"""On-the-fly training pairs: table accuracy, consistency with the raw-data path, items."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mrf_monai.acquisition.coils import realistic_noise_covariance
from mrf_monai.acquisition.density import pipe_menon_dcf
from mrf_monai.acquisition.gridding import SubspaceGridder
from mrf_monai.acquisition.operators import SubspaceNufftOperator
from mrf_monai.acquisition.prewhitening import NoiseScan, whitening_matrix
from mrf_monai.io.b1 import read_b1_map, reference_b1_path
from mrf_monai.io.ismrmrd import read_raw
from mrf_monai.phantoms import sample_subject_maps
from mrf_monai.phantoms.anatomy import slice_position_mm
from mrf_monai.physics.dictionary import b1_grid, build_dictionary, t1t2_grid
from mrf_monai.physics.epg import simulate_fisp
from mrf_monai.simulation import CompressedSignalTable, SimulatedPairDataset, simulate_subject
from mrf_monai.simulation.scanner import b1_field, draw_b1_field
from mrf_monai.simulation.subjects import protocol_slice_maps
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


# ---------------------------------------------------------------- scanner conditions (issue 15)
SMALL_FRAMES, SMALL_MATRIX, SMALL_SAMPLES = 20, 32, 64


@pytest.fixture(scope="module")
def small_dictionary(sequence):
    t1, t2 = t1t2_grid(step=0.1)
    return build_dictionary(sequence.truncate(SMALL_FRAMES), t1, t2, rank=5)


@pytest.fixture(scope="module")
def make_small(small_dictionary, table_cache):
    """Pair datasets of 32 x 32, 20 frames (the scanner-condition tests)."""

    def make(**kwargs):
        args = dict(
            matrix=SMALL_MATRIX,
            samples_per_readout=SMALL_SAMPLES,
            split="test",
            length=4,
            table_step=0.03,
            noise=0.0,
            cache_dir=table_cache,
        )
        args.update(kwargs)
        return SimulatedPairDataset(small_dictionary, **args)

    return make


def _small_subject(tmp_path, label, seed, **kwargs):
    d = simulate_subject(
        tmp_path,
        label,
        seed,
        slices=[74],
        n_frames=SMALL_FRAMES,
        split="test",
        matrix=SMALL_MATRIX,
        samples_per_readout=SMALL_SAMPLES,
        **kwargs,
    )
    return d, read_raw(d / "raw.h5")


def test_signal_table_with_a_b1_axis(tmp_path, sequence, dictionary):
    """A B1 axis: every (T1, T2) node simulated at each B1 (flip angles scaled), trilinear lookups;
    B1 nodes are exact, B1 = 1 is the plain table's plane; cached under its own key."""
    basis = dictionary.basis
    ranges = dict(t1_range_s=(0.6, 1.5), t2_range_s=(0.03, 0.12))
    table = CompressedSignalTable(sequence, basis, 0.01, b1_values=b1_grid((0.8, 1.2), 0.05), **ranges)
    assert table.b1_values == [0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2]
    g = torch.Generator().manual_seed(1)
    t1 = torch.exp(torch.empty(200).uniform_(np.log(0.6), np.log(1.5), generator=g))
    t2 = torch.minimum(torch.exp(torch.empty(200).uniform_(np.log(0.03), np.log(0.12), generator=g)), t1)
    b1 = torch.empty(200).uniform_(0.8, 1.2, generator=g)
    exact = (
        simulate_fisp(t1.double(), t2.double(), sequence, b1=b1.double()).to(torch.complex64) @ basis.conj()
    )
    rel = (table(t1, t2, b1) - exact).norm(dim=1) / exact.norm(dim=1)
    assert rel.max() < 2e-3 and rel.median() < 5e-4, (rel.max(), rel.median())
    # a node of the B1 axis is exact in B1 (only the T1/T2 interpolation is left)
    at = simulate_fisp(t1.double(), t2.double(), sequence, b1=1.1).to(torch.complex64) @ basis.conj()
    rel_node = (table(t1, t2, 1.1) - at).norm(dim=1) / at.norm(dim=1)
    assert rel_node.max() < 1e-4, rel_node.max()
    plain = CompressedSignalTable(sequence, basis, 0.01, **ranges)
    assert torch.allclose(table(t1, t2), plain(t1, t2), rtol=1e-5, atol=1e-6)  # b1 None: B1 = 1
    with pytest.raises(ValueError, match="no B1 axis"):
        plain(t1, t2, b1)
    with pytest.raises(ValueError, match="evenly spaced"):
        CompressedSignalTable(sequence, basis, 0.05, b1_values=[0.9, 1.0, 1.2], **ranges)
    # the cache: one file per B1 grid, the plain table's key unchanged
    small = dict(t1_range_s=(0.5, 1.0), t2_range_s=(0.05, 0.1), cache_dir=tmp_path)
    a = CompressedSignalTable(sequence, basis, 0.05, b1_values=[0.9, 1.0, 1.1], **small)
    CompressedSignalTable(sequence, basis, 0.05, **small)
    CompressedSignalTable(sequence, basis, 0.05, b1_values=[0.8, 1.0, 1.2], **small)
    assert len(list(tmp_path.glob("signal_table_b1_*.pt"))) == 2
    assert len(list(tmp_path.glob("signal_table_*.pt"))) == 3
    b = CompressedSignalTable(sequence, basis, 0.05, b1_values=[0.9, 1.0, 1.1], **small)
    assert torch.equal(a.table, b.table) and a.table.shape == (3 * a.n1 * a.n2, 5)


def test_b1_pairs_match_epg_and_the_raw_path(tmp_path, make_small, small_dictionary):
    """b1: the reference is compress(PD x EPG at the scaled flip angles) of the phantom's voxels
    (within the table's interpolation error) and the condition the gridding of the raw.h5 that
    simulate_subject writes with the same field; "random" draws the subject's own amplitude."""
    ds = make_small(b1=0.2)
    assert ds.table.b1_values[0] == 0.8 and ds.table.b1_values[-1] == 1.2 and 1.0 in ds.table.b1_values
    d, raw = _small_subject(tmp_path, "1", 7, noise=0.0, b1=0.2)
    maps, m = protocol_slice_maps(7, 74, (SMALL_MATRIX, SMALL_MATRIX), ds.fov_mm, "test")
    field = ds.b1_map(7, maps["mask"], float(slice_position_mm(74, m)[2]))
    assert np.array_equal(field, read_b1_map(reference_b1_path(d, "1"), raw)[..., 0])  # the subject's
    assert field.min() < 0.85 and field.max() > 1.15
    pair = ds.make_pair(7, 74)
    has = np.abs(maps["pd"]) > 0
    sig = simulate_fisp(
        torch.from_numpy(maps["t1_s"][has]).double(),
        torch.from_numpy(maps["t2_s"][has]).double(),
        ds.sequence,
        b1=torch.from_numpy(field[has]).double(),
    )
    pd = torch.from_numpy(maps["pd"][has])[:, None]
    exact = (sig.to(torch.complex64) @ small_dictionary.basis.conj()) * pd
    rel = (pair["reference"][:, torch.from_numpy(has)].T - exact).norm(dim=1) / exact.norm(dim=1)
    assert rel.max() < 2e-3, rel.max()
    assert not pair["reference"][:, torch.from_numpy(~has)].any()
    nominal = make_small().make_pair(7, 74)["reference"]
    assert float((nominal - pair["reference"]).norm() / nominal.norm()) > 0.03  # the field matters
    traj = torch.from_numpy(raw.traj[0])
    op = SubspaceNufftOperator(traj, small_dictionary.basis, raw.matrix, dcf=pipe_menon_dcf(traj, raw.matrix))
    gridded = op.grid(torch.from_numpy(raw.kspace[0]))
    rel = float((pair["condition"] - gridded).norm() / gridded.norm())
    assert rel < 0.02, rel
    # "random": each subject's amplitude from its own stream (as simulate_subject), order-free items
    rnd = make_small(b1="random", length=3)
    assert rnd.table.b1_values[0] == 0.75 and rnd.table.b1_values[-1] == 1.25
    amplitudes = []
    for i in range(3):
        seed, z = rnd.item_phantom(i)
        params = draw_b1_field(seed, "test", "random")
        amplitudes.append(params.amplitude)
        mz, mm = protocol_slice_maps(seed, z, (SMALL_MATRIX, SMALL_MATRIX), rnd.fov_mm, "test")
        z_mm = float(slice_position_mm(z, mm)[2])
        assert np.array_equal(rnd.b1_map(seed, mz["mask"], z_mm), b1_field(mz["mask"], z_mm, params))
    assert all(0.10 <= a <= 0.25 for a in amplitudes) and len(set(amplitudes)) == 3
    later = rnd[2]
    again = make_small(b1="random", length=3)[2]  # a fresh dataset, item 2 first
    assert torch.equal(later["image"], again["image"]) and torch.equal(later["cond"], again["cond"])


def test_default_pairs_are_todays_pairs(make_small):
    """No field and white noise are today's pairs bit for bit: the explicit defaults give the same
    items, which are the table's reference and today's noise (the white draw of the item's seed,
    gridded with the coil maps)."""
    for coils in (1, 3):
        base = make_small(n_coils=coils, noise=4e-4)
        explicit = make_small(n_coils=coils, noise=4e-4, b1=None, noise_covariance="white", prewhiten=False)
        assert base.table.b1_axis is None and explicit.noise_covariance is None
        for i in (0, 3):
            a, b = base[i], explicit[i]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["cond"], b["cond"])
        seed, z = base.item_phantom(1)
        pair = base.make_pair(seed, z)
        maps, _ = protocol_slice_maps(seed, z, (SMALL_MATRIX, SMALL_MATRIX), base.fov_mm, "test")
        c = base.reference(maps)
        g = torch.Generator().manual_seed(seed % 2**63)
        white = torch.randn(coils, SMALL_FRAMES, SMALL_SAMPLES, dtype=torch.complex64, generator=g)
        assert torch.equal(base.coil_noise(seed, pair["sigma"]), white * pair["sigma"])
        cond = base.toeplitz(c) + base.noise_operator.grid(white * pair["sigma"])
        assert torch.equal(pair["reference"], c) and torch.equal(pair["condition"], cond)


def test_correlated_coil_noise_has_the_covariance(make_small):
    """noise_covariance: the coils' k-space noise has covariance sigma^2 Psi (pooled draws), and the
    known-covariance whitening makes it white again."""
    ds = make_small(n_coils=4, noise_covariance="realistic")
    psi = ds.subject_covariance(5)
    assert torch.allclose(psi, realistic_noise_covariance(4, 5).to(psi.dtype))  # the subject seed's
    assert not torch.allclose(psi, ds.subject_covariance(6))
    sigma = 0.3
    n = torch.cat([ds.coil_noise(s, sigma, psi).reshape(4, -1) for s in range(6)], dim=1).to(torch.complex128)
    emp = n @ n.mH / n.shape[1] / sigma**2  # 7680 samples per channel
    assert float((emp - psi).abs().max()) < 0.06 * float(psi.abs().max()), (emp - psi).abs().max()
    w = ds.whitened_coils(psi)[0].to(torch.complex128)
    white = w @ n
    assert torch.allclose(white @ white.mH / n.shape[1] / sigma**2, torch.eye(4, dtype=psi.dtype), atol=0.06)
    given = make_small(n_coils=4, noise_covariance=psi.numpy().tolist())  # a config's nested list
    assert torch.allclose(given.subject_covariance(1), psi) and torch.allclose(
        given.subject_covariance(9), psi
    )


def test_whitened_pairs_match_the_gridder_of_the_raw_file(tmp_path, make_small, small_dictionary):
    """Correlated noise with several coils: the condition is what SubspaceGridder makes of
    simulate_subject's raw.h5 with its noise scan (prewhitening; given maps through the same
    whitening), the reference the whitened combination's gain times c; noise SNR as the raw path's."""
    ds = make_small(n_coils=4, noise_covariance="realistic")
    _, raw = _small_subject(
        tmp_path, "2", 3, noise=0.0, n_coils=4, noise_covariance="realistic", noise_scan_samples=20000
    )
    grid = SubspaceGridder()
    gridded = grid.grid(
        raw.kspace[0],
        raw.traj[0],
        small_dictionary.basis,
        raw.matrix,
        ds.coil_maps,
        noise=NoiseScan.from_raw(raw),
    )
    assert grid.last_info["NoisePrewhitening"]["Applied"]
    pair = ds.make_pair(3, 74)
    rel = float((pair["condition"] - gridded).norm() / gridded.norm())
    assert rel < 0.02, rel
    assert float(pair["scale"]) == pytest.approx(
        float(torch.quantile(gridded[0].abs().flatten(), 0.99)), rel=0.02
    )
    maps, _ = protocol_slice_maps(3, 74, (SMALL_MATRIX, SMALL_MATRIX), ds.fov_mm, "test")
    w = whitening_matrix(realistic_noise_covariance(4, 3))
    gain = torch.linalg.vector_norm(torch.einsum("ab,bxy->axy", w, ds.coil_maps), dim=0)
    assert float(gain.max() / gain.min()) > 1.03  # a real spatial weighting
    assert torch.allclose(pair["reference"], gain * ds.reference(maps), rtol=1e-5, atol=1e-7)
    # without a noise scan inference grids the raw channels: prewhiten=False
    raw_grid = SubspaceGridder(prewhiten=False).grid(
        raw.kspace[0], raw.traj[0], small_dictionary.basis, raw.matrix, ds.coil_maps
    )
    plain = make_small(n_coils=4, noise_covariance="realistic", prewhiten=False).make_pair(3, 74)
    assert float((plain["condition"] - raw_grid).norm() / raw_grid.norm()) < 0.02
    assert torch.equal(plain["reference"], ds.reference(maps))
    # noise: the SNR of the pair's condition is the raw path's (one realisation each)
    noisy = make_small(n_coils=4, noise_covariance="realistic", noise=0.02).make_pair(3, 74)
    _, raw_n = _small_subject(
        tmp_path, "3", 3, noise=0.02, n_coils=4, noise_covariance="realistic", noise_scan_samples=20000
    )
    scan = NoiseScan.from_raw(raw_n)
    args = (raw_n.traj[0], small_dictionary.basis, raw_n.matrix, ds.coil_maps)
    g_noisy = grid.grid(raw_n.kspace[0], *args, noise=scan)
    g_clean = grid.grid(raw.kspace[0], *args, noise=scan)
    snr_raw = (g_noisy - g_clean).abs().pow(2).mean((-2, -1)) / g_clean.abs().pow(2).mean((-2, -1))
    snr_pair = (noisy["condition"] - pair["condition"]).abs().pow(2).mean((-2, -1)) / pair[
        "condition"
    ].abs().pow(2).mean((-2, -1))
    for r in (0, 2):
        assert 0.85 < float(snr_pair[r] / snr_raw[r]) < 1.18, (r, snr_pair[r] / snr_raw[r])


def test_scanner_condition_arguments_are_checked(make_small):
    with pytest.raises(ValueError, match="b1 must be null, 'random' or an amplitude"):
        make_small(b1="strong")
    with pytest.raises(ValueError, match="must lie in"):
        make_small(b1=1.2)
    with pytest.raises(ValueError, match="unknown noise covariance 'pink'"):
        make_small(n_coils=2, noise_covariance="pink")
    with pytest.raises(ValueError, match=r"must be \(2, 2\) for 2 coils"):
        make_small(n_coils=2, noise_covariance=np.eye(3))
    with pytest.raises(ValueError, match="table_b1_step"):
        make_small(b1=0.1, table_b1_step=0.0)
