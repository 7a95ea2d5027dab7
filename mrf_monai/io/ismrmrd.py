"""ISMRMRD raw data (``raw.h5``): the subject's k-space, trajectory, sequence and geometry.

The file layout is fixed by ``docs/data-contract.md`` section 2. Files are written with the
``ismrmrd`` package (XML header classes, :class:`ismrmrd.Acquisition`, :class:`ismrmrd.Dataset`)
and read back in bulk with ``h5py``: the compound ``dataset/data`` array (header, trajectory
and samples of every acquisition) is read in one call and reshaped, which is one to two
orders of magnitude faster than reading acquisitions one by one (``benchmarks/bench_io.py``).

Geometry: the contract's signal model puts image index ``(i, j) = (Nx//2, Ny//2)`` at the
acquisition ``position`` (the slice centre), with ``i`` along ``read_dir`` and ``j`` along
``phase_dir``; :meth:`RawSubject.affine` turns this into a NIfTI RAS+ affine.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from mrf_monai.io.atomic import atomic_write_path
from mrf_monai.physics.sequence import SUPPORTED_SEQUENCE_TYPES, MRFSequence

__all__ = [
    "RawDataError",
    "RawSubject",
    "read_raw",
    "write_raw",
    "sequence_to_header",
    "sequence_from_header",
    "build_header",
    "lps_to_ras",
    "DEFAULT_LARMOR_HZ",
]

#: Proton Larmor frequency at 1.5 T, used when a subject is created without one.
DEFAULT_LARMOR_HZ = 63_870_000.0

# ISMRMRD acquisition flags (1-based bit numbers, ismrmrd.constants); readouts carrying
# these flags are not imaging data of the MRF series and are skipped by ``read_raw``.
_SKIPPED_FLAGS = {
    "noise measurement": 19,
    "parallel calibration": 20,
    "navigation": 23,
    "dummy scan": 27,
}
_ACQ_FIRST_IN_SLICE = 7
_ACQ_LAST_IN_SLICE = 8
_ACQ_LAST_IN_MEASUREMENT = 25

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


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


@dataclass
class RawSubject:
    """Raw MRF data of one subject (all slices), as in ``raw.h5``.

    Attributes:
        kspace: ``(n_slices, C, T, S)`` complex64 samples (coils, frames, samples per readout).
        traj: ``(n_slices, T, S, 2)`` float32 ``(kx, ky)`` in cycles per pixel.
        interleaf: ``(n_slices, T)`` int, interleaf index of each frame's readout.
        sequence: the MRF sequence (T frames).
        matrix: encoded matrix ``(Nx, Ny)``.
        fov_mm: field of view ``(x, y, z)`` in mm; z is the slice thickness.
        position_mm: ``(n_slices, 3)`` slice centres, LPS mm.
        read_dir, phase_dir, slice_dir: ``(3,)`` LPS unit vectors (axes ``i``, ``j``, slice).
        larmor_hz: H1 resonance frequency in Hz.
        path: the file it was read from (``None`` if built in memory).
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

    def __post_init__(self) -> None:
        self.kspace = np.asarray(self.kspace)
        if self.kspace.ndim != 4:
            raise ValueError(f"kspace must be (n_slices, C, T, S), got shape {self.kspace.shape}")
        self.kspace = self.kspace.astype(np.complex64, copy=False)
        n_sl, _, t, s = self.kspace.shape
        self.traj = np.asarray(self.traj, dtype=np.float32)
        if self.traj.shape != (n_sl, t, s, 2):
            raise ValueError(
                f"traj must be (n_slices, T, S, 2) = {(n_sl, t, s, 2)} to match kspace "
                f"{self.kspace.shape}, got {self.traj.shape}"
            )
        self.interleaf = np.asarray(self.interleaf, dtype=np.int64)
        if self.interleaf.shape != (n_sl, t):
            raise ValueError(f"interleaf must be (n_slices, T) = {(n_sl, t)}, got {self.interleaf.shape}")
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
        return int(self.kspace.shape[3])

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        """In-plane voxel size FOV / matrix and the slice thickness, mm."""
        return (self.fov_mm[0] / self.matrix[0], self.fov_mm[1] / self.matrix[1], self.fov_mm[2])

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
        """A one-slice :class:`RawSubject` (views of the arrays, no copy)."""
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
        )


