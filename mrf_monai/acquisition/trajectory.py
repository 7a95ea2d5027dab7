"""Spiral and radial k-space trajectories for MR Fingerprinting.

Spiral design (one interleaf, before rotation), in cycles per pixel with the k-space edge at 0.5:

    k(theta) = k_max (theta / theta_max) ** alpha * exp(1j theta),  0 <= theta <= theta_max

``alpha = 1`` is an Archimedean spiral (uniform density); ``alpha > 1`` (the variable-density
exponent) packs the turns closer together near the centre, so the centre is sampled more
densely than the edge. ``theta_max`` is chosen so that ``n_interleaves_full`` equally rotated
interleaves sample the *edge* of k-space at the Nyquist rate: the radial distance between
neighbouring turns of the union of all interleaves at ``|k| = k_max`` is ``1 / matrix``
(one over the field of view, in cycles per pixel), which gives

    theta_max = 2 pi alpha k_max matrix / n_interleaves_full.

The ``samples_per_readout`` samples of the readout are placed at equal arc length along the
curve (a gradient-amplitude-limited readout; slew-rate limits near the centre are ignored, which is
harmless for a reconstruction reference). By default ``n_interleaves_full`` is the smallest
number for which that arc-length spacing is at most ``1 / matrix`` too, i.e. the readout
itself is Nyquist sampled.

MRF acquires one interleaf per time frame: :func:`mrf_spiral_trajectory` rotates the design by
the golden angle from frame to frame (optionally snapped to a grid of ``n_interleaves``
rotations), or cycles sequentially through ``n_interleaves`` equally spaced rotations (the
MRF-IDDPM protocol uses 377 rotations of a 920-sample interleaf on a 230 x 230 matrix).

Protocols with several readouts per frame: :func:`golden_angle_radial` gives golden-angle radial
spokes, ``spokes_per_frame`` per frame (``(T, R, S, 2)``; ``RawSubject`` and the operators take
the frame-wise layout ``(T, R * S, 2)``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "GOLDEN_ANGLE_RAD",
    "RADIAL_GOLDEN_ANGLE_RAD",
    "spiral_interleaf",
    "default_n_interleaves_full",
    "mrf_spiral_trajectory",
    "fully_sampled_spiral",
    "radial_trajectory",
    "golden_angle_radial",
]

#: golden angle 2 pi / phi**2 (about 137.51 degrees), the rotation between successive frames
GOLDEN_ANGLE_RAD: float = math.pi * (3.0 - math.sqrt(5.0))
#: radial golden angle pi / phi (about 111.25 degrees): the rotation between successive spokes
RADIAL_GOLDEN_ANGLE_RAD: float = math.pi / ((1.0 + math.sqrt(5.0)) / 2.0)

_K_MAX = 0.5


def _spiral_arc(matrix: int, n_interleaves_full: int, vd_exponent: float, n_dense: int = 20000):
    """Dense samples of the design curve and its cumulative arc length."""
    theta_max = 2.0 * math.pi * vd_exponent * _K_MAX * matrix / n_interleaves_full
    theta = np.linspace(0.0, theta_max, n_dense)
    r = _K_MAX * (theta / theta_max) ** vd_exponent
    k = r * np.exp(1j * theta)
    arc = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(k)))])
    return theta, r, arc


def default_n_interleaves_full(matrix: int, samples_per_readout: int, vd_exponent: float = 1.5) -> int:
    """Smallest interleaf count whose design has a Nyquist-sampled readout.

    The arc-length spacing of ``samples_per_readout`` samples along one interleaf is at most
    ``1 / matrix`` cycles per pixel for the returned number of interleaves.
    """
    lo, hi = 1, 4 * matrix
    while lo < hi:
        mid = (lo + hi) // 2
        _, _, arc = _spiral_arc(matrix, mid, vd_exponent, n_dense=4000)
        if arc[-1] / (samples_per_readout - 1) <= 1.0 / matrix:
            hi = mid
        else:
            lo = mid + 1
    return lo


def spiral_interleaf(
    matrix: int = 230,
    samples_per_readout: int = 920,
    n_interleaves_full: int | None = None,
    vd_exponent: float = 1.5,
) -> np.ndarray:
    """One variable-density spiral interleaf, unrotated.

    Args:
        matrix: image matrix size N (the field of view is N pixels).
        samples_per_readout: readout samples S per interleaf.
        n_interleaves_full: interleaves needed for Nyquist sampling at the k-space edge
            (``None``: :func:`default_n_interleaves_full`).
        vd_exponent: variable-density exponent ``alpha`` (1 = Archimedean; > 1 denser centre).

    Returns:
        ``(samples_per_readout, 2)`` float32 ``(kx, ky)`` in cycles per pixel, from the centre
        to ``|k| = 0.5``.
    """
    if matrix < 2 or samples_per_readout < 2:
        raise ValueError(f"matrix and samples_per_readout must be >= 2, got {matrix}, {samples_per_readout}.")
    if vd_exponent < 1.0:
        raise ValueError(f"vd_exponent must be >= 1 (1 = uniform density), got {vd_exponent}.")
    if n_interleaves_full is None:
        n_interleaves_full = default_n_interleaves_full(matrix, samples_per_readout, vd_exponent)
    if n_interleaves_full < 1:
        raise ValueError(f"n_interleaves_full must be >= 1, got {n_interleaves_full}.")
    theta, r, arc = _spiral_arc(matrix, n_interleaves_full, vd_exponent)
    s = np.linspace(0.0, arc[-1], samples_per_readout)
    th = np.interp(s, arc, theta)
    rr = np.interp(s, arc, r)
    return np.stack([rr * np.cos(th), rr * np.sin(th)], axis=-1).astype(np.float32)


def _rotate(k: np.ndarray, angles_rad: np.ndarray) -> np.ndarray:
    c = np.cos(angles_rad)[:, None]
    s = np.sin(angles_rad)[:, None]
    kx, ky = k[None, :, 0], k[None, :, 1]
    return np.stack([c * kx - s * ky, s * kx + c * ky], axis=-1).astype(np.float32)


def mrf_spiral_trajectory(
    n_frames: int,
    matrix: int = 230,
    samples_per_readout: int = 920,
    n_interleaves_full: int | None = None,
    ordering: str = "golden",
    n_interleaves: int | None = None,
    vd_exponent: float = 1.5,
) -> tuple[np.ndarray, np.ndarray]:
    """MRF spiral: one rotated interleaf per time frame.

    Args:
        n_frames: number of time frames T.
        matrix, samples_per_readout, n_interleaves_full, vd_exponent: the interleaf design
            (:func:`spiral_interleaf`).
        ordering: ``"golden"``: frame t is rotated by ``t * GOLDEN_ANGLE_RAD``; with
            ``n_interleaves`` given the rotation is snapped to the nearest of
            ``n_interleaves`` equally spaced rotations. ``"sequential"``: frame t uses rotation
            ``t mod n_interleaves`` of ``n_interleaves`` equally spaced ones (default
            ``n_interleaves_full``), e.g. 377 in the MRF-IDDPM protocol.
        n_interleaves: number of distinct rotations (see ``ordering``).

    Returns:
        ``traj`` ``(T, S, 2)`` float32 in cycles per pixel and ``interleaf_index`` ``(T,)``
        int64: which rotation each frame uses (rotation angle
        ``2 pi index / n_interleaves``; for continuous golden-angle ordering the index is t
        and the angle ``t * GOLDEN_ANGLE_RAD``).
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}.")
    if n_interleaves_full is None:
        n_interleaves_full = default_n_interleaves_full(matrix, samples_per_readout, vd_exponent)
    base = spiral_interleaf(matrix, samples_per_readout, n_interleaves_full, vd_exponent)
    t = np.arange(n_frames)
    if ordering == "golden":
        if n_interleaves is None:
            index = t.astype(np.int64)
            angles = t * GOLDEN_ANGLE_RAD
        else:
            index = np.round(t * GOLDEN_ANGLE_RAD / (2 * math.pi) * n_interleaves).astype(np.int64)
            index = np.mod(index, n_interleaves)
            angles = 2 * math.pi * index / n_interleaves
    elif ordering == "sequential":
        n_rot = n_interleaves_full if n_interleaves is None else n_interleaves
        index = np.mod(t, n_rot).astype(np.int64)
        angles = 2 * math.pi * index / n_rot
    else:
        raise ValueError(f"ordering must be 'golden' or 'sequential', got {ordering!r}.")
    return _rotate(base, np.mod(angles, 2 * math.pi)), index


