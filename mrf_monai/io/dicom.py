"""Quantitative maps as DICOM MR Image Storage series (one single-frame file per slice).

Pixel layout (the choice this module makes, proven by ``tests/io/test_dicom.py``):
DICOM pixel ``(row r, column c)`` of slice ``s`` is map voxel ``(i = c, j = r, s)``, i.e.
``PixelData = map[:, :, s].T``. Moving along a row (increasing column ``c``) follows the
map axis ``i`` (``read_dir``), so ``ImageOrientationPatient = [dir(i), dir(j)]`` in LPS,
``PixelSpacing = [spacing of j, spacing of i]`` (row spacing first), and
``ImagePositionPatient`` is voxel ``(0, 0, s)``. For an axial acquisition with
``read_dir = +x (L)`` and ``phase_dir = +y (P)`` this is the usual radiological display.

Stored values are uint16 with ``RescaleSlope``/``RescaleIntercept`` and a
``RealWorldValueMappingSequence`` so that viewers show T1/T2 in ms (or s).
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrf_monai.io.atomic import atomic_write_path

__all__ = ["write_dicom_series", "write_dicom_maps", "DicomSeries", "voxel_to_patient_lps", "DICOM_MAP_KEYS"]

_UCUM = {
    "ms": ("ms", "millisecond"),
    "s": ("s", "second"),
    "arbitrary": ("1", "no units"),
}
_QUANTITIES = {"T1": "T1 map", "T2": "T2 map", "PD": "proton density map"}


@dataclass
class DicomSeries:
    """Files and UIDs of a written series."""

    paths: list[Path]
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    series_number: int
    extra: dict = field(default_factory=dict)


def voxel_to_patient_lps(affine: np.ndarray, ijk) -> np.ndarray:
    """LPS patient position (mm) of voxel indices ``ijk`` under a RAS+ NIfTI affine."""
    p = np.asarray(affine, dtype=np.float64) @ np.append(np.asarray(ijk, dtype=np.float64), 1.0)
    return p[:3] * np.array([-1.0, -1.0, 1.0])


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _scaling(values: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) mapping uint16 0..65535 onto the value range with round steps."""
    vmin = min(0.0, float(values.min())) if values.size else 0.0
    vmax = float(values.max()) if values.size else 1.0
    span = max(vmax - vmin, 1e-12)
    slope = 10.0 ** np.ceil(np.log10(span / 60000.0))
    return float(slope), float(vmin)