# --------------------------------------------------------------------------- header


def sequence_to_header(sequence: MRFSequence):
    """``ismrmrd.xsd.sequenceParametersType`` of a sequence (data contract section 2).

    ``flipAngle_deg``: T values; ``TR``: one value when constant, else T values (ms);
    ``TE``: one value (ms); ``TI``: one value (ms), omitted without inversion;
    ``sequence_type``.
    """
    from ismrmrd import xsd

    tr = np.asarray(sequence.tr_ms, dtype=np.float64)
    tr_list = [float(tr[0])] if np.all(tr == tr[0]) else [float(v) for v in tr]
    return xsd.sequenceParametersType(
        TR=tr_list,
        TE=[float(sequence.te_ms)],
        TI=[] if sequence.ti_ms is None else [float(sequence.ti_ms)],
        flipAngle_deg=[float(a) for a in sequence.flip_angle_deg],
        sequence_type=sequence.sequence_type,
    )


def sequence_from_header(header, path: str | os.PathLike | None = None) -> MRFSequence:
    """The :class:`MRFSequence` described by an ISMRMRD header.

    Args:
        header: ``ismrmrd.xsd.ismrmrdHeader`` or its ``sequenceParameters`` element.
        path: file name used in error messages.

    Raises:
        RawDataError: missing ``sequenceParameters`` / flip angles / TR / TE, unknown
            ``sequence_type``, or a TR count that is neither 1 nor T.
    """
    where = f"{path}: " if path is not None else ""
    sp = getattr(header, "sequenceParameters", header)
    if sp is None or not hasattr(sp, "flipAngle_deg"):
        raise RawDataError(
            f"{where}the ISMRMRD header has no sequenceParameters; MRF needs flipAngle_deg (one per "
            "frame), TR, TE, TI and sequence_type there (data contract section 2)"
        )
    fa = list(sp.flipAngle_deg or [])
    if not fa:
        raise RawDataError(
            f"{where}sequenceParameters has no flipAngle_deg values (one per time frame needed)"
        )
    tr = list(sp.TR or [])
    if not tr:
        raise RawDataError(f"{where}sequenceParameters has no TR (give one value, or one per frame, in ms)")
    if len(tr) not in (1, len(fa)):
        raise RawDataError(
            f"{where}sequenceParameters has {len(tr)} TR values but {len(fa)} flip angles; give one TR "
            "or one per frame"
        )
    te = list(sp.TE or [])
    if len(te) != 1:
        raise RawDataError(f"{where}sequenceParameters must hold exactly one TE (ms), found {len(te)}")
    ti = list(sp.TI or [])
    if len(ti) > 1:
        raise RawDataError(f"{where}sequenceParameters must hold at most one TI (ms), found {len(ti)}")
    stype = sp.sequence_type
    if stype is None or str(stype).strip() == "":
        raise RawDataError(
            f"{where}sequenceParameters has no sequence_type; set it to one of "
            f"{', '.join(SUPPORTED_SEQUENCE_TYPES)} (the signal model is never guessed)"
        )
    stype = str(stype).strip()
    if stype not in SUPPORTED_SEQUENCE_TYPES:
        raise RawDataError(
            f"{where}unknown sequence_type {stype!r}; supported: {', '.join(SUPPORTED_SEQUENCE_TYPES)}"
        )
    try:
        return MRFSequence(
            stype,
            np.asarray(fa, dtype=np.float64),
            np.asarray(tr, dtype=np.float64),
            float(te[0]),
            float(ti[0]) if ti and float(ti[0]) != 0.0 else None,
        )
    except ValueError as err:
        raise RawDataError(f"{where}invalid sequence parameters: {err}") from err


