"""Bulk reading of the acquisitions of an ISMRMRD file (the ``dataset/data`` compound array).

The array (header, trajectory and samples of every acquisition) is read with one ``h5py``
call and decoded with numpy, which is one to two orders of magnitude faster than reading
acquisitions one by one with ``ismrmrd.Dataset`` (``benchmarks/bench_io.py``). Used by
:func:`mrf_monai.io.raw_read.read_raw` and by trajectory files that are ISMRMRD files
(:mod:`mrf_monai.io.trajectory_file`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from mrf_monai.io.raw_subject import RawDataError

__all__ = [
    "NOISE_FLAG",
    "SKIPPED_FLAGS",
    "flag_mask",
    "read_records",
    "Readouts",
    "decode_readouts",
    "decode_noise",
    "group_frames",
]

#: ISMRMRD ``ACQ_IS_NOISE_MEASUREMENT`` (1-based bit number, ``ismrmrd.constants``).
NOISE_FLAG = 19
#: Flags of acquisitions that are not frames of the MRF series (1-based bit numbers).
SKIPPED_FLAGS = {
    "noise measurement": NOISE_FLAG,
    "parallel calibration": 20,
    "navigation": 23,
    "dummy scan": 27,
}


def flag_mask(*bits: int) -> np.uint64:
    """``uint64`` mask of ISMRMRD flags given by their 1-based bit numbers."""
    return np.uint64(sum(1 << (b - 1) for b in bits))


def _open_error(path: Path, err: Exception) -> RawDataError:
    return RawDataError(
        f"{path}: cannot be read as an ISMRMRD HDF5 file (truncated, corrupt or not HDF5): {err}. "
        "Re-export or re-copy the raw data."
    )


def read_records(path: Path, what: str = "raw data file"):
    """The parsed XML header (or ``None`` when ``dataset/xml`` is absent) and the records.

    Raises:
        RawDataError: missing file, not HDF5, truncated or corrupt, no ``dataset`` group,
            unparsable XML header.
    """
    from ismrmrd import xsd

    if not path.is_file():
        raise RawDataError(f"{path}: {what} not found (expected an ISMRMRD HDF5 file)")
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
            xml = grp["xml"][0] if "xml" in grp else None
            records = grp["data"][()] if "data" in grp else None
    except RawDataError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as err:
        # h5py reports damaged files with any of these, depending on where the damage is
        raise _open_error(path, err) from err
    header = None
    if xml is not None:
        try:
            header = xsd.CreateFromDocument(xml if isinstance(xml, bytes | str) else bytes(xml))
        except Exception as err:  # xsdata raises several types for malformed XML
            raise RawDataError(f"{path}: the ISMRMRD XML header cannot be parsed: {err}") from err
    return header, records


@dataclass
class Readouts:
    """Decoded imaging acquisitions, in file order.

    Attributes:
        head: the acquisition headers (numpy structured array).
        data: ``(n, C, S)`` complex64.
        traj: ``(n, S, 2)`` float32, or ``None`` when no acquisition carries a trajectory.
    """

    head: np.ndarray
    data: np.ndarray
    traj: np.ndarray | None


def decode_readouts(path: Path, records: np.ndarray, need_traj: bool, hint: str = "") -> Readouts:
    """Samples (and trajectories) of acquisitions that share coils and samples.

    Args:
        need_traj: every acquisition must carry a 2D trajectory; otherwise the trajectories are
            returned only when every acquisition has one (``None`` when none has one).
        hint: appended to the missing-trajectory error (what to do).

    Raises:
        RawDataError: differing coil or sample counts, missing or partial trajectories,
            corrupt records, NaN/Inf samples or trajectory values.
    """
    head = records["head"]
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
    C, S = int(n_c[0]), int(n_s[0])
    if C < 1 or S < 1:
        raise RawDataError(f"{path}: the acquisitions hold {C} coils x {S} samples; nothing to reconstruct")
    with_traj = n_d > 0
    use_traj = bool(with_traj.all()) or need_traj
    if use_traj and not with_traj.all():
        bad = int(np.flatnonzero(~with_traj)[0])
        raise RawDataError(
            f"{path}: acquisition {bad} has no trajectory (trajectory_dimensions = 0); non-Cartesian MRF "
            "needs (kx, ky) per sample in cycles per pixel" + hint
        )
    if use_traj and (np.any(n_d != n_d[0]) or n_d[0] < 2):
        raise RawDataError(f"{path}: trajectory_dimensions must be 2 (kx, ky) in every acquisition")
    D = int(n_d[0]) if use_traj else 0
    data_list, traj_list = records["data"], records["traj"]
    data_len = np.fromiter((a.size for a in data_list), dtype=np.int64, count=n_acq)
    traj_len = np.fromiter((a.size for a in traj_list), dtype=np.int64, count=n_acq)
    bad_len = data_len != 2 * C * S
    if use_traj:
        bad_len |= traj_len != D * S
    if np.any(bad_len):
        bad = int(np.flatnonzero(bad_len)[0])
        raise RawDataError(
            f"{path}: acquisition {bad} stores {data_len[bad]} data / {traj_len[bad]} trajectory values, "
            f"but its header says {C} coils x {S} samples x {D} dims; the file is corrupt"
        )
    data = np.concatenate(list(data_list)).view(np.complex64).reshape(n_acq, C, S)
    traj = np.concatenate(list(traj_list)).reshape(n_acq, S, D)[..., :2] if use_traj else None
    checks = [("k-space", data.view(np.float32))] + ([("trajectory", traj)] if traj is not None else [])
    for name, arr in checks:
        finite = np.isfinite(arr).reshape(n_acq, -1).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise RawDataError(
                f"{path}: {int((~finite).sum())} acquisition(s) hold NaN/Inf {name} values (first: "
                f"slice {head['idx']['slice'][bad]}, frame {head['idx']['repetition'][bad]})"
            )
    return Readouts(head, data, None if traj is None else np.ascontiguousarray(traj, dtype=np.float32))


def decode_noise(path: Path, records: np.ndarray, n_coils: int) -> tuple[np.ndarray, float | None]:
    """Noise scans ``(C, N)`` complex64 (all noise acquisitions in file order) and their dwell time.

    Raises:
        RawDataError: a noise acquisition with another coil count than the imaging data, a
            corrupt record, NaN/Inf noise samples.
    """
    head = records["head"]
    parts = []
    for i in range(head.shape[0]):
        c, s = int(head["active_channels"][i]), int(head["number_of_samples"][i])
        if c != n_coils:
            raise RawDataError(
                f"{path}: noise acquisition {i} has {c} coils but the imaging readouts have {n_coils}; "
                "the noise scan must record the same receive channels"
            )
        d = records["data"][i]
        if d.size != 2 * c * s:
            raise RawDataError(
                f"{path}: noise acquisition {i} stores {d.size} values but its header says {c} coils x "
                f"{s} samples; the file is corrupt"
            )
        parts.append(np.asarray(d, dtype=np.float32).view(np.complex64).reshape(c, s))
    noise = np.concatenate(parts, axis=1) if parts else np.zeros((n_coils, 0), np.complex64)
    if not np.all(np.isfinite(noise.view(np.float32))):
        raise RawDataError(f"{path}: the noise scan holds NaN/Inf samples; re-export the raw data")
    dwell = head["sample_time_us"].astype(np.float64)
    dwell = dwell[dwell > 0]
    return noise, (float(dwell[0]) if dwell.size else None)


def group_frames(path: Path, head: np.ndarray, n_frames: int | None) -> tuple[np.ndarray, int, int, int]:
    """File-order grouping of readouts by (slice, frame).

    Args:
        head: acquisition headers of the imaging readouts.
        n_frames: the header's frame count T (flip angles), or ``None`` to take it from the data.

    Returns:
        ``order`` (indices that sort the readouts by slice, frame and file order, so that
        ``x[order].reshape(n_slices, T, R, ...)``), ``n_slices``, ``T`` and ``R`` (readouts
        per frame).

    Raises:
        RawDataError: frame indices beyond T, missing slices or frames, or frames with
            differing readout counts.
    """
    sl = head["idx"]["slice"].astype(np.int64)
    rep = head["idx"]["repetition"].astype(np.int64)
    n_frames_file = int(rep.max()) + 1
    T = n_frames_file if n_frames is None else int(n_frames)
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
    if np.any(counts == 0):
        s_bad, t_bad = (int(v[0]) for v in np.nonzero(counts == 0))
        if n_frames_file < T and np.all(counts[:, n_frames_file:] == 0):
            raise RawDataError(
                f"{path}: the header has {T} flip angles but the acquisitions hold only {n_frames_file} "
                "frames; the flip-angle count must equal the number of frames"
            )
        extra = ""
        if np.any(counts > counts[counts > 0].min()):
            s_more, t_more = (int(v[0]) for v in np.nonzero(counts == counts.max()))
            extra = (
                f"; slice {s_more}, frame {t_more} has {int(counts.max())} readouts (check idx.repetition: "
                "the frame index of each readout)"
            )
        raise RawDataError(
            f"{path}: {int((counts == 0).sum())} frame(s) missing (first: slice {s_bad}, frame {t_bad}); "
            f"every slice needs all {T} frames{extra}"
        )
    R = int(counts[0, 0])
    if np.any(counts != R):
        s_bad, t_bad = (int(v[0]) for v in np.nonzero(counts != R))
        raise RawDataError(
            f"{path}: slice {s_bad}, frame {t_bad} has {int(counts[s_bad, t_bad])} readout(s) but slice 0, "
            f"frame 0 has {R}; every (slice, frame) must hold the same number of readouts "
            f"({int((counts != R).sum())} frame(s) differ)"
        )
    order = np.lexsort((np.arange(sl.size), rep, sl))
    return order, n_sl, T, R
