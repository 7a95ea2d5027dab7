"""Dictionary grid, SVD subspace, compression and the MRFDictionary container."""

import math

import pytest
import torch

from mrf_monai.physics.dictionary import MRFDictionary, b1_grid, build_dictionary, t1t2_grid, temporal_basis
from mrf_monai.physics.epg import simulate_fisp
from mrf_monai.physics.sequence import fisp_mrf_jiang2015


@pytest.fixture(scope="module")
def small():
    seq = fisp_mrf_jiang2015(40)
    t1, t2 = t1t2_grid((0.1, 3.0), (0.02, 1.0), step=0.25)
    return build_dictionary(seq, t1, t2, rank=4, keep_fingerprints=True)


def test_default_grid_is_geometric_with_t2_below_t1():
    t1, t2 = t1t2_grid()
    assert t1.dtype == torch.float32 and t1.shape == t2.shape
    assert bool((t2 <= t1).all())
    assert t1.min().item() == pytest.approx(0.05) and t2.min().item() == pytest.approx(0.005)
    assert t1.max() <= 5.0 and t2.max() <= 3.0
    u1 = torch.unique(t1.double())
    torch.testing.assert_close(u1[1:] / u1[:-1], torch.full((u1.numel() - 1,), 1.03, dtype=torch.float64))
    n1 = math.floor(math.log(100) / math.log(1.03)) + 1
    assert u1.numel() == n1
    assert 20_000 < t1.numel() < 30_000


def test_grid_rejects_bad_ranges():
    with pytest.raises(ValueError, match="step"):
        t1t2_grid(step=0)
    with pytest.raises(ValueError, match="range"):
        t1t2_grid((1.0, 0.5))
    with pytest.raises(ValueError, match="T2 <= T1"):
        t1t2_grid((0.01, 0.02), (0.5, 1.0))


def test_dictionary_fields_are_consistent(small: MRFDictionary):
    d = small
    n, t, r = d.n_atoms, d.sequence.n_frames, 4
    assert d.rank == r and d.basis.shape == (t, r) and d.compressed.shape == (n, r)
    assert d.basis.dtype == torch.complex64 and d.compressed.dtype == torch.complex64
    # orthonormal basis
    torch.testing.assert_close(d.basis.mH @ d.basis, torch.eye(r, dtype=torch.complex64), atol=1e-5, rtol=0)
    # norms are those of the raw fingerprints; compressed = unit atoms @ conj(basis)
    torch.testing.assert_close(d.norms, torch.linalg.vector_norm(d.fingerprints, dim=1))
    unit = d.fingerprints / d.norms[:, None]
    torch.testing.assert_close(d.compressed, unit @ d.basis.conj(), atol=1e-6, rtol=0)
    # fingerprints are the EPG signal of each atom
    torch.testing.assert_close(d.fingerprints[:5], simulate_fisp(d.t1_s[:5], d.t2_s[:5], d.sequence))
    # energy = fraction of the unit atoms' energy kept = mean |c|^2
    assert 0.99 < d.energy <= 1.0
    assert d.energy == pytest.approx(float(d.compressed.abs().square().sum(1).double().mean()), abs=1e-5)


def test_basis_spans_the_leading_singular_subspace_with_fixed_phase(small: MRFDictionary):
    d = small
    unit = (d.fingerprints / d.norms[:, None]).to(torch.complex128)
    _, s, vh = torch.linalg.svd(unit, full_matrices=False)
    v = vh.mH[:, :4]
    b = d.basis.to(torch.complex128)
    # same columns up to a unit phase each
    overlap = (v.mH @ b).abs().diagonal()
    torch.testing.assert_close(overlap, torch.ones(4, dtype=torch.float64), atol=1e-5, rtol=0)
    assert d.energy == pytest.approx(float((s[:4] ** 2).sum() / (s**2).sum()), abs=1e-6)
    # phase rule: the largest-magnitude entry of each column is real and positive
    pivot = b.gather(0, b.abs().argmax(0)[None])[0]
    assert bool((pivot.real > 0).all()) and pivot.imag.abs().max() < 1e-7


