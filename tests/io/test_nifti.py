"""NIfTI maps: BIDS names, sidecars, orientation, values, units and display window."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from mrf_monai.io.nifti import write_maps


def _affine():
    aff = np.diag([-1.5, -2.0, 5.0, 1.0])
    aff[:3, 3] = [12.0, 8.0, -20.0]
    return aff


def _maps():
    rng = np.random.default_rng(1)
    t1 = rng.uniform(0.3, 2.0, (6, 5, 2))
    t1[0, 0, 0] = 0.0  # background
    return {"T1map": t1, "t2_s": t1 / 10, "pd": rng.standard_normal((6, 5, 2)) + 1j}


def test_write_maps_names_values_geometry(tmp_path):
    maps = _maps()
    out = write_maps(
        tmp_path / "sub-01", "01", maps, _affine(), method="MRF-IDDPM", sidecar_extra={"Seed": 3}
    )
    assert set(out) == {"T1map", "T2map", "PDmap"}
    assert out["T1map"] == tmp_path / "sub-01" / "sub-01_T1map.nii.gz"
    img = nib.load(out["T1map"])
    assert img.get_data_dtype() == np.float32 and img.shape == (6, 5, 2)
    np.testing.assert_allclose(img.affine, _affine())
    assert img.header.get_sform(coded=True)[1] == 1 and img.header.get_qform(coded=True)[1] == 1
    assert img.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_allclose(np.asarray(img.dataobj), maps["T1map"].astype(np.float32))
    lo, hi = float(img.header["cal_min"]), float(img.header["cal_max"])
    assert lo == 0.0 and 1.5 < hi <= 2.0
    assert img.header.get_intent()[2] == "T1" and b"T1" in img.header["descrip"].tobytes()
    pd = np.asarray(nib.load(out["PDmap"]).dataobj)
    np.testing.assert_allclose(pd, np.abs(maps["pd"]), rtol=1e-6)
    side = json.loads((tmp_path / "sub-01" / "sub-01_T2map.json").read_text())
    assert side["Units"] == "s" and side["Method"] == "MRF-IDDPM" and side["Seed"] == 3
    assert side["SoftwareVersions"].startswith("mrf_monai") and "Model" in side
    assert json.loads((tmp_path / "sub-01" / "sub-01_PDmap.json").read_text())["Units"] == "arbitrary"
    assert not list((tmp_path / "sub-01").glob(".*"))


def test_milliseconds_and_nan_cleanup(tmp_path):
    t1 = np.full((4, 4), 1.2)
    t1[1, 2] = np.nan
    t1[0, 0] = np.inf
    with pytest.warns(UserWarning, match="2 NaN/Inf"):
        out = write_maps(
            tmp_path / "sub-ab1",
            "ab1",
            {"T1map": t1, "desc-std_T1map": np.full((4, 4), 0.1)},
            _affine(),
            method="matching",
            units="ms",
        )
    data = np.asarray(nib.load(out["T1map"]).dataobj)
    assert data.shape == (4, 4, 1) and data[1, 2, 0] == 0 and data[0, 0, 0] == 0
    np.testing.assert_allclose(data[2, 2, 0], 1200.0)
    assert json.loads((tmp_path / "sub-ab1" / "sub-ab1_T1map.json").read_text())["Units"] == "ms"
    assert (tmp_path / "sub-ab1" / "sub-ab1_desc-std_T1map.nii.gz").is_file()


def test_rejects_unknown_keys_and_units(tmp_path):
    with pytest.raises(ValueError, match="unknown map 'B1map'"):
        write_maps(tmp_path, "01", {"B1map": np.ones((2, 2))}, _affine(), method="x")
    with pytest.raises(ValueError, match="units"):
        write_maps(tmp_path, "01", {"T1map": np.ones((2, 2))}, _affine(), method="x", units="min")
    with pytest.raises(ValueError, match="alphanumeric"):
        write_maps(tmp_path, "0_1", {"T1map": np.ones((2, 2))}, _affine(), method="x")
