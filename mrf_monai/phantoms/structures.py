"""Fine structure that the smooth average MNI152 template lacks.

The template is an average of many brains: its GM/WM boundary is blurred over several mm,
it has no vessels and almost no sulcal CSF. These functions add such detail to the tissue
fraction maps of one slice on the 1 mm canvas (:func:`mrf_monai.phantoms.anatomy.head_slice`
output), before the maps are area-averaged to the image matrix, so every structure ends up
with correct partial volume in the coarser voxels. Each function takes and returns a dict of
fraction maps (``csf``, ``gm``, ``wm``, ``lesion``, ``vessel``, ...), keeps the fractions
non-negative and their per-voxel sum unchanged (tissue is converted, never created).

* :func:`fold_cortex`: cortical folding detail. The WM share ``s = wm / (gm + wm)`` is
  sharpened and perturbed, ``logit s' = k logit s + a c n``, with ``n`` a band-limited random
  field of 4-8 mm wavelength (features of 2-4 mm) and ``c`` a weight that is 1 within 12 mm
  of the brain surface and 0 deeper than 18 mm: the boundary becomes sharp everywhere and
  wiggles by about 0.5-2 mm in the cortex (``k`` 1.5-3, ``a / k`` 0.5-2).
* :func:`add_sulci`: thin CSF lines (0.5-1.5 mm wide) along the zero crossings of a random
  field of 12-30 mm wavelength, inside the cortical ribbon (GM-rich tissue within 12 mm of
  the brain surface): a maze of sulci.
* :func:`add_perivascular_spaces`: small CSF ellipses (0.4-1 mm by 1-4 mm) in white matter.
* :func:`add_vessels`: smooth random curves (15-100 mm long, radius 0.35-1.5 mm tapering to
  half) of the ``vessel`` tissue (blood), anywhere inside the head, most of them starting in
  the brain; a fraction map from the exact distance to the centre line (1 mm soft edge).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, signal
from scipy.spatial import cKDTree

__all__ = [
    "band_limited_field",
    "fold_cortex",
    "add_sulci",
    "add_perivascular_spaces",
    "add_vessels",
]

_BRAIN = ("csf", "gm", "wm", "lesion")


def band_limited_field(
    rng: np.random.Generator, shape: tuple[int, int], min_wavelength_px: float, max_wavelength_px: float
) -> np.ndarray:
    """Zero-mean, unit-variance random field with wavelengths in ``[min, max]`` pixels.

    White noise filtered in the Fourier domain by a radial band (raised-cosine edges of
    half an octave) between frequencies ``1 / max_wavelength_px`` and ``1 / min_wavelength_px``.
    """
    if not 2.0 <= min_wavelength_px < max_wavelength_px:
        raise ValueError(
            f"need 2 <= min_wavelength_px < max_wavelength_px, got {min_wavelength_px}, {max_wavelength_px}"
        )
    noise = rng.standard_normal(shape)
    fx = np.fft.fftfreq(shape[0])[:, None]
    fy = np.fft.rfftfreq(shape[1])[None, :]
    lf = np.log2(np.maximum(np.hypot(fx, fy), 1e-12))
    lo, hi = math.log2(1.0 / max_wavelength_px), math.log2(1.0 / min_wavelength_px)
    edge = 0.5
    w = np.clip(np.minimum(lf - (lo - edge), (hi + edge) - lf) / edge, 0.0, 1.0)
    w = 0.5 - 0.5 * np.cos(math.pi * w)
    f = np.fft.irfft2(np.fft.rfft2(noise) * w, s=shape)
    f -= f.mean()
    return f / max(float(f.std()), 1e-12)


def _total(frac: dict[str, np.ndarray]) -> np.ndarray:
    return sum(np.asarray(v, dtype=np.float64) for k, v in frac.items() if k != "brain")


def fold_cortex(frac: dict[str, np.ndarray], rng: np.random.Generator, strength: float = 1.0) -> dict:
    """Sharpen and perturb the GM/WM boundary (module docstring); GM + WM is kept per voxel."""
    out = dict(frac)
    gm = np.asarray(frac["gm"], dtype=np.float64)
    wm = np.asarray(frac["wm"], dtype=np.float64)
    tissue = gm + wm
    k = 1.0 + strength * rng.uniform(0.5, 2.0)
    a = k * strength * rng.uniform(0.5, 2.0)
    n = band_limited_field(rng, gm.shape, 4.0, 8.0)
    # the wiggle is confined to the cortex (within about 15 mm of the brain surface); deep
    # grey matter (basal ganglia, thalamus) is only sharpened
    depth = ndimage.distance_transform_edt(np.asarray(frac["brain"]) >= 0.5)
    cortex = np.clip((18.0 - depth) / 6.0, 0.0, 1.0)
    s = np.clip(wm / np.maximum(tissue, 1e-9), 1e-4, 1.0 - 1e-4)
    z = k * np.log(s / (1.0 - s)) + a * cortex * n
    s2 = 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))
    out["wm"] = (tissue * s2).astype(np.float32)
    out["gm"] = (tissue * (1.0 - s2)).astype(np.float32)
    return out


def _convert_to_csf(frac: dict, f: np.ndarray, sources: tuple[str, ...]) -> dict:
    """Turn the fraction ``f`` (0..1) of the ``sources`` tissues into CSF."""
    out = dict(frac)
    moved = np.zeros(f.shape)
    for k in sources:
        v = np.asarray(frac[k], dtype=np.float64)
        moved += v * f
        out[k] = (v * (1.0 - f)).astype(np.float32)
    out["csf"] = (np.asarray(frac["csf"], dtype=np.float64) + moved).astype(np.float32)
    return out


def add_sulci(frac: dict[str, np.ndarray], rng: np.random.Generator, strength: float = 1.0) -> dict:
    """Thin sulcal CSF along random zero crossings in the cortical ribbon (module docstring)."""
    gm = np.asarray(frac["gm"], dtype=np.float64)
    brain = np.asarray(frac["brain"], dtype=np.float64)
    tissue = gm + frac["wm"] + frac["csf"]
    share = gm / np.maximum(tissue, 1e-9)
    depth = ndimage.distance_transform_edt(brain >= 0.5)
    ribbon = np.clip((12.0 - depth) / 4.0, 0.0, 1.0) * np.clip((share - 0.3) / 0.3, 0.0, 1.0)
    n = band_limited_field(rng, gm.shape, 12.0, 30.0)
    gi, gj = np.gradient(n)
    dist = np.abs(n) / np.maximum(np.hypot(gi, gj), 1e-6)  # distance to the zero crossing, px
    width = min(3.0, strength * rng.uniform(0.5, 1.5))
    f = np.clip(width / 2.0 - dist + 0.5, 0.0, 1.0) * ribbon * (brain >= 0.5)
    return _convert_to_csf(frac, f, ("gm", "wm"))


def _ellipses(
    shape: tuple[int, int], centres: np.ndarray, axes: np.ndarray, angles: np.ndarray
) -> np.ndarray:
    """Union (max) of soft-edged ellipses: ``clip(b (1 - rho) + 0.5, 0, 1)`` (``b``: minor axis)."""
    out = np.zeros(shape)
    for (ci, cj), (a, b), th in zip(centres, axes, angles):
        r = int(math.ceil(a + 2))
        i0, i1 = max(0, int(ci) - r), min(shape[0], int(ci) + r + 1)
        j0, j1 = max(0, int(cj) - r), min(shape[1], int(cj) + r + 1)
        if i0 >= i1 or j0 >= j1:
            continue
        di, dj = np.meshgrid(np.arange(i0, i1) - ci, np.arange(j0, j1) - cj, indexing="ij")
        c, s = math.cos(th), math.sin(th)
        u = (c * di + s * dj) / a
        v = (-s * di + c * dj) / b
        rho = np.sqrt(u * u + v * v)
        f = np.clip(b * (1.0 - rho) + 0.5, 0.0, 1.0)
        out[i0:i1, j0:j1] = np.maximum(out[i0:i1, j0:j1], f)
    return out


def add_perivascular_spaces(
    frac: dict[str, np.ndarray], rng: np.random.Generator, strength: float = 1.0
) -> dict:
    """Small elongated CSF spaces in white matter (module docstring)."""
    wm = np.asarray(frac["wm"], dtype=np.float64)
    sites = np.argwhere(wm > 0.8)
    n = int(round(strength * rng.uniform(5, 40)))
    if sites.size == 0 or n == 0:
        return dict(frac)
    centres = sites[rng.integers(0, len(sites), size=n)] + rng.uniform(-0.5, 0.5, size=(n, 2))
    minor = rng.uniform(0.4, 1.0, size=n)
    major = minor * rng.uniform(1.5, 4.0, size=n)
    f = _ellipses(wm.shape, centres, np.stack([major, minor], 1), rng.uniform(0, math.pi, size=n))
    return _convert_to_csf(frac, f, ("wm", "gm"))


def _random_curve(
    rng: np.random.Generator,
    start: np.ndarray,
    length_mm: float,
    step_mm: float = 0.25,
    curvature_per_mm: float = 0.05,
    correlation_mm: float = 5.0,
) -> np.ndarray:
    """Smooth random curve ``(n, 2)`` (pixels of 1 mm): its heading turns with an
    Ornstein-Uhlenbeck angular velocity (stationary std ``curvature_per_mm`` rad/mm, i.e. a
    typical radius of curvature of 20 mm, correlated over ``correlation_mm``)."""
    n = max(2, int(length_mm / step_mm))
    heading0 = rng.uniform(-math.pi, math.pi)
    decay = step_mm / correlation_mm
    kick = curvature_per_mm * math.sqrt(2.0 * decay)
    omega0 = curvature_per_mm * rng.standard_normal()
    # omega[i] = (1 - decay) omega[i - 1] + kick e[i]  (an AR(1) filter, from omega0)
    e = kick * rng.standard_normal(n)
    omega, _ = signal.lfilter([1.0], [1.0, -(1.0 - decay)], e, zi=[(1.0 - decay) * omega0])
    heading = heading0 + step_mm * np.concatenate([[0.0], np.cumsum(omega[:-1])])
    steps = step_mm * np.stack([np.cos(heading), np.sin(heading)], axis=1)
    start = np.asarray(start, dtype=np.float64)
    return start + np.concatenate([np.zeros((1, 2)), np.cumsum(steps[:-1], axis=0)])


def add_vessels(frac: dict[str, np.ndarray], rng: np.random.Generator, strength: float = 1.0) -> dict:
    """Thin tubes of the ``vessel`` tissue (module docstring); they replace what they cross."""
    out = dict(frac)
    total = _total(frac)
    shape = total.shape
    brain = np.asarray(frac["brain"]) >= 0.5
    head = total >= 0.5
    n = int(round(strength * rng.uniform(4, 16)))
    starts_brain = np.argwhere(brain)
    starts_head = np.argwhere(head)
    if n == 0 or starts_head.size == 0:
        out["vessel"] = np.asarray(frac.get("vessel", np.zeros(shape)), dtype=np.float32)
        return out
    points, radii = [], []
    for _ in range(n):
        pool = starts_brain if (starts_brain.size and rng.random() < 0.8) else starts_head
        start = pool[rng.integers(0, len(pool))] + rng.uniform(-0.5, 0.5, size=2)
        pts = _random_curve(rng, start, rng.uniform(15.0, 100.0))
        ii = np.clip(np.rint(pts[:, 0]).astype(int), 0, shape[0] - 1)
        jj = np.clip(np.rint(pts[:, 1]).astype(int), 0, shape[1] - 1)
        inside = head[ii, jj] & (pts[:, 0] >= 0) & (pts[:, 0] < shape[0]) & (pts[:, 1] >= 0)
        inside &= pts[:, 1] < shape[1]
        stop = int(np.argmin(inside)) if not inside.all() else len(pts)  # the vessel ends at the head
        if stop < 8:
            continue
        r0 = rng.uniform(0.35, 1.5)
        points.append(pts[:stop])
        radii.append(r0 * np.linspace(1.0, 0.5, stop))
    v = np.zeros(shape)
    if points:
        pts = np.concatenate(points)
        rad = np.concatenate(radii)
        tree = cKDTree(pts)
        near = np.zeros(shape, dtype=bool)  # voxels within 3 voxels of a centre line
        ii = np.clip(np.rint(pts[:, 0]).astype(int), 0, shape[0] - 1)
        jj = np.clip(np.rint(pts[:, 1]).astype(int), 0, shape[1] - 1)
        near[ii, jj] = True
        near = ndimage.maximum_filter(near, size=7)
        grid = np.argwhere(near).astype(np.float64)
        d, idx = tree.query(grid, distance_upper_bound=2.5)
        ok = np.isfinite(d)
        vals = np.zeros(len(grid))
        vals[ok] = np.clip(rad[idx[ok]] - d[ok] + 0.5, 0.0, 1.0)
        v[near] = vals
        v = v * head
    keep = 1.0 - v
    for k, val in frac.items():
        if k in ("brain", "vessel"):
            continue
        out[k] = (np.asarray(val, dtype=np.float64) * keep).astype(np.float32)
    old = np.asarray(frac.get("vessel", np.zeros(shape)), dtype=np.float64)
    out["vessel"] = (old * keep + total * v).astype(np.float32)
    return out
