"""The in-memory form of ISMRMRD raw data: :class:`RawSubject` and :class:`RawDataError`.

Several readouts per (slice, frame) (spiral interleaves, radial spokes; data contract section
2) are concatenated along the sample axis: ``kspace (n_slices, C, T, R * S)`` and
``traj (n_slices, T, R * S, 2)`` with ``R = readouts_per_frame`` readouts of ``S`` samples
each, in file order. Every reconstruction operator takes a frame's samples as one
``(T, samples, 2)`` trajectory and computes the density compensation from it, so a frame of
several readouts needs nothing else downstream; ``interleaf (n_slices, T, R)`` keeps each
readout's ``idx.kspace_encode_step_1``.

Geometry: the contract's signal model puts image index ``(i, j) = (Nx//2, Ny//2)`` at the
acquisition ``position`` (the slice centre), with ``i`` along ``read_dir`` and ``j`` along
``phase_dir``; :meth:`RawSubject.affine` turns this into a NIfTI RAS+ affine.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrf_monai.physics.sequence import MRFSequence

__all__ = ["RawDataError", "RawSubject", "lps_to_ras", "DEFAULT_LARMOR_HZ"]

#: Proton Larmor frequency at 1.5 T, used when a subject is created without one.
DEFAULT_LARMOR_HZ = 63_870_000.0


class RawDataError(ValueError):
    """A raw data file is unreadable or breaks the data contract.

    The message names the file, the problem and, where possible, what to do about it.
    """


def lps_to_ras(v: np.ndarray) -> np.ndarray:
    """Convert LPS coordinates or directions ``(..., 3)`` to RAS (negate x and y)."""
    v = np.asarray(v, dtype=np.float64)
    return v * np.array([-1.0, -1.0, 1.0])


def _unit(v: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    if v.shape != (3,):
        raise ValueError(f"{name} must have 3 components (LPS), got shape {v.shape}")
    n = np.linalg.norm(v)
    if not np.isfinite(n) or n < 1e-6:
        raise ValueError(f"{name} = {v.tolist()} is not a direction (zero or non-finite length)")
    return v / n


def _optional_positive(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number or None, got {value}")
    return value


@dataclass
class RawSubject:
    """Raw MRF data of one subject (all slices), as in ``raw.h5``.

    Attributes:
        kspace: ``(n_slices, C, T, R * S)`` complex64 samples: coils, frames, and the ``R``
            readouts of ``S`` samples of each frame one after the other (file order).
        traj: ``(n_slices, T, R * S, 2)`` float32 ``(kx, ky)`` in cycles per pixel.
        interleaf: ``(n_slices, T, R)`` int, ``idx.kspace_encode_step_1`` of each readout
            (``(n_slices, T)`` is accepted when ``R = 1``).
        sequence: the MRF sequence (T frames).
        matrix: encoded matrix ``(Nx, Ny)``.
        fov_mm: field of view ``(x, y, z)`` in mm; z is the slice thickness.
        position_mm: ``(n_slices, 3)`` slice centres, LPS mm.
        read_dir, phase_dir, slice_dir: ``(3,)`` LPS unit vectors (axes ``i``, ``j``, slice).
        larmor_hz: H1 resonance frequency in Hz.
        path: the file it was read from (``None`` if built in memory).
        readouts_per_frame: ``R``; ``None``: the last axis of a 3-D ``interleaf``, else 1.
        noise: ``(C, N)`` complex64 noise-only samples of the noise scans (ISMRMRD flag 19,
            data contract section 5), all noise acquisitions one after the other; ``None``
            when the file has none.
        dcf: optional ``(n_slices, T, R * S)`` float32 density compensation given with the
            trajectory (a trajectory file's ``dcf``); ``None``: computed from the trajectory.
        trajectory_type: ``encoding[0].trajectory`` of the header (``"spiral"``, ``"radial"``, ...).
        dwell_us: sampling dwell time of the imaging readouts (``sample_time_us``), or ``None``.
        noise_dwell_us: dwell time of the noise scan, or ``None``.
        relative_noise_bandwidth: ``acquisitionSystemInformation.relativeReceiverNoiseBandwidth``,
            or ``None``.
    """

    kspace: np.ndarray
    traj: np.ndarray
    interleaf: np.ndarray
    sequence: MRFSequence
    matrix: tuple[int, int]
    fov_mm: tuple[float, float, float]
    position_mm: np.ndarray
    read_dir: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    phase_dir: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 0.0]))
    slice_dir: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    larmor_hz: float = DEFAULT_LARMOR_HZ
    path: Path | None = None
    readouts_per_frame: int | None = None
    noise: np.ndarray | None = None
    dcf: np.ndarray | None = None
    trajectory_type: str = "spiral"
    dwell_us: float | None = None
    noise_dwell_us: float | None = None
    relative_noise_bandwidth: float | None = None

    def __post_init__(self) -> None:
        self.kspace = np.asarray(self.kspace)
        if self.kspace.ndim != 4:
            raise ValueError(f"kspace must be (n_slices, C, T, R * S), got shape {self.kspace.shape}")
        self.kspace = self.kspace.astype(np.complex64, copy=False)
        n_sl, n_c, t, s = self.kspace.shape
        self.traj = np.asarray(self.traj, dtype=np.float32)
        if self.traj.shape != (n_sl, t, s, 2):
            raise ValueError(
                f"traj must be (n_slices, T, R * S, 2) = {(n_sl, t, s, 2)} to match kspace "
                f"{self.kspace.shape}, got {self.traj.shape}"
            )
        interleaf = np.asarray(self.interleaf, dtype=np.int64)
        r = self.readouts_per_frame
        if r is None:
            r = int(interleaf.shape[2]) if interleaf.ndim == 3 else 1
        r = int(r)
        if r < 1 or s % r:
            raise ValueError(
                f"readouts_per_frame = {r} must be a positive divisor of the {s} samples per frame"
            )
        if interleaf.shape == (n_sl, t) and r == 1:
            interleaf = interleaf[..., None]
        if interleaf.shape != (n_sl, t, r):
            raise ValueError(
                f"interleaf must be (n_slices, T, readouts_per_frame) = {(n_sl, t, r)}, got {interleaf.shape}"
            )
        self.interleaf = interleaf
        self.readouts_per_frame = r
        if self.sequence.n_frames != t:
            raise ValueError(f"the sequence has {self.sequence.n_frames} frames but kspace has T = {t}")
        self.matrix = (int(self.matrix[0]), int(self.matrix[1]))
        self.fov_mm = tuple(float(v) for v in self.fov_mm)  # type: ignore[assignment]
        if len(self.fov_mm) != 3 or min(self.fov_mm) <= 0 or min(self.matrix) <= 0:
            raise ValueError(f"matrix {self.matrix} and fov_mm {self.fov_mm} must be positive (fov: x, y, z)")
        self.position_mm = np.asarray(self.position_mm, dtype=np.float64).reshape(n_sl, 3)
        self.read_dir = _unit(self.read_dir, "read_dir")
        self.phase_dir = _unit(self.phase_dir, "phase_dir")
        self.slice_dir = _unit(self.slice_dir, "slice_dir")
        self.larmor_hz = float(self.larmor_hz)
        if self.path is not None:
            self.path = Path(self.path)
        if self.noise is not None:
            noise = np.asarray(self.noise)
            if noise.ndim != 2 or noise.shape[0] != n_c:
                raise ValueError(f"noise must be (C, N) with C = {n_c} coils, got shape {noise.shape}")
            self.noise = noise.astype(np.complex64, copy=False)
        if self.dcf is not None:
            dcf = np.asarray(self.dcf, dtype=np.float32)
            if dcf.shape != (n_sl, t, s):
                raise ValueError(f"dcf must be (n_slices, T, R * S) = {(n_sl, t, s)}, got {dcf.shape}")
            if not np.all(np.isfinite(dcf)) or np.any(dcf < 0):
                raise ValueError("dcf must hold finite, non-negative weights")
            self.dcf = dcf
        self.trajectory_type = str(self.trajectory_type or "other").lower()
        self.dwell_us = _optional_positive(self.dwell_us, "dwell_us")
        self.noise_dwell_us = _optional_positive(self.noise_dwell_us, "noise_dwell_us")
        self.relative_noise_bandwidth = _optional_positive(
            self.relative_noise_bandwidth, "relative_noise_bandwidth"
        )

    @property
    def n_slices(self) -> int:
        return int(self.kspace.shape[0])

    @property
    def n_coils(self) -> int:
        return int(self.kspace.shape[1])

    @property
    def n_frames(self) -> int:
        return int(self.kspace.shape[2])

    @property
    def n_samples(self) -> int:
        """Samples per frame: all ``readouts_per_frame`` readouts together (``R * S``)."""
        return int(self.kspace.shape[3])

    @property
    def samples_per_readout(self) -> int:
        """Samples ``S`` of one readout (one ISMRMRD acquisition)."""
        return self.n_samples // int(self.readouts_per_frame)

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        """In-plane voxel size FOV / matrix and the slice thickness, mm."""
        return (self.fov_mm[0] / self.matrix[0], self.fov_mm[1] / self.matrix[1], self.fov_mm[2])

    def readouts(self, slice_index: int) -> np.ndarray:
        """Trajectory of one slice split into its readouts: ``(T, R, S, 2)`` (a view)."""
        return self.traj[slice_index].reshape(
            self.n_frames, int(self.readouts_per_frame), self.samples_per_readout, 2
        )

    def affine(self, slice_index: int | None = None) -> np.ndarray:
        """NIfTI affine (4x4, RAS+ mm) of voxel indices ``(i, j, s)``.

        Voxel ``(Nx//2, Ny//2, s)`` is the centre ``position_mm[s]`` of slice ``s``; axis ``i``
        steps FOV_x/Nx along ``read_dir``, axis ``j`` steps FOV_y/Ny along ``phase_dir``
        (LPS converted to RAS). With ``slice_index`` the affine describes that one slice
        (slice axis: thickness along ``slice_dir``). Without it, it describes the stack of all
        slices: the slice axis is the mean step between consecutive slice positions (the
        thickness along ``slice_dir`` for a single slice); a warning is issued when the
        slices are not equally spaced on a line, as NIfTI cannot represent that.
        """
        nx, ny = self.matrix
        dx, dy, dz = self.voxel_size_mm
        if slice_index is not None:
            if not -self.n_slices <= slice_index < self.n_slices:
                raise IndexError(f"slice {slice_index} out of range for {self.n_slices} slice(s)")
            centre = self.position_mm[slice_index]
            step = dz * self.slice_dir
        else:
            centre = self.position_mm[0]
            if self.n_slices == 1:
                step = dz * self.slice_dir
            else:
                diffs = np.diff(self.position_mm, axis=0)
                step = (self.position_mm[-1] - self.position_mm[0]) / (self.n_slices - 1)
                if np.max(np.abs(diffs - step)) > 1e-3 * max(1.0, float(np.linalg.norm(step))):
                    warnings.warn(
                        f"{self.path or 'raw subject'}: slice positions are not equally spaced on a "
                        "line; the stacked NIfTI affine uses the mean step. Use affine(slice_index) "
                        "for exact per-slice geometry.",
                        stacklevel=2,
                    )
        lps = np.eye(4)
        lps[:3, 0] = dx * self.read_dir
        lps[:3, 1] = dy * self.phase_dir
        lps[:3, 2] = step
        lps[:3, 3] = centre - (nx // 2) * dx * self.read_dir - (ny // 2) * dy * self.phase_dir
        ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
        return ras

    def slice(self, slice_index: int) -> RawSubject:
        """A one-slice :class:`RawSubject` (views of the arrays, no copy; the noise scan is shared)."""
        s = slice(slice_index, slice_index + 1 if slice_index != -1 else None)
        return RawSubject(
            self.kspace[s],
            self.traj[s],
            self.interleaf[s],
            self.sequence,
            self.matrix,
            self.fov_mm,
            self.position_mm[s],
            self.read_dir,
            self.phase_dir,
            self.slice_dir,
            self.larmor_hz,
            self.path,
            readouts_per_frame=self.readouts_per_frame,
            noise=self.noise,
            dcf=None if self.dcf is None else self.dcf[s],
            trajectory_type=self.trajectory_type,
            dwell_us=self.dwell_us,
            noise_dwell_us=self.noise_dwell_us,
            relative_noise_bandwidth=self.relative_noise_bandwidth,
        )
