"""Dataset and subject folders (data contract section 1).

```
<dataset>/sub-<label>/raw.h5
<dataset>/sub-<label>/ref/sub-<label>_{T1map,T2map,PDmap,mask}.nii.gz
<dataset>/sub-<label>/ref/sub-<label>_desc-phase_PDmap.nii.gz   optional: PD phase, radians
```

The contract's ``PDmap`` is a magnitude. Simulated subjects also carry the phase of their
complex PD in ``desc-phase_PDmap`` (an extra file, which the contract allows), so that the
exact complex reference time series can be rebuilt from ``ref/`` (training from a dataset
folder, :class:`mrf_monai.simulation.SubjectPairDataset`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mrf_monai.io.nifti import load_nifti, save_nifti

__all__ = [
    "find_subjects",
    "subject_label",
    "read_reference",
    "write_reference",
    "reference_path",
    "RAW_NAME",
    "REF_DIR",
    "PD_PHASE_SUFFIX",
]

RAW_NAME = "raw.h5"
REF_DIR = "ref"
#: BIDS-style suffix of the optional PD phase map (radians) in ``ref/``.
PD_PHASE_SUFFIX = "desc-phase_PDmap"
_SUBJECT_RE = re.compile(r"^sub-([A-Za-z0-9]+)$")


def subject_label(path: str | os.PathLike) -> str:
    """The ``<label>`` of a ``sub-<label>`` folder (or of a path inside one, e.g. its raw.h5)."""
    path = Path(path)
    for part in (path, *path.parents):
        m = _SUBJECT_RE.match(part.name)
        if m:
            return m.group(1)
    raise ValueError(
        f"{path} is not a subject folder: its name must be sub-<label> with an alphanumeric label"
    )


def _is_subject(folder: Path) -> bool:
    return folder.is_dir() and _SUBJECT_RE.match(folder.name) is not None and (folder / RAW_NAME).is_file()


def find_subjects(paths: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """Subject folders named by ``paths``.

    A subject folder (``sub-<label>`` holding ``raw.h5``) stands for itself; a dataset
    folder stands for its ``sub-<label>`` folders that hold ``raw.h5``, sorted by name;
    anything else inside a dataset folder is ignored. Duplicates are dropped, order kept.

    Raises:
        FileNotFoundError: a path does not exist, or no subject was found at all.
        ValueError: a folder holds ``raw.h5`` but is not named ``sub-<label>``.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found: list[Path] = []
    seen: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist (expected a dataset folder or a sub-<label> folder)")
        if (p / RAW_NAME).is_file() and p.is_dir():
            if not _SUBJECT_RE.match(p.name):
                raise ValueError(
                    f"{p} holds {RAW_NAME} but is not named sub-<label> (alphanumeric label); rename it"
                )
            candidates = [p]
        elif p.is_dir():
            candidates = sorted(c for c in p.iterdir() if _is_subject(c))
        else:
            candidates = []
        for c in candidates:
            key = c.resolve()
            if key not in seen:
                seen.add(key)
                found.append(c)
    if not found:
        shown = ", ".join(str(p) for p in paths)
        raise FileNotFoundError(
            f"no subjects found in {shown}: give a dataset folder holding sub-<label>/{RAW_NAME} folders, "
            f"or sub-<label> folders holding {RAW_NAME}"
        )
    return found


def _ref_path(subject_dir: Path, label: str, suffix: str) -> Path:
    return subject_dir / REF_DIR / f"sub-{label}_{suffix}.nii.gz"


def reference_path(subject_dir: str | os.PathLike, suffix: str) -> Path:
    """Path of the reference map ``suffix`` (``T1map``, ``PDmap``, ``desc-phase_PDmap``, ...) of a subject."""
    subject_dir = Path(subject_dir)
    return _ref_path(subject_dir, subject_label(subject_dir), suffix)


