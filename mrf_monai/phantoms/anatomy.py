"""Head anatomy of the simulated subjects: MNI152 brain tissue plus a procedural head.

Brain
-----
Grey and white matter probability maps and the brain mask come from the ICBM 2009a
nonlinear symmetric MNI152 templates shipped inside the nilearn wheel
(:func:`nilearn.datasets.load_mni152_gm_template`, ``..._wm_template`` and
``load_mni152_brain_mask`` with ``resolution=1``): no download, no network. The 1 mm
volume is reoriented so that array axes run along LPS (+x left, +y posterior, +z superior),
the orientation of an axial ISMRMRD slice with ``read_dir = (1, 0, 0)``,
``phase_dir = (0, 1, 0)`` and ``slice_dir = (0, 0, 1)``. Within the brain mask
``CSF = mask - GM - WM`` (ventricles, sulci).

Axial slice ``z`` (0-based index of the template's superior-inferior axis, 1 mm apart) is
placed on a 1 mm canvas of ``CANVAS`` x ``CANVAS`` voxels (the protocol's 230 mm field of
view), centred on the centre of the brain's bounding box, and resampled to the requested
matrix at the end (area averaging when coarser, bilinear when finer; the field of view
stays 230 mm, so the voxel size is ``230 / matrix`` mm).

Outside the brain
-----------------
A procedural head is grown around the (augmented) brain mask of the slice from the
in-plane distance ``d`` to the brain, so that the bright subcutaneous fat that dominates
MRF aliasing is present and realistic in size and position. From the inside out:
extra-axial CSF (1-3 mm), skull (5-8 mm of cortical bone: almost no signal, with a
fatty diploe in its middle third), temporalis muscle (thick at the sides, thin at the
front and back), subcutaneous fat (3-7 mm) and skin (1-2.5 mm, given muscle properties).
Thicknesses are drawn per subject and vary smoothly around the head; edges are soft
(1 mm partial-volume ramps). Layer thicknesses are :class:`HeadLayers`.

The output of :func:`head_slice` is a dictionary of tissue *fraction* maps (the tissues
of :data:`TISSUE_NAMES`); fractions are non-negative and sum to at most 1 per voxel (the
rest is air).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "CANVAS",
    "FOV_MM",
    "TISSUE_NAMES",
    "MNITemplates",
    "HeadLayers",
    "load_mni_templates",
    "sample_head_layers",
    "head_slice",
    "brain_slice",
    "canvas_coords",
    "resample_to_matrix",
    "slice_position_mm",
]

#: Canvas size (voxels, 1 mm) = the protocol's matrix; the field of view is always 230 mm.
CANVAS = 230
#: In-plane field of view, mm (MRF-IDDPM protocol: 230 x 230 matrix, 1 mm).
FOV_MM = 230.0
#: Tissues of the fraction maps, in label order (label = 1 + position; 0 is air). ``vessel``
#: (blood) only appears in the phantom world's fine structure
#: (:func:`mrf_monai.phantoms.structures.add_vessels`); it is zero in today's phantoms.
TISSUE_NAMES = ("csf", "gm", "wm", "fat", "muscle", "bone", "lesion", "vessel")


@dataclass(frozen=True)
class MNITemplates:
    """The MNI152 (ICBM 2009a, 1 mm) tissue templates, reoriented to LPS array axes.

    Attributes:
        gm, wm: ``(X, Y, Z)`` float32 grey / white matter probabilities, zero outside the mask.
        mask: ``(X, Y, Z)`` float32 brain mask (0 or 1).
        origin_lps_mm: LPS coordinates (mm) of voxel ``(0, 0, 0)``; voxels are 1 mm.
        centre_lps_mm: in-plane LPS centre ``(x, y)`` of the brain's bounding box (mm);
            the canvas is centred on it.
    """

    gm: np.ndarray
    wm: np.ndarray
    mask: np.ndarray
    origin_lps_mm: tuple[float, float, float]
    centre_lps_mm: tuple[float, float]

    @property
    def n_slices(self) -> int:
        """Number of axial slices (1 mm) of the template."""
        return int(self.mask.shape[2])

    def z_mm(self, slice_index: int) -> float:
        """Superior coordinate (LPS z = RAS z, mm) of axial slice ``slice_index``."""
        return float(self.origin_lps_mm[2] + slice_index)


@functools.lru_cache(maxsize=1)
def load_mni_templates() -> MNITemplates:
    """Load the MNI152 GM/WM/brain-mask templates from the nilearn wheel (offline).

    The result is cached per process (about 100 MB as float32); it is read-only.
    """
    try:
        from nilearn import datasets
    except ImportError as err:  # pragma: no cover - nilearn is a dependency
        raise ImportError("the brain phantoms need nilearn (pip install nilearn)") from err
    imgs = [
        datasets.load_mni152_gm_template(resolution=1),
        datasets.load_mni152_wm_template(resolution=1),
        datasets.load_mni152_brain_mask(resolution=1),
    ]
    affine = np.asarray(imgs[2].affine, dtype=np.float64)
    if not np.allclose(np.abs(np.diag(affine)[:3]), 1.0) or not np.allclose(
        affine[:3, :3], np.diag(np.diag(affine)[:3])
    ):
        raise RuntimeError(
            f"unexpected MNI152 template affine {affine.tolist()}; this nilearn version ships a "
            "template that is not 1 mm RAS-aligned, which mrf_monai.phantoms does not support"
        )
    arrays = []
    for img in imgs:
        a = np.asarray(img.get_fdata(dtype=np.float32))
        # RAS -> LPS array axes: flip x (R->L) and y (A->P) where the affine points them R / A
        if affine[0, 0] > 0:
            a = a[::-1]
        if affine[1, 1] > 0:
            a = a[:, ::-1]
        if affine[2, 2] < 0:
            a = a[:, :, ::-1]
        arrays.append(np.ascontiguousarray(a))
    gm, wm, mask = arrays
    mask = (mask > 0.5).astype(np.float32)
    gm = np.clip(gm, 0.0, 1.0) * mask
    wm = np.clip(wm, 0.0, 1.0) * mask
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    shape = np.array(mask.shape)
    # LPS coordinate of voxel 0 along each flipped axis: -(RAS coordinate of the last voxel)
    ras0 = affine[:3, 3]
    ras_last = ras0 + np.diag(affine)[:3] * (shape - 1)
    origin = (
        float(-ras_last[0] if affine[0, 0] > 0 else -ras0[0]),
        float(-ras_last[1] if affine[1, 1] > 0 else -ras0[1]),
        float(ras0[2] if affine[2, 2] > 0 else ras_last[2]),
    )
    xs = np.nonzero(mask.any(axis=(1, 2)))[0]
    ys = np.nonzero(mask.any(axis=(0, 2)))[0]
    centre = (origin[0] + 0.5 * (xs[0] + xs[-1]), origin[1] + 0.5 * (ys[0] + ys[-1]))
    for a in (gm, wm, mask):
        a.setflags(write=False)
    return MNITemplates(gm, wm, mask, origin, centre)


@dataclass(frozen=True)
class HeadLayers:
    """Thicknesses (mm) of the procedural tissue layers around the brain.

    Each thickness is modulated around the head by ``1 + variation * g(angle)`` with a
    smooth random periodic ``g`` (unit amplitude), drawn from ``phase_seed``.
    """

    csf_mm: float = 2.0
    skull_mm: float = 6.5
    diploe_fat: float = 0.35
    temporalis_mm: float = 8.0
    fat_mm: float = 5.0
    skin_mm: float = 1.8
    variation: float = 0.2
    phase_seed: int = 0


def sample_head_layers(rng: np.random.Generator) -> HeadLayers:
    """Per-subject layer thicknesses (uniform within adult ranges, see module docs)."""
    return HeadLayers(
        csf_mm=float(rng.uniform(1.0, 3.0)),
        skull_mm=float(rng.uniform(5.0, 8.0)),
        diploe_fat=float(rng.uniform(0.2, 0.5)),
        temporalis_mm=float(rng.uniform(4.0, 12.0)),
        fat_mm=float(rng.uniform(3.0, 7.0)),
        skin_mm=float(rng.uniform(1.0, 2.5)),
        variation=float(rng.uniform(0.1, 0.3)),
        phase_seed=int(rng.integers(0, 2**31 - 1)),
    )


def canvas_coords(templates: MNITemplates | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Template voxel coordinates (x, y) of the canvas voxel centres, each (CANVAS, CANVAS)."""
    templates = templates or load_mni_templates()
    c = np.arange(CANVAS, dtype=np.float64) - CANVAS // 2
    x = templates.centre_lps_mm[0] + c - templates.origin_lps_mm[0]
    y = templates.centre_lps_mm[1] + c - templates.origin_lps_mm[1]
    return np.meshgrid(x, y, indexing="ij")


