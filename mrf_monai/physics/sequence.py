"""MRF sequence description: flip angles, repetition times, echo and inversion times.

The sequence is the single source of truth for the physics: the dictionary, the simulator
and the ISMRMRD header (``sequenceParameters``, see ``mrf_monai.io.ismrmrd``) are all
derived from it. Angles are in degrees and times in milliseconds, as in the ISMRMRD header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MRFSequence", "SUPPORTED_SEQUENCE_TYPES", "fisp_mrf_jiang2015"]

#: Sequence types whose signal model is implemented. Anything else is a clear error.
SUPPORTED_SEQUENCE_TYPES = ("FISP",)


@dataclass(frozen=True)
class MRFSequence:
    """An MRF acquisition schedule.

    Args:
        sequence_type: signal model; ``"FISP"`` is an unbalanced, gradient-spoiled steady
            state sequence with one full dephasing cycle per TR.
        flip_angle_deg: flip angle of each time frame, degrees, shape (T,).
        tr_ms: repetition time of each frame, milliseconds, shape (T,).
        te_ms: echo time after each excitation, milliseconds.
        ti_ms: time from an ideal 180-degree inversion to the first excitation,
            milliseconds; ``None`` means no inversion.
    """

    sequence_type: str
    flip_angle_deg: np.ndarray
    tr_ms: np.ndarray
    te_ms: float
    ti_ms: float | None = None
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.sequence_type not in SUPPORTED_SEQUENCE_TYPES:
            raise ValueError(
                f"unknown MRF sequence type {self.sequence_type!r}; supported: "
                f"{', '.join(SUPPORTED_SEQUENCE_TYPES)}"
            )
        fa = np.asarray(self.flip_angle_deg, dtype=np.float64).reshape(-1)
        tr = np.asarray(self.tr_ms, dtype=np.float64).reshape(-1)
        if fa.size == 0:
            raise ValueError("an MRF sequence needs at least one flip angle")
        if tr.size == 1:
            tr = np.full_like(fa, tr[0])
        if tr.size != fa.size:
            raise ValueError(
                f"TR has {tr.size} values but there are {fa.size} flip angles; give one TR "
                "per time frame or a single constant TR"
            )
        if not (np.all(np.isfinite(fa)) and np.all(np.isfinite(tr))):
            raise ValueError("flip angles and TRs must be finite numbers")
        if np.any(tr <= 0):
            raise ValueError("every TR must be positive (milliseconds)")
        te = float(self.te_ms)
        if not np.isfinite(te) or te < 0 or te > tr.min():
            raise ValueError(f"TE = {te} ms must lie in [0, min TR = {tr.min()} ms]")
        ti = None if self.ti_ms is None or float(self.ti_ms) == 0.0 else float(self.ti_ms)
        if ti is not None and (not np.isfinite(ti) or ti < 0):
            raise ValueError(f"TI = {ti} ms must be a non-negative number of milliseconds")
        fa.setflags(write=False)
        tr.setflags(write=False)
        object.__setattr__(self, "flip_angle_deg", fa)
        object.__setattr__(self, "tr_ms", tr)
        object.__setattr__(self, "te_ms", te)
        object.__setattr__(self, "ti_ms", ti)

    @property
    def n_frames(self) -> int:
        """Number of time frames T."""
        return int(self.flip_angle_deg.size)

    def __len__(self) -> int:
        return self.n_frames

    def truncate(self, n_frames: int) -> MRFSequence:
        """The same sequence keeping only its first ``n_frames`` frames.

        "Acceleration 5" of a 1000-frame protocol is ``truncate(200)``.
        """
        if not 1 <= n_frames <= self.n_frames:
            raise ValueError(f"cannot keep {n_frames} frames of a {self.n_frames}-frame sequence")
        return MRFSequence(
            self.sequence_type,
            self.flip_angle_deg[:n_frames],
            self.tr_ms[:n_frames],
            self.te_ms,
            self.ti_ms,
            name=self.name,
        )

    def to_dict(self) -> dict:
        """JSON-ready dictionary (the ``sequence`` attribute of the dictionary file)."""
        tr = self.tr_ms
        return {
            "sequence_type": self.sequence_type,
            "flip_angle_deg": [float(a) for a in self.flip_angle_deg],
            "tr_ms": float(tr[0]) if np.all(tr == tr[0]) else [float(t) for t in tr],
            "te_ms": self.te_ms,
            "ti_ms": self.ti_ms,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, d: dict) -> MRFSequence:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` naming a missing field."""
        missing = [k for k in ("sequence_type", "flip_angle_deg", "tr_ms", "te_ms") if k not in d]
        if missing:
            raise ValueError(f"sequence description lacks field(s): {', '.join(missing)}")
        return cls(
            str(d["sequence_type"]),
            np.asarray(d["flip_angle_deg"], dtype=np.float64),
            np.asarray(d["tr_ms"], dtype=np.float64),
            float(d["te_ms"]),
            None if d.get("ti_ms") in (None, 0, 0.0) else float(d["ti_ms"]),
            name=str(d.get("name", "")),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> MRFSequence:
        return cls.from_dict(json.loads(text))

    def key(self) -> str:
        """Stable hash of the physics (not the name): used to key dictionary caches."""
        import hashlib

        payload = json.dumps({k: v for k, v in self.to_dict().items() if k != "name"}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def differences(self, other: MRFSequence, rtol: float = 0.0) -> list[str]:
        """What differs between this sequence and ``other``, in words, this one's value first.

        For messages such as "the dictionary was built for another sequence: 250 frames vs
        200, flip angles (differ by up to 12 deg over the first 200 frames), TR 10 ms vs 12 ms".
        Flip angles and per-frame TRs are compared over the frames both have.

        Args:
            other: the sequence to compare with.
            rtol: relative tolerance of every comparison (0: exact, as ``==``).

        Returns:
            one entry per differing aspect (sequence type, frames, flip angles, TR, TE, TI);
            empty when the sequences agree (``==`` for ``rtol = 0``). The name is not compared.
        """

        def close(a: np.ndarray | float, b: np.ndarray | float) -> bool:
            a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            return bool(np.all(np.abs(a - b) <= rtol * np.maximum(np.abs(a), np.abs(b))))

        def fmt(a: float, b: float) -> tuple[str, str]:
            sa, sb = f"{a:.6g}", f"{b:.6g}"
            return (repr(a), repr(b)) if sa == sb else (sa, sb)

        out: list[str] = []
        if self.sequence_type != other.sequence_type:
            out.append(f"sequence type {self.sequence_type} vs {other.sequence_type}")
        n_a, n_b = self.n_frames, other.n_frames
        n = min(n_a, n_b)
        common = "" if n_a == n_b else f" over the first {n} frames"
        if n_a != n_b:
            out.append(f"{n_a} frames vs {n_b}")
        fa_a, fa_b = self.flip_angle_deg[:n], other.flip_angle_deg[:n]
        if not close(fa_a, fa_b):
            out.append(f"flip angles (differ by up to {float(np.abs(fa_a - fa_b).max()):.3g} deg{common})")
        tr_a, tr_b = self.tr_ms, other.tr_ms
        const_a, const_b = bool(np.all(tr_a == tr_a[0])), bool(np.all(tr_b == tr_b[0]))
        if const_a and const_b:
            if not close(tr_a[0], tr_b[0]):
                a, b = fmt(float(tr_a[0]), float(tr_b[0]))
                out.append(f"TR {a} ms vs {b} ms")
        elif not close(tr_a[:n], tr_b[:n]):
            diff = float(np.abs(tr_a[:n] - tr_b[:n]).max())
            out.append(f"TR (per-frame values differ by up to {diff:.3g} ms{common})")
        if not close(self.te_ms, other.te_ms):
            a, b = fmt(self.te_ms, other.te_ms)
            out.append(f"TE {a} ms vs {b} ms")
        if (self.ti_ms is None) != (other.ti_ms is None):
            a = "none (no inversion)" if self.ti_ms is None else f"{self.ti_ms:.6g} ms"
            b = "none (no inversion)" if other.ti_ms is None else f"{other.ti_ms:.6g} ms"
            out.append(f"TI {a} vs {b}")
        elif self.ti_ms is not None and not close(self.ti_ms, other.ti_ms):
            a, b = fmt(self.ti_ms, float(other.ti_ms))
            out.append(f"TI {a} ms vs {b} ms")
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MRFSequence):
            return NotImplemented
        return (
            self.sequence_type == other.sequence_type
            and np.array_equal(self.flip_angle_deg, other.flip_angle_deg)
            and np.array_equal(self.tr_ms, other.tr_ms)
            and self.te_ms == other.te_ms
            and self.ti_ms == other.ti_ms
        )

    __hash__ = None  # type: ignore[assignment]


def fisp_mrf_jiang2015(n_frames: int = 1000) -> MRFSequence:
    """The FISP-MRF protocol of MRF-IDDPM (Jiang et al. 2015 style schedule).

    Five half-sine flip-angle lobes over 1000 TRs peaking near 35, 43, 70, 45 and 27
    degrees, separated by short low-angle gaps; TR 10 ms, TE 1.908 ms, TI 18 ms. The exact
    lobe lengths of the original schedule are not published in machine-readable form; this
    reproduction keeps its structure (lobe count, peaks, a floor of 5 degrees, 1000 TRs).

    Args:
        n_frames: number of leading frames to keep (200 = the paper's "acceleration 5").
    """
    peaks = (35.0, 43.0, 70.0, 45.0, 27.0)
    lobe_len = 200
    floor = 5.0
    t = np.arange(lobe_len)
    lobes = [floor + (p - floor) * np.sin(np.pi * (t + 0.5) / lobe_len) for p in peaks]
    fa = np.concatenate(lobes)
    seq = MRFSequence("FISP", fa, np.full(fa.size, 10.0), 1.908, 18.0, name="FISP-MRF Jiang2015")
    return seq.truncate(n_frames) if n_frames != seq.n_frames else seq