def read_reference(subject_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Ground-truth maps of a simulated subject from ``ref/``.

    Returns:
        ``dict(t1_s, t2_s, pd, mask, affine)``: float32 ``(Nx, Ny, S)`` maps in seconds
        (PD magnitude, arbitrary units), a bool mask, and the 4x4 RAS+ affine; plus
        ``pd_phase_rad`` (float32, radians) when the optional ``desc-phase_PDmap`` file exists.

    Raises:
        FileNotFoundError: naming the missing file (only simulated subjects have ``ref/``).
        ValueError: a map cannot be read, or the maps disagree in shape or affine.
    """
    subject_dir = Path(subject_dir)
    label = subject_label(subject_dir)
    out: dict[str, np.ndarray] = {}
    affine = None
    items = [("t1_s", "T1map"), ("t2_s", "T2map"), ("pd", "PDmap"), ("mask", "mask")]
    if _ref_path(subject_dir, label, PD_PHASE_SUFFIX).is_file():
        items.append(("pd_phase_rad", PD_PHASE_SUFFIX))
    for key, suffix in items:
        path = _ref_path(subject_dir, label, suffix)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: subject {subject_dir} has no reference {suffix} (only simulated subjects "
                "have ref/ maps; evaluation against a reference needs them)"
            )
        try:
            arr, aff = load_nifti(path)
        except Exception as err:  # nibabel, gzip and zlib raise several types for damaged files
            raise ValueError(
                f"{path}: cannot be read as NIfTI (truncated or corrupt: {err}); re-write or re-copy it"
            ) from err
        if arr.ndim == 2:
            arr = arr[..., None]
        if affine is None:
            affine, shape = aff, arr.shape
        elif arr.shape != shape or not np.allclose(aff, affine, atol=1e-4):
            raise ValueError(
                f"{path}: shape {arr.shape} or affine differs from the other reference maps {shape}"
            )
        out[key] = arr.astype(bool) if key == "mask" else arr.astype(np.float32)
    out["affine"] = affine
    return out


def write_reference(
    subject_dir: str | os.PathLike,
    label: str,
    t1_s: np.ndarray,
    t2_s: np.ndarray,
    pd: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    pd_phase_rad: np.ndarray | None = None,
) -> dict[str, Path]:
    """Write the ground truth of a simulated subject into ``subject_dir/ref/`` (atomic).

    T1/T2 in seconds and PD (magnitude, arbitrary units) as float32, the mask as uint8;
    arrays are ``(Nx, Ny, S)`` or ``(Nx, Ny)``. With ``pd_phase_rad`` (radians, same shape)
    the phase of the complex PD is also written, as ``sub-<label>_desc-phase_PDmap.nii.gz``.
    """
    subject_dir = Path(subject_dir)
    if not str(label).isalnum():
        raise ValueError(f"subject label {label!r} must be alphanumeric")
    written = {}
    items = (
        ("T1map", t1_s, np.float32),
        ("T2map", t2_s, np.float32),
        ("PDmap", pd, np.float32),
        ("mask", mask, np.uint8),
    )
    if pd_phase_rad is not None:
        items = (*items, (PD_PHASE_SUFFIX, pd_phase_rad, np.float32))
    shape = None
    for suffix, arr, dtype in items:
        arr = np.asarray(arr.detach().cpu() if hasattr(arr, "detach") else arr)
        if np.iscomplexobj(arr):
            arr = np.abs(arr)
        if arr.ndim == 2:
            arr = arr[..., None]
        if shape is None:
            shape = arr.shape
        if arr.ndim != 3 or arr.shape != shape:
            raise ValueError(
                f"reference {suffix} of sub-{label} has shape {arr.shape}; expected {shape} (Nx, Ny, S)"
            )
        if suffix == "mask":
            arr = (arr != 0).astype(np.uint8)
        else:
            arr = np.where(np.isfinite(arr), arr, 0.0)
        path = _ref_path(subject_dir, label, suffix)
        intent = "PDphase" if suffix == PD_PHASE_SUFFIX else suffix
        descrip = (
            "reference PD phase, rad (simulated)"
            if suffix == PD_PHASE_SUFFIX
            else f"reference {suffix} (simulated)"
        )
        save_nifti(path, arr, affine, dtype, intent_name=intent, descrip=descrip)
        written[suffix] = path
    return written
