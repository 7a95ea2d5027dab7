"""Variable-density spiral trajectories for MR Fingerprinting.

Design (one interleaf, before rotation), in cycles per pixel with the k-space edge at 0.5:

    k(theta) = k_max (theta / theta_max) ** alpha * exp(1j theta),  0 <= theta <= theta_max

``alpha = 1`` is an Archimedean spiral (uniform density); ``alpha > 1`` (the variable-density
exponent) packs the turns closer together near the centre, so the centre is sampled more
densely than the edge. ``theta_max`` is chosen so that ``n_interleaves_full`` equally rotated
interleaves sample the *edge* of k-space at the Nyquist rate: the radial distance between
neighbouring turns of the union of all interleaves at ``|k| = k_max`` is ``1 / matrix``
(one over the field of view, in cycles per pixel), which gives

    theta_max = 2 pi alpha k_max matrix / n_interleaves_full.

The ``n_samples`` readout samples are placed at equal arc length along the curve (a
gradient-amplitude-limited readout; slew-rate limits near the centre are ignored, which is
harmless for a reconstruction reference). By default ``n_interleaves_full`` is the smallest
number for which that arc-length spacing is at most ``1 / matrix`` too, i.e. the readout
itself is Nyquist sampled.

MRF acquires one interleaf per time frame: :func:`mrf_spiral_trajectory` rotates the design by
the golden angle from frame to frame (optionally snapped to a grid of ``n_interleaves``
rotations), or cycles sequentially through ``n_interleaves`` equally spaced rotations (the
MRF-IDDPM protocol uses 377 rotations of a 920-sample interleaf on a 230 x 230 matrix).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "GOLDEN_ANGLE_RAD",
    "spiral_interleaf",
    "default_n_interleaves_full",
    "mrf_spiral_trajectory",
    "fully_sampled_spiral",
    "radial_trajectory",
]

#: golden angle 2 pi / phi**2 (about 137.51 degrees), the rotation between successive frames
GOLDEN_ANGLE_RAD: float = math.pi * (3.0 - math.sqrt(5.0))

_K_MAX = 0.5


def _spiral_arc(matrix: int, n_interleaves_full: int, vd_exponent: float, n_dense: int = 20000):
    """Dense samples of the design curve and its cumulative arc length."""
    theta_max = 2.0 * math.pi * vd_exponent * _K_MAX * matrix / n_interleaves_full
    theta = np.linspace(0.0, theta_max, n_dense)
    r = _K_MAX * (theta / theta_max) ** vd_exponent
    k = r * np.exp(1j * theta)
    arc = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(k)))])
    return theta, r, arc


def default_n_interleaves_full(matrix: int, n_samples: int, vd_exponent: float = 1.5) -> int:
    """Smallest interleaf count whose design has a Nyquist-sampled readout.

    The arc-length spacing of ``n_samples`` samples along one interleaf is at most
    ``1 / matrix`` cycles per pixel for the returned number of interleaves.
    """
    lo, hi = 1, 4 * matrix
    while lo < hi:
        mid = (lo + hi) // 2
        _, _, arc = _spiral_arc(matrix, mid, vd_exponent, n_dense=4000)
        if arc[-1] / (n_samples - 1) <= 1.0 / matrix:
            hi = mid
        else:
            lo = mid + 1
    return lo


def spiral_interleaf(
    matrix: int = 230,
    n_samples: int = 920,
    n_interleaves_full: int | None = None,
    vd_exponent: float = 1.5,
) -> np.ndarray:
    """One variable-density spiral interleaf, unrotated.

    Args:
        matrix: image matrix size N (the field of view is N pixels).
        n_samples: readout samples per interleaf.
        n_interleaves_full: interleaves needed for Nyquist sampling at the k-space edge
            (``None``: :func:`default_n_interleaves_full`).
        vd_exponent: variable-density exponent ``alpha`` (1 = Archimedean; > 1 denser centre).

    Returns:
        ``(n_samples, 2)`` float32 ``(kx, ky)`` in cycles per pixel, from the centre to
        ``|k| = 0.5``.
    """
    if matrix < 2 or n_samples < 2:
        raise ValueError(f"matrix and n_samples must be >= 2, got {matrix}, {n_samples}.")
    if vd_exponent < 1.0:
        raise ValueError(f"vd_exponent must be >= 1 (1 = uniform density), got {vd_exponent}.")
    if n_interleaves_full is None:
        n_interleaves_full = default_n_interleaves_full(matrix, n_samples, vd_exponent)
    if n_interleaves_full < 1:
        raise ValueError(f"n_interleaves_full must be >= 1, got {n_interleaves_full}.")
    theta, r, arc = _spiral_arc(matrix, n_interleaves_full, vd_exponent)
    s = np.linspace(0.0, arc[-1], n_samples)
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
    n_samples: int = 920,
    n_interleaves_full: int | None = None,
    ordering: str = "golden",
    n_interleaves: int | None = None,
    vd_exponent: float = 1.5,
) -> tuple[np.ndarray, np.ndarray]:
    """MRF spiral: one rotated interleaf per time frame.

    Args:
        n_frames: number of time frames T.
        matrix, n_samples, n_interleaves_full, vd_exponent: the interleaf design
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
        n_interleaves_full = default_n_interleaves_full(matrix, n_samples, vd_exponent)
    base = spiral_interleaf(matrix, n_samples, n_interleaves_full, vd_exponent)
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
    n_samples: int = 920,
    n_interleaves_full: int | None = None,
    vd_exponent: float = 1.5,
) -> np.ndarray:
    """Fully sampled spiral frames: every frame holds all ``n_interleaves_full`` rotations.

    Returns ``(T, n_interleaves_full * n_samples, 2)`` float32 in cycles per pixel (the same
    points for every frame), for references and tests.
    """
    if n_interleaves_full is None:
        n_interleaves_full = default_n_interleaves_full(matrix, n_samples, vd_exponent)
    base = spiral_interleaf(matrix, n_samples, n_interleaves_full, vd_exponent)
    angles = 2 * math.pi * np.arange(n_interleaves_full) / n_interleaves_full
    one = _rotate(base, angles).reshape(-1, 2)
    return np.broadcast_to(one, (n_frames, *one.shape)).copy()


def radial_trajectory(n_spokes: int, n_samples: int, golden: bool = False) -> np.ndarray:
    """Radial spokes through the centre, ``(n_spokes, n_samples, 2)`` float32 in ``[-0.5, 0.5)``.

    Spokes are equally spaced over 180 degrees, or rotated by the radial golden angle
    (about 111.25 degrees) when ``golden``.
    """
    r = (np.arange(n_samples) - n_samples // 2) / n_samples
    if golden:
        angles = np.arange(n_spokes) * math.pi / ((1 + math.sqrt(5)) / 2)
    else:
        angles = np.arange(n_spokes) * math.pi / n_spokes
    k = np.stack([r, np.zeros_like(r)], axis=-1)
    return _rotate(k, angles)