def build_header(subject: RawSubject):
    """The ``ismrmrd.xsd.ismrmrdHeader`` of a subject (data contract section 2)."""
    from ismrmrd import xsd

    nx, ny = subject.matrix

    def space():
        return xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=nx, y=ny, z=1),
            fieldOfView_mm=xsd.fieldOfViewMm(x=subject.fov_mm[0], y=subject.fov_mm[1], z=subject.fov_mm[2]),
        )

    n_interleaves = int(subject.interleaf.max()) + 1 if subject.interleaf.size else 1
    limits = xsd.encodingLimitsType(
        kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=n_interleaves - 1, center=0),
        slice=xsd.limitType(minimum=0, maximum=subject.n_slices - 1, center=0),
        repetition=xsd.limitType(minimum=0, maximum=subject.n_frames - 1, center=0),
    )
    measurement = None
    if subject.sequence.name:
        measurement = xsd.measurementInformationType(
            patientPosition=xsd.patientPositionType.HFS, protocolName=subject.sequence.name
        )
    return xsd.ismrmrdHeader(
        measurementInformation=measurement,
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(receiverChannels=subject.n_coils),
        experimentalConditions=xsd.experimentalConditionsType(
            H1resonanceFrequency_Hz=int(round(subject.larmor_hz))
        ),
        encoding=[
            xsd.encodingType(
                encodedSpace=space(),
                reconSpace=space(),
                encodingLimits=limits,
                trajectory=xsd.trajectoryType.SPIRAL,
            )
        ],
        sequenceParameters=sequence_to_header(subject.sequence),
    )


# --------------------------------------------------------------------------- writing


def write_raw(path: str | os.PathLike, subject: RawSubject) -> Path:
    """Write ``subject`` as an ISMRMRD file (data contract section 2), atomically.

    One :class:`ismrmrd.Acquisition` per (slice, frame) with ``idx.slice``,
    ``idx.repetition = t``, ``idx.kspace_encode_step_1 = interleaf``, ``data (C, S)``,
    ``traj (S, 2)`` and the slice geometry. The acquisitions are built with the ``ismrmrd``
    package and stored in the ``dataset/data`` compound array in one write (the same bytes
    as ``Dataset.append_acquisition`` one by one, without resizing the array T times).

    Returns:
        the path written.
    """
    import ismrmrd
    from ismrmrd import xsd
    from ismrmrd.hdf5 import acquisition_dtype, acquisition_header_dtype

    path = Path(path)
    if not np.all(np.isfinite(subject.kspace.view(np.float32))) or not np.all(np.isfinite(subject.traj)):
        raise ValueError(f"refusing to write {path}: k-space or trajectory holds NaN/Inf values")
    xml = xsd.ToXML(build_header(subject))
    n_sl, n_c, n_t, n_s = subject.kspace.shape
    records = np.empty(n_sl * n_t, dtype=acquisition_dtype)
    pos = subject.position_mm.astype(np.float32)
    dirs = [d.astype(np.float32) for d in (subject.read_dir, subject.phase_dir, subject.slice_dir)]
    n = 0
    for s in range(n_sl):
        for t in range(n_t):
            acq = ismrmrd.Acquisition.from_array(
                np.ascontiguousarray(subject.kspace[s, :, t, :]), np.ascontiguousarray(subject.traj[s, t])
            )
            acq.version = 1
            acq.scan_counter = n
            acq.idx.slice = s
            acq.idx.repetition = t
            acq.idx.kspace_encode_step_1 = int(subject.interleaf[s, t])
            acq.position[:] = pos[s].tolist()
            acq.read_dir[:] = dirs[0].tolist()
            acq.phase_dir[:] = dirs[1].tolist()
            acq.slice_dir[:] = dirs[2].tolist()
            if t == 0:
                acq.set_flag(_ACQ_FIRST_IN_SLICE)
            if t == n_t - 1:
                acq.set_flag(_ACQ_LAST_IN_SLICE)
                if s == n_sl - 1:
                    acq.set_flag(_ACQ_LAST_IN_MEASUREMENT)
            records[n]["head"] = np.frombuffer(acq.getHead(), dtype=acquisition_header_dtype)[0]
            records[n]["data"] = acq.data.view(np.float32).reshape(-1)
            records[n]["traj"] = acq.traj.view(np.float32).reshape(-1)
            n += 1
    with atomic_write_path(path) as tmp:
        with ismrmrd.Dataset(str(tmp), "dataset", mode="w") as dset:
            dset.write_xml_header(xml.encode() if isinstance(xml, str) else xml)
        # Same layout as Dataset.append_acquisition (ismrmrd.hdf5.acquisition_dtype, resizable
        # 1D array), written at once: appending one by one costs ~10 ms per readout.
        with h5py.File(tmp, "a") as f:
            f["dataset"].create_dataset("data", data=records, maxshape=(None,), chunks=True)
    return path


