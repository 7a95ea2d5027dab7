"""Trajectory files: k-space trajectories (and density compensation) kept apart from the raw data.

Data contract section 5: for raw files whose acquisitions carry no ``traj``, the trajectory
comes from

* a NumPy ``.npy`` array, or a ``.npz`` archive with key ``traj`` (optional key ``dcf``);
* an HDF5 file (``.h5``, ``.hdf5``) with dataset ``traj`` (optional dataset ``dcf``);
* another ISMRMRD file whose acquisitions carry the trajectory (a scan of the same protocol, or
  a template written by ``mrf-monai simulate``): its first slice's readouts, grouped by
  ``idx.repetition`` in file order.

``traj`` is float32 ``(frames, readouts, samples, 2)``, ``(kx, ky)`` in cycles per pixel
(``+-0.5`` is the edge of k-space of the encoded matrix); readout ``r`` of frame ``t`` belongs
to the raw file's acquisition with ``idx.repetition = t`` that is the ``r``-th readout of that
frame in file order. ``(frames, samples, 2)`` is read as one readout per frame. ``dcf`` has the
same layout without the last axis. Other units are converted only when named explicitly
(:data:`TRAJECTORY_UNITS`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from mrf_monai.io.atomic import atomic_write_path
from mrf_monai.io.raw_subject import RawDataError

__all__ = [
    "TRAJECTORY_UNITS",
    "K_TOLERANCE",
    "TrajectoryData",
    "check_k_space_edge",
    "convert_trajectory_units",
    "read_trajectory_file",
    "trajectory_from_array",
    "write_trajectory_file",
]

#: Accepted trajectory units and what they mean (``k`` = the stored value).
TRAJECTORY_UNITS = {
    "cycles_per_pixel": "k in cycles per pixel: +-0.5 is the k-space edge of the encoded matrix (default)",
    "rad_per_pixel": "k in radians per pixel: +-pi is the k-space edge (k / 2 pi cycles per pixel)",
    "per_mm": "k in cycles per mm (1/mm): times FOV / matrix (mm per pixel) gives cycles per pixel",
    "rad_per_mm": "k in radians per mm: times FOV / matrix / 2 pi gives cycles per pixel",
}

#: ``|kx|`` and ``|ky|`` may exceed the k-space edge 0.5 by this much (cycles per pixel).
K_TOLERANCE = 1e-3

_NUMPY_SUFFIXES = (".npy", ".npz")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".mrd")


@dataclass
class TrajectoryData:
    """A trajectory read from a file, in cycles per pixel.

    Attributes:
        traj: ``(T, R, S, 2)`` float32 ``(kx, ky)`` in cycles per pixel.
        dcf: ``(T, R, S)`` float32 density compensation, or ``None``.
        path: the file it came from (``None`` if built in memory).
        interleaf: ``(T, R)`` interleaf indices when the file records them (ISMRMRD), else ``None``.
    """

    traj: np.ndarray
    dcf: np.ndarray | None = None
    path: Path | None = None
    interleaf: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(frames, readouts, samples)``."""
        return tuple(int(v) for v in self.traj.shape[:3])  # type: ignore[return-value]


def convert_trajectory_units(
    traj: np.ndarray,
    units: str,
    matrix: tuple[int, int] | None = None,
    fov_mm: tuple[float, ...] | None = None,
) -> np.ndarray:
    """``traj (..., 2)`` converted from ``units`` (:data:`TRAJECTORY_UNITS`) to cycles per pixel.

    ``per_mm`` and ``rad_per_mm`` need the encoded ``matrix`` and ``fov_mm`` (x, y).
    """
    if units not in TRAJECTORY_UNITS:
        raise ValueError(
            f"unknown trajectory units {units!r}; use one of: "
            + "; ".join(f"{k} ({v})" for k, v in TRAJECTORY_UNITS.items())
        )
    traj = np.asarray(traj, dtype=np.float64)
    if units == "cycles_per_pixel":
        out = traj
    elif units == "rad_per_pixel":
        out = traj / (2.0 * math.pi)
    else:
        if matrix is None or fov_mm is None:
            raise ValueError(
                f"trajectory units {units!r} need the matrix and FOV to convert to cycles per pixel"
            )
        pixel_mm = np.array([fov_mm[0] / matrix[0], fov_mm[1] / matrix[1]])
        out = traj * pixel_mm / (2.0 * math.pi if units == "rad_per_mm" else 1.0)
    return out.astype(np.float32)


def _units_hint(largest: float) -> str:
    if abs(largest - math.pi) < 0.02 * math.pi or abs(largest - 2 * math.pi) < 0.02 * math.pi:
        return (
            f" Values up to {largest:.3f} look like radians per pixel: pass trajectory_units='rad_per_pixel'"
            " (--trajectory-units rad_per_pixel)."
        )
    return (
        " Check the trajectory's scaling, or name its units explicitly (trajectory_units: "
        + ", ".join(TRAJECTORY_UNITS)
        + ")."
    )


