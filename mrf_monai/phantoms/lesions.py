"""Lesions of varied shape, size and contrast (the "varied lesions" ingredient).

Today's lesions (:mod:`mrf_monai.phantoms.tissues`) are MS-like or oedema-like ellipsoids of
two fixed contrasts. A :class:`ShapedLesion` is one of

* ``"ellipsoid"``: a rotated ellipsoid;
* ``"lobulated"``: an ellipsoid whose in-plane radius is modulated by 2-5 random angular
  harmonics (amplitudes up to 0.35 in total), a lobulated blob;
* ``"ring"``: a ring-shaped lesion (the outer 25-60 % of its radius) around a cystic /
  necrotic core of CSF,

with a radius drawn log-uniformly in 1.5-25 mm (axes 0.6-1.4 times it) and a 1-2 mm soft
edge, placed in 3D template space (LPS voxel coordinates, mm) at a brain site (GM + WM above
0.6) of a template slice of the subject's split (so the lesions lie in the slices that the
split samples). A subject with varied lesions has 1-8 of them and one lesion tissue whose
contrast (:func:`sample_lesion_properties`) is drawn against white matter in both directions:

==================== ============ ============== ======== =================================
mode                 T1 (s)       T2 (s)         PD       examples
==================== ============ ============== ======== =================================
long T1, long T2     1.0-2.5      0.08-0.40      0.7-1.0  demyelination, oedema, tumour
short T1, short T2   0.35-0.75    0.015-0.055    0.6-0.9  haemorrhage (methaemoglobin), calcium
long T1, short T2    1.1-2.0      0.025-0.06     0.6-0.9  iron-laden, fibrotic or mixed lesions
short T1, long T2    0.45-0.8     0.09-0.25      0.7-1.0  fat / protein-rich cysts
==================== ============ ============== ======== =================================

(synthetic contrasts bracketing white matter, T1 0.7-1.1 s and T2 0.04-0.08 s at 3 T; they
are not a model of any one pathology).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .anatomy import load_mni_templates
from .augment import split_slices

__all__ = [
    "LESION_SHAPES",
    "LESION_CONTRASTS",
    "ShapedLesion",
    "sample_shaped_lesions",
    "sample_lesion_properties",
    "shaped_lesion_fractions",
]

LESION_SHAPES = ("ellipsoid", "lobulated", "ring")
#: Contrast modes: ``(T1 range s, T2 range s, PD range)`` (module docstring).
LESION_CONTRASTS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "long-long": ((1.0, 2.5), (0.08, 0.40), (0.7, 1.0)),
    "short-short": ((0.35, 0.75), (0.015, 0.055), (0.6, 0.9)),
    "long-short": ((1.1, 2.0), (0.025, 0.06), (0.6, 0.9)),
    "short-long": ((0.45, 0.8), (0.09, 0.25), (0.7, 1.0)),
}


@dataclass(frozen=True)
class ShapedLesion:
    """A lesion in template space (LPS-oriented voxel coordinates, mm).

    Attributes:
        centre: ``(x, y, z)`` template voxel coordinates.
        radii_mm: ellipsoid semi-axes.
        angle_rad: in-plane rotation.
        shape: one of :data:`LESION_SHAPES`.
        lobes: ``((harmonic, amplitude, phase_rad), ...)`` in-plane radius modulation.
        core: inner radius of a ring's cystic core, as a fraction of the radius (0: none).
        edge_mm: width of the soft edge.
    """

    centre: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    angle_rad: float = 0.0
    shape: str = "ellipsoid"
    lobes: tuple[tuple[int, float, float], ...] = ()
    core: float = 0.0
    edge_mm: float = 1.5


def _brain_sites(z: int) -> np.ndarray:
    t = load_mni_templates()
    return np.argwhere((t.gm[:, :, z] + t.wm[:, :, z]) > 0.6)


def sample_shaped_lesions(rng: np.random.Generator, split: str) -> tuple[ShapedLesion, ...]:
    """Draw the 1-8 varied lesions of a subject of ``split`` (module docstring)."""
    slices = split_slices(split)
    n = int(rng.integers(1, 9))
    out = []
    for _ in range(n):
        z = int(rng.choice(slices))
        sites = _brain_sites(z)
        x, y = sites[int(rng.integers(0, len(sites)))]
        r = float(math.exp(rng.uniform(math.log(1.5), math.log(25.0))))
        radii = tuple(float(r * f) for f in rng.uniform(0.6, 1.4, size=3))
        shape = LESION_SHAPES[int(rng.integers(0, len(LESION_SHAPES)))]
        lobes: tuple[tuple[int, float, float], ...] = ()
        if shape == "lobulated":
            ks = rng.choice(np.arange(2, 6), size=int(rng.integers(1, 4)), replace=False)
            amps = rng.dirichlet(np.ones(len(ks))) * rng.uniform(0.15, 0.35)
            lobes = tuple((int(k), float(a), float(rng.uniform(-math.pi, math.pi))) for k, a in zip(ks, amps))
        core = float(rng.uniform(0.4, 0.75)) if shape == "ring" else 0.0
        out.append(
            ShapedLesion(
                centre=(float(x), float(y), float(z + rng.uniform(-2.0, 2.0))),
                radii_mm=radii,  # type: ignore[arg-type]
                angle_rad=float(rng.uniform(0, math.pi)),
                shape=shape,
                lobes=lobes,
                core=core,
                edge_mm=float(rng.uniform(1.0, 2.0)),
            )
        )
    return tuple(out)


def sample_lesion_properties(rng: np.random.Generator) -> tuple[str, tuple[float, float, float]]:
    """Draw a contrast mode and ``(t1_s, t2_s, pd)`` log-uniformly inside its ranges (T2 < T1)."""
    modes = list(LESION_CONTRASTS)
    mode = modes[int(rng.integers(0, len(modes)))]
    (a1, b1), (a2, b2), (a3, b3) = LESION_CONTRASTS[mode]
    t1 = math.exp(rng.uniform(math.log(a1), math.log(b1)))
    t2 = math.exp(rng.uniform(math.log(a2), math.log(b2)))
    pd = float(rng.uniform(a3, b3))
    return mode, (t1, min(t2, 0.9 * t1), pd)


def shaped_lesion_fractions(
    lesions: tuple[ShapedLesion, ...], x: np.ndarray, y: np.ndarray, z: float
) -> tuple[np.ndarray, np.ndarray]:
    """Lesion and cystic-core fractions at template coordinates ``(x, y)`` of slice ``z``.

    Returns ``(lesion, core)``, each in [0, 1] with ``lesion + core <= 1`` (union over lesions).
    """
    les = np.zeros(x.shape)
    core = np.zeros(x.shape)
    for d in lesions:
        rx, ry, rz = d.radii_mm
        dz = (z - d.centre[2]) / rz
        if abs(dz) >= 1.0:
            continue
        c, s = math.cos(d.angle_rad), math.sin(d.angle_rad)
        dx, dy = x - d.centre[0], y - d.centre[1]
        u = (c * dx + s * dy) / rx
        v = (-s * dx + c * dy) / ry
        rho = np.sqrt(u * u + v * v + dz * dz)
        if d.lobes:
            phi = np.arctan2(v, u)
            mod = 1.0 + sum(a * np.cos(k * phi + p) for k, a, p in d.lobes)
            rho = rho / mod
        scale = min(d.radii_mm) / d.edge_mm
        outer = np.clip((1.0 - rho) * scale + 0.5, 0.0, 1.0)
        inner = np.clip((d.core - rho) * scale + 0.5, 0.0, 1.0) if d.core > 0 else 0.0
        les = np.maximum(les, outer - inner)
        core = np.maximum(core, inner)
    core = np.minimum(core, 1.0)
    les = np.minimum(les, 1.0 - core)
    return les, core