def fully_sampled_spiral(
    n_frames: int = 1,
    matrix: int = 230,
    samples_per_readout: int = 920,
    n_interleaves_full: int | None = None,
    vd_exponent: float = 1.5,
) -> np.ndarray:
    """Fully sampled spiral frames: every frame holds all ``n_interleaves_full`` rotations.

    Returns ``(T, n_interleaves_full * samples_per_readout, 2)`` float32 in cycles per pixel
    (the same points for every frame), for references and tests.
    """
    if n_interleaves_full is None:
        n_interleaves_full = default_n_interleaves_full(matrix, samples_per_readout, vd_exponent)
    base = spiral_interleaf(matrix, samples_per_readout, n_interleaves_full, vd_exponent)
    angles = 2 * math.pi * np.arange(n_interleaves_full) / n_interleaves_full
    one = _rotate(base, angles).reshape(-1, 2)
    return np.broadcast_to(one, (n_frames, *one.shape)).copy()


def radial_trajectory(n_spokes: int, samples_per_readout: int, golden: bool = False) -> np.ndarray:
    """Radial spokes through the centre, ``(n_spokes, samples_per_readout, 2)`` float32 in
    ``[-0.5, 0.5)``.

    Spokes are equally spaced over 180 degrees, or rotated by the radial golden angle
    (about 111.25 degrees) when ``golden``.
    """
    r = (np.arange(samples_per_readout) - samples_per_readout // 2) / samples_per_readout
    if golden:
        angles = np.arange(n_spokes) * RADIAL_GOLDEN_ANGLE_RAD
    else:
        angles = np.arange(n_spokes) * math.pi / n_spokes
    k = np.stack([r, np.zeros_like(r)], axis=-1)
    return _rotate(k, angles)


def golden_angle_radial(
    n_frames: int, spokes_per_frame: int, samples_per_readout: int
) -> tuple[np.ndarray, np.ndarray]:
    """Golden-angle radial MRF trajectory with several spokes per time frame.

    Spoke ``m = t * spokes_per_frame + r`` (frame ``t``, readout ``r``) is rotated by
    ``m * RADIAL_GOLDEN_ANGLE_RAD`` (about 111.25 degrees), so consecutive spokes, and the
    spokes of one frame, cover k-space nearly uniformly for any count. Each spoke has
    ``S = samples_per_readout`` samples through the centre at ``(i - S // 2) / S`` cycles per
    pixel (from -0.5 up to just below 0.5; ``S >= matrix`` samples the spoke at the Nyquist
    rate). About ``pi / 2 * matrix`` spokes sample a frame fully at the k-space edge.

    Args:
        n_frames: number of time frames T.
        spokes_per_frame: spokes (readouts) per frame R.
        samples_per_readout: samples per spoke S.

    Returns:
        ``traj`` ``(T, R, S, 2)`` float32 in cycles per pixel (``traj.reshape(T, R * S, 2)``
        is the frame-wise layout of ``RawSubject.traj``) and ``index`` ``(T, R)`` int64: the
        spoke counter ``m`` of each readout (its interleaf index).
    """
    if n_frames < 1 or spokes_per_frame < 1:
        raise ValueError(f"n_frames and spokes_per_frame must be >= 1, got {n_frames}, {spokes_per_frame}.")
    if samples_per_readout < 2:
        raise ValueError(f"samples_per_readout must be >= 2, got {samples_per_readout}.")
    spokes = radial_trajectory(n_frames * spokes_per_frame, samples_per_readout, golden=True)
    index = np.arange(n_frames * spokes_per_frame, dtype=np.int64).reshape(n_frames, spokes_per_frame)
    return spokes.reshape(n_frames, spokes_per_frame, samples_per_readout, 2), index