def check_k_space_edge(
    traj: np.ndarray, where: str, matrix: tuple[int, int], labels: tuple[str, str]
) -> None:
    """Refuse a trajectory with ``|kx|`` or ``|ky|`` beyond 0.5 + :data:`K_TOLERANCE` cycles per pixel.

    Args:
        traj: ``(A, B, R, S, 2)``: e.g. slices, frames, readouts, samples.
        where: message prefix naming the file(s), e.g. ``"raw.h5: "``.
        matrix: the encoded matrix (named in the message).
        labels: names of the axes ``A`` and ``B`` (``("slice", "frame")``; ``""`` leaves ``A`` out).

    Raises:
        RawDataError: naming the first readout beyond the edge, its value and the largest value,
            with a hint about units.
    """
    per_readout = np.abs(traj).max(axis=(-2, -1))  # (A, B, R)
    bad = per_readout > 0.5 + K_TOLERANCE
    if not bad.any():
        return
    a, b, r = (int(v[0]) for v in np.nonzero(bad))
    largest = float(per_readout.max())
    place = f"{labels[0]} {a}, {labels[1]} {b}" if labels[0] else f"{labels[1]} {b}"
    if traj.shape[2] > 1:
        place += f", readout {r}"
    n_bad = int(bad.any(axis=2).sum())
    raise RawDataError(
        f"{where}the trajectory leaves k-space: |k| = {float(per_readout[a, b, r]):.4g} cycles per pixel in "
        f"{place} (largest {largest:.4g}; {n_bad} frame(s) affected). Trajectories are in cycles per "
        f"pixel, where +-0.5 is the edge of k-space of the {matrix[0]} x {matrix[1]} matrix (data contract "
        "section 2)." + _units_hint(largest)
    )


