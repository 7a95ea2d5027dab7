from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrf_monai.matching import build_atom_clusters, make_background_mask, match_dictionary
from mrf_monai.transforms.matching import DictionaryMatch, DictionaryMatchd


def _tsmi_of(dictionary, index: torch.Tensor, pd: torch.Tensor) -> torch.Tensor:
    """Compressed TSMI ``(R, *index.shape)`` of voxels ``pd * fingerprint[index]`` (M0 = 1 atoms)."""
    comp = torch.as_tensor(dictionary.compressed)
    norms = torch.as_tensor(dictionary.norms)
    x = comp[index.reshape(-1)] * (norms[index.reshape(-1)] * pd.reshape(-1))[:, None]
    return x.T.reshape(comp.shape[1], *index.shape)


def _random_subject(dictionary, shape=(16, 12), seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.as_tensor(dictionary.t1_s).numel()
    index = torch.randint(0, n, shape, generator=g)
    mag = 0.5 + torch.rand(shape, generator=g)
    phase = (torch.rand(shape, generator=g) - 0.5) * 2 * math.pi * 0.9
    pd = torch.polar(mag, phase)
    return index, pd, _tsmi_of(dictionary, index, pd)


def test_exact_atoms_recover_t1_t2_and_complex_pd(dictionary):
    index, pd, x = _random_subject(dictionary)
    out = match_dictionary(x, dictionary, mask_threshold=0.0)
    assert set(out) >= {"t1_s", "t2_s", "pd", "pd_phase", "mask", "index"}
    assert torch.equal(out["index"], index)
    assert torch.equal(out["t1_s"], torch.as_tensor(dictionary.t1_s)[index].float())
    assert torch.equal(out["t2_s"], torch.as_tensor(dictionary.t2_s)[index].float())
    torch.testing.assert_close(out["pd"], pd.abs(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out["pd_phase"], pd.angle(), rtol=0, atol=1e-4)
    assert out["mask"].all() and out["mask"].dtype == torch.bool
    assert out["t1_s"].dtype == torch.float32 and out["t1_s"].shape == index.shape


def test_pd_is_exact_when_the_basis_drops_energy(make_dictionary):
    # rank 3 keeps well below all of the energy: the atoms are renormalised in the subspace
    d2 = make_dictionary(rank=3, n_t1=10, n_t2=10)
    index, pd, x = _random_subject(d2, shape=(6, 5), seed=3)
    out = match_dictionary(x, d2, mask_threshold=0.0)
    assert torch.equal(out["index"], index)
    torch.testing.assert_close(out["pd"], pd.abs(), rtol=1e-4, atol=1e-6)


def test_chunking_does_not_change_the_result(dictionary):
    index, pd, x = _random_subject(dictionary, seed=1)
    x = x + 0.05 * torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(5))
    full = match_dictionary(x, dictionary, mask_threshold=0.0)
    small = match_dictionary(x, dictionary, mask_threshold=0.0, chunk_size=7)
    assert torch.equal(full["index"], small["index"])
    torch.testing.assert_close(full["pd"], small["pd"])


def test_coarse_to_fine_returns_the_brute_force_atom_on_noisy_data(dictionary):
    index, pd, x = _random_subject(dictionary, shape=(20, 20), seed=2)
    g = torch.Generator().manual_seed(7)
    x = x + 0.2 * x.abs().mean() * torch.randn(x.shape, dtype=x.dtype, generator=g)
    brute = match_dictionary(x, dictionary, mask_threshold=0.0)
    clusters = build_atom_clusters(dictionary, n_clusters=12)
    assert clusters.n_clusters <= 12
    assert sorted(torch.cat(clusters.members).tolist()) == list(
        range(torch.as_tensor(dictionary.t1_s).numel())
    )
    fast = match_dictionary(x, dictionary, mask_threshold=0.0, coarse_to_fine=clusters)
    assert torch.equal(fast["index"], brute["index"])
    auto = match_dictionary(x, dictionary, mask_threshold=0.0, coarse_to_fine=True, chunk_size=50)
    assert torch.equal(auto["index"], brute["index"])
    torch.testing.assert_close(fast["pd"], brute["pd"])


def test_background_is_zero_and_holes_are_filled(dictionary):
    n = 24
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    r = ((yy - n / 2) ** 2 + (xx - n / 2) ** 2).sqrt()
    obj = r < 9
    pd = torch.where(obj, torch.ones(n, n), torch.zeros(n, n)).to(torch.complex64)
    pd[(r < 2.5)] = 0.05  # a dark hole (CSF-like) inside the object
    index = torch.full((n, n), 17, dtype=torch.long)
    x = _tsmi_of(dictionary, index, pd)
    out = match_dictionary(x, dictionary)
    assert torch.equal(out["mask"], obj)  # hole filled, background excluded
    for key in ("t1_s", "t2_s", "pd", "pd_phase"):
        assert torch.isfinite(out[key]).all()
        assert (out[key][~obj] == 0).all()
    assert (out["t1_s"][obj] == torch.as_tensor(dictionary.t1_s)[17]).all()


@pytest.mark.parametrize("c2f", [False, True])
def test_skipping_background_gives_the_full_search_maps(dictionary, c2f):
    # a head-like object (random atoms, dark hole inside) in noise: the pre-screen skips
    # background voxels but the maps and mask equal those of matching every voxel
    n = 40
    g = torch.Generator().manual_seed(11)
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    r = ((yy - n / 2) ** 2 + (xx - n / 2) ** 2).sqrt()
    obj = r < 15
    n_atoms = torch.as_tensor(dictionary.t1_s).numel()
    index = torch.randint(0, n_atoms, (n, n), generator=g)
    pd = torch.polar(0.6 + 0.4 * torch.rand(n, n, generator=g), torch.full((n, n), 0.3)) * obj
    pd[r < 3] *= 0.03  # CSF-like dark hole: below the threshold, filled into the mask
    x = _tsmi_of(dictionary, index, pd)
    x = x + 0.01 * x.abs().max() * torch.randn(x.shape, dtype=x.dtype, generator=g)
    search = build_atom_clusters(dictionary, n_clusters=12) if c2f else False
    full = match_dictionary(x, dictionary, coarse_to_fine=search, skip_background=False)
    fast = match_dictionary(x, dictionary, coarse_to_fine=search)
    assert torch.equal(fast["mask"], full["mask"])
    assert full["mask"][r < 3].all()  # the hole is in the mask
    for key in ("t1_s", "t2_s", "pd", "pd_phase"):
        torch.testing.assert_close(fast[key], full[key], rtol=1e-6, atol=1e-6)
    skipped = fast["index"] == -1
    assert skipped.sum() > 0.3 * n * n  # most of the background was never searched
    assert not (skipped & full["mask"]).any()
    assert torch.equal(fast["index"][~skipped], full["index"][~skipped])


def test_given_mask_restricts_matching(dictionary):
    index, pd, x = _random_subject(dictionary, shape=(8, 8), seed=4)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:5, 3:7] = True
    out = match_dictionary(x, dictionary, mask=mask)
    assert torch.equal(out["mask"], mask)
    assert torch.equal(out["index"][mask], index[mask])
    assert (out["t1_s"][~mask] == 0).all() and (out["t1_s"][mask] > 0).all()


