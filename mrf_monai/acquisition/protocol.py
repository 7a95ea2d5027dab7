"""The MRF protocol record: what a model, a dictionary or a simulation was made for.

A :class:`Protocol` holds everything of an acquisition that decides what the reconstruction
sees: the sequence (flip angles, TR, TE, TI), the per-frame k-space trajectory of a slice
(any number of readouts per frame, in the frame-wise layout ``(T, R * S, 2)`` of
``RawSubject.traj``), the encoded matrix, the field of view and the receive coils. It is
derived from raw data (:meth:`Protocol.from_raw`), stored as JSON (:meth:`Protocol.to_dict`,
the trajectory as base64 float32), identified by a short stable hash (:meth:`Protocol.key`)
and compared in words (:meth:`Protocol.differences`), for messages such as "the model was
trained for protocol 3f2a9c01b7e4; the raw data differ in: 250 frames vs 200, flip angles,
trajectory (radial, 4 readouts per frame vs spiral, 1)".

Canonical content (key and comparisons): flip angles, TR, TE and TI rounded to 1e-4 (degrees,
ms), the trajectory to 1e-5 cycles per pixel, the FOV to 1e-3 mm; the trajectory type label,
the interleaf indices and the sequence name are descriptive and not compared.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from mrf_monai.physics.sequence import MRFSequence

__all__ = ["Protocol", "PROTOCOL_FORMAT", "PROTOCOL_ASPECTS"]

#: ``format`` entry of :meth:`Protocol.to_dict`.
PROTOCOL_FORMAT = "mrf_monai.protocol/1"
#: Aspects that :meth:`Protocol.differences` can be told to ignore.
PROTOCOL_ASPECTS = ("sequence", "trajectory", "matrix", "fov", "coils")

_SEQ_DECIMALS = 4  # degrees and ms
_TRAJ_SCALE = 1e5  # cycles per pixel -> integer grid of the key
_FOV_DECIMALS = 3  # mm


def _rounded_sequence(seq: MRFSequence) -> MRFSequence:
    r = _SEQ_DECIMALS
    return MRFSequence(
        seq.sequence_type,
        np.round(seq.flip_angle_deg, r),
        np.round(seq.tr_ms, r),
        round(seq.te_ms, r),
        None if seq.ti_ms is None else round(seq.ti_ms, r),
    )


def _encode_array(a: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.ascontiguousarray(a, dtype="<f4").tobytes(), 6)).decode("ascii")


def _decode_array(text: str, shape: tuple[int, ...]) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(text.encode("ascii")))
    return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)


@dataclass(frozen=True, eq=False)
class Protocol:
    """An MRF acquisition protocol (module docstring).

    Args:
        sequence: the MRF sequence (T frames).
        trajectory: ``(T, R * S, 2)`` float32 ``(kx, ky)`` in cycles per pixel: the ``R``
            readouts of ``S`` samples of each frame one after the other (one slice).
        readouts_per_frame: ``R``.
        matrix: encoded matrix ``(Nx, Ny)``.
        fov_mm: field of view ``(x, y, z)`` in mm (z: slice thickness).
        n_coils: receive coils.
        trajectory_type: descriptive label (``"spiral"``, ``"radial"``, ...), the header's
            ``encoding[0].trajectory``.
        interleaf: optional ``(T, R)`` interleaf index of each readout (descriptive; default
            the readout counter ``t * R + r``, see :attr:`interleaf_indices`).
    """

    sequence: MRFSequence
    trajectory: np.ndarray
    readouts_per_frame: int = 1
    matrix: tuple[int, int] = (230, 230)
    fov_mm: tuple[float, float, float] = (230.0, 230.0, 5.0)
    n_coils: int = 1
    trajectory_type: str = "spiral"
    interleaf: np.ndarray | None = None

    def __post_init__(self) -> None:
        traj = np.array(self.trajectory, dtype=np.float32)  # a private copy
        t = self.sequence.n_frames
        if traj.ndim != 3 or traj.shape[0] != t or traj.shape[2] != 2:
            raise ValueError(
                f"the protocol's trajectory must be (T, R * S, 2) with T = {t} frames of its sequence, "
                f"got {traj.shape}"
            )
        if not np.all(np.isfinite(traj)):
            raise ValueError("the protocol's trajectory holds NaN/Inf values")
        r = int(self.readouts_per_frame)
        if r < 1 or traj.shape[1] % r:
            raise ValueError(
                f"readouts_per_frame = {r} must be a positive divisor of the {traj.shape[1]} "
                "samples per frame"
            )
        traj.setflags(write=False)
        matrix = (int(self.matrix[0]), int(self.matrix[1]))
        fov = tuple(float(v) for v in self.fov_mm)
        if len(fov) != 3 or min(fov) <= 0 or min(matrix) <= 0:
            raise ValueError(f"matrix {matrix} and fov_mm {fov} must be positive (fov: x, y, z in mm)")
        if int(self.n_coils) < 1:
            raise ValueError(f"n_coils must be >= 1, got {self.n_coils}")
        interleaf = None
        if self.interleaf is not None:
            interleaf = np.array(self.interleaf, dtype=np.int64).reshape(t, r)
            interleaf.setflags(write=False)
        object.__setattr__(self, "trajectory", traj)
        object.__setattr__(self, "readouts_per_frame", r)
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "fov_mm", fov)
        object.__setattr__(self, "n_coils", int(self.n_coils))
        object.__setattr__(self, "trajectory_type", str(self.trajectory_type or "other").lower())
        object.__setattr__(self, "interleaf", interleaf)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_raw(cls, raw: Any, n_coils: int | None = None) -> Protocol:
        """The protocol of raw data (a :class:`~mrf_monai.io.ismrmrd.RawSubject`).

        Every slice must share the trajectory (within 1e-4 cycles per pixel); the protocol
        keeps slice 0's. ``n_coils`` overrides the raw data's coil count.

        Raises:
            ValueError: slices with different trajectories.
        """
        traj = np.asarray(raw.traj, dtype=np.float32)
        if traj.shape[0] > 1:
            diff = np.abs(traj - traj[:1]).reshape(traj.shape[0], -1).max(axis=1)
            if float(diff.max()) > 1e-4:
                bad = int(np.flatnonzero(diff > 1e-4)[0])
                raise ValueError(
                    f"{getattr(raw, 'path', None) or 'raw data'}: slice {bad} has another trajectory than "
                    f"slice 0 (differs by up to {float(diff[bad]):.3g} cycles per pixel); a protocol has "
                    "one trajectory"
                )
        interleaf = np.asarray(raw.interleaf)
        return cls(
            raw.sequence,
            traj[0],
            int(raw.readouts_per_frame),
            tuple(raw.matrix),
            tuple(raw.fov_mm),
            int(raw.n_coils if n_coils is None else n_coils),
            getattr(raw, "trajectory_type", "spiral"),
            interleaf[0].reshape(traj.shape[1], -1) if interleaf.ndim == 3 else interleaf[0][:, None],
        )

    @classmethod
    def default(
        cls, n_frames: int = 200, matrix: int = 230, samples_per_readout: int = 920, n_coils: int = 1
    ) -> Protocol:
        """The built-in protocol: FISP-MRF (Jiang 2015 schedule) truncated to ``n_frames``, one
        golden-angle variable-density spiral interleaf of ``samples_per_readout`` samples per
        frame, FOV 230 mm, 5 mm slices."""
        from mrf_monai.physics.sequence import fisp_mrf_jiang2015

        from .trajectory import mrf_spiral_trajectory

        traj, index = mrf_spiral_trajectory(n_frames, matrix, samples_per_readout)
        return cls(
            fisp_mrf_jiang2015(1000).truncate(n_frames),
            traj,
            1,
            (matrix, matrix),
            (230.0, 230.0, 5.0),
            n_coils,
            "spiral",
            index[:, None],
        )

    def replace(self, **changes: Any) -> Protocol:
        """A copy with some fields changed (e.g. ``n_coils=8``)."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        fields.update(changes)
        return Protocol(**fields)

    # ------------------------------------------------------------------ properties

    @property
    def n_frames(self) -> int:
        return self.sequence.n_frames

    @property
    def n_samples(self) -> int:
        """Samples per frame, all readouts (``R * S``)."""
        return int(self.trajectory.shape[1])

    @property
    def samples_per_readout(self) -> int:
        """Samples ``S`` of one readout."""
        return self.n_samples // self.readouts_per_frame

    @property
    def interleaf_indices(self) -> np.ndarray:
        """``(T, R)`` interleaf index of each readout (stored, or the readout counter)."""
        if self.interleaf is not None:
            return self.interleaf
        t, r = self.n_frames, self.readouts_per_frame
        return np.arange(t * r, dtype=np.int64).reshape(t, r)

    def readouts(self) -> np.ndarray:
        """The trajectory split into readouts: ``(T, R, S, 2)``."""
        return self.trajectory.reshape(self.n_frames, self.readouts_per_frame, self.samples_per_readout, 2)

    def summary(self) -> str:
        """One line in words, e.g. "FISP, 250 frames, radial (4 readouts x 256 samples per frame),
        64 x 64, FOV 230 x 230 x 5 mm, 8 coils (protocol 3f2a9c01b7e4)"."""
        r = self.readouts_per_frame
        fov = " x ".join(f"{v:g}" for v in self.fov_mm)
        return (
            f"{self.sequence.sequence_type}, {self.n_frames} frames, {self.trajectory_type} "
            f"({r} readout{'s' if r > 1 else ''} x {self.samples_per_readout} samples per frame), "
            f"{self.matrix[0]} x {self.matrix[1]}, FOV {fov} mm, "
            f"{self.n_coils} coil{'s' if self.n_coils > 1 else ''} "
            f"(protocol {self.key()})"
        )

    # ------------------------------------------------------------------ identity

    def _canonical_trajectory(self) -> np.ndarray:
        return np.round(self.trajectory.astype(np.float64) * _TRAJ_SCALE).astype(np.int64)

    def _canonical(self) -> dict:
        seq = _rounded_sequence(self.sequence).to_dict()
        seq.pop("name", None)
        return {
            "sequence": seq,
            "readouts_per_frame": self.readouts_per_frame,
            "trajectory_shape": list(self.trajectory.shape),
            "matrix": list(self.matrix),
            "fov_mm": [round(v, _FOV_DECIMALS) for v in self.fov_mm],
            "n_coils": self.n_coils,
        }

    def key(self) -> str:
        """Short stable hash (12 hex digits of SHA-256) of the canonical content (module docstring)."""
        h = hashlib.sha256(json.dumps(self._canonical(), sort_keys=True).encode())
        h.update(np.ascontiguousarray(self._canonical_trajectory(), dtype="<i8").tobytes())
        return h.hexdigest()[:12]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Protocol):
            return NotImplemented
        return self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    # ------------------------------------------------------------------ JSON

    def to_dict(self, include_trajectory: bool = True) -> dict:
        """JSON-safe description.

        The trajectory is stored as base64 of its zlib-compressed little-endian float32 bytes
        (``trajectory.data``) with its shape and SHA-256; ``include_trajectory=False`` keeps
        only the shape, hash and key (small enough for HDF5 attributes: the array must then be
        given to :meth:`from_dict`).
        """
        traj = {
            "shape": list(self.trajectory.shape),
            "units": "cycles_per_pixel",
            "sha256": hashlib.sha256(
                np.ascontiguousarray(self.trajectory, dtype="<f4").tobytes()
            ).hexdigest(),
        }
        if include_trajectory:
            traj["data"] = _encode_array(self.trajectory)
        out = {
            "format": PROTOCOL_FORMAT,
            "key": self.key(),
            "summary": self.summary(),
            "sequence": self.sequence.to_dict(),
            "n_frames": self.n_frames,
            "readouts_per_frame": self.readouts_per_frame,
            "samples_per_readout": self.samples_per_readout,
            "trajectory_type": self.trajectory_type,
            "trajectory": traj,
            "matrix": list(self.matrix),
            "fov_mm": list(self.fov_mm),
            "n_coils": self.n_coils,
        }
        if include_trajectory and self.interleaf is not None:
            out["interleaf"] = self.interleaf.tolist()
        return out

    @classmethod
    def from_dict(cls, d: dict, trajectory: np.ndarray | None = None) -> Protocol:
        """Inverse of :meth:`to_dict`.

        Args:
            d: the dictionary (e.g. ``json.load`` of a checkpoint's provenance).
            trajectory: the ``(T, R * S, 2)`` array when ``d`` was written without it.

        Raises:
            ValueError: a missing field, a trajectory that does not match its recorded hash
                (corrupt data, or the wrong array given), or a key that does not match the
                content.
        """
        missing = [
            k
            for k in ("sequence", "trajectory", "readouts_per_frame", "matrix", "fov_mm", "n_coils")
            if k not in d
        ]
        if missing:
            raise ValueError(f"protocol description lacks field(s): {', '.join(missing)}")
        info = d["trajectory"]
        shape = tuple(int(v) for v in info["shape"])
        if trajectory is None:
            if "data" not in info:
                raise ValueError(
                    "the protocol description holds no trajectory data (written with "
                    "include_trajectory=False); pass the trajectory array"
                )
            trajectory = _decode_array(info["data"], shape)
            digest = hashlib.sha256(np.ascontiguousarray(trajectory, dtype="<f4").tobytes()).hexdigest()
            if info.get("sha256") not in (None, digest):
                raise ValueError(
                    "the protocol's trajectory data do not match their SHA-256: the description is corrupt"
                )
        elif tuple(np.shape(trajectory)) != shape:
            raise ValueError(
                f"the trajectory given has shape {tuple(np.shape(trajectory))}, the protocol {shape}"
            )
        p = cls(
            MRFSequence.from_dict(d["sequence"]),
            trajectory,
            int(d["readouts_per_frame"]),
            tuple(d["matrix"]),
            tuple(d["fov_mm"]),
            int(d["n_coils"]),
            str(d.get("trajectory_type", "other")),
            d.get("interleaf"),
        )
        if "key" in d and d["key"] != p.key():
            raise ValueError(
                f"the protocol description says key {d['key']} but its content hashes to {p.key()} "
                "(edited, or the wrong trajectory given)"
            )
        return p

    def to_json(self, include_trajectory: bool = True) -> str:
        return json.dumps(self.to_dict(include_trajectory))

    @classmethod
    def from_json(cls, text: str, trajectory: np.ndarray | None = None) -> Protocol:
        return cls.from_dict(json.loads(text), trajectory)

    # ------------------------------------------------------------------ comparison

    def differences(self, other: Protocol, ignore: Collection[str] = ()) -> list[str]:
        """What differs between this protocol and ``other``, in words, this one's value first.

        Entries: the sequence's (:meth:`MRFSequence.differences`: frames, flip angles,
        TR, TE, TI), ``"trajectory (radial, 4 readouts per frame vs spiral, 1)"`` (or samples
        per readout, or "k-space positions differ by up to ..."), ``"matrix 64 x 64 vs 230 x
        230"``, ``"FOV ... mm vs ... mm"``, ``"8 coils vs 1"``. Compared on the canonical
        (rounded) content, so that the list is empty exactly when the keys agree.

        Args:
            other: the protocol to compare with.
            ignore: aspects to leave out (:data:`PROTOCOL_ASPECTS`: ``"sequence"``,
                ``"trajectory"``, ``"matrix"``, ``"fov"``, ``"coils"``).
        """
        unknown = set(ignore) - set(PROTOCOL_ASPECTS)
        if unknown:
            raise ValueError(
                f"unknown protocol aspect(s) {sorted(unknown)}; use {', '.join(PROTOCOL_ASPECTS)}"
            )
        out: list[str] = []
        if "sequence" not in ignore:
            out += _rounded_sequence(self.sequence).differences(_rounded_sequence(other.sequence))
        if "trajectory" not in ignore:
            out += self._trajectory_differences(other)
        if "matrix" not in ignore and self.matrix != other.matrix:
            out.append(f"matrix {self.matrix[0]} x {self.matrix[1]} vs {other.matrix[0]} x {other.matrix[1]}")
        fov_a = [round(v, _FOV_DECIMALS) for v in self.fov_mm]
        fov_b = [round(v, _FOV_DECIMALS) for v in other.fov_mm]
        if "fov" not in ignore and fov_a != fov_b:
            a, b = (" x ".join(f"{v:g}" for v in f) for f in (fov_a, fov_b))
            out.append(f"FOV {a} mm vs {b} mm")
        if "coils" not in ignore and self.n_coils != other.n_coils:
            out.append(f"{self.n_coils} coils vs {other.n_coils}")
        return out

    def _trajectory_differences(self, other: Protocol) -> list[str]:
        ra, rb = self.readouts_per_frame, other.readouts_per_frame
        n = min(self.n_frames, other.n_frames)
        a, b = self._canonical_trajectory()[:n], other._canonical_trajectory()[:n]
        same_points = a.shape == b.shape and np.array_equal(a, b)
        if ra != rb or (self.trajectory_type != other.trajectory_type and not same_points):
            return [
                f"trajectory ({self.trajectory_type}, {ra} readout{'s' if ra > 1 else ''} per frame vs "
                f"{other.trajectory_type}, {rb})"
            ]
        if self.samples_per_readout != other.samples_per_readout:
            return [
                f"trajectory ({self.samples_per_readout} vs {other.samples_per_readout} samples per readout)"
            ]
        if same_points:
            return []
        diff = float(np.abs(a - b).max()) / _TRAJ_SCALE
        frames = "" if self.n_frames == other.n_frames else f" over the first {n} frames"
        return [
            f"trajectory (same layout, k-space positions differ by up to {diff:.3g} cycles per pixel{frames})"
        ]
