"""B1+ maps of a subject (data contract, section 5): where they live, reading with checks, writing.

A B1+ map is ``sub-<label>/b1/sub-<label>_TB1map.nii.gz``: the relative transmit field
(1 = the nominal flip angle), float32, on the same grid and affine as the maps (``(Nx, Ny, S)``
voxels of the raw data's matrix and slices, the affine of ``RawSubject.affine()``). Simulated
subjects with a B1 field also write it to ``ref/sub-<label>_TB1map.nii.gz`` (the ground truth).
Voxels where the map is unknown may hold 0 or NaN (matching then searches every B1 there).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .nifti import load_nifti, save_nifti
from .subjects import REF_DIR, subject_label

__all__ = ["B1_DIR", "B1_SUFFIX", "b1_map_path", "reference_b1_path", "read_b1_map", "write_b1_map"]

#: Folder of the B1+ map inside a subject folder.
B1_DIR = "b1"
#: BIDS suffix of a transmit-field map.
B1_SUFFIX = "TB1map"
#: Largest difference (mm) between the map's affine and the raw data's that counts as the same grid.
_AFFINE_TOL_MM = 1e-2


def b1_map_path(subject_dir: str | os.PathLike, label: str | None = None) -> Path:
    """``sub-<label>/b1/sub-<label>_TB1map.nii.gz`` of a subject folder."""
    subject_dir = Path(subject_dir)
    label = subject_label(subject_dir) if label is None else label
    return subject_dir / B1_DIR / f"sub-{label}_{B1_SUFFIX}.nii.gz"


def reference_b1_path(subject_dir: str | os.PathLike, label: str | None = None) -> Path:
    """``sub-<label>/ref/sub-<label>_TB1map.nii.gz`` (simulated subjects: the true field)."""
    subject_dir = Path(subject_dir)
    label = subject_label(subject_dir) if label is None else label
    return subject_dir / REF_DIR / f"sub-{label}_{B1_SUFFIX}.nii.gz"


def write_b1_map(path: str | os.PathLike, b1: np.ndarray, affine: np.ndarray) -> Path:
    """Write a relative B1+ map ``(Nx, Ny, S)`` (or ``(Nx, Ny)``) as float32 NIfTI, atomically."""
    arr = np.asarray(b1, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"cannot write {path}: a B1 map is (Nx, Ny, S), got shape {arr.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    finite = arr[np.isfinite(arr) & (arr > 0)]
    cal = (float(finite.min()), float(finite.max())) if finite.size else None
    return save_nifti(
        path,
        arr,
        affine,
        np.float32,
        intent_name=B1_SUFFIX,
        descrip="relative B1+ (1 = nominal flip angle)",
        cal_range=cal,
    )


def read_b1_map(path: str | os.PathLike, raw: Any = None) -> np.ndarray:
    """A relative B1+ map ``(Nx, Ny, S)`` float32, checked against the raw data's grid.

    Args:
        path: the NIfTI file.
        raw: the subject's ``RawSubject`` (or any object with ``matrix``, ``n_slices`` and
            ``affine()``); when given, the map must have its matrix, its number of slices and
            its affine (within 0.01 mm).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, wrong shape or affine, or values that are not relative
            units (each names the file, the problem and what to do).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"B1 map {path} not found")
    try:
        arr, affine = load_nifti(path)
    except Exception as err:  # nibabel, gzip and zlib raise several types for damaged files
        raise ValueError(f"{path}: cannot be read as NIfTI ({err}); re-write or re-copy the B1 map") from err
    arr = np.asarray(arr, dtype=np.float32)
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"{path}: a B1 map must be (Nx, Ny, slices), got shape {arr.shape}")
    if raw is not None:
        expected = (int(raw.matrix[0]), int(raw.matrix[1]), int(raw.n_slices))
        if arr.shape != expected:
            raise ValueError(
                f"{path}: the B1 map is {arr.shape[0]} x {arr.shape[1]} x {arr.shape[2]} voxels but the raw "
                f"data are {expected[0]} x {expected[1]} with {expected[2]} slice(s); resample the B1 map "
                "onto the grid of the reconstructed maps (data contract, section 5)"
            )
        with warnings.catch_warnings():  # unequal slice spacing: compare with the stack's affine
            warnings.simplefilter("ignore")
            ref = np.asarray(raw.affine(), dtype=np.float64)
        diff = float(np.abs(affine - ref).max())
        if diff > _AFFINE_TOL_MM:
            raise ValueError(
                f"{path}: the B1 map's affine differs from the raw data's by up to {diff:.3g} mm (another "
                "position, orientation or voxel size); resample it onto the grid of the reconstructed maps "
                "(the affine of their NIfTI files)"
            )
    known = arr[np.isfinite(arr) & (arr > 0)]
    if known.size == 0:
        raise ValueError(f"{path}: the B1 map holds no positive value; it is empty or corrupt")
    median = float(np.median(known))
    if not 0.2 <= median <= 5.0:
        hint = " (it looks like percent of the nominal flip angle: divide by 100)" if median > 20 else ""
        raise ValueError(
            f"{path}: the B1 map's median is {median:.4g}, not a relative transmit field (1 = nominal flip "
            f"angle){hint}"
        )
    return arr