def _layout(path: Path, traj: np.ndarray, dcf: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    traj = np.asarray(traj)
    if np.iscomplexobj(traj) or traj.dtype.kind not in "fiu":
        raise RawDataError(
            f"{path}: traj must be a real array with a last axis of 2 (kx, ky), got {traj.dtype}"
        )
    if traj.ndim == 3 and traj.shape[-1] == 2:
        traj = traj[:, None]
        if dcf is not None and np.ndim(dcf) == 2:
            dcf = np.asarray(dcf)[:, None]
    if traj.ndim != 4 or traj.shape[-1] != 2 or min(traj.shape) < 1:
        raise RawDataError(
            f"{path}: traj has shape {traj.shape}; a trajectory file holds (frames, readouts, samples, 2) "
            "(or (frames, samples, 2) for one readout per frame), (kx, ky) in cycles per pixel"
        )
    traj = traj.astype(np.float32)
    if not np.all(np.isfinite(traj)):
        t_bad = int(np.flatnonzero(~np.isfinite(traj).reshape(traj.shape[0], -1).all(axis=1))[0])
        raise RawDataError(f"{path}: traj holds NaN/Inf values (first in frame {t_bad})")
    if dcf is not None:
        dcf = np.asarray(dcf)
        if dcf.shape != traj.shape[:3]:
            raise RawDataError(
                f"{path}: dcf has shape {dcf.shape} but traj needs (frames, readouts, samples) = "
                f"{traj.shape[:3]}"
            )
        dcf = dcf.astype(np.float32)
        if not np.all(np.isfinite(dcf)) or np.any(dcf < 0):
            raise RawDataError(f"{path}: dcf must hold finite, non-negative weights")
    return traj, dcf


def trajectory_from_array(
    traj: np.ndarray,
    dcf: np.ndarray | None = None,
    units: str = "cycles_per_pixel",
    matrix: tuple[int, int] | None = None,
    fov_mm: tuple[float, ...] | None = None,
) -> TrajectoryData:
    """A :class:`TrajectoryData` from arrays in the trajectory-file layout (checked, converted)."""
    where = Path("<trajectory array>")
    traj, dcf = _layout(where, traj, dcf)
    return TrajectoryData(convert_trajectory_units(traj, units, matrix, fov_mm), dcf)


def _read_ismrmrd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from mrf_monai.io.raw_records import SKIPPED_FLAGS, decode_readouts, flag_mask, group_frames, read_records

    _, records = read_records(path, "trajectory file")
    if records is None or records.size == 0:
        raise RawDataError(f"{path}: the ISMRMRD trajectory file holds no acquisitions")
    keep = (records["head"]["flags"].astype(np.uint64) & flag_mask(*SKIPPED_FLAGS.values())) == 0
    records = records[keep]
    first = records["head"]["idx"]["slice"] == records["head"]["idx"]["slice"].min()
    records = records[first]
    if records.size == 0:
        raise RawDataError(f"{path}: the ISMRMRD trajectory file holds no imaging acquisitions")
    readouts = decode_readouts(
        path, records, need_traj=True, hint=": a trajectory file must carry the trajectory"
    )
    order, _, n_t, n_r = group_frames(path, readouts.head, None)
    s = readouts.traj.shape[1]
    traj = readouts.traj[order].reshape(n_t, n_r, s, 2)
    interleaf = readouts.head["idx"]["kspace_encode_step_1"][order].astype(np.int64).reshape(n_t, n_r)
    return traj, interleaf


def read_trajectory_file(
    path: str | os.PathLike,
    units: str = "cycles_per_pixel",
    matrix: tuple[int, int] | None = None,
    fov_mm: tuple[float, ...] | None = None,
) -> TrajectoryData:
    """Read a trajectory file (module docstring) and convert it to cycles per pixel.

    Args:
        path: ``.npy``, ``.npz``, HDF5 (``traj``/``dcf`` datasets) or ISMRMRD file.
        units: units of the stored values (:data:`TRAJECTORY_UNITS`); default cycles per pixel.
        matrix, fov_mm: encoded matrix and FOV of the raw data (for ``per_mm``/``rad_per_mm``).

    Raises:
        RawDataError: missing or unreadable file, unknown format, no ``traj``, wrong shape,
            NaN/Inf values, a ``dcf`` that does not fit ``traj``.
    """
    path = Path(path)
    if not path.is_file():
        raise RawDataError(f"{path}: trajectory file not found")
    suffix = path.suffix.lower()
    dcf = interleaf = None
    try:
        if suffix == ".npy":
            traj = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "traj" not in z.files:
                    raise RawDataError(
                        f"{path}: the .npz archive has no key 'traj' (found {sorted(z.files)})"
                    )
                traj = z["traj"]
                dcf = z["dcf"] if "dcf" in z.files else None
        elif h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                is_ismrmrd = isinstance(f.get("dataset"), h5py.Group) and "data" in f["dataset"]
                if not is_ismrmrd:
                    if not isinstance(f.get("traj"), h5py.Dataset):
                        raise RawDataError(
                            f"{path}: the HDF5 file has neither a dataset 'traj' nor ISMRMRD acquisitions "
                            f"(found {sorted(f.keys())})"
                        )
                    traj = f["traj"][()]
                    dcf = f["dcf"][()] if isinstance(f.get("dcf"), h5py.Dataset) else None
            if is_ismrmrd:
                traj, interleaf = _read_ismrmrd(path)
        else:
            kind = "HDF5 file" if suffix in _HDF5_SUFFIXES else "trajectory file"
            raise RawDataError(
                f"{path}: not a readable {kind}; trajectory files are NumPy {' / '.join(_NUMPY_SUFFIXES)} "
                "or HDF5 (dataset 'traj', or ISMRMRD acquisitions with a trajectory)"
            )
    except RawDataError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError) as err:
        raise RawDataError(f"{path}: cannot read the trajectory file (truncated or corrupt?): {err}") from err
    traj, dcf = _layout(path, traj, dcf)
    try:
        traj = convert_trajectory_units(traj, units, matrix, fov_mm)
    except ValueError as err:
        raise RawDataError(f"{path}: {err}") from err
    return TrajectoryData(traj, dcf, path, interleaf)


def write_trajectory_file(path: str | os.PathLike, traj: np.ndarray, dcf: np.ndarray | None = None) -> Path:
    """Write ``traj (T, R, S, 2)`` (and ``dcf (T, R, S)``) as a trajectory file, atomically.

    The format follows the suffix: ``.npy`` (``traj`` only), ``.npz`` (keys ``traj``, ``dcf``)
    or ``.h5``/``.hdf5`` (datasets ``traj``, ``dcf``); values in cycles per pixel, float32.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz", ".h5", ".hdf5"):
        raise ValueError(f"{path}: write a trajectory file as .npy, .npz, .h5 or .hdf5")
    if suffix == ".npy" and dcf is not None:
        raise ValueError(f"{path}: a .npy file holds only traj; write .npz or .h5 to keep the dcf")
    traj, dcf = _layout(path, traj, dcf)
    with atomic_write_path(path) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, traj)
        elif suffix == ".npz":
            arrays = {"traj": traj} if dcf is None else {"traj": traj, "dcf": dcf}
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        else:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("traj", data=traj)
                f["traj"].attrs["units"] = "cycles_per_pixel"
                f["traj"].attrs["layout"] = "(frames, readouts, samples, 2)"
                if dcf is not None:
                    f.create_dataset("dcf", data=dcf)
    return path
