"""Writing ISMRMRD raw data (``raw.h5``, data contract sections 2 and 5), atomically.

The acquisitions are built with the ``ismrmrd`` package (:class:`ismrmrd.Acquisition`) and
stored in the ``dataset/data`` compound array in one write: the same bytes as
``Dataset.append_acquisition`` one by one, without resizing the array once per readout.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from mrf_monai.io.atomic import atomic_write_path
from mrf_monai.io.raw_header import build_header
from mrf_monai.io.raw_records import NOISE_FLAG
from mrf_monai.io.raw_subject import RawSubject

__all__ = ["write_raw", "NOISE_SAMPLES_PER_ACQUISITION"]

_ACQ_FIRST_IN_SLICE = 7
_ACQ_LAST_IN_SLICE = 8
_ACQ_LAST_IN_MEASUREMENT = 25
#: Noise scans are split into acquisitions of at most this many samples (``number_of_samples``
#: is a 16-bit field).
NOISE_SAMPLES_PER_ACQUISITION = 16384


def _store(records: np.ndarray, n: int, acq, dtype_head) -> None:
    records[n]["head"] = np.frombuffer(acq.getHead(), dtype=dtype_head)[0]
    records[n]["data"] = acq.data.view(np.float32).reshape(-1)
    records[n]["traj"] = acq.traj.view(np.float32).reshape(-1)


def write_raw(path: str | os.PathLike, subject: RawSubject, include_trajectory: bool = True) -> Path:
    """Write ``subject`` as an ISMRMRD file (data contract sections 2 and 5), atomically.

    Noise scans first (``subject.noise``, flag ``ACQ_IS_NOISE_MEASUREMENT``, no trajectory),
    then one :class:`ismrmrd.Acquisition` per readout: for each slice and frame its
    ``readouts_per_frame`` readouts in order, with ``idx.slice``, ``idx.repetition = t``,
    ``idx.kspace_encode_step_1 = interleaf``, ``data (C, S)``, ``traj (S, 2)``,
    ``sample_time_us`` and the slice geometry.

    Args:
        path: the file to write.
        subject: the raw data.
        include_trajectory: store each readout's ``traj``; ``False`` writes acquisitions
            without one, as scanner converters often do (the trajectory then has to come from a
            trajectory file, data contract section 5: ``read_raw(path, trajectory=FILE)``).

    Returns:
        the path written.
    """
    import ismrmrd
    from ismrmrd import xsd
    from ismrmrd.hdf5 import acquisition_dtype, acquisition_header_dtype

    path = Path(path)
    if not np.all(np.isfinite(subject.kspace.view(np.float32))) or not np.all(np.isfinite(subject.traj)):
        raise ValueError(f"refusing to write {path}: k-space or trajectory holds NaN/Inf values")
    if subject.noise is not None and not np.all(np.isfinite(subject.noise.view(np.float32))):
        raise ValueError(f"refusing to write {path}: the noise scan holds NaN/Inf values")
    if subject.samples_per_readout > 65535:
        raise ValueError(
            f"refusing to write {path}: {subject.samples_per_readout} samples per readout exceed ISMRMRD's "
            "16-bit number_of_samples; set readouts_per_frame"
        )
    xml = xsd.ToXML(build_header(subject))
    n_sl, n_c, n_t, _ = subject.kspace.shape
    n_r, n_s = int(subject.readouts_per_frame), subject.samples_per_readout
    noise = subject.noise
    noise_chunks = []
    if noise is not None and noise.shape[1] > 0:
        noise_chunks = [
            noise[:, i : i + NOISE_SAMPLES_PER_ACQUISITION]
            for i in range(0, noise.shape[1], NOISE_SAMPLES_PER_ACQUISITION)
        ]
    records = np.empty(len(noise_chunks) + n_sl * n_t * n_r, dtype=acquisition_dtype)
    n = 0
    for chunk in noise_chunks:
        acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(chunk))
        acq.version = 1
        acq.scan_counter = n
        acq.set_flag(NOISE_FLAG)
        if subject.noise_dwell_us is not None:
            acq.sample_time_us = subject.noise_dwell_us
        _store(records, n, acq, acquisition_header_dtype)
        n += 1
    pos = subject.position_mm.astype(np.float32)
    dirs = [d.astype(np.float32) for d in (subject.read_dir, subject.phase_dir, subject.slice_dir)]
    kspace = subject.kspace.reshape(n_sl, n_c, n_t, n_r, n_s)
    traj = subject.traj.reshape(n_sl, n_t, n_r, n_s, 2)
    for s in range(n_sl):
        for t in range(n_t):
            for r in range(n_r):
                acq = ismrmrd.Acquisition.from_array(
                    np.ascontiguousarray(kspace[s, :, t, r]),
                    np.ascontiguousarray(traj[s, t, r]) if include_trajectory else None,
                )
                acq.version = 1
                acq.scan_counter = n
                acq.idx.slice = s
                acq.idx.repetition = t
                acq.idx.kspace_encode_step_1 = int(subject.interleaf[s, t, r])
                if subject.dwell_us is not None:
                    acq.sample_time_us = subject.dwell_us
                acq.position[:] = pos[s].tolist()
                acq.read_dir[:] = dirs[0].tolist()
                acq.phase_dir[:] = dirs[1].tolist()
                acq.slice_dir[:] = dirs[2].tolist()
                if t == 0 and r == 0:
                    acq.set_flag(_ACQ_FIRST_IN_SLICE)
                if t == n_t - 1 and r == n_r - 1:
                    acq.set_flag(_ACQ_LAST_IN_SLICE)
                    if s == n_sl - 1:
                        acq.set_flag(_ACQ_LAST_IN_MEASUREMENT)
                _store(records, n, acq, acquisition_header_dtype)
                n += 1
    with atomic_write_path(path) as tmp:
        with ismrmrd.Dataset(str(tmp), "dataset", mode="w") as dset:
            dset.write_xml_header(xml.encode() if isinstance(xml, str) else xml)
        # Same layout as Dataset.append_acquisition (ismrmrd.hdf5.acquisition_dtype, resizable
        # 1D array), written at once: appending one by one costs ~10 ms per readout.
        with h5py.File(tmp, "a") as f:
            f["dataset"].create_dataset("data", data=records, maxshape=(None,), chunks=True)
    return path