def _check_slice(templates: MNITemplates, slice_index: int) -> None:
    if not 0 <= slice_index < templates.n_slices:
        raise ValueError(
            f"slice_index {slice_index} is outside the MNI152 template (0..{templates.n_slices - 1} "
            "axial 1 mm slices)"
        )


def brain_slice(
    slice_index: int,
    warp: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    lesion: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    slab_weights: tuple[float, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Brain tissue fractions of one axial template slice on the 1 mm canvas.

    Args:
        slice_index: axial slice of the MNI152 template (0-based, 1 mm, inferior to superior).
        warp: optional map from canvas template coordinates ``(x, y)`` (voxels, arrays) to
            the template coordinates to sample (the augmentation, see
            :mod:`mrf_monai.phantoms.augment`).
        lesion: optional function of the (warped) template coordinates returning a lesion
            fraction in [0, 1]; lesions replace GM/WM/CSF inside the brain.
        slab_weights: optional odd-length weights of the template slices
            ``slice_index - k .. slice_index + k`` (normalised to sum 1): through-plane
            partial volume of a thicker slab (default: the one 1 mm slice).

    Returns:
        ``{"csf", "gm", "wm", "lesion", "vessel", "brain"}`` float32 maps ``(CANVAS, CANVAS)``;
        ``brain`` = the (soft) brain mask = ``csf + gm + wm + lesion``; ``vessel`` is zero.
    """
    t = load_mni_templates()
    _check_slice(t, slice_index)
    x, y = canvas_coords(t)
    if warp is not None:
        x, y = warp(x, y)
    if slab_weights is None:
        z = slice_index
        planes = torch.from_numpy(np.stack([t.mask[:, :, z], t.gm[:, :, z], t.wm[:, :, z]]))[None]
    else:
        w = np.asarray(slab_weights, dtype=np.float64)
        if w.ndim != 1 or w.size % 2 != 1 or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"slab_weights must be an odd number of non-negative weights, got {slab_weights}"
            )
        k = w.size // 2
        zs = np.clip(np.arange(slice_index - k, slice_index + k + 1), 0, t.n_slices - 1)
        w = w / w.sum()
        stacks = [np.tensordot(v[:, :, zs], w, axes=([2], [0])) for v in (t.mask, t.gm, t.wm)]
        planes = torch.from_numpy(np.stack(stacks).astype(np.float32))[None]
    # grid_sample: grid[..., 0] indexes the last input axis (y), grid[..., 1] the first (x)
    nx, ny = planes.shape[-2:]
    grid = np.stack([2.0 * y / (ny - 1) - 1.0, 2.0 * x / (nx - 1) - 1.0], axis=-1)
    sampled = torch.nn.functional.grid_sample(
        planes,
        torch.from_numpy(grid.astype(np.float32))[None],
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )[0].numpy()

    brain = np.clip(sampled[0], 0.0, 1.0)
    gm = np.clip(sampled[1], 0.0, None)
    wm = np.clip(sampled[2], 0.0, None)
    total = gm + wm
    scale = np.where(total > brain, brain / np.maximum(total, 1e-12), 1.0)
    gm, wm = gm * scale, wm * scale
    csf = np.clip(brain - gm - wm, 0.0, None)
    les = np.zeros_like(brain)
    if lesion is not None:
        f = np.clip(lesion(x, y), 0.0, 1.0)
        les = f * brain
        keep = 1.0 - f
        gm, wm, csf = gm * keep, wm * keep, csf * keep
    out = {"csf": csf, "gm": gm, "wm": wm, "lesion": les, "vessel": np.zeros_like(brain), "brain": brain}
    return {k: v.astype(np.float32) for k, v in out.items()}


def _ramp(d: np.ndarray, start: np.ndarray | float, stop: np.ndarray | float) -> np.ndarray:
    """Fraction of the 1 mm voxel at distance ``d`` that lies in the shell [start, stop)."""
    lo = np.clip(d - start + 0.5, 0.0, 1.0)
    hi = np.clip(d - stop + 0.5, 0.0, 1.0)
    return np.clip(lo - hi, 0.0, 1.0)


def _angular_profile(rng: np.random.Generator, angle: np.ndarray, n_harmonics: int = 4) -> np.ndarray:
    """Smooth random periodic function of the angle with peak amplitude about 1.

    Evaluated on a table of 720 angles and looked up (cheap for whole images).
    """
    table = np.linspace(-math.pi, math.pi, 721)
    g = np.zeros_like(table)
    for h in range(1, n_harmonics + 1):
        a, b = rng.normal(size=2) / h
        g += a * np.cos(h * table) + b * np.sin(h * table)
    g /= max(float(np.abs(g).max()), 1e-6)
    idx = np.rint((angle + math.pi) * (720 / (2 * math.pi))).astype(np.intp)
    return g[np.clip(idx, 0, 720)]


def head_slice(
    slice_index: int,
    layers: HeadLayers | None = None,
    warp: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    lesion: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    slab_weights: tuple[float, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Tissue fractions of a whole head slice (brain + procedural layers) on the 1 mm canvas.

    Args:
        slice_index: axial MNI152 slice (see :func:`brain_slice`).
        layers: layer thicknesses (default :class:`HeadLayers`).
        warp, lesion, slab_weights: see :func:`brain_slice`.

    Returns:
        float32 ``(CANVAS, CANVAS)`` maps for every name in :data:`TISSUE_NAMES` plus
        ``"brain"`` (soft brain mask). Fractions sum to at most 1 per voxel.
    """
    layers = layers or HeadLayers()
    out = brain_slice(slice_index, warp, lesion, slab_weights)
    brain = out["brain"]
    inside = brain >= 0.5
    if not inside.any():
        raise ValueError(
            f"axial slice {slice_index} holds no brain after augmentation; use a slice of "
            "mrf_monai.phantoms.augment.split_slices(split)"
        )
    d = ndimage.distance_transform_edt(~inside).astype(np.float64)
    ii, jj = np.nonzero(inside)
    ci, cj = ii.mean(), jj.mean()
    gi, gj = np.meshgrid(np.arange(CANVAS) - ci, np.arange(CANVAS) - cj, indexing="ij")
    # angle around the head: 0 = patient left (+i), pi/2 = posterior (+j)
    angle = np.arctan2(gj, gi)
    rng = np.random.default_rng(layers.phase_seed)

    def thickness(base: float) -> np.ndarray:
        return base * (1.0 + layers.variation * _angular_profile(rng, angle))

    # temporalis: thickest at the sides (|cos| = 1), also a bit more anterior
    lateral = np.abs(np.cos(angle)) ** 2 * (0.6 + 0.4 * np.clip(-np.sin(angle) + 0.5, 0.0, 1.0))
    b0 = thickness(layers.csf_mm)
    b1 = b0 + thickness(layers.skull_mm)
    b2 = b1 + thickness(layers.temporalis_mm) * lateral
    b3 = b2 + thickness(layers.fat_mm)
    b4 = b3 + thickness(layers.skin_mm)
    outside = 1.0 - brain
    csf_rim = _ramp(d, 0.0, b0) * outside
    skull = _ramp(d, b0, b1) * outside
    # fatty diploe in the middle third of the skull
    mid0, mid1 = b0 + (b1 - b0) / 3.0, b0 + 2.0 * (b1 - b0) / 3.0
    diploe = _ramp(d, mid0, mid1) * outside * layers.diploe_fat
    muscle = (_ramp(d, b1, b2) + _ramp(d, b3, b4)) * outside
    fat = _ramp(d, b2, b3) * outside
    # the voxels at d == 0 belong to the brain; partial-volume rims are scaled by 1 - brain
    out["csf"] = out["csf"] + csf_rim.astype(np.float32)
    out["bone"] = (skull - diploe).astype(np.float32)
    out["fat"] = (fat + diploe).astype(np.float32)
    out["muscle"] = muscle.astype(np.float32)
    total = sum(out[k] for k in TISSUE_NAMES)
    over = total > 1.0
    if over.any():
        for k in TISSUE_NAMES:
            out[k][over] /= total[over]
    return out


def resample_to_matrix(maps: dict[str, np.ndarray], matrix: int) -> dict[str, np.ndarray]:
    """Resample canvas maps ``(CANVAS, CANVAS)`` to ``(matrix, matrix)`` over the same 230 mm FOV.

    Area averaging (``adaptive_avg_pool2d``) when coarser, so that fractions stay fractions;
    bilinear interpolation when finer.
    """
    if matrix == CANVAS:
        return maps
    if matrix < 8:
        raise ValueError(f"matrix must be at least 8, got {matrix}")
    names = list(maps)
    x = torch.from_numpy(np.stack([np.asarray(maps[k], dtype=np.float32) for k in names]))[None]
    if matrix < CANVAS:
        y = torch.nn.functional.adaptive_avg_pool2d(x, (matrix, matrix))
    else:
        y = torch.nn.functional.interpolate(x, size=(matrix, matrix), mode="bilinear", align_corners=False)
    return {k: y[0, i].numpy().copy() for i, k in enumerate(names)}


def slice_position_mm(slice_index: int, matrix: int = CANVAS) -> np.ndarray:
    """LPS position (mm) of voxel ``(matrix//2, matrix//2)`` of an (unaugmented) slice.

    This is the ISMRMRD ``position`` of the slice (data contract: the voxel
    ``(Nx//2, Ny//2)`` sits at the slice centre), with ``read_dir = (1, 0, 0)``,
    ``phase_dir = (0, 1, 0)``, ``slice_dir = (0, 0, 1)``.
    """
    t = load_mni_templates()
    _check_slice(t, slice_index)
    pixel = FOV_MM / matrix
    # canvas voxel c (1 mm) has its centre at centre + (c - CANVAS//2);
    # the FOV starts half a voxel before c = 0
    fov_start = -(CANVAS // 2) - 0.5
    offset = fov_start + (matrix // 2 + 0.5) * pixel
    return np.array(
        [t.centre_lps_mm[0] + offset, t.centre_lps_mm[1] + offset, t.z_mm(slice_index)], dtype=np.float64
    )
