"""Fully synthetic label phantoms: random smooth regions with random (T1, T2, PD).

So that a network cannot lean on one anatomy, a share of the phantom world
(:attr:`mrf_monai.phantoms.recipe.PhantomRecipe.synthetic_fraction`) has no anatomy at all.
One synthetic slice, on the 1 mm canvas of the protocol's 230 mm field of view:

* **Support.** Head-like (60 %): an ellipse with semi-axes 60-90 mm by 75-95 mm, rotated,
  its radius modulated by a smooth random angular profile (+-3-7 %); or a random blob: a
  thresholded smooth random field (40-80 mm correlation) biased towards the centre, within
  100 mm of it, holes filled, largest component kept. With probability 0.6 an outer shell
  (3-10 mm) of its own tissue surrounds it, fat-like (bright, short T1) half of the time: the
  bright periphery that dominates spiral aliasing in heads. Everything stays within 112 mm
  of the centre, inside the 230 mm field of view.
* **Regions.** 3-24 labels inside the support, in one of two styles:
  ``"fields"``: the argmax of as many unit-variance smooth random fields (each with its own
  correlation length, log-uniform in 6-60 mm): organic regions of mixed sizes;
  ``"voronoi"``: Voronoi cells of random points (anisotropic metric, boundaries bent by a
  smooth 8 mm displacement field). The one-hot label maps are blurred by a Gaussian of
  0.4-1.5 mm: partial volume at every boundary.
* **Parameters per region.** ``T1`` log-uniform over the whole dictionary range
  [0.05, 5] s; ``T2`` log-uniform in [0.005 s, min(3 s, 0.95 T1)] (so ``T2 < T1``); PD uniform
  in [0.15, 1] (10 % of the regions: [0, 0.15], signal voids). Each region has a smooth
  spatial texture (log-normal, std 0-15 %, one of two correlation lengths drawn in 8-15 mm
  and 15-30 mm per phantom).
* **Mixing.** Boundary voxels mix their regions' parameters as tissues do
  (:func:`mrf_monai.phantoms.tissues.mix_tissues`, fast exchange).
* **Phase.** A random PD phase (:func:`random_phase`): constant, linear ramp up to pi across
  the FOV, smooth field of 25-80 mm correlation with std up to 1 rad.
* **Mask.** Voxels at least ``mask_threshold`` inside the support (without the shell) with
  PD >= 0.1: what the metrics see.

Labels: ``SYNTHETIC_LABEL_BASE + region`` (the shell is region 0), 0 outside; the tissue
``fractions`` of the map dict are all zero (there are no tissues).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .anatomy import CANVAS, FOV_MM, TISSUE_NAMES, _angular_profile, resample_to_matrix
from .augment import smooth_random_field
from .recipe import SYNTHETIC_STYLES
from .tissues import mix_tissues

__all__ = [
    "SYNTHETIC_LABEL_BASE",
    "PhaseField",
    "sample_phase_field",
    "random_phase",
    "synthetic_slice",
]

#: Labels of synthetic regions start here (anatomical labels are below).
SYNTHETIC_LABEL_BASE = 16
_T1_RANGE = (0.05, 5.0)
_T2_RANGE = (0.005, 3.0)


@dataclass(frozen=True)
class PhaseField:
    """A random PD phase map: ``phase0 + ramp . u + std * g`` (``u`` FOV-relative, in [-0.5, 0.5)).

    Attributes:
        phase0_rad: constant.
        ramp_rad: ``(across i, across j)`` total change across the field of view, rad.
        std_rad: standard deviation of the smooth part ``g`` (unit-variance random field).
        correlation_mm: correlation length of ``g``.
        seed: seed of ``g``.
    """

    phase0_rad: float
    ramp_rad: tuple[float, float]
    std_rad: float
    correlation_mm: float
    seed: int

    def __call__(self, matrix: int) -> np.ndarray:
        """The phase map (radians) on a ``matrix`` x ``matrix`` grid over the 230 mm FOV."""
        u = (np.arange(matrix) - matrix // 2) / matrix
        phase = self.phase0_rad + self.ramp_rad[0] * u[:, None] + self.ramp_rad[1] * u[None, :]
        if self.std_rad > 0:
            g = smooth_random_field(
                np.random.default_rng(self.seed), (matrix, matrix), self.correlation_mm * matrix / FOV_MM
            )
            phase = phase + self.std_rad * g
        return phase


def sample_phase_field(rng: np.random.Generator, strength: float = 1.0) -> PhaseField:
    """Draw a :class:`PhaseField` (ramp up to ``pi * strength``, smooth std up to ``strength`` rad)."""
    direction = rng.normal(size=2)
    direction /= max(float(np.linalg.norm(direction)), 1e-12)
    ramp = direction * rng.uniform(0.0, math.pi * strength)
    return PhaseField(
        phase0_rad=float(rng.uniform(-math.pi, math.pi)),
        ramp_rad=(float(ramp[0]), float(ramp[1])),
        std_rad=float(rng.uniform(0.0, strength)),
        correlation_mm=float(rng.uniform(25.0, 80.0)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def random_phase(rng: np.random.Generator, matrix: int, strength: float = 1.0) -> np.ndarray:
    """A random smooth PD phase map (radians, ``(matrix, matrix)``): :func:`sample_phase_field`."""
    return sample_phase_field(rng, strength)(matrix)


def _grid() -> tuple[np.ndarray, np.ndarray]:
    c = np.arange(CANVAS, dtype=np.float64) - CANVAS // 2
    return np.meshgrid(c, c, indexing="ij")


def _support(rng: np.random.Generator) -> np.ndarray:
    """Soft support (fraction, 1 mm canvas) of a synthetic phantom."""
    gi, gj = _grid()
    if rng.random() < 0.6:
        a, b = rng.uniform(60.0, 90.0), rng.uniform(75.0, 95.0)
        th = rng.uniform(0, math.pi)
        c, s = math.cos(th), math.sin(th)
        u = (c * gi + s * gj) / a
        v = (-s * gi + c * gj) / b
        r = np.hypot(u, v)
        angle = np.arctan2(v, u)
        bound = 1.0 + rng.uniform(0.03, 0.07) * _angular_profile(rng, angle)
        dist_mm = (bound - r) * min(a, b)
        return np.clip(dist_mm + 0.5, 0.0, 1.0)
    f = smooth_random_field(rng, (CANVAS, CANVAS), rng.uniform(40.0, 80.0))
    radius = rng.uniform(65.0, 90.0)
    bias = 1.5 * (1.0 - (np.hypot(gi, gj) / radius) ** 2)
    inside = (f + bias) > 0.0
    inside &= np.hypot(gi, gj) < 100.0
    lab, n = ndimage.label(inside)
    if n == 0:
        inside = np.hypot(gi, gj) < radius
    else:
        sizes = ndimage.sum(inside, lab, index=np.arange(1, n + 1))
        inside = lab == (1 + int(np.argmax(sizes)))
    inside = ndimage.binary_fill_holes(inside)
    d_in = ndimage.distance_transform_edt(inside)
    d_out = ndimage.distance_transform_edt(~inside)
    return np.clip(d_in - d_out + 0.5, 0.0, 1.0)


def _labels(rng: np.random.Generator, style: str, n: int, inside: np.ndarray) -> np.ndarray:
    """Hard region labels 0..n-1 on the canvas."""
    shape = inside.shape
    if style == "fields":
        fields = [
            smooth_random_field(rng, shape, math.exp(rng.uniform(math.log(6), math.log(60))))
            for _ in range(n)
        ]
        return np.argmax(np.stack(fields), axis=0)
    pts = np.argwhere(inside)
    centres = pts[rng.integers(0, len(pts), size=n)].astype(np.float64)
    gi, gj = np.meshgrid(np.arange(shape[0], dtype=np.float64), np.arange(shape[1]), indexing="ij")
    bend = rng.uniform(2.0, 8.0)
    gi = gi + bend * smooth_random_field(rng, shape, 8.0)
    gj = gj + bend * smooth_random_field(rng, shape, 8.0)
    aniso = np.exp(rng.normal(0.0, 0.3, size=(n, 2)))
    d = np.stack(
        [((gi - ci) * ai) ** 2 + ((gj - cj) * aj) ** 2 for (ci, cj), (ai, aj) in zip(centres, aniso)]
    )
    return np.argmin(d, axis=0)


def _region_parameters(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 3)`` random (T1 s, T2 s, PD) with T2 < T1 (module docstring)."""
    out = np.empty((n, 3))
    for k in range(n):
        t1 = math.exp(rng.uniform(math.log(_T1_RANGE[0]), math.log(_T1_RANGE[1])))
        t2_hi = min(_T2_RANGE[1], 0.95 * t1)
        t2 = math.exp(rng.uniform(math.log(_T2_RANGE[0]), math.log(t2_hi)))
        pd = rng.uniform(0.0, 0.15) if rng.random() < 0.1 else rng.uniform(0.15, 1.0)
        out[k] = (t1, t2, pd)
    return out


