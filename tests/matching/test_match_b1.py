"""Matching with a B1 axis: a B1 map restricts each voxel to its B1, free B1 recovers it, exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrf_monai.matching import b1_coverage, build_atom_clusters, match_dictionary, nearest_b1_block
from mrf_monai.physics import fisp_mrf_jiang2015
from mrf_monai.physics.dictionary import b1_grid, build_dictionary, t1t2_grid
from mrf_monai.physics.epg import simulate_fisp
from mrf_monai.transforms.matching import DictionaryMatch, DictionaryMatchd

SEQ = fisp_mrf_jiang2015(200)
B1 = b1_grid((0.7, 1.3), 0.05)  # 13 values, 0.85 and 1.0 on the grid


def _pairs(n: int = 16):
    t1, t2 = np.meshgrid(np.geomspace(0.2, 3.0, n), np.geomspace(0.02, 1.0, n), indexing="ij")
    keep = t2 < t1
    return torch.tensor(t1[keep], dtype=torch.float32), torch.tensor(t2[keep], dtype=torch.float32)


@pytest.fixture(scope="module")
def b1_dictionary():
    t1, t2 = _pairs()
    return build_dictionary(SEQ, t1, t2, rank=5, b1_values=B1)


def _compress(fingerprints: torch.Tensor, d) -> torch.Tensor:
    return (fingerprints @ d.basis.conj()).T  # (R, V)


def _on_grid_voxels(d, b1: float, seed: int = 0, n: int = 40):
    """Voxels ``pd * EPG(T1, T2, b1)`` at random (T1, T2) atoms of the grid."""
    g = torch.Generator().manual_seed(seed)
    m = int((d.b1 == d.b1[0]).sum())
    pick = torch.randint(0, m, (n,), generator=g)
    t1, t2 = d.t1_s[pick], d.t2_s[pick]
    pd = torch.polar(0.5 + torch.rand(n, generator=g), 2 * torch.rand(n, generator=g))
    return t1, t2, _compress(simulate_fisp(t1, t2, SEQ, b1=b1) * pd[:, None], d), pd


@pytest.mark.parametrize("c2f", [False, True])
def test_voxels_at_b1_085_with_their_map_match_t1_t2_exactly(b1_dictionary, c2f):
    d = b1_dictionary
    t1, t2, x, pd = _on_grid_voxels(d, 0.85)
    for b1_value in (0.85, 0.86, 0.8251):  # the map's B1 is rounded to the nearest grid value
        out = match_dictionary(
            x, d, mask_threshold=0.0, b1_map=torch.full((x.shape[1],), b1_value), coarse_to_fine=c2f
        )
        assert torch.equal(out["t1_s"], t1) and torch.equal(out["t2_s"], t2)
        torch.testing.assert_close(out["b1"], torch.full_like(t1, 0.85))
        torch.testing.assert_close(out["pd"], pd.abs(), rtol=1e-4, atol=1e-5)


def test_free_b1_recovers_b1_and_t1_t2(b1_dictionary):
    d = b1_dictionary
    for b1_value, seed in ((0.85, 1), (1.2, 2)):
        t1, t2, x, _ = _on_grid_voxels(d, b1_value, seed=seed)
        out = match_dictionary(x, d, mask_threshold=0.0)
        torch.testing.assert_close(out["b1"], torch.full_like(t1, b1_value))
        assert torch.equal(out["t1_s"], t1) and torch.equal(out["t2_s"], t2)
        fast = match_dictionary(x, d, mask_threshold=0.0, coarse_to_fine=True)  # clusters mixing B1
        assert torch.equal(fast["index"], out["index"])
        per_b1 = build_atom_clusters(d, by_b1=True)
        assert torch.equal(
            match_dictionary(x, d, mask_threshold=0.0, coarse_to_fine=per_b1)["index"], out["index"]
        )


def test_ignoring_b1_biases_t2():
    # white-matter-like tissue at B1 = 0.85 matched with a nominal (B1 = 1) dictionary on a fine grid
    t1g, t2g = t1t2_grid((0.5, 1.4), (0.04, 0.12), step=0.02)
    nominal = build_dictionary(SEQ, t1g, t2g, rank=5)
    t1 = torch.tensor([0.8, 1.2, 0.6])
    t2 = torch.tensor([0.07, 0.09, 0.05])
    x = _compress(simulate_fisp(t1, t2, SEQ, b1=0.85), nominal)
    out = match_dictionary(x, nominal, mask_threshold=0.0)
    t2_bias = out["t2_s"] / t2 - 1
    t1_bias = out["t1_s"] / t1 - 1
    print(f"ignoring B1 = 0.85: T2 bias {t2_bias.tolist()}, T1 bias {t1_bias.tolist()}")
    # FISP overestimates T2 where the flip angles are too low (measured +16 %, +6 %, +24 %);
    # T1 moves by under 1 %
    assert bool((t2_bias > 0.05).all()) and float(t2_bias.mean()) > 0.1
    assert float(t1_bias.abs().max()) < 0.02
    # with the B1 axis and the map, the same voxels are exact on the grid
    with_b1 = build_dictionary(SEQ, t1g, t2g, rank=5, b1_values=torch.tensor([0.85, 1.0]))
    x = _compress(simulate_fisp(t1, t2, SEQ, b1=0.85), with_b1)
    exact = match_dictionary(x, with_b1, mask_threshold=0.0, b1_map=torch.full((3,), 0.85))
    assert float((exact["t2_s"] / t2 - 1).abs().max()) < 0.021  # within one grid step (2 %)
    assert float((exact["t1_s"] / t1 - 1).abs().max()) < 0.021


def _noisy_slice(d, n: int = 24, seed: int = 3):
    """Object of random atoms at a smooth B1 field, noise, background; returns x and the B1 map."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    r = ((yy - n / 2) ** 2 + (xx - n / 2) ** 2).sqrt()
    obj = r < 9
    b1_map = 1.15 - 0.3 * (r / 12).clamp(max=1)  # centre-bright field, 0.85 .. 1.15
    t1p, t2p = _pairs()
    pick = torch.randint(0, t1p.numel(), (n * n,), generator=g)
    f = simulate_fisp(t1p[pick], t2p[pick], SEQ, b1=b1_map.reshape(-1))
    x = _compress(f * obj.reshape(-1, 1), d).reshape(-1, n, n)
    x = x + 0.01 * x.abs().max() * torch.randn(x.shape, dtype=x.dtype, generator=g)
    return x, b1_map, obj


