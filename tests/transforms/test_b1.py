"""B1+ maps as transforms: LoadB1Mapd (grid checks, policy), the dictionary's B1 axis per slice,
matching with the map, free or ignored, and the matched B1 map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mrf_monai.transforms.b1 as b1_transforms
from mrf_monai.io.b1 import b1_map_path, read_b1_map, write_b1_map
from mrf_monai.io.ismrmrd import RawSubject
from mrf_monai.physics.dictionary import build_dictionary
from mrf_monai.physics.epg import simulate_fisp
from mrf_monai.physics.sequence import fisp_mrf_jiang2015
from mrf_monai.transforms.b1 import LoadB1Mapd, MatchedB1d
from mrf_monai.transforms.dictionary import AttachDictionaryd, DictionaryProvider, b1_dictionary_on_basis
from mrf_monai.transforms.matching import DictionaryMatchd

NX, NY, T = 6, 5, 40
SEQ = fisp_mrf_jiang2015(1000).truncate(T)
B1_VALUES = torch.tensor([0.8, 0.9, 1.0, 1.1, 1.2])


def make_raw(n_slices: int = 2) -> RawSubject:
    return RawSubject(
        kspace=np.zeros((n_slices, 1, T, 4), np.complex64),
        traj=np.zeros((n_slices, T, 4, 2), np.float32),
        interleaf=np.zeros((n_slices, T), np.int64),
        sequence=SEQ,
        matrix=(NX, NY),
        fov_mm=(60.0, 50.0, 5.0),
        position_mm=np.array([[0.0, 0.0, 5.0 * s] for s in range(n_slices)]),
    )


def field(n_slices: int = 2) -> np.ndarray:
    i, j, s = np.meshgrid(np.arange(NX), np.arange(NY), np.arange(n_slices), indexing="ij")
    return (0.8 + 0.4 * (i + j + s) / (NX + NY + n_slices)).astype(np.float32)


@pytest.fixture()
def subject(tmp_path):
    raw = make_raw()
    folder = tmp_path / "sub-7"
    b1 = field()
    write_b1_map(b1_map_path(folder), b1, raw.affine())
    return {"raw": raw, "raw_path": str(folder / "raw.h5"), "label": "7", "b1": b1, "folder": folder}


def data_of(subject, s: int) -> dict:
    return {"raw": subject["raw"], "raw_path": subject["raw_path"], "label": "7", "slice": s}


def test_the_subjects_map_is_read_per_slice_once_per_file(subject, monkeypatch):
    calls = []
    real = b1_transforms.read_b1_map
    monkeypatch.setattr(b1_transforms, "read_b1_map", lambda *a: calls.append(1) or real(*a))
    t = LoadB1Mapd()
    for s in range(2):
        d = t(data_of(subject, s))
        assert d["b1_map"].shape == (NX, NY) and d["b1_map"].dtype == torch.float32
        assert torch.equal(d["b1_map"], torch.from_numpy(subject["b1"][..., s]))
        assert d["b1_handling"] == "map"
        assert d["acquisition_info"]["B1"] == {"Handling": "map", "Map": str(b1_map_path(subject["folder"]))}
    assert len(calls) == 1


def test_a_map_on_another_grid_is_refused_naming_the_file(subject, tmp_path):
    raw = subject["raw"]
    path = tmp_path / "other.nii.gz"
    shifted = raw.affine().copy()
    shifted[0, 3] += 2.0  # 2 mm off
    cases = {
        "4 x 5 x 2 voxels": (field()[:4], raw.affine()),
        "6 x 5 x 1 voxels": (field()[..., :1], raw.affine()),
        "affine differs": (field(), shifted),
    }
    for message, (arr, affine) in cases.items():
        write_b1_map(path, arr, affine)
        with pytest.raises(ValueError, match=message) as err:
            LoadB1Mapd(b1_path=path)(data_of(subject, 0))
        assert str(path) in str(err.value)
    write_b1_map(path, 100 * field(), raw.affine())  # percent, not relative units
    with pytest.raises(ValueError, match="percent"):
        read_b1_map(path, raw)
    with pytest.raises(FileNotFoundError, match="missing"):
        LoadB1Mapd(b1_path=tmp_path / "missing.nii.gz")(data_of(subject, 0))


def test_without_a_map_the_policy_decides(subject, tmp_path):
    data = {"raw": subject["raw"], "raw_path": str(tmp_path / "sub-8" / "raw.h5"), "label": "8", "slice": 0}
    d = LoadB1Mapd(policy="free")(data)
    assert d["b1_map"] is None and d["b1_handling"] == "free"
    assert d["acquisition_info"]["B1"]["Handling"] == "free"
    assert "TB1map" in d["acquisition_info"]["B1"]["Note"]
    assert LoadB1Mapd()(data)["b1_handling"] == "ignore"  # the default policy
    d = LoadB1Mapd(use_map=False, policy="ignore")(data_of(subject, 0))  # a map exists but is not used
    assert d["b1_map"] is None and d["b1_handling"] == "ignore"
    with pytest.raises(ValueError, match="policy"):
        LoadB1Mapd(policy="guess")


@pytest.fixture(scope="module")
def b1_dictionary():
    t1 = torch.tensor([0.4, 0.8, 1.2, 2.0, 0.8, 1.5])
    t2 = torch.tensor([0.04, 0.06, 0.1, 0.2, 0.3, 0.05])
    return build_dictionary(SEQ, t1, t2, rank=5, b1_values=B1_VALUES)


def tsmi_of(dictionary, b1_map: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise-free TSMI ``(R, NX, NY)``: voxel v holds atom v % 6 at the voxel's (grid) B1."""
    n = NX * NY
    pick = torch.arange(n) % 6
    t1, t2 = dictionary.t1_s[pick], dictionary.t2_s[pick]
    f = simulate_fisp(t1, t2, SEQ, b1=torch.from_numpy(b1_map.reshape(-1)))
    return (f @ dictionary.basis.conj()).T.reshape(-1, NX, NY), pick