# --------------------------------------------------------------------------- reading


def _header_fields(header, path: Path):
    where = f"{path}: "
    if not header.encoding:
        raise RawDataError(where + "the ISMRMRD header has no encoding element (matrix size and FOV needed)")
    enc = header.encoding[0].encodedSpace
    ms = getattr(enc, "matrixSize", None) if enc is not None else None
    fov = getattr(enc, "fieldOfView_mm", None) if enc is not None else None
    if ms is None or ms.x is None or ms.y is None or int(ms.x) <= 0 or int(ms.y) <= 0:
        raise RawDataError(
            where + "encoding[0].encodedSpace.matrixSize is missing or not positive (x = Nx, y = Ny)"
        )
    if fov is None or None in (fov.x, fov.y, fov.z) or min(float(fov.x), float(fov.y), float(fov.z)) <= 0:
        raise RawDataError(
            where
            + "encoding[0].encodedSpace.fieldOfView_mm is missing or not positive (x, y, z = slice thickness)"
        )
    if ms.z is not None and int(ms.z) != 1:
        raise RawDataError(
            where + f"encodedSpace.matrixSize.z = {ms.z}; MRF raw data here must be 2D (z = 1)"
        )
    larmor = DEFAULT_LARMOR_HZ
    ec = header.experimentalConditions
    if ec is not None and ec.H1resonanceFrequency_Hz is not None:
        larmor = float(ec.H1resonanceFrequency_Hz)
    return (int(ms.x), int(ms.y)), (float(fov.x), float(fov.y), float(fov.z)), larmor


def _open_error(path: Path, err: Exception) -> RawDataError:
    return RawDataError(
        f"{path}: cannot be read as an ISMRMRD HDF5 file (truncated, corrupt or not HDF5): {err}. "
        "Re-export or re-copy the raw data."
    )