def test_restricted_search_is_exact_with_clusters_and_background_skip(b1_dictionary):
    d = b1_dictionary
    x, b1_map, _ = _noisy_slice(d)
    b1_map[0, 0] = float("nan")  # unknown B1: every atom searched for that voxel
    brute = match_dictionary(x, d, b1_map=b1_map, skip_background=False)
    clusters = build_atom_clusters(d, by_b1=True)
    assert clusters.block is not None and bool((clusters.block >= 0).all())
    fast = match_dictionary(x, d, b1_map=b1_map, coarse_to_fine=clusters)
    assert torch.equal(fast["mask"], brute["mask"])
    for key in ("t1_s", "t2_s", "pd", "b1"):
        torch.testing.assert_close(fast[key], brute[key], rtol=1e-6, atol=1e-6)
    # every restricted voxel took an atom of its own (nearest) B1
    block = nearest_b1_block(b1_map, B1.double()).reshape(b1_map.shape)
    m = brute["mask"] & (block >= 0)
    torch.testing.assert_close(brute["b1"][m], B1[block[m]])
    # the restricted search equals matching against the sub-dictionary of that B1 alone
    j = int(block[12, 12])
    sub = d.b1 == B1[j]
    sub_d = type(d)(
        d.t1_s[sub], d.t2_s[sub], None, d.basis, d.compressed[sub], d.norms[sub], None, d.sequence, d.energy
    )
    voxels = torch.nonzero((block == j) & brute["mask"])
    alone = match_dictionary(x[:, voxels[:, 0], voxels[:, 1]], sub_d, mask_threshold=0.0)
    torch.testing.assert_close(alone["t1_s"], brute["t1_s"][voxels[:, 0], voxels[:, 1]])
    torch.testing.assert_close(alone["t2_s"], brute["t2_s"][voxels[:, 0], voxels[:, 1]])


def test_b1_errors_and_coverage(b1_dictionary, dictionary):
    x = torch.ones(5, 4, 4, dtype=torch.complex64)
    with pytest.raises(ValueError, match="no B1 axis"):
        match_dictionary(x, dictionary, b1_map=torch.ones(4, 4))
    with pytest.raises(ValueError, match="b1_map shape"):
        match_dictionary(x, b1_dictionary, b1_map=torch.ones(3, 4))
    mixed = build_atom_clusters(b1_dictionary, by_b1=False)
    with pytest.raises(ValueError, match="never mix B1"):
        match_dictionary(x, b1_dictionary, b1_map=torch.ones(4, 4), coarse_to_fine=mixed)
    grid = torch.tensor([0.75, 1.0, 1.25], dtype=torch.float64)
    v = torch.tensor([0.5, 0.8, 0.875, 0.9, 1.5, 0.0, float("nan"), float("inf")])  # 0.875: a tie
    assert nearest_b1_block(v, grid).tolist() == [0, 0, 0, 1, 2, -1, -1, -1]
    cov = b1_coverage(torch.tensor([0.5, 0.86, 1.0, 1.36, float("nan")]), b1_dictionary)
    assert cov["n_voxels"] == 5 and cov["n_unknown"] == 1 and cov["n_outside"] == 2
    assert cov["max_error"] == pytest.approx(0.2, abs=1e-6)


def test_transforms_take_a_b1_map(b1_dictionary):
    d = b1_dictionary
    t1, t2, x, _ = _on_grid_voxels(d, 0.85, seed=4, n=12)
    x = x.reshape(5, 3, 4)
    b1_map = torch.full((3, 4), 0.85)
    out = DictionaryMatch(d, mask_threshold=0.0)(x, b1_map=b1_map)
    assert torch.equal(out["t2_s"].reshape(-1), t2)
    data = DictionaryMatchd("tsmi", d, mask_threshold=0.0, b1_key="b1map")({"tsmi": x, "b1map": b1_map})
    assert torch.equal(data["t1_s"].reshape(-1), t1)
    torch.testing.assert_close(data["b1"], b1_map)