def write_dicom_series(
    out_dir: str | os.PathLike,
    label: str,
    map_values: np.ndarray,
    affine: np.ndarray,
    quantity: str,
    units: str = "ms",
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    series_description: str | None = None,
    slice_thickness_mm: float | None = None,
    method: str = "",
    patient_name: str | None = None,
    folder_name: str | None = None,
) -> DicomSeries:
    """Write one map as a DICOM series: ``out_dir/sub-<label>_<Q>map/<Q>map_<s+1:04d>.dcm``.

    Args:
        out_dir: folder receiving the series folder.
        label: subject label (PatientID ``sub-<label>``).
        map_values: ``(Nx, Ny, S)`` (or ``(Nx, Ny)``) map; T1/T2 in seconds, PD arbitrary.
        affine: 4x4 RAS+ NIfTI affine of the map.
        quantity: ``"T1"``, ``"T2"`` or ``"PD"``.
        units: display units of T1/T2: ``"ms"`` (default) or ``"s"``.
        study_uid, frame_of_reference_uid: shared by all series of a subject; generated
            when ``None`` (reuse the returned ones for the subject's other maps).
        series_number: DICOM SeriesNumber.
        slice_thickness_mm: SliceThickness; default the slice spacing of the affine.
        folder_name: series folder name (default ``sub-<label>_<Q>map``).

    Returns:
        :class:`DicomSeries` with the files and the UIDs used.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    if quantity not in _QUANTITIES:
        raise ValueError(f"quantity must be one of {', '.join(_QUANTITIES)}, got {quantity!r}")
    if units not in ("ms", "s"):
        raise ValueError(f"units must be 'ms' or 's', got {units!r}")
    arr = _to_numpy(map_values)
    if np.iscomplexobj(arr):
        arr = np.abs(arr)
    arr = np.where(np.isfinite(arr), arr.astype(np.float64), 0.0)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"{quantity} map of sub-{label} must be (Nx, Ny, S), got {arr.shape}")
    unit = "arbitrary"
    if quantity in ("T1", "T2"):
        unit = units
        if units == "ms":
            arr = arr * 1000.0
    affine = np.asarray(affine, dtype=np.float64)
    flip = np.array([-1.0, -1.0, 1.0])
    col_i, col_j, col_s = (affine[:3, k] * flip for k in range(3))
    di, dj, ds = (float(np.linalg.norm(v)) for v in (col_i, col_j, col_s))
    if min(di, dj, ds) <= 0:
        raise ValueError(f"the affine of the {quantity} map of sub-{label} has a zero-length axis")
    row_dir, col_dir = col_i / di, col_j / dj
    normal = np.cross(row_dir, col_dir)
    thickness = float(slice_thickness_mm) if slice_thickness_mm is not None else ds

    study_uid = study_uid or generate_uid()
    frame_of_reference_uid = frame_of_reference_uid or generate_uid()
    series_uid = generate_uid()
    slope, intercept = _scaling(arr)
    stored = np.clip(np.round((arr - intercept) / slope), 0, 65535).astype(np.uint16)
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    code_value, code_meaning = _UCUM[unit]
    name = _QUANTITIES[quantity]
    folder = Path(out_dir) / (folder_name or f"sub-{label}_{quantity}map")
    lo, hi = (
        float(np.percentile(arr[arr != 0], 1)) if np.any(arr) else 0.0,
        float(np.percentile(arr[arr != 0], 99)) if np.any(arr) else 1.0,
    )
    paths = []
    for s in range(arr.shape[2]):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds_ = Dataset()
        ds_.file_meta = meta
        ds_.SOPClassUID = MRImageStorage
        ds_.SOPInstanceUID = sop_uid
        ds_.StudyInstanceUID = study_uid
        ds_.SeriesInstanceUID = series_uid
        ds_.FrameOfReferenceUID = frame_of_reference_uid
        ds_.Modality = "MR"
        ds_.Manufacturer = "mrf_monai"
        ds_.PatientName = patient_name or f"sub-{label}"
        ds_.PatientID = f"sub-{label}"
        ds_.PatientBirthDate = ""
        ds_.PatientSex = ""
        ds_.StudyDate = ds_.SeriesDate = ds_.ContentDate = date
        ds_.StudyTime = ds_.SeriesTime = ds_.ContentTime = time
        ds_.StudyID = ""
        ds_.AccessionNumber = ""
        ds_.ReferringPhysicianName = ""
        ds_.SeriesNumber = int(series_number)
        ds_.InstanceNumber = s + 1
        ds_.SeriesDescription = series_description or f"{name} ({unit}) {method}".strip()
        ds_.ImageType = ["DERIVED", "PRIMARY", f"{quantity} MAP"]
        ds_.ScanningSequence = "RM"
        ds_.SequenceVariant = "NONE"
        ds_.ScanOptions = ""
        ds_.MRAcquisitionType = "2D"
        ds_.PositionReferenceIndicator = ""
        ds_.ImagePositionPatient = [float(v) for v in voxel_to_patient_lps(affine, (0, 0, s))]
        ds_.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds_.PixelSpacing = [dj, di]
        ds_.SliceThickness = thickness
        ds_.SpacingBetweenSlices = ds
        ds_.SliceLocation = float(np.dot(voxel_to_patient_lps(affine, (0, 0, s)), normal))
        ds_.SamplesPerPixel = 1
        ds_.PhotometricInterpretation = "MONOCHROME2"
        ds_.Rows, ds_.Columns = int(arr.shape[1]), int(arr.shape[0])
        ds_.BitsAllocated, ds_.BitsStored, ds_.HighBit, ds_.PixelRepresentation = 16, 16, 15, 0
        ds_.RescaleSlope = f"{slope:.10g}"
        ds_.RescaleIntercept = f"{intercept:.10g}"
        ds_.RescaleType = code_value if unit != "arbitrary" else "US"
        ds_.WindowCenter = f"{(lo + hi) / 2:.6g}"
        ds_.WindowWidth = f"{max(hi - lo, 1e-6):.6g}"
        units_item = Dataset()
        units_item.CodeValue = code_value
        units_item.CodingSchemeDesignator = "UCUM"
        units_item.CodeMeaning = code_meaning
        rwv = Dataset()
        rwv.RealWorldValueFirstValueMapped = 0
        rwv.RealWorldValueLastValueMapped = 65535
        rwv.RealWorldValueSlope = slope
        rwv.RealWorldValueIntercept = intercept
        rwv.LUTExplanation = f"{name} ({unit})"
        rwv.LUTLabel = quantity
        rwv.MeasurementUnitsCodeSequence = [units_item]
        ds_.RealWorldValueMappingSequence = [rwv]
        ds_.PixelData = np.ascontiguousarray(stored[:, :, s].T).tobytes()
        path = folder / f"{quantity}map_{s + 1:04d}.dcm"
        with atomic_write_path(path) as tmp:
            pydicom.dcmwrite(tmp, ds_, enforce_file_format=True)
        paths.append(path)
    return DicomSeries(paths, study_uid, series_uid, frame_of_reference_uid, int(series_number))


#: Accepted map keys of :func:`write_dicom_maps` -> (quantity, series name suffix).
DICOM_MAP_KEYS: dict[str, tuple[str, str]] = {
    "T1": ("T1", "T1map"),
    "T2": ("T2", "T2map"),
    "PD": ("PD", "PDmap"),
    "T1map": ("T1", "T1map"),
    "T2map": ("T2", "T2map"),
    "PDmap": ("PD", "PDmap"),
    "t1_s": ("T1", "T1map"),
    "t2_s": ("T2", "T2map"),
    "pd": ("PD", "PDmap"),
    "desc-std_T1map": ("T1", "desc-std_T1map"),
    "desc-std_T2map": ("T2", "desc-std_T2map"),
}


def write_dicom_maps(
    out_dir: str | os.PathLike,
    label: str,
    maps: dict[str, np.ndarray],
    affine: np.ndarray,
    units: str = "ms",
    first_series_number: int = 1,
    method: str = "",
) -> dict[str, DicomSeries]:
    """Write several maps of one subject as DICOM series sharing one StudyInstanceUID and
    FrameOfReferenceUID (one SeriesInstanceUID and series number each).

    Args:
        maps: ``key -> (Nx, Ny, S)``; keys ``T1``/``T2``/``PD``, the NIfTI suffixes
            (``T1map``, ``T2map``, ``PDmap``, ``desc-std_T1map``, ``desc-std_T2map``) or
            ``t1_s``/``t2_s``/``pd`` (see :data:`DICOM_MAP_KEYS`); T1/T2 in seconds.
        affine: 4x4 RAS+ affine shared by the maps.

    Returns:
        ``key -> DicomSeries``; series folders ``out_dir/sub-<label>_<name>/``.
    """
    from pydicom.uid import generate_uid

    unknown = [k for k in maps if k not in DICOM_MAP_KEYS]
    if unknown:
        raise ValueError(
            f"unknown DICOM map key(s) {unknown} for sub-{label}; accepted: {sorted(DICOM_MAP_KEYS)}"
        )
    study, frame = generate_uid(), generate_uid()
    out = {}
    for n, (key, values) in enumerate(maps.items()):
        quantity, name = DICOM_MAP_KEYS[key]
        description = None
        if name.startswith("desc-std"):
            description = f"{quantity} standard deviation ({units}) {method}".strip()
        out[key] = write_dicom_series(
            out_dir,
            label,
            values,
            affine,
            quantity,
            units,
            study,
            frame,
            first_series_number + n,
            series_description=description,
            method=method,
            folder_name=f"sub-{label}_{name}",
        )
    return out