def read_raw(path: str | os.PathLike) -> RawSubject:
    """Read an ISMRMRD raw file written per the data contract.

    The ``dataset/data`` compound array is read with one ``h5py`` call; acquisitions flagged
    as noise, calibration, navigation or dummy scans are skipped. Each (slice, frame) must
    have exactly one readout.

    Raises:
        RawDataError: with the file name and the problem (missing file, not HDF5, truncated
            or corrupt, no ``dataset`` group or header, missing header fields, unknown sequence
            type, frame count differing from the flip-angle count, missing trajectory, NaN/Inf
            samples, differing sample/coil counts, missing or duplicated frames or slices).
    """
    from ismrmrd import xsd

    path = Path(path)
    if not path.is_file():
        raise RawDataError(f"{path}: raw data file not found (expected an ISMRMRD raw.h5)")
    try:
        is_h5 = h5py.is_hdf5(path)
    except OSError as err:
        raise _open_error(path, err) from err
    if not is_h5:
        raise RawDataError(
            f"{path}: not an HDF5 file (no HDF5 signature; truncated at the start or a different format). "
            "mrf_monai reads ISMRMRD HDF5 raw data."
        )
    try:
        with h5py.File(path, "r") as f:
            grp = f.get("dataset")
            if not isinstance(grp, h5py.Group):
                raise RawDataError(
                    f"{path}: no ISMRMRD 'dataset' group (found {sorted(f.keys())}); is this an ISMRMRD file?"
                )
            if "xml" not in grp:
                raise RawDataError(f"{path}: the ISMRMRD dataset has no XML header (dataset/xml)")
            xml = grp["xml"][0]
            records = grp["data"][()] if "data" in grp else None
    except RawDataError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as err:
        # h5py reports damaged files with any of these, depending on where the damage is
        raise _open_error(path, err) from err
    try:
        header = xsd.CreateFromDocument(xml if isinstance(xml, bytes | str) else bytes(xml))
    except Exception as err:  # xsdata raises several types for malformed XML
        raise RawDataError(f"{path}: the ISMRMRD XML header cannot be parsed: {err}") from err
    matrix, fov, larmor = _header_fields(header, path)
    sequence = sequence_from_header(header, path)
    if records is None or records.size == 0:
        raise RawDataError(f"{path}: the file holds no acquisitions (dataset/data is missing or empty)")
    return _assemble(path, records, sequence, matrix, fov, larmor)


