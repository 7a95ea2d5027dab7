"""Geometric augmentation of the phantoms, and the train / val / test split.

Augmentation
------------
Every simulated subject sees the MNI152 template through its own geometric transform,
applied before the procedural head is grown (so skull and fat follow the deformed brain):
an in-plane rotation, an anisotropic scaling, a shift, optional left-right (and, off by
default, anterior-posterior) flips and a smooth elastic displacement (cubic interpolation
white noise, :func:`smooth_random_field`). All of it is a pure function of
an :class:`Augmentation`, which is drawn from a seeded ``numpy.random.Generator``
(:func:`sample_augmentation`), so a subject is reproducible from its seed.

Split
-----
Train, validation and test subjects never share anatomy or random streams:

* **Slices.** Only template slices ``SLICE_RANGE = [30, 150)`` are used (RAS z = -42 to
  +77 mm: from the cerebellum and temporal lobes to the vertex, where a slice holds at least
  about 1,300 mm^2 of brain). They are cut into interleaved bands of ``BAND_PERIOD = 24``
  slices: offsets 0-11 of each band are *train*, 14-15 *val*, 18-21 *test*; offsets 12-13,
  16-17 and 22-23 are 2 mm guard gaps used by no split. Each split therefore samples the
  whole brain from bottom to top (60 train, 10 val and 20 test slices), and no two slices
  of different splits are closer than 3 mm.
* **Seeds.** Every random draw of a subject comes from
  ``numpy.random.SeedSequence([SPLIT_CODE[split], seed, *keys])``: the split code is part
  of the entropy, so seed 0 of *train* and seed 0 of *test* are unrelated subjects, and no
  seed of one split reproduces a subject of another.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft

__all__ = [
    "SPLITS",
    "SPLIT_CODE",
    "SLICE_RANGE",
    "BAND_PERIOD",
    "split_slices",
    "split_of_slice",
    "subject_generator",
    "Augmentation",
    "sample_augmentation",
    "smooth_random_field",
]

SPLITS = ("train", "val", "test")
#: Entropy word that separates the random streams of the splits.
SPLIT_CODE = {"train": 0x7A1, "val": 0x7A2, "test": 0x7A3}
#: Template slices (MNI152 1 mm axial index, half-open) that any split may use.
SLICE_RANGE = (30, 150)
#: Length of one band of interleaved splits, slices.
BAND_PERIOD = 24
_BAND_OFFSETS = {"train": range(0, 12), "val": range(14, 16), "test": range(18, 22)}


def smooth_random_field(
    rng: np.random.Generator, shape: tuple[int, int], correlation_px: float
) -> np.ndarray:
    """Unit-variance, zero-mean smooth Gaussian random field on a ``shape`` grid.

    White noise filtered (periodically, by FFT on a grid padded by twice the correlation
    length so that opposite edges are unrelated) with a Gaussian of standard deviation
    ``correlation_px / 2`` pixels.
    """
    pad = int(math.ceil(2 * correlation_px))
    big = (sp_fft.next_fast_len(shape[0] + pad, real=True), sp_fft.next_fast_len(shape[1] + pad, real=True))
    noise = rng.standard_normal(big, dtype=np.float32)
    sigma = correlation_px / 2.0
    fx = np.fft.fftfreq(big[0]).astype(np.float32)[:, None]
    fy = np.fft.rfftfreq(big[1]).astype(np.float32)[None, :]
    kernel = np.exp(np.float32(-2.0 * (math.pi * sigma) ** 2) * (fx**2 + fy**2))
    f = sp_fft.irfft2(sp_fft.rfft2(noise) * kernel, s=big)[: shape[0], : shape[1]].astype(np.float64)
    return (f - f.mean()) / max(float(f.std()), 1e-12)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def split_slices(split: str) -> np.ndarray:
    """Template axial slice indices (sorted, int64) that belong to ``split``."""
    _check_split(split)
    z = np.arange(*SLICE_RANGE)
    keep = np.isin((z - SLICE_RANGE[0]) % BAND_PERIOD, list(_BAND_OFFSETS[split]))
    return z[keep].astype(np.int64)


def split_of_slice(slice_index: int) -> str | None:
    """The split that owns template slice ``slice_index`` (``None``: guard gap or out of range)."""
    if not SLICE_RANGE[0] <= slice_index < SLICE_RANGE[1]:
        return None
    offset = (slice_index - SLICE_RANGE[0]) % BAND_PERIOD
    for split, offsets in _BAND_OFFSETS.items():
        if offset in offsets:
            return split
    return None


def subject_generator(seed: int, split: str, *keys: int) -> np.random.Generator:
    """Random generator of subject ``seed`` of ``split`` (``keys`` select a sub-stream).

    ``SeedSequence([SPLIT_CODE[split], seed, *keys])``: different splits never share a stream.
    """
    _check_split(split)
    if int(seed) < 0 or any(int(k) < 0 for k in keys):
        raise ValueError(f"seeds and keys must be non-negative integers, got seed={seed}, keys={keys}")
    return np.random.default_rng(np.random.SeedSequence([SPLIT_CODE[split], int(seed), *map(int, keys)]))


@dataclass(frozen=True)
class Augmentation:
    """An in-plane geometric transform of the template (output canvas -> template).

    A canvas point ``p`` (mm, relative to the canvas centre) samples the template at
    ``centre + R(-rotation) diag(1/scale) (F p - shift) + u(p)``: ``F`` flips, ``R``
    rotates, ``u`` is the elastic displacement (:attr:`elastic_mm` = standard deviation of
    the control-point displacements, :attr:`elastic_spacing_mm` their spacing).
    """

    rotation_deg: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    shift_mm: tuple[float, float] = (0.0, 0.0)
    flip_lr: bool = False
    flip_ap: bool = False
    elastic_mm: float = 0.0
    elastic_spacing_mm: float = 24.0
    elastic_seed: int = 0

    @property
    def is_identity(self) -> bool:
        return (
            self.rotation_deg == 0.0
            and tuple(self.scale) == (1.0, 1.0)
            and tuple(self.shift_mm) == (0.0, 0.0)
            and not self.flip_lr
            and not self.flip_ap
            and self.elastic_mm == 0.0
        )

    def displacement(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Elastic displacement ``(ux, uy)`` in mm on a ``shape`` grid of 1 mm voxels.

        Each component is a Gaussian random field with standard deviation ``elastic_mm``
        and Gaussian correlation of width ``elastic_spacing_mm`` (:func:`smooth_random_field`).
        """
        if self.elastic_mm == 0.0:
            z = np.zeros(shape)
            return z, z
        rng = np.random.default_rng(self.elastic_seed)
        ux = smooth_random_field(rng, shape, self.elastic_spacing_mm) * self.elastic_mm
        uy = smooth_random_field(rng, shape, self.elastic_spacing_mm) * self.elastic_mm
        return ux, uy

    def warp(self) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """The coordinate map used by :func:`mrf_monai.phantoms.anatomy.head_slice`.

        It takes the template coordinates ``(x, y)`` of the canvas voxels (2D arrays, mm)
        and returns the template coordinates to sample.
        """

        def apply(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            ci, cj = x.shape[0] // 2, x.shape[1] // 2
            cx, cy = x[ci, cj], y[ci, cj]
            px, py = x - cx, y - cy
            if self.flip_lr:
                px = -px
            if self.flip_ap:
                py = -py
            px, py = px - self.shift_mm[0], py - self.shift_mm[1]
            th = math.radians(self.rotation_deg)
            c, s = math.cos(th), math.sin(th)
            qx = (c * px + s * py) / self.scale[0]
            qy = (-s * px + c * py) / self.scale[1]
            ux, uy = self.displacement(x.shape)
            return cx + qx + ux, cy + qy + uy

        return apply


def sample_augmentation(
    rng: np.random.Generator,
    rotation_deg: float = 10.0,
    scale_range: tuple[float, float] = (0.92, 1.06),
    anisotropy: float = 0.04,
    shift_mm: float = 5.0,
    flip_lr_probability: float = 0.5,
    flip_ap_probability: float = 0.0,
    elastic_mm: float = 2.0,
) -> Augmentation:
    """Draw an :class:`Augmentation`.

    Args:
        rng: the subject's generator (:func:`subject_generator`).
        rotation_deg: rotations are uniform in ``[-rotation_deg, rotation_deg]``.
        scale_range: isotropic scale factor range (head size); the upper bound keeps the
            procedural head inside the 230 mm field of view.
        anisotropy: the two axes are scaled by an extra factor ``1 +- U(0, anisotropy)``.
        shift_mm: shifts are uniform in ``[-shift_mm, shift_mm]`` per axis.
        flip_lr_probability, flip_ap_probability: flip probabilities.
        elastic_mm: standard deviation of the elastic control-point displacements.
    """
    s = rng.uniform(*scale_range)
    a = rng.uniform(-anisotropy, anisotropy)
    return Augmentation(
        rotation_deg=float(rng.uniform(-rotation_deg, rotation_deg)),
        scale=(float(s * (1 + a)), float(s * (1 - a))),
        shift_mm=(float(rng.uniform(-shift_mm, shift_mm)), float(rng.uniform(-shift_mm, shift_mm))),
        flip_lr=bool(rng.random() < flip_lr_probability),
        flip_ap=bool(rng.random() < flip_ap_probability),
        elastic_mm=float(elastic_mm),
        elastic_seed=int(rng.integers(0, 2**31 - 1)),
    )
