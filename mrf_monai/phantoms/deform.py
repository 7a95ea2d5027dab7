"""Strong multi-scale diffeomorphic deformation of the template (the "deformed" world).

The augmentation of :mod:`mrf_monai.phantoms.augment` bends the template by about 2 mm. A
:class:`Deformation` bends it by up to about 25-35 mm, at three scales at once, without
folding: the displacement is the exponential of a stationary velocity field
``v = w sum_s a_s g_s`` (``g_s`` unit-variance Gaussian random fields of correlation length
``s`` = 64, 32 and 16 mm, :func:`mrf_monai.phantoms.augment.smooth_random_field`; ``w`` a
radial window, 1 within 50 mm of the centre and 0.35 beyond 110 mm, so the brain's inside
deforms most and its outline less), computed
by scaling and squaring: ``u_0 = v / 2**N`` (small enough that ``p + u_0(p)`` is
invertible), then ``N`` times ``u <- u + u o (id + u)``. The map ``p -> p + u(p)`` is then a
diffeomorphism up to interpolation error; :func:`jacobian_determinant` measures
``det(I + grad u)`` (tests check that it stays positive). The field is 2D and the same on
every slice of a subject (as the elastic augmentation is).

The deformation acts on the canvas before the subject's augmentation: a canvas point ``p``
samples the template at ``A(L^-1(p + u(p)))`` with ``A`` the augmentation and ``L`` the
least-squares affine fit of ``p + u(p)`` over the head (:func:`remove_affine`): the
deformation keeps only its nonlinear part, and the head stays where the augmentation puts it
(:func:`compose_warp`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .augment import smooth_random_field

__all__ = [
    "DEFORMATION_SCALES_MM",
    "Deformation",
    "sample_deformation",
    "jacobian_determinant",
    "compose_warp",
    "remove_affine",
    "radial_taper",
]

#: Correlation lengths of the velocity components, mm (coarse to fine).
DEFORMATION_SCALES_MM = (64.0, 32.0, 16.0)


@dataclass(frozen=True)
class Deformation:
    """A stationary-velocity diffeomorphism of the 1 mm canvas.

    Attributes:
        amplitudes_mm: standard deviation of each velocity component (per axis), mm.
        scales_mm: correlation length of each component, mm.
        seed: seed of the random fields.
        n_squarings: scaling-and-squaring steps (``v`` is divided by ``2**n_squarings``).
        taper_mm: ``(inner, outer, floor)``: the velocity is multiplied by a smooth radial
            window (:func:`radial_taper`) that is 1 within ``inner`` mm of the grid centre and
            falls to ``floor`` at ``outer`` mm, so the inside of the brain deforms most and its
            outline (hence the head's size) less.
    """

    amplitudes_mm: tuple[float, ...]
    scales_mm: tuple[float, ...] = DEFORMATION_SCALES_MM
    seed: int = 0
    n_squarings: int = 7
    taper_mm: tuple[float, float, float] = (50.0, 110.0, 0.35)

    def velocity(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Velocity field ``(vx, vy)`` in mm (= voxels) on a ``shape`` grid of 1 mm voxels."""
        if len(self.amplitudes_mm) != len(self.scales_mm):
            raise ValueError(
                f"Deformation needs one amplitude per scale, got {self.amplitudes_mm} and {self.scales_mm}"
            )
        rng = np.random.default_rng(self.seed)
        vx = np.zeros(shape)
        vy = np.zeros(shape)
        for a, s in zip(self.amplitudes_mm, self.scales_mm):
            vx += a * smooth_random_field(rng, shape, s)
            vy += a * smooth_random_field(rng, shape, s)
        taper = radial_taper(shape, *self.taper_mm)
        return vx * taper, vy * taper

    def displacement(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Displacement ``(ux, uy)`` (mm) of ``exp(v)`` on a ``shape`` grid of 1 mm voxels."""
        vx, vy = self.velocity(shape)
        f = 2.0 ** (-self.n_squarings)
        u = torch.from_numpy(np.stack([vx, vy]) * f)[None]  # (1, 2, X, Y) float64, voxels
        gi, gj = torch.meshgrid(
            torch.arange(shape[0], dtype=torch.float64),
            torch.arange(shape[1], dtype=torch.float64),
            indexing="ij",
        )
        sx, sy = 2.0 / max(shape[0] - 1, 1), 2.0 / max(shape[1] - 1, 1)
        for _ in range(self.n_squarings):
            # u <- u + u(p + u(p)), bilinear, clamped at the border; grid[..., 0] indexes the last axis
            grid = torch.stack([(gj + u[0, 1]) * sy - 1.0, (gi + u[0, 0]) * sx - 1.0], dim=-1)[None]
            u = u + torch.nn.functional.grid_sample(
                u, grid, mode="bilinear", padding_mode="border", align_corners=True
            )
        return u[0, 0].numpy(), u[0, 1].numpy()


def radial_taper(shape: tuple[int, int], inner_mm: float, outer_mm: float, floor: float) -> np.ndarray:
    """Smooth radial window: 1 within ``inner_mm`` of the grid centre, a raised cosine down to
    ``floor`` at ``outer_mm``, ``floor`` beyond (1 mm voxels)."""
    c0, c1 = shape[0] // 2, shape[1] // 2
    gi, gj = np.meshgrid(np.arange(shape[0]) - c0, np.arange(shape[1]) - c1, indexing="ij")
    t = np.clip((np.hypot(gi, gj) - inner_mm) / max(outer_mm - inner_mm, 1e-9), 0.0, 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + np.cos(np.pi * t))


def sample_deformation(
    rng: np.random.Generator, amplitude_mm: tuple[float, float] = (2.0, 8.0)
) -> Deformation:
    """Draw a :class:`Deformation` whose coarsest component has a std uniform in ``amplitude_mm``.

    The 32 mm and 16 mm components get 1/2 and 1/4 of it (equal strain at every scale).
    """
    a = float(rng.uniform(*amplitude_mm))
    return Deformation((a, a / 2.0, a / 4.0), DEFORMATION_SCALES_MM, int(rng.integers(0, 2**31 - 1)))


def jacobian_determinant(ux: np.ndarray, uy: np.ndarray) -> np.ndarray:
    """``det(I + grad u)`` of the map ``p -> p + u(p)`` on a 1 mm grid (central differences)."""
    dxi, dxj = np.gradient(ux)
    dyi, dyj = np.gradient(uy)
    return (1.0 + dxi) * (1.0 + dyj) - dxj * dyi


def compose_warp(
    warp: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None,
    deformation: Deformation,
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The coordinate map "deform the canvas, then apply ``warp``" (module docstring).

    Args:
        warp: the subject's augmentation map (``Augmentation.warp()``) or ``None``.
        deformation: the strong deformation.
    """

    def apply(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ux, uy = deformation.displacement(x.shape)
        di, dj = remove_affine(ux, uy)
        return (x + di, y + dj) if warp is None else warp(x + di, y + dj)

    return apply


def remove_affine(ux: np.ndarray, uy: np.ndarray, radius_mm: float = 90.0) -> tuple[np.ndarray, np.ndarray]:
    """Displacement of ``L^-1 o psi`` with ``psi(p) = p + u(p)`` and ``L`` its affine fit.

    ``L(p) = M p + b`` is the least-squares fit of ``psi`` over the disc of ``radius_mm``
    around the grid centre (the head). Composing with ``L^-1`` removes the deformation's
    overall shift, rotation, scaling and shear (the augmentation's job) and keeps its
    nonlinear part; the Jacobian becomes ``det(J_psi) / det(M)``, still positive. The grid
    centre is the origin of ``p``.
    """
    shape = ux.shape
    c = np.array([shape[0] // 2, shape[1] // 2], dtype=np.float64)
    gi, gj = np.meshgrid(np.arange(shape[0]) - c[0], np.arange(shape[1]) - c[1], indexing="ij")
    sel = np.hypot(gi, gj) <= radius_mm
    design = np.stack([gi[sel], gj[sel], np.ones(int(sel.sum()))], axis=1)
    target = np.stack([gi[sel] + ux[sel], gj[sel] + uy[sel]], axis=1)
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)  # (3, 2): p @ M.T + b
    m = coef[:2].T
    b = coef[2]
    if np.linalg.det(m) <= 0:  # cannot happen for a diffeomorphism; keep the field as it is
        return ux, uy
    minv = np.linalg.inv(m)
    qi = gi + ux - b[0]
    qj = gj + uy - b[1]
    pi = minv[0, 0] * qi + minv[0, 1] * qj
    pj = minv[1, 0] * qi + minv[1, 1] * qj
    return pi - gi, pj - gj
