"""DICOM maps: values through the rescale, geometry equal to the NIfTI affine, UIDs."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from mrf_monai.io.dicom import voxel_to_patient_lps, write_dicom_maps, write_dicom_series


def _affine():
    # oblique, anisotropic: i along RAS (-cos, -sin, 0)*1.5, j along (sin, -cos, 0)*2, slices 4 mm on +z
    c, s = np.cos(0.2), np.sin(0.2)
    aff = np.eye(4)
    aff[:3, 0] = [-c * 1.5, -s * 1.5, 0]
    aff[:3, 1] = [s * 2.0, -c * 2.0, 0]
    aff[:3, 2] = [0, 0, 4.0]
    aff[:3, 3] = [30.0, -12.0, 7.0]
    return aff


def test_values_and_geometry_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    t1_s = rng.uniform(0.2, 3.0, (7, 5, 3))  # Nx=7, Ny=5 (non-square catches transposes)
    series = write_dicom_series(tmp_path, "01", t1_s, _affine(), "T1", units="ms", series_number=5)
    assert len(series.paths) == 3 and all(p.is_file() for p in series.paths)
    assert not list(series.paths[0].parent.glob(".*"))
    for s, path in enumerate(series.paths):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and ds.Modality == "MR"
        assert (ds.Rows, ds.Columns) == (5, 7) and ds.pixel_array.dtype == np.uint16
        values_ms = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_allclose(values_ms, 1000 * t1_s[:, :, s].T, atol=float(ds.RescaleSlope) / 2 + 1e-9)
        rwv = ds.RealWorldValueMappingSequence[0]
        assert rwv.MeasurementUnitsCodeSequence[0].CodeValue == "ms"
        assert float(rwv.RealWorldValueSlope) == pytest.approx(float(ds.RescaleSlope))
        ipp = np.array(ds.ImagePositionPatient, float)
        iop = np.array(ds.ImageOrientationPatient, float)
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
        for r, c in [(0, 0), (4, 6), (2, 3), (1, 5)]:
            # DICOM: position = IPP + c * col_spacing * row_dir + r * row_spacing * col_dir
            pos = ipp + c * col_spacing * iop[:3] + r * row_spacing * iop[3:]
            np.testing.assert_allclose(pos, voxel_to_patient_lps(_affine(), (c, r, s)), atol=1e-4)
        assert ds.SeriesNumber == 5 and ds.InstanceNumber == s + 1
        assert float(ds.SliceThickness) == pytest.approx(4.0)


def test_series_share_study_and_frame_of_reference(tmp_path):
    maps = {
        "T1map": np.ones((4, 4, 1)),
        "T2": np.full((4, 4, 1), 0.08),
        "pd": np.full((4, 4, 1), 3.0),
        "desc-std_T1map": np.full((4, 4, 1), 0.01),
    }
    out = write_dicom_maps(tmp_path, "02", maps, _affine())
    ds = {q: pydicom.dcmread(s.paths[0]) for q, s in out.items()}
    assert len({d.StudyInstanceUID for d in ds.values()}) == 1
    assert len({d.FrameOfReferenceUID for d in ds.values()}) == 1
    assert len({d.SeriesInstanceUID for d in ds.values()}) == 4
    assert out["desc-std_T1map"].paths[0].parent.name == "sub-02_desc-std_T1map"
    assert "standard deviation" in ds["desc-std_T1map"].SeriesDescription
    t2 = ds["T2"].pixel_array * float(ds["T2"].RescaleSlope) + float(ds["T2"].RescaleIntercept)
    np.testing.assert_allclose(t2, 80.0, atol=float(ds["T2"].RescaleSlope))
    assert ds["pd"].RealWorldValueMappingSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "1"


def test_rejects_bad_quantity(tmp_path):
    with pytest.raises(ValueError, match="quantity"):
        write_dicom_series(tmp_path, "01", np.ones((2, 2)), _affine(), "B1")
    with pytest.raises(ValueError, match="unknown DICOM map key"):
        write_dicom_maps(tmp_path, "01", {"B1map": np.ones((2, 2))}, _affine())
