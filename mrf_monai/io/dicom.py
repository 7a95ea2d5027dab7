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

Validation: the files pass ``dciodvfy`` (Debian ``dicom3tools``) without errors
(``tests/io/test_dicom_validator.py``). The warnings that remain are deliberate: the MR
Image IOD has no Modality LUT module, so ``RescaleSlope``/``RescaleIntercept`` make the
files a *Standard Extended* SOP class; clinical viewers read them and show real values.
Acquisition attributes (TR, TE, TI, PatientPosition, SliceThickness) come from the
optional metadata arguments; :func:`raw_dicom_metadata` reads them from a raw subject.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrf_monai.io.atomic import atomic_write_path

__all__ = [
    "write_dicom_series",
    "write_dicom_maps",
    "raw_dicom_metadata",
    "read_patient_position",
    "DicomSeries",
    "voxel_to_patient_lps",
    "DICOM_MAP_KEYS",
    "PATIENT_POSITIONS",
    "DEFAULT_PATIENT_POSITION",
]

_UCUM = {
    "ms": ("ms", "millisecond"),
    "s": ("s", "second"),
    "arbitrary": ("1", "no units"),
}
_QUANTITIES = {"T1": "T1 map", "T2": "T2 map", "PD": "proton density map"}
#: ImageType value 3 (DICOM defined terms for MR: "T1 MAP", "T2 MAP", "DENSITY MAP").
_IMAGE_TYPE = {"T1": "T1 MAP", "T2": "T2 MAP", "PD": "DENSITY MAP"}

#: DICOM PatientPosition defined terms (those of ISMRMRD's ``patientPosition`` included).
PATIENT_POSITIONS = (
    "HFP", "HFS", "HFDR", "HFDL", "FFP", "FFS", "FFDR", "FFDL",
    "LFP", "LFS", "RFP", "RFS", "AFDR", "AFDL", "PFDR", "PFDL",
)  # fmt: skip
#: Written when the patient position is not known (with a note in ImageComments).
DEFAULT_PATIENT_POSITION = "HFS"
#: Proton gyromagnetic ratio / 2 pi, MHz per tesla (MagneticFieldStrength from the frequency).
_GAMMA_MHZ_PER_T = 42.577478518


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
    """(slope, intercept) mapping uint16 0..65535 onto the value range with round steps.

    A constant map gets slope 1 when its value is 0 (an all-zero map stores zeros), else the
    round step that resolves the value to about 1 part in 60000.
    """
    vmin = min(0.0, float(values.min())) if values.size else 0.0
    vmax = float(values.max()) if values.size else 0.0
    span = vmax - vmin
    if not span > 0:
        return 1.0, vmin
    slope = 10.0 ** np.ceil(np.log10(span / 60000.0))
    return float(slope), float(vmin)


def _display_window(values: np.ndarray) -> tuple[float, float]:
    """(lo, hi) display range: 1st..99th percentile of the non-zero values; never empty.

    A flat map (every non-zero value equal) is shown from 0 to its value; an all-zero map
    from 0 to 1.
    """
    nonzero = values[values != 0]
    if nonzero.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(nonzero, [1, 99]))
    if not hi > lo:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    return lo, hi


def _format_ds(value: float) -> str:
    """A DS (decimal string, at most 16 characters) for ``value``."""
    for digits in range(10, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.1e}"


def _as_sequence(sequence: Any):
    """An ``MRFSequence`` from an ``MRFSequence``, its ``to_dict()`` or ``None``."""
    if sequence is None or hasattr(sequence, "tr_ms"):
        return sequence
    if isinstance(sequence, Mapping):
        from mrf_monai.physics.sequence import MRFSequence

        return MRFSequence.from_dict(dict(sequence))
    raise TypeError(f"sequence must be an MRFSequence, its to_dict() or None; got {type(sequence).__name__}")