def synthetic_slice(
    rng: np.random.Generator,
    matrix: int = CANVAS,
    style: str | None = None,
    phase: PhaseField | None = None,
    mask_threshold: float = 0.5,
) -> dict[str, np.ndarray]:
    """One fully synthetic phantom slice (module docstring), all randomness from ``rng``.

    Args:
        rng: the generator (e.g. ``subject_generator(seed, split, 30, slice_index)``).
        matrix: output matrix over the 230 mm field of view.
        style: ``"fields"`` or ``"voronoi"`` (default: drawn from ``rng``).
        phase: PD phase map (default: drawn from ``rng``).
        mask_threshold: support fraction above which a voxel may be in ``mask``.

    Returns:
        the map dict of :func:`mrf_monai.phantoms.sample_subject_maps`: ``t1_s``, ``t2_s``
        (float32 s, 0 without protons), ``pd`` (complex64), ``mask`` (bool), ``labels``
        (uint8) and ``fractions`` (zeros, ``(len(TISSUE_NAMES), matrix, matrix)``).
    """
    if style is None:
        style = SYNTHETIC_STYLES[int(rng.integers(0, len(SYNTHETIC_STYLES)))]
    if style not in SYNTHETIC_STYLES:
        raise ValueError(f"synthetic style must be one of {SYNTHETIC_STYLES}, got {style!r}")
    support = _support(rng)
    n = int(rng.integers(3, 25))
    hard = _labels(rng, style, n, support >= 0.5)
    blur = rng.uniform(0.4, 1.5)
    interior = {}
    for k in range(n):
        f = ndimage.gaussian_filter((hard == k).astype(np.float64), blur)
        interior[k + 1] = f * support
    shell = np.zeros_like(support)
    shell_fat = False
    if rng.random() < 0.6:
        thick = rng.uniform(3.0, 10.0)
        outside = ndimage.distance_transform_edt(support < 0.5)
        shell = np.clip(np.minimum(outside + 0.5, thick - outside + 0.5), 0.0, 1.0) * (1.0 - support)
        shell_fat = bool(rng.random() < 0.5)
    params = _region_parameters(rng, n + 1)
    if shell_fat:
        params[0] = (rng.uniform(0.3, 0.45), rng.uniform(0.06, 0.15), rng.uniform(0.8, 1.0))
    names = [0, *interior]
    maps = {0: shell, **interior, "support": support}
    maps = resample_to_matrix({str(k): v for k, v in maps.items()}, matrix)
    frac = {k: maps[str(k)].astype(np.float64) for k in names}
    shape = (matrix, matrix)
    pixel_mm = FOV_MM / matrix
    # texture: six shared fields (T1, T2, PD at a fine and a coarse scale); each region takes
    # one scale, its own amplitude and a random sign per quantity
    scales = (rng.uniform(8.0, 15.0) / pixel_mm, rng.uniform(15.0, 30.0) / pixel_mm)
    tex = [[smooth_random_field(rng, shape, c) for _ in range(3)] for c in scales]
    t1_k, t2_k, pd_k = {}, {}, {}
    for k in names:
        tex_std = rng.uniform(0.0, 0.15)
        field = tex[int(rng.integers(0, 2))]
        sign = rng.choice([-1.0, 1.0], size=3)
        t1_k[k] = params[k, 0] * np.exp(tex_std * sign[0] * field[0])
        t2_k[k] = params[k, 1] * np.exp(tex_std * sign[1] * field[1])
        pd_k[k] = params[k, 2] * np.exp(0.5 * tex_std * sign[2] * field[2])
    t1, t2, pd_mag = mix_tissues(frac, t1_k, t2_k, pd_k)
    has = pd_mag > 1e-4 * max(float(pd_mag.max()), 1e-12)
    t1 = np.where(has, np.clip(t1, *_T1_RANGE), 0.0)
    t2 = np.where(has, np.clip(np.minimum(t2, 0.95 * t1), _T2_RANGE[0], _T2_RANGE[1]), 0.0)
    t2 = np.where(has, np.minimum(t2, t1), 0.0)
    pd_mag = np.where(has, pd_mag, 0.0)
    field = phase if phase is not None else sample_phase_field(rng)
    pd = (pd_mag * np.exp(1j * field(matrix))).astype(np.complex64)
    stack = np.stack([frac[k] for k in names])
    labels = np.where(stack.sum(0) >= 0.5, stack.argmax(0) + SYNTHETIC_LABEL_BASE, 0).astype(np.uint8)
    mask = (maps["support"] >= mask_threshold) & (pd_mag >= 0.1) & has
    return {
        "t1_s": t1.astype(np.float32),
        "t2_s": t2.astype(np.float32),
        "pd": pd,
        "mask": mask,
        "labels": labels,
        "fractions": np.zeros((len(TISSUE_NAMES), matrix, matrix), dtype=np.float32),
    }
