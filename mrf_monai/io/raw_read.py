"""Reading ISMRMRD raw data (``raw.h5``) into a :class:`~mrf_monai.io.raw_subject.RawSubject`.

Data contract sections 2 and 5: imaging readouts (one or more per slice and frame, grouped in
file order), the trajectory from the acquisitions or from a separate trajectory file
(:mod:`mrf_monai.io.trajectory_file`), noise scans (``ACQ_IS_NOISE_MEASUREMENT``) into
``RawSubject.noise``. Trajectories are checked against the header: a value beyond the k-space
edge (``|kx|`` or ``|ky|`` above 0.5 cycles per pixel,
:data:`~mrf_monai.io.trajectory_file.K_TOLERANCE`) is an error, and so
is a trajectory whose extent resolves much less than the header's matrix (a matrix of 128 with
a trajectory designed for 64).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from mrf_monai.io.raw_header import HeaderFields, header_fields, sequence_from_header
from mrf_monai.io.raw_records import (
    NOISE_FLAG,
    SKIPPED_FLAGS,
    decode_noise,
    decode_readouts,
    flag_mask,
    group_frames,
    read_records,
)
from mrf_monai.io.raw_subject import RawDataError, RawSubject
from mrf_monai.io.trajectory_file import (
    TRAJECTORY_UNITS,
    TrajectoryData,
    check_k_space_edge,
    convert_trajectory_units,
    read_trajectory_file,
    trajectory_from_array,
)
from mrf_monai.physics.sequence import MRFSequence

__all__ = ["read_raw", "EXTENT_ERROR_FRACTION", "EXTENT_WARNING_FRACTION"]

#: A trajectory whose largest ``|k|`` is below this fraction of 0.5 does not fit the header matrix.
EXTENT_ERROR_FRACTION = 0.8
#: Below this fraction of 0.5 (and above the error threshold) a warning says what is used.
EXTENT_WARNING_FRACTION = 0.9

TrajectorySource = str | os.PathLike | TrajectoryData | np.ndarray


def _check_extent(traj: np.ndarray, where: str, fields: HeaderFields) -> None:
    """The trajectory's largest ``|k|`` must fit the header matrix (error, or a warning)."""
    extent = float(np.sqrt((traj.astype(np.float64) ** 2).sum(axis=-1)).max())
    nx, ny = fields.matrix
    if extent >= 0.5 * EXTENT_WARNING_FRACTION:
        return
    fx, fy = max(1, round(2 * extent * nx)), max(1, round(2 * extent * ny))
    text = (
        f"{where}the trajectory reaches only |k| = {extent:.3g} cycles per pixel, which resolves a matrix of "
        f"about {fx} x {fy}, but the header's encodedSpace.matrixSize is {nx} x {ny} (a trajectory in "
        "cycles per pixel reaches 0.5 at the edge of k-space)."
    )
    if extent < 0.5 * EXTENT_ERROR_FRACTION:
        raise RawDataError(
            text + f" Set matrixSize to the matrix the trajectory was designed for (about {fx} x {fy}, "
            "and check fieldOfView_mm), or convert the trajectory (trajectory_units)."
        )
    dx, dy = fields.fov_mm[0] / nx, fields.fov_mm[1] / ny
    warnings.warn(
        text
        + f" Reconstructing on the header's {nx} x {ny} matrix ({dx:.3g} x {dy:.3g} mm voxels) as given.",
        stacklevel=3,
    )


def _external(source: TrajectorySource, units: str, fields: HeaderFields) -> TrajectoryData:
    if isinstance(source, TrajectoryData):
        return source
    if isinstance(source, np.ndarray):
        return trajectory_from_array(source, None, units, fields.matrix, fields.fov_mm)
    return read_trajectory_file(source, units, fields.matrix, fields.fov_mm)


def read_raw(
    path: str | os.PathLike,
    trajectory: TrajectorySource | None = None,
    trajectory_units: str = "cycles_per_pixel",
) -> RawSubject:
    """Read an ISMRMRD raw file written per the data contract.

    The ``dataset/data`` compound array is read with one ``h5py`` call. Acquisitions flagged as
    noise scans become ``RawSubject.noise``; calibration, navigation and dummy scans are
    skipped. Every (slice, frame) must hold the same number ``R`` of readouts; they are
    concatenated along the sample axis in file order (``RawSubject.readouts_per_frame``).

    Args:
        path: the ``raw.h5`` file.
        trajectory: where the trajectory comes from when the acquisitions carry none (data
            contract section 5): a trajectory file (``.npy``, ``.npz``, HDF5 ``traj``, or
            another ISMRMRD file), a :class:`~mrf_monai.io.trajectory_file.TrajectoryData`, or an
            array ``(frames, readouts, samples, 2)``. It replaces a trajectory stored in the
            acquisitions (with a warning). Its ``dcf``, if any, becomes ``RawSubject.dcf``.
        trajectory_units: units of the trajectory used (the file's own or ``trajectory``);
            default cycles per pixel, others only when named
            (:data:`~mrf_monai.io.trajectory_file.TRAJECTORY_UNITS`).

    Raises:
        RawDataError: with the file name and the problem (missing file, not HDF5, truncated
            or corrupt, no ``dataset`` group or header, missing header fields, unknown sequence
            type, frame count differing from the flip-angle count, missing trajectory, NaN/Inf
            samples, differing sample/coil counts, missing frames or slices, frames with
            differing readout counts, a trajectory beyond the k-space edge or not fitting the
            header matrix, a trajectory file whose shape does not fit the readouts).
        ValueError: unknown ``trajectory_units``.
    """
    if trajectory_units not in TRAJECTORY_UNITS:
        convert_trajectory_units(np.zeros((1, 2)), trajectory_units)  # raises, naming the options
    path = Path(path)
    header, records = read_records(path)
    if header is None:
        raise RawDataError(f"{path}: the ISMRMRD dataset has no XML header (dataset/xml)")
    fields = header_fields(header, path)
    sequence = sequence_from_header(header, path)
    if records is None or records.size == 0:
        raise RawDataError(f"{path}: the file holds no acquisitions (dataset/data is missing or empty)")
    return _assemble(path, records, sequence, fields, trajectory, trajectory_units)