def test_matching_with_the_map_free_or_ignored(subject, b1_dictionary, tmp_path):
    grid_b1 = np.round(subject["b1"][..., 1] / 0.1) * 0.1  # on the dictionary's B1 grid
    x, pick = tsmi_of(b1_dictionary, grid_b1)

    def pipeline(provider, loader):
        match = DictionaryMatchd(
            "tsmi", dictionary_key="dictionary", clusters_key="clusters", mask_threshold=0.0, b1_key="b1_map"
        )
        attach = AttachDictionaryd(provider)
        return lambda data: match(
            attach({**loader(data), "tsmi": x, "sequence": SEQ, "meta": {"matrix": (NX, NY)}})
        )

    provider = DictionaryProvider(dictionary=b1_dictionary)
    # the map: each voxel's atoms at its B1, exactly
    d = MatchedB1d()(pipeline(provider, LoadB1Mapd())(data_of(subject, 1)))
    assert d["b1_handling"] == "map" and "b1_matched" not in d
    assert torch.equal(d["t1_s"].reshape(-1), b1_dictionary.t1_s[pick])
    assert d["acquisition_info"]["B1"]["DictionaryB1Values"] == 5
    # free: B1 recovered from the data
    d = MatchedB1d()(pipeline(provider, LoadB1Mapd(use_map=False, policy="free"))(data_of(subject, 1)))
    assert d["b1_handling"] == "free"
    torch.testing.assert_close(d["b1_matched"], torch.from_numpy(grid_b1).float())
    assert torch.equal(d["t2_s"].reshape(-1), b1_dictionary.t2_s[pick])
    # ignored with a B1 dictionary: matched at B1 = 1 (a map of ones)
    d = pipeline(provider, LoadB1Mapd(use_map=False, policy="ignore"))(data_of(subject, 1))
    assert torch.equal(d["b1_map"], torch.ones(NX, NY))
    # the clusters fit the handling: per B1 with a map or B1 = 1, mixing B1 values when free
    assert provider.resolve(SEQ, "map")[1].block.ge(0).all()
    assert provider.resolve(SEQ, "ignore")[1].block.ge(0).all()
    assert provider.resolve(SEQ, "free")[1] is provider.resolve(SEQ, "free")[1]
    assert provider.resolve(SEQ, "free")[1] is not provider.resolve(SEQ, "map")[1]


