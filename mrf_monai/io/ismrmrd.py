"""ISMRMRD raw data (``raw.h5``): the subject's k-space, trajectory, sequence and geometry.

The file layout is fixed by ``docs/data-contract.md`` sections 2 and 5. This module gathers the
public names of the raw-data modules:

* :mod:`mrf_monai.io.raw_subject`: :class:`RawSubject` (several readouts per frame
  concatenated along the sample axis, optional noise scan and density compensation) and
  :class:`RawDataError`;
* :mod:`mrf_monai.io.raw_header`: the XML header (sequence, matrix, FOV);
* :mod:`mrf_monai.io.raw_read`: :func:`read_raw` (bulk ``h5py`` read, trajectory files,
  trajectory checks);
* :mod:`mrf_monai.io.raw_write`: :func:`write_raw` (``ismrmrd`` package, atomic);
* :mod:`mrf_monai.io.trajectory_file`: trajectory files (data contract section 5).
"""

from __future__ import annotations

from mrf_monai.io.raw_header import build_header, sequence_from_header, sequence_to_header
from mrf_monai.io.raw_read import read_raw
from mrf_monai.io.raw_subject import DEFAULT_LARMOR_HZ, RawDataError, RawSubject, lps_to_ras
from mrf_monai.io.raw_write import write_raw
from mrf_monai.io.trajectory_file import (
    TRAJECTORY_UNITS,
    TrajectoryData,
    read_trajectory_file,
    write_trajectory_file,
)

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
    "TRAJECTORY_UNITS",
    "TrajectoryData",
    "read_trajectory_file",
    "write_trajectory_file",
]
