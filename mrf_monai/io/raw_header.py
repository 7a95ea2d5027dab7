"""The ISMRMRD XML header of MRF raw data (data contract section 2): sequence, matrix, FOV.

Built and parsed with the ``ismrmrd`` package's header classes (``ismrmrd.xsd``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrf_monai.io.raw_subject import DEFAULT_LARMOR_HZ, RawDataError, RawSubject
from mrf_monai.physics.sequence import SUPPORTED_SEQUENCE_TYPES, MRFSequence

__all__ = ["sequence_to_header", "sequence_from_header", "build_header", "HeaderFields", "header_fields"]


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


def _trajectory_type(name: str):
    from ismrmrd import xsd

    try:
        return xsd.trajectoryType(name)
    except ValueError:
        return xsd.trajectoryType.OTHER


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
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            receiverChannels=subject.n_coils,
            relativeReceiverNoiseBandwidth=subject.relative_noise_bandwidth,
        ),
        experimentalConditions=xsd.experimentalConditionsType(
            H1resonanceFrequency_Hz=int(round(subject.larmor_hz))
        ),
        encoding=[
            xsd.encodingType(
                encodedSpace=space(),
                reconSpace=space(),
                encodingLimits=limits,
                trajectory=_trajectory_type(subject.trajectory_type),
            )
        ],
        sequenceParameters=sequence_to_header(subject.sequence),
    )


@dataclass(frozen=True)
class HeaderFields:
    """What :func:`read_raw` takes from the header besides the sequence."""

    matrix: tuple[int, int]
    fov_mm: tuple[float, float, float]
    larmor_hz: float
    trajectory_type: str
    relative_noise_bandwidth: float | None


def header_fields(header, path: Path) -> HeaderFields:
    """Matrix, FOV, Larmor frequency, trajectory type and noise bandwidth of a header.

    Raises:
        RawDataError: no encoding, matrix size or FOV missing or not positive, 3D matrix.
    """
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
    traj_type = header.encoding[0].trajectory
    traj_name = getattr(traj_type, "value", traj_type) or "other"
    asi = header.acquisitionSystemInformation
    bandwidth = None
    if asi is not None and asi.relativeReceiverNoiseBandwidth is not None:
        bandwidth = float(asi.relativeReceiverNoiseBandwidth)
        if not np.isfinite(bandwidth) or bandwidth <= 0:
            bandwidth = None
    return HeaderFields(
        (int(ms.x), int(ms.y)), (float(fov.x), float(fov.y), float(fov.z)), larmor, str(traj_name), bandwidth
    )