def _assemble(
    path: Path,
    records: np.ndarray,
    sequence: MRFSequence,
    fields: HeaderFields,
    trajectory: TrajectorySource | None,
    units: str,
) -> RawSubject:
    flags = records["head"]["flags"].astype(np.uint64)
    keep = (flags & flag_mask(*SKIPPED_FLAGS.values())) == 0
    is_noise = (flags & flag_mask(NOISE_FLAG)) != 0
    if not np.any(keep):
        raise RawDataError(f"{path}: every acquisition is flagged as noise/calibration/navigation/dummy data")
    hint = (
        ""
        if trajectory is not None
        else "; if the trajectory is kept in a separate file, pass it: read_raw(path, trajectory=FILE) "
        "or --trajectory FILE (data contract section 5)"
    )
    readouts = decode_readouts(path, records[keep], need_traj=trajectory is None, hint=hint)
    order, n_sl, T, R = group_frames(path, readouts.head, sequence.n_frames)
    head = readouts.head[order]
    _, C, S = readouts.data.shape
    kspace = (
        readouts.data[order].reshape(n_sl, T, R, C, S).transpose(0, 3, 1, 2, 4).reshape(n_sl, C, T, R * S)
    )
    kspace = np.ascontiguousarray(kspace)
    interleaf = head["idx"]["kspace_encode_step_1"].astype(np.int64).reshape(n_sl, T, R)
    where = f"{path}: "
    dcf = None
    if trajectory is not None:
        tdata = _external(trajectory, units, fields)
        source = tdata.path or "the trajectory array"
        if tdata.shape != (T, R, S):
            raise RawDataError(
                f"{source}: the trajectory holds (frames, readouts, samples) = {tdata.shape}, but the raw "
                f"data {path} have {(T, R, S)} ({T} frames of {R} readout(s) of {S} samples); use the "
                "trajectory file of this protocol"
            )
        if readouts.traj is not None:
            warnings.warn(
                f"{path}: the acquisitions carry their own trajectory; using the one of {source} instead",
                stacklevel=2,
            )
        check_k_space_edge(
            tdata.traj[None], f"{source} (trajectory of {path}): ", fields.matrix, ("", "frame")
        )
        traj = np.ascontiguousarray(np.broadcast_to(tdata.traj.reshape(1, T, R * S, 2), (n_sl, T, R * S, 2)))
        if tdata.dcf is not None:
            dcf = np.ascontiguousarray(np.broadcast_to(tdata.dcf.reshape(1, T, R * S), (n_sl, T, R * S)))
        where = f"{path} (trajectory from {source}): "
    else:
        own = readouts.traj[order]
        if units != "cycles_per_pixel":
            own = convert_trajectory_units(own, units, fields.matrix, fields.fov_mm)
        check_k_space_edge(own.reshape(n_sl, T, R, S, 2), where, fields.matrix, ("slice", "frame"))
        traj = np.ascontiguousarray(own.reshape(n_sl, T, R * S, 2))
    _check_extent(traj, where, fields)

    sl = head["idx"]["slice"].astype(np.int64)
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
    noise, noise_dwell = None, None
    if np.any(is_noise):
        noise, noise_dwell = decode_noise(path, records[is_noise], C)
    dwell = head["sample_time_us"].astype(np.float64)
    dwell = dwell[dwell > 0]
    try:
        return RawSubject(
            kspace,
            traj,
            interleaf,
            sequence,
            fields.matrix,
            fields.fov_mm,
            position,
            *dirs,
            larmor_hz=fields.larmor_hz,
            path=path,
            readouts_per_frame=R,
            noise=noise,
            dcf=dcf,
            trajectory_type=fields.trajectory_type,
            dwell_us=float(dwell[0]) if dwell.size else None,
            noise_dwell_us=noise_dwell,
            relative_noise_bandwidth=fields.relative_noise_bandwidth,
        )
    except ValueError as err:
        raise RawDataError(f"{path}: {err}") from err
