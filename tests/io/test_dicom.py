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


def _values(ds) -> np.ndarray:
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_acquisition_metadata(tmp_path):
    from mrf_monai.physics import fisp_mrf_jiang2015
    from mrf_monai.physics.sequence import MRFSequence

    seq = fisp_mrf_jiang2015(30)
    out = write_dicom_maps(
        tmp_path / "a",
        "03",
        {"T1map": np.full((4, 4, 2), 1.2)},
        _affine(),
        sequence=seq,
        patient_position="ffs",
        slice_thickness_mm=2.5,
        imaging_frequency_hz=127.74e6,
    )
    ds = pydicom.dcmread(out["T1map"].paths[1])
    assert ds.PatientPosition == "FFS" and ds.BodyPartExamined == "BRAIN" and "Laterality" not in ds
    assert float(ds.EchoTime) == pytest.approx(seq.te_ms) and int(ds.EchoTrainLength) == 1
    assert float(ds.RepetitionTime) == pytest.approx(float(seq.tr_ms[0]))  # constant TR
    assert float(ds.InversionTime) == pytest.approx(seq.ti_ms)
    assert list(ds.ScanningSequence) == ["GR", "IR"] and list(ds.SequenceVariant) == ["SS", "MP"]
    assert float(ds.SliceThickness) == 2.5 and float(ds.SpacingBetweenSlices) == pytest.approx(4.0)
    assert float(ds.ImagingFrequency) == pytest.approx(127.74) and float(ds.MagneticFieldStrength) == 3.0
    assert "30 frames" in ds.ImageComments and "assumed" not in ds.ImageComments
    # a varying TR has no single RepetitionTime: empty, the range in ImageComments; as a dict too
    var = MRFSequence("FISP", seq.flip_angle_deg, np.linspace(11.0, 15.0, 30), 2.0, None)
    out = write_dicom_series(tmp_path / "b", "03", np.ones((4, 4)), _affine(), "T2", sequence=var.to_dict())
    ds = pydicom.dcmread(out.paths[0])
    assert "RepetitionTime" in ds and ds.RepetitionTime in ("", None)
    assert "TR varies 11-15 ms" in ds.ImageComments and "InversionTime" not in ds
    assert ds.ScanningSequence == "GR" and ds.SequenceVariant == "SS"
    # nothing known: Type 2 attributes present and empty, HFS assumed and said so
    ds = pydicom.dcmread(write_dicom_series(tmp_path / "c", "03", np.ones((4, 4)), _affine(), "PD").paths[0])
    assert ds.PatientPosition == "HFS" and "HFS assumed" in ds.ImageComments
    for keyword in ("EchoTime", "RepetitionTime", "EchoTrainLength"):
        assert keyword in ds and ds[keyword].value in ("", None)
    assert float(ds.SliceThickness) == pytest.approx(4.0)  # the affine's slice axis by default
    with pytest.raises(ValueError, match="PatientPosition"):
        write_dicom_series(tmp_path / "d", "03", np.ones((4, 4)), _affine(), "T1", patient_position="UP")


def test_display_window_and_flat_maps(tmp_path):
    obj = np.zeros((6, 6, 2))
    obj[1:5, 1:5] = 1.0
    maps = {"PD": obj * 0.004, "desc-std_T2map": np.zeros((6, 6, 2)), "T1": obj * 1.5}
    out = write_dicom_maps(tmp_path, "04", maps, _affine(), units="ms")
    pd, zero, t1 = (pydicom.dcmread(out[k].paths[0]) for k in maps)
    # flat PD 0.004: window 0..0.004 (narrower than 1, so LINEAR_EXACT), values exact
    assert float(pd.WindowWidth) == pytest.approx(0.004) and pd.VOILUTFunction == "LINEAR_EXACT"
    np.testing.assert_allclose(_values(pd), 0.004 * obj[:, :, 0].T, atol=float(pd.RescaleSlope))
    # all-zero map: slope 1, window 0..1, zeros stored
    assert float(zero.RescaleSlope) == 1.0 and float(zero.WindowWidth) == 1.0 and not zero.pixel_array.any()
    assert "STD DEV" in zero.ImageType and "VOILUTFunction" not in zero
    # flat T1 1500 ms: window 0..1500 ms, default LINEAR
    assert float(t1.WindowWidth) == pytest.approx(1500.0) and "VOILUTFunction" not in t1
    assert pd.ImageType[2] == "DENSITY MAP" and t1.ImageType[2] == "T1 MAP"


def test_raw_dicom_metadata_reads_the_header(tmp_path):
    import h5py

    from mrf_monai.acquisition.trajectory import fully_sampled_spiral
    from mrf_monai.io.dicom import raw_dicom_metadata, read_patient_position
    from mrf_monai.io.ismrmrd import RawSubject, read_raw, write_raw
    from mrf_monai.physics import fisp_mrf_jiang2015

    seq = fisp_mrf_jiang2015(3)
    traj = np.asarray(fully_sampled_spiral(3, matrix=8, samples_per_readout=64), np.float32)
    raw = RawSubject(
        kspace=np.ones((2, 1, 3, 64), np.complex64),
        traj=np.broadcast_to(traj, (2, *traj.shape)),
        interleaf=np.zeros((2, 3), int),
        sequence=seq,
        matrix=(8, 8),
        fov_mm=(230.0, 230.0, 5.0),
        position_mm=[[0.0, 0.0, 0.0], [0.0, 0.0, 24.0]],
    )
    path = write_raw(tmp_path / "raw.h5", raw)
    assert read_patient_position(path) == "HFS"
    with h5py.File(path, "a") as f:  # a scanner that recorded feet first
        xml = f["dataset"]["xml"][0]
        xml = xml.decode() if isinstance(xml, bytes) else str(xml)
        f["dataset"]["xml"][0] = xml.replace(">HFS<", ">FFS<")
    raw = read_raw(path)
    meta = raw_dicom_metadata(raw)
    assert meta["patient_position"] == "FFS" and meta["slice_thickness_mm"] == 5.0
    assert meta["sequence"] == seq and meta["imaging_frequency_hz"] == pytest.approx(raw.larmor_hz, abs=1)
    out = write_dicom_maps(tmp_path / "dicom", "05", {"T1": np.ones((8, 8, 2))}, raw.affine(), **meta)
    ds = pydicom.dcmread(out["T1"].paths[1])
    assert ds.PatientPosition == "FFS" and float(ds.SliceThickness) == 5.0
    assert float(ds.SpacingBetweenSlices) == pytest.approx(24.0)
    assert read_patient_position(tmp_path / "missing.h5") is None