def test_built_dictionaries_get_a_b1_axis_only_when_needed(subject, tmp_path):
    provider = DictionaryProvider(cache_dir=tmp_path, coarse_to_fine=False, b1_step=0.1, b1_range=(0.9, 1.1))
    d_map, _, handling = provider.resolve(SEQ, "map")
    assert handling == "map" and torch.equal(torch.unique(d_map.b1), torch.tensor([0.9, 1.0, 1.1]))
    assert provider.resolve(SEQ, "free")[0] is d_map
    nominal, _, handling = provider.resolve(SEQ, "ignore")
    assert handling == "ignore" and nominal.b1 is None and nominal.n_atoms * 3 == d_map.n_atoms
    # the B1 dictionary shares the nominal basis (the subspace of the learned methods), from the cache
    assert torch.equal(d_map.basis, nominal.basis)
    again = DictionaryProvider(cache_dir=tmp_path, coarse_to_fine=False, b1_step=0.1, b1_range=(0.9, 1.1))
    assert torch.equal(again.resolve(SEQ, "map")[0].compressed, d_map.compressed)
    own = DictionaryProvider(
        cache_dir=tmp_path, coarse_to_fine=False, b1_step=0.1, b1_range=(0.9, 1.1), b1_basis="own"
    )
    assert not torch.allclose(own.resolve(SEQ, "map")[0].basis, nominal.basis)
    assert provider(SEQ)[0] is nominal  # the call without B1 handling, as before
    # no B1 axis: free B1 falls back to ignoring it (and says so); a map is an error
    plain = DictionaryProvider(cache_dir=tmp_path, coarse_to_fine=False)
    assert plain.resolve(SEQ, "free")[2] == "ignore"
    d = AttachDictionaryd(plain)({"sequence": SEQ, "b1_handling": "free"})
    assert d["b1_handling"] == "ignore" and "b1_step is null" in d["acquisition_info"]["B1"]["Note"]
    with pytest.raises(ValueError, match="b1_step"):
        plain.resolve(SEQ, "map")


def test_b1_dictionary_on_a_basis_is_the_epg_at_each_b1(b1_dictionary):
    nominal = build_dictionary(SEQ, b1_dictionary.t1_s[:6], b1_dictionary.t2_s[:6], rank=5)
    d = b1_dictionary_on_basis(nominal, B1_VALUES)
    assert d.n_atoms == 30 and torch.equal(d.basis, nominal.basis)
    assert torch.equal(d.b1, B1_VALUES.repeat_interleave(6)) and torch.equal(d.t1_s, nominal.t1_s.repeat(5))
    block = 2  # B1 = 1: the nominal atoms
    torch.testing.assert_close(
        d.compressed[6 * block : 6 * block + 6], nominal.compressed, rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(d.norms[6 * block : 6 * block + 6], nominal.norms, rtol=1e-5, atol=0)
    # on the joint basis of build_dictionary(b1_values): the same compressed atoms
    same = b1_dictionary_on_basis(nominal, B1_VALUES, basis=b1_dictionary.basis)
    torch.testing.assert_close(same.compressed, b1_dictionary.compressed, rtol=1e-4, atol=1e-5)
    assert 0.9 < d.energy <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="already has a B1 axis"):
        b1_dictionary_on_basis(b1_dictionary, B1_VALUES)