def test_nan_rank_and_shape_errors_are_clear(dictionary):
    _, _, x = _random_subject(dictionary, shape=(4, 4))
    bad = x.clone()
    bad[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        match_dictionary(bad, dictionary)
    with pytest.raises(ValueError, match="truncate_rank"):
        match_dictionary(x[:3], dictionary)
    with pytest.raises(ValueError, match="mask shape"):
        match_dictionary(x, dictionary, mask=torch.ones(3, 3, dtype=torch.bool))


def test_numpy_input_and_voxel_list(dictionary):
    index, pd, x = _random_subject(dictionary, shape=(10,), seed=6)
    out = match_dictionary(x.numpy(), dictionary, mask_threshold=0.0)
    assert torch.equal(out["index"], index)


def test_background_mask_threshold():
    pd = torch.tensor([[0.0, 0.1, 1.0], [0.2, 0.5, 0.0], [0.0, 0.0, 0.0]])
    assert make_background_mask(pd, 0.15).tolist() == [[False, False, True], [True, True, False], [False] * 3]
    with pytest.raises(ValueError, match="mask_threshold"):
        make_background_mask(pd, 1.5)


def test_transforms_array_and_dictionary(dictionary):
    index, pd, x = _random_subject(dictionary, shape=(6, 6), seed=8)
    out = DictionaryMatch(dictionary, mask_threshold=0.0)(x)
    assert torch.equal(out["index"], index)
    data = DictionaryMatchd(keys="tsmi", dictionary=dictionary, mask_threshold=0.0)({"tsmi": x, "other": 1})
    for key in ("t1_s", "t2_s", "pd", "pd_phase", "mask"):
        assert key in data and data[key].shape == (6, 6)
    assert data["other"] == 1
    np.testing.assert_allclose(data["t2_s"].numpy(), torch.as_tensor(dictionary.t2_s)[index].numpy())
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[1:4, 2:5] = True
    masked = DictionaryMatchd(keys="tsmi", dictionary=dictionary, mask_key="m")({"tsmi": x, "m": mask})
    assert torch.equal(masked["mask"], mask) and (masked["pd"][~mask] == 0).all()
    two = DictionaryMatchd(keys=["a", "b"], dictionary=dictionary, mask_threshold=0.0)({"a": x, "b": 2 * x})
    torch.testing.assert_close(two["b_pd"], 2 * two["a_pd"], rtol=1e-4, atol=1e-6)