def _acquisition_attributes(sequence: Any) -> tuple[dict[str, Any], list[str]]:
    """MR Image module attributes (keyword -> value) from the sequence, and comment lines.

    Without a sequence the Type 2 attributes are present and empty ("unknown"). An MRF
    sequence with a varying TR has no single RepetitionTime: it is left empty and the range
    is given in ImageComments.
    """
    seq = _as_sequence(sequence)
    attrs: dict[str, Any] = {
        "ScanningSequence": "RM",
        "SequenceVariant": "NONE",
        "ScanOptions": "",
        "MRAcquisitionType": "2D",
        "RepetitionTime": "",
        "EchoTime": "",
        "EchoTrainLength": "",
    }
    if seq is None:
        return attrs, ["sequence parameters unknown (not given to the DICOM writer)"]
    tr = np.asarray(seq.tr_ms, dtype=np.float64)
    fa = np.asarray(seq.flip_angle_deg, dtype=np.float64)
    ti = seq.ti_ms
    stype = str(seq.sequence_type).upper()
    scanning = ["GR"] if stype == "FISP" else ["RM"]
    variant = ["SS"] if stype == "FISP" else []
    if ti is not None:
        scanning.append("IR")
        variant.append("MP")
    attrs.update(
        ScanningSequence=scanning if len(scanning) > 1 else scanning[0],
        SequenceVariant=(variant if len(variant) > 1 else variant[0]) if variant else "NONE",
        SequenceName=f"MRF {stype}"[:16],
        EchoTime=_format_ds(float(seq.te_ms)),
        EchoTrainLength=1,  # one gradient echo per excitation
    )
    if np.all(tr == tr[0]):
        attrs["RepetitionTime"] = _format_ds(float(tr[0]))
    if ti is not None:
        attrs["InversionTime"] = _format_ds(float(ti))
    tr_text = (
        f"TR {tr[0]:g} ms"
        if np.all(tr == tr[0])
        else f"TR varies {tr.min():g}-{tr.max():g} ms (mean {tr.mean():.4g} ms; RepetitionTime left empty)"
    )
    comment = (
        f"MR fingerprinting {stype}{f' ({seq.name})' if seq.name else ''}: {fa.size} frames, "
        f"flip angles {fa.min():g}-{fa.max():g} deg, {tr_text}, TE {float(seq.te_ms):g} ms"
        + (f", TI {ti:g} ms" if ti is not None else ", no inversion")
    )
    return attrs, [comment]


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
    sequence: Any = None,
    patient_position: str | None = None,
    body_part: str | None = "BRAIN",
    imaging_frequency_hz: float | None = None,
    standard_deviation: bool = False,
) -> DicomSeries:
    """Write one map as a DICOM series: ``out_dir/sub-<label>_<Q>map/<Q>map_<s+1:04d>.dcm``.

    Args:
        out_dir: folder receiving the series folder.
        label: subject label (PatientID ``sub-<label>``).
        map_values: ``(Nx, Ny, S)`` (or ``(Nx, Ny)``) map; T1/T2 in seconds, PD arbitrary.
        affine: 4x4 RAS+ NIfTI affine of the map (its slice axis is the slice spacing).
        quantity: ``"T1"``, ``"T2"`` or ``"PD"``.
        units: display units of T1/T2: ``"ms"`` (default) or ``"s"``.
        study_uid, frame_of_reference_uid: shared by all series of a subject; generated
            when ``None`` (reuse the returned ones for the subject's other maps).
        series_number: DICOM SeriesNumber.
        slice_thickness_mm: SliceThickness (the raw header's ``fieldOfView_mm.z``); default
            the slice spacing of the affine, which is only right for contiguous slices.
        method: reconstruction method, recorded in SeriesDescription and DerivationDescription.
        patient_name: PatientName (default ``sub-<label>^``: family name ``sub-<label>``).
        folder_name: series folder name (default ``sub-<label>_<Q>map``).
        sequence: the ``MRFSequence`` (or its ``to_dict()``) of the raw data: EchoTime,
            RepetitionTime (when constant), InversionTime, EchoTrainLength 1 and a summary
            in ImageComments. ``None``: these Type 2 attributes are written empty (unknown).
        patient_position: DICOM PatientPosition (ISMRMRD ``measurementInformation.
            patientPosition``, e.g. ``"HFS"``); ``None`` writes :data:`DEFAULT_PATIENT_POSITION`
            and says in ImageComments that it was assumed.
        body_part: BodyPartExamined (an unpaired part, so Laterality is absent); ``None``
            writes an empty Laterality (unknown) instead.
        imaging_frequency_hz: the H1 resonance frequency (ImagingFrequency in MHz and the
            MagneticFieldStrength derived from it); omitted when ``None``.
        standard_deviation: the map is the standard deviation of ``quantity`` over samples
            (ImageType value 4 ``STD DEV``; description says so).

    Returns:
        :class:`DicomSeries` with the files and the UIDs used.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    from mrf_monai import __version__

    if quantity not in _QUANTITIES:
        raise ValueError(f"quantity must be one of {', '.join(_QUANTITIES)}, got {quantity!r}")
    if units not in ("ms", "s"):
        raise ValueError(f"units must be 'ms' or 's', got {units!r}")
    position = DEFAULT_PATIENT_POSITION if patient_position is None else str(patient_position).upper()
    if position not in PATIENT_POSITIONS:
        raise ValueError(
            f"patient_position must be a DICOM PatientPosition ({', '.join(PATIENT_POSITIONS)}), "
            f"got {patient_position!r}"
        )
    if slice_thickness_mm is not None and not float(slice_thickness_mm) > 0:
        raise ValueError(f"slice_thickness_mm must be positive, got {slice_thickness_mm!r}")
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
    acquisition, comments = _acquisition_attributes(sequence)
    if patient_position is None:
        comments.append(f"patient position unknown (not in the raw data); {DEFAULT_PATIENT_POSITION} assumed")

    study_uid = study_uid or generate_uid()
    frame_of_reference_uid = frame_of_reference_uid or generate_uid()
    series_uid = generate_uid()
    slope, intercept = _scaling(arr)
    stored = np.clip(np.round((arr - intercept) / slope), 0, 65535).astype(np.uint16)
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    code_value, code_meaning = _UCUM[unit]
    name = _QUANTITIES[quantity]
    what = f"{quantity} standard deviation" if standard_deviation else name
    folder = Path(out_dir) / (folder_name or f"sub-{label}_{quantity}map")
    lo, hi = _display_window(arr)
    image_type = ["DERIVED", "PRIMARY", _IMAGE_TYPE[quantity]] + (["STD DEV"] if standard_deviation else [])
    derivation = f"{what} ({unit}) by MR fingerprinting dictionary matching"
    derivation += f", method {method}" if method else ""
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
        ds_.SoftwareVersions = f"mrf_monai {__version__}"
        ds_.PatientName = patient_name or f"sub-{label}^"
        ds_.PatientID = f"sub-{label}"
        ds_.PatientBirthDate = ""
        ds_.PatientSex = ""
        ds_.PatientPosition = position
        if body_part:
            ds_.BodyPartExamined = str(body_part).upper()[:16]
        else:
            ds_.Laterality = ""
        ds_.StudyDate = ds_.SeriesDate = ds_.ContentDate = date
        ds_.StudyTime = ds_.SeriesTime = ds_.ContentTime = time
        ds_.StudyID = "1"
        ds_.AccessionNumber = ""
        ds_.ReferringPhysicianName = ""
        ds_.SeriesNumber = int(series_number)
        ds_.InstanceNumber = s + 1
        ds_.SeriesDescription = (series_description or f"{what} ({unit}) {method}".strip())[:64]
        ds_.ImageType = image_type
        ds_.DerivationDescription = derivation
        ds_.ImageComments = "; ".join(comments)
        for keyword, value in acquisition.items():
            setattr(ds_, keyword, value)
        if imaging_frequency_hz is not None:
            ds_.ImagingFrequency = _format_ds(float(imaging_frequency_hz) / 1e6)
            ds_.MagneticFieldStrength = _format_ds(
                round(float(imaging_frequency_hz) / 1e6 / _GAMMA_MHZ_PER_T, 3)
            )
        ds_.PositionReferenceIndicator = ""
        ds_.ImagePositionPatient = [float(v) for v in voxel_to_patient_lps(affine, (0, 0, s))]
        ds_.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds_.PixelSpacing = [_format_ds(dj), _format_ds(di)]
        ds_.SliceThickness = _format_ds(thickness)
        ds_.SpacingBetweenSlices = _format_ds(ds)
        ds_.SliceLocation = _format_ds(float(np.dot(voxel_to_patient_lps(affine, (0, 0, s)), normal)))
        ds_.SamplesPerPixel = 1
        ds_.PhotometricInterpretation = "MONOCHROME2"
        ds_.Rows, ds_.Columns = int(arr.shape[1]), int(arr.shape[0])
        ds_.BitsAllocated, ds_.BitsStored, ds_.HighBit, ds_.PixelRepresentation = 16, 16, 15, 0
        ds_.RescaleSlope = _format_ds(slope)
        ds_.RescaleIntercept = _format_ds(intercept)
        ds_.WindowCenter = _format_ds((lo + hi) / 2)
        ds_.WindowWidth = _format_ds(hi - lo)
        if hi - lo < 1:  # LINEAR windows must be >= 1 wide; LINEAR_EXACT takes any width
            ds_.VOILUTFunction = "LINEAR_EXACT"
        units_item = Dataset()
        units_item.CodeValue = code_value
        units_item.CodingSchemeDesignator = "UCUM"
        units_item.CodeMeaning = code_meaning
        rwv = Dataset()
        rwv.RealWorldValueFirstValueMapped = 0
        rwv.RealWorldValueLastValueMapped = 65535
        rwv.RealWorldValueSlope = slope
        rwv.RealWorldValueIntercept = intercept
        rwv.LUTExplanation = f"{what} ({unit})"
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
    sequence: Any = None,
    patient_position: str | None = None,
    slice_thickness_mm: float | None = None,
    body_part: str | None = "BRAIN",
    imaging_frequency_hz: float | None = None,
) -> dict[str, DicomSeries]:
    """Write several maps of one subject as DICOM series sharing one StudyInstanceUID and
    FrameOfReferenceUID (one SeriesInstanceUID and series number each).

    Args:
        maps: ``key -> (Nx, Ny, S)``; keys ``T1``/``T2``/``PD``, the NIfTI suffixes
            (``T1map``, ``T2map``, ``PDmap``, ``desc-std_T1map``, ``desc-std_T2map``) or
            ``t1_s``/``t2_s``/``pd`` (see :data:`DICOM_MAP_KEYS`); T1/T2 in seconds.
        affine: 4x4 RAS+ affine shared by the maps.
        sequence, patient_position, slice_thickness_mm, body_part, imaging_frequency_hz:
            acquisition metadata of :func:`write_dicom_series` (``raw_dicom_metadata(raw)``
            gives them for a raw subject: ``write_dicom_maps(..., **raw_dicom_metadata(raw))``).

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
            slice_thickness_mm=slice_thickness_mm,
            method=method,
            folder_name=f"sub-{label}_{name}",
            sequence=sequence,
            patient_position=patient_position,
            body_part=body_part,
            imaging_frequency_hz=imaging_frequency_hz,
            standard_deviation=name.startswith("desc-std"),
        )
    return out