def test_temporal_basis_of_generic_complex_atoms_matches_svd():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, dtype=torch.complex128, generator=g) @ torch.randn(
        12, 12, dtype=torch.complex128, generator=g
    )
    x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True)
    basis, energy = temporal_basis(x, 3, chunk_size=64)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    v = vh.mH[:, :3]
    phase = (v.mH @ basis).diagonal()
    torch.testing.assert_close(phase.abs(), torch.ones(3, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(basis, v * phase[None, :], atol=1e-9, rtol=0)
    assert energy == pytest.approx(float((s[:3] ** 2).sum() / (s**2).sum()), rel=1e-10)
    again, _ = temporal_basis(x * torch.exp(1j * torch.tensor(0.7)), 3)
    torch.testing.assert_close(again, basis, atol=1e-9, rtol=0)  # deterministic phase


def test_truncate_rank_and_to(small: MRFDictionary):
    d2 = small.truncate_rank(2)
    assert d2.rank == 2 and d2.n_atoms == small.n_atoms
    torch.testing.assert_close(d2.basis, small.basis[:, :2])
    assert d2.energy < small.energy
    assert d2.energy == pytest.approx(float(d2.compressed.abs().square().sum(1).double().mean()))
    with pytest.raises(ValueError, match="rank"):
        small.truncate_rank(5)
    moved = small.to("cpu")
    assert moved.device.type == "cpu" and moved.sequence == small.sequence


def test_build_dictionary_b1_default_grid_and_errors():
    seq = fisp_mrf_jiang2015(10)
    t1 = torch.tensor([1.0, 1.0])
    t2 = torch.tensor([0.1, 0.1])
    d = build_dictionary(seq, t1, t2, rank=2, b1=torch.tensor([0.8, 1.2]))
    assert d.b1 is not None and d.fingerprints is None
    assert (d.compressed[0] - d.compressed[1]).abs().max() > 1e-3  # B1 changes the atom
    with pytest.raises(ValueError, match="both"):
        build_dictionary(seq, t1_s=t1)
    with pytest.raises(ValueError, match="rank"):
        build_dictionary(seq, t1, t2, rank=11)
    with pytest.raises(ValueError, match="one per atom"):
        build_dictionary(seq, t1, t2, b1=torch.tensor([1.0]))
    with pytest.raises(ValueError, match="inconsistent"):
        MRFDictionary(t1, t2, None, d.basis, d.compressed[:1], d.norms, None, seq, 1.0)


def test_b1_grid_is_even_and_holds_one():
    g = b1_grid((0.6, 1.4), 0.05)
    assert g.dtype == torch.float32 and g.numel() == 17
    assert float(g[0]) == pytest.approx(0.6) and float(g[-1]) == pytest.approx(1.4)
    assert bool((g == 1.0).any())  # nominal B1 exactly on the grid
    torch.testing.assert_close(g[1:] - g[:-1], torch.full((16,), 0.05), atol=1e-6, rtol=0)
    assert b1_grid((0.8, 1.2), 0.025).numel() == 17
    assert b1_grid((1.0, 1.0), 0.1).tolist() == [1.0]
    with pytest.raises(ValueError, match="b1_step"):
        b1_grid(step=0)
    with pytest.raises(ValueError, match="B1 range"):
        b1_grid((1.2, 0.8))


def test_dictionary_with_a_b1_axis_is_b1_major_with_one_basis():
    seq = fisp_mrf_jiang2015(40)
    t1, t2 = t1t2_grid((0.2, 2.0), (0.02, 0.5), step=0.4)
    m = t1.numel()
    values = torch.tensor([0.8, 1.0, 1.2])
    d = build_dictionary(seq, t1, t2, rank=4, b1_values=values, keep_fingerprints=True)
    assert d.n_atoms == 3 * m
    torch.testing.assert_close(d.b1_values, values)
    for j, v in enumerate(values):
        block = slice(j * m, (j + 1) * m)
        assert bool((d.b1[block] == v).all())
        torch.testing.assert_close(d.t1_s[block], t1)
        torch.testing.assert_close(d.t2_s[block], t2)
        # each block is the EPG signal with every flip angle scaled by its B1
        torch.testing.assert_close(d.fingerprints[block], simulate_fisp(t1, t2, seq, b1=float(v)))
    # one basis for the whole dictionary: the SVD of all unit atoms together
    unit = d.fingerprints / d.norms[:, None]
    basis, energy = temporal_basis(unit, 4)
    torch.testing.assert_close(d.basis, basis, atol=1e-5, rtol=0)
    assert d.energy == pytest.approx(energy, abs=1e-6)
    torch.testing.assert_close(d.compressed, unit @ d.basis.conj(), atol=1e-6, rtol=0)
    # without fingerprints (imaginary parts stored per block) the result is the same
    lean = build_dictionary(seq, t1, t2, rank=4, b1_values=values)
    torch.testing.assert_close(lean.compressed, d.compressed, atol=1e-6, rtol=0)
    torch.testing.assert_close(lean.norms, d.norms)
    nominal = build_dictionary(seq, t1, t2, rank=4)
    assert nominal.b1 is None and nominal.b1_values is None
    with pytest.raises(ValueError, match="not both"):
        build_dictionary(seq, t1, t2, b1=torch.ones(m), b1_values=values)
    with pytest.raises(ValueError, match="duplicates"):
        build_dictionary(seq, t1, t2, b1_values=torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="positive"):
        build_dictionary(seq, t1, t2, b1_values=torch.tensor([0.0, 1.0]))


def test_build_without_progress_is_one_epg_call_and_the_gram_basis():
    """Without a callback: exactly the one-call build (bit for bit), as before the callback existed."""
    seq = fisp_mrf_jiang2015(60)
    t1, t2 = t1t2_grid((0.05, 5.0), (0.005, 3.0), 0.15)
    d = build_dictionary(seq, t1, t2, rank=4, keep_fingerprints=True)
    raw = simulate_fisp(t1, t2, seq)
    assert torch.equal(d.fingerprints, raw)
    norms = torch.linalg.vector_norm(raw, dim=1)
    assert torch.equal(d.norms, norms)
    basis, energy = temporal_basis(raw * (1.0 / norms[:, None]), 4)
    assert torch.equal(d.basis, basis) and d.energy == energy


def test_progress_callback_counts_every_atom_and_changes_only_rounding():
    seq = fisp_mrf_jiang2015(60)
    t1, t2 = t1t2_grid((0.05, 5.0), (0.005, 3.0), 0.15)
    values = torch.tensor([0.8, 1.2])
    assert t1.numel() > 1024  # several sub-blocks per B1 block (PROGRESS_MIN_ATOMS)
    calls: list[tuple[int, int]] = []
    got = build_dictionary(
        seq,
        t1,
        t2,
        rank=4,
        b1_values=values,
        keep_fingerprints=True,
        progress=lambda i, n: calls.append((i, n)),
    )
    ref = build_dictionary(seq, t1, t2, rank=4, b1_values=values, keep_fingerprints=True)
    total = 2 * t1.numel()
    done = [i for i, _ in calls]
    assert len(calls) >= 4 and {n for _, n in calls} == {total}
    assert done == sorted(set(done)) and done[0] > 0 and done[-1] == total
    # each B1 block ends on a call (sub-blocks never straddle blocks)
    assert t1.numel() in done
    # the same atoms; only the EPG chunks (hence float rounding) differ: float32 tolerance
    for name in ("t1_s", "t2_s", "b1"):
        assert torch.equal(getattr(got, name), getattr(ref, name))
    torch.testing.assert_close(got.fingerprints, ref.fingerprints, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.norms, ref.norms, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got.basis, ref.basis, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.compressed, ref.compressed, atol=1e-6, rtol=0)
    assert got.energy == pytest.approx(ref.energy, abs=1e-7)
    # a dictionary smaller than one sub-block: one call, with the total
    few: list[tuple[int, int]] = []
    build_dictionary(seq, t1[:3], t2[:3], rank=2, progress=lambda i, n: few.append((i, n)))
    assert few == [(3, 3)]
