"""Quantitative maps as NIfTI-1 + BIDS JSON sidecars (data contract section 3).

``write_maps(out_dir, label, maps, affine, method)`` writes
``<out_dir>/sub-<label>_<suffix>.nii.gz`` and ``.json`` for each map (``out_dir`` is the
subject's output folder, normally ``<output>/sub-<label>``), with
array axes ``(i, j, slice)`` exactly as in the signal model and the RAS+ affine of
:meth:`mrf_monai.io.ismrmrd.RawSubject.affine`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from mrf_monai.io.atomic import atomic_write_path

__all__ = ["write_maps", "save_nifti", "load_nifti", "MAP_SUFFIXES", "DEFAULT_SUFFIX_MAP", "display_window"]

#: BIDS suffix -> (quantity, is a time in seconds, description).
MAP_SUFFIXES: dict[str, tuple[str, bool, str]] = {
    "T1map": ("T1", True, "longitudinal relaxation time T1"),
    "T2map": ("T2", True, "transverse relaxation time T2"),
    "PDmap": ("PD", False, "proton density (magnitude of M0), arbitrary units"),
    "desc-std_T1map": ("T1std", True, "standard deviation of T1 over posterior samples"),
    "desc-std_T2map": ("T2std", True, "standard deviation of T2 over posterior samples"),
    "TB1map": ("B1", False, "relative B1+ transmit field (1 = nominal flip angle)"),
}

#: Accepted aliases (the keys of ``match_dictionary`` results and similar) -> BIDS suffix.
DEFAULT_SUFFIX_MAP: dict[str, str] = {
    **{k: k for k in MAP_SUFFIXES},
    "t1_s": "T1map",
    "t2_s": "T2map",
    "pd": "PDmap",
    "t1_std_s": "desc-std_T1map",
    "t2_std_s": "desc-std_T2map",
}


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def display_window(values: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> tuple[float, float]:
    """Robust display window ``(cal_min, cal_max)`` from the nonzero finite voxels.

    ``cal_min`` is 0 for non-negative maps (quantitative maps start at 0), else the lower
    percentile; ``cal_max`` is the upper percentile (1 when the map is empty).
    """
    v = values[np.isfinite(values) & (values != 0)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = (float(p) for p in np.percentile(v, percentiles))
    lo = 0.0 if v.min() >= 0 else lo
    if hi <= lo:
        hi = lo + (abs(lo) if lo != 0 else 1.0)
    return lo, hi


def save_nifti(
    path: str | os.PathLike,
    array: np.ndarray,
    affine: np.ndarray,
    dtype=np.float32,
    intent_name: str = "",
    descrip: str = "",
    cal_range: tuple[float, float] | None = None,
) -> Path:
    """Write one NIfTI-1 image atomically (sform and qform = ``affine``, scanner space, mm/s units)."""
    path = Path(path)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError(
            f"cannot write {path}: the affine must be a finite 4x4 matrix, got shape {affine.shape}"
        )
    img = nib.Nifti1Image(np.asarray(array).astype(dtype, copy=False), affine)
    hdr = img.header
    hdr.set_data_dtype(dtype)
    hdr.set_xyzt_units(xyz="mm", t="sec")
    img.set_sform(affine, code="scanner")
    img.set_qform(affine, code="scanner")
    if intent_name:
        hdr.set_intent("estimate", name=intent_name[:15])
    if descrip:
        hdr["descrip"] = descrip.encode("ascii", "replace")[:79]
    if cal_range is not None:
        hdr["cal_min"], hdr["cal_max"] = cal_range
    with atomic_write_path(path) as tmp:
        nib.save(img, tmp)
    return path


def load_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(array, affine)`` of a NIfTI file (array in its stored dtype)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NIfTI file {path} not found")
    img = nib.load(path)
    return np.asarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)


def _software_version() -> str:
    try:
        from mrf_monai import __version__
    except ImportError:  # pragma: no cover - the package always defines it
        __version__ = "unknown"
    return f"mrf_monai {__version__}"


def write_maps(
    out_dir: str | os.PathLike,
    label: str,
    maps: Mapping[str, np.ndarray],
    affine: np.ndarray,
    method: str,
    units: str = "s",
    sidecar_extra: Mapping | None = None,
    suffix_map: Mapping[str, str] | None = None,
    *,
    model: str | None = None,
    sequence=None,
) -> dict[str, Path]:
    """Write quantitative maps as BIDS NIfTI files with JSON sidecars.

    Args:
        out_dir: the subject's output folder (normally ``<output>/sub-<label>``); the files
            ``sub-<label>_<suffix>.nii.gz`` / ``.json`` are written directly into it.
        label: subject label (alphanumeric).
        maps: ``suffix -> (Nx, Ny, S)`` array (or ``(Nx, Ny)`` for one slice); suffixes
            ``T1map``, ``T2map``, ``PDmap``, ``desc-std_T1map``, ``desc-std_T2map`` or the
            aliases of ``suffix_map`` (default: also ``t1_s``, ``t2_s``, ``pd``, ``t1_std_s``,
            ``t2_std_s``). T1/T2 maps are in seconds; complex PD is stored as its magnitude.
        affine: 4x4 RAS+ voxel-to-mm affine.
        method: reconstruction method named in the sidecar (e.g. ``"MRF-IDDPM"``).
        units: ``"s"`` or ``"ms"`` for the T1/T2 maps (``"ms"`` multiplies by 1000).
        sidecar_extra: extra sidecar fields (override the defaults).
        suffix_map: alias -> BIDS suffix table (default :data:`DEFAULT_SUFFIX_MAP`).
        model: signal model named in the sidecar.
        sequence: :class:`MRFSequence` (or its dict) recorded in the sidecar.

    Returns:
        ``suffix -> path`` of each NIfTI file written.

    NaN/Inf voxels are written as 0 (with a warning): background is 0 by contract.
    """
    if units not in ("s", "ms"):
        raise ValueError(f"units must be 's' or 'ms' for T1/T2 maps, got {units!r}")
    if not str(label).isalnum():
        raise ValueError(f"subject label {label!r} must be alphanumeric (BIDS sub-<label>)")
    table = dict(DEFAULT_SUFFIX_MAP if suffix_map is None else suffix_map)
    subject_dir = Path(out_dir)
    seq_dict = sequence.to_dict() if hasattr(sequence, "to_dict") else sequence
    written: dict[str, Path] = {}
    for key, value in maps.items():
        suffix = table.get(key)
        if suffix not in MAP_SUFFIXES:
            raise ValueError(f"unknown map {key!r} for sub-{label}; accepted: {', '.join(sorted(table))}")
        quantity, is_time, description = MAP_SUFFIXES[suffix]
        arr = _to_numpy(value)
        if np.iscomplexobj(arr):
            arr = np.abs(arr)
        arr = arr.astype(np.float64)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3:
            raise ValueError(f"map {key!r} of sub-{label} must be (Nx, Ny, S) or (Nx, Ny), got {arr.shape}")
        bad = ~np.isfinite(arr)
        if bad.any():
            warnings.warn(
                f"sub-{label} {suffix}: {int(bad.sum())} NaN/Inf voxel(s) written as 0", stacklevel=2
            )
            arr = np.where(bad, 0.0, arr)
        unit = "arbitrary"
        if is_time:
            unit = units
            if units == "ms":
                arr = arr * 1000.0
        path = subject_dir / f"sub-{label}_{suffix}.nii.gz"
        save_nifti(
            path,
            arr,
            affine,
            np.float32,
            intent_name=quantity,
            descrip=f"{description} [{unit}] {method}",
            cal_range=display_window(arr),
        )
        sidecar = {
            "Units": unit,
            "Quantity": quantity,
            "Description": description,
            "Method": method,
            "Model": model or "FISP MRF signal model (EPG simulation), dictionary matching",
            "Sequence": seq_dict,
            "SoftwareName": "mrf_monai",
            "SoftwareVersions": _software_version(),
        }
        if sidecar_extra:
            sidecar.update(dict(sidecar_extra))
        json_path = subject_dir / f"sub-{label}_{suffix}.json"
        with atomic_write_path(json_path) as tmp:
            tmp.write_text(json.dumps(sidecar, indent=2, default=_json_default) + "\n")
        written[suffix] = path
    return written


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"sidecar value of type {type(obj).__name__} is not JSON serialisable")