def _assemble(path: Path, records: np.ndarray, sequence: MRFSequence, matrix, fov, larmor) -> RawSubject:
    head = records["head"]
    flags = head["flags"].astype(np.uint64)
    skip_mask = np.uint64(sum(1 << (b - 1) for b in _SKIPPED_FLAGS.values()))
    keep = (flags & skip_mask) == 0
    if not np.any(keep):
        raise RawDataError(f"{path}: every acquisition is flagged as noise/calibration/navigation/dummy data")
    head = head[keep]
    data_list = records["data"][keep]
    traj_list = records["traj"][keep]
    n_acq = head.shape[0]

    n_s = head["number_of_samples"].astype(np.int64)
    n_c = head["active_channels"].astype(np.int64)
    n_d = head["trajectory_dimensions"].astype(np.int64)
    if np.any(n_s != n_s[0]) or np.any(n_c != n_c[0]):
        bad = int(np.flatnonzero((n_s != n_s[0]) | (n_c != n_c[0]))[0])
        raise RawDataError(
            f"{path}: inconsistent readouts: acquisition 0 has {n_c[0]} coils x {n_s[0]} samples but "
            f"acquisition {bad} has {n_c[bad]} x {n_s[bad]}; all readouts must share coils and samples"
        )
    if np.any(n_d == 0):
        bad = int(np.flatnonzero(n_d == 0)[0])
        raise RawDataError(
            f"{path}: acquisition {bad} has no trajectory (trajectory_dimensions = 0); non-Cartesian MRF "
            "needs (kx, ky) per sample in cycles per pixel"
        )
    if np.any(n_d != n_d[0]) or n_d[0] < 2:
        raise RawDataError(f"{path}: trajectory_dimensions must be 2 (kx, ky) in every acquisition")
    C, S, D = int(n_c[0]), int(n_s[0]), int(n_d[0])
    data_len = np.fromiter((a.size for a in data_list), dtype=np.int64, count=n_acq)
    traj_len = np.fromiter((a.size for a in traj_list), dtype=np.int64, count=n_acq)
    if np.any(data_len != 2 * C * S) or np.any(traj_len != D * S):
        bad = int(np.flatnonzero((data_len != 2 * C * S) | (traj_len != D * S))[0])
        raise RawDataError(
            f"{path}: acquisition {bad} stores {data_len[bad]} data / {traj_len[bad]} trajectory values, "
            f"but its header says {C} coils x {S} samples x {D} dims; the file is corrupt"
        )
    data = np.concatenate(data_list).view(np.complex64).reshape(n_acq, C, S)
    traj = np.concatenate(traj_list).reshape(n_acq, S, D)[..., :2]
    for name, arr in (("k-space", data.view(np.float32)), ("trajectory", traj)):
        finite = np.isfinite(arr).reshape(n_acq, -1).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise RawDataError(
                f"{path}: {int((~finite).sum())} acquisition(s) hold NaN/Inf {name} values (first: "
                f"slice {head['idx']['slice'][bad]}, frame {head['idx']['repetition'][bad]})"
            )

    sl = head["idx"]["slice"].astype(np.int64)
    rep = head["idx"]["repetition"].astype(np.int64)
    T = sequence.n_frames
    n_frames_file = int(rep.max()) + 1
    if n_frames_file > T:
        raise RawDataError(
            f"{path}: the header has {T} flip angles but the acquisitions reach frame {n_frames_file - 1} "
            f"({n_frames_file} frames); the flip-angle count must equal the number of frames"
        )
    slices = np.unique(sl)
    n_sl = int(slices.max()) + 1
    if slices.size != n_sl:
        missing = sorted(set(range(n_sl)) - set(slices.tolist()))
        raise RawDataError(
            f"{path}: slice index(es) {missing[:10]} have no acquisitions (slices must be 0..n-1)"
        )
    counts = np.zeros((n_sl, T), dtype=np.int64)
    np.add.at(counts, (sl, rep), 1)
    if np.any(counts > 1):
        s_bad, t_bad = (int(v[0]) for v in np.nonzero(counts > 1))
        raise RawDataError(
            f"{path}: {int((counts > 1).sum())} (slice, frame) pair(s) hold more than one readout (first: "
            f"slice {s_bad}, frame {t_bad}); mrf_monai expects exactly one readout per frame"
        )
    if np.any(counts == 0):
        s_bad, t_bad = (int(v[0]) for v in np.nonzero(counts == 0))
        if n_frames_file < T and np.all(counts[:, n_frames_file:] == 0):
            raise RawDataError(
                f"{path}: the header has {T} flip angles but the acquisitions hold only {n_frames_file} "
                "frames; the flip-angle count must equal the number of frames"
            )
        raise RawDataError(
            f"{path}: {int((counts == 0).sum())} frame(s) missing (first: slice {s_bad}, frame {t_bad}); "
            f"every slice needs all {T} frames"
        )

    kspace = np.empty((n_sl, T, C, S), dtype=np.complex64)
    kspace[sl, rep] = data
    kspace = np.ascontiguousarray(kspace.transpose(0, 2, 1, 3))
    traj_out = np.empty((n_sl, T, S, 2), dtype=np.float32)
    traj_out[sl, rep] = traj
    interleaf = np.empty((n_sl, T), dtype=np.int64)
    interleaf[sl, rep] = head["idx"]["kspace_encode_step_1"]

    pos_all = head["position"].astype(np.float64)
    position = np.empty((n_sl, 3))
    position[sl] = pos_all
    if np.max(np.abs(pos_all - position[sl])) > 1e-3:
        raise RawDataError(f"{path}: the position of a slice changes between its acquisitions")
    dirs = []
    for key in ("read_dir", "phase_dir", "slice_dir"):
        d = head[key].astype(np.float64)
        if np.max(np.abs(d - d[0])) > 1e-4:
            raise RawDataError(
                f"{path}: {key} differs between acquisitions; all slices must share one orientation"
            )
        if not np.isfinite(d[0]).all() or np.linalg.norm(d[0]) < 1e-6:
            raise RawDataError(f"{path}: {key} = {d[0].tolist()} is not a unit vector")
        dirs.append(d[0])
    try:
        return RawSubject(
            kspace, traj_out, interleaf, sequence, matrix, fov, position, *dirs, larmor_hz=larmor, path=path
        )
    except ValueError as err:
        raise RawDataError(f"{path}: {err}") from err