def read_patient_position(raw_path: str | os.PathLike) -> str | None:
    """``measurementInformation.patientPosition`` of an ISMRMRD raw file (e.g. ``"HFS"``).

    Returns ``None`` when the header does not record it, or the file or header cannot be
    read (the writer then assumes :data:`DEFAULT_PATIENT_POSITION` and says so).
    """
    return _raw_header_fields(raw_path)[0]


def _raw_header_fields(raw_path: str | os.PathLike | None) -> tuple[str | None, float | None]:
    """(patient position, H1 resonance frequency in Hz) from a raw file's XML header."""
    if raw_path is None:
        return None, None
    import h5py
    from ismrmrd import xsd

    try:
        with h5py.File(raw_path, "r") as f:
            xml = f["dataset"]["xml"][0]
        header = xsd.CreateFromDocument(xml if isinstance(xml, bytes | str) else bytes(xml))
    except Exception:  # an unreadable header only costs the optional metadata
        return None, None
    position = None
    info = header.measurementInformation
    if info is not None and info.patientPosition is not None:
        value = getattr(info.patientPosition, "value", info.patientPosition)
        position = str(value).upper() if str(value).upper() in PATIENT_POSITIONS else None
    frequency = None
    conditions = header.experimentalConditions
    if conditions is not None and conditions.H1resonanceFrequency_Hz:
        frequency = float(conditions.H1resonanceFrequency_Hz)
    return position, frequency


def raw_dicom_metadata(raw: Any) -> dict[str, Any]:
    """Keyword arguments of :func:`write_dicom_maps` describing a raw subject's acquisition.

    Args:
        raw: an ``io.ismrmrd.RawSubject`` (its ``path`` is read again for the header fields
            that ``RawSubject`` does not keep).

    Returns:
        ``{"sequence", "slice_thickness_mm", "patient_position", "imaging_frequency_hz"}``:
        the sequence, the header's ``fieldOfView_mm.z``, its ``patientPosition`` and
        ``H1resonanceFrequency_Hz`` (``None`` when not recorded or the file is gone).
    """
    position, frequency = _raw_header_fields(getattr(raw, "path", None))
    return {
        "sequence": raw.sequence,
        "slice_thickness_mm": float(raw.fov_mm[2]),
        "patient_position": position,
        "imaging_frequency_hz": frequency,
    }
