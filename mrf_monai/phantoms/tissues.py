"""Tissue relaxation parameters at 3 T and the per-subject parameter maps.

Nominal values (3 T, means used by the simulator; each subject draws its own, see below)
-----------------------------------------------------------------------------------------
========== ======= ======= ===== ====================================================
tissue     T1 (s)  T2 (s)  PD    source (3 T)
========== ======= ======= ===== ====================================================
WM         0.85    0.065   0.69  Wansapura et al., JMRI 1999 (T1 ~0.83 s); Stanisz et al.,
                                 MRM 2005 (T2 ~0.07 s); FISP-MRF reports T2 0.05-0.07 s
GM         1.35    0.090   0.80  Wansapura et al. 1999 (T1 ~1.33 s); Stanisz et al. 2005
                                 (T2 ~0.1 s)
CSF        4.20    1.80    1.00  water-like; T1 about 4.1-4.4 s and T2 about 1.5-2 s at 3 T
                                 (Lu et al., JMRI 2005; Spijkerman et al., MAGMA 2018)
fat        0.37    0.13    0.90  subcutaneous fat, Gold et al., AJR 2004 (T1 ~0.37 s,
                                 T2 ~0.13 s)
muscle     1.42    0.040   0.75  Gold et al. 2004 (T1 ~1.42 s, T2 ~0.03 s); Stanisz et al.
                                 2005 (T1 ~1.41 s, T2 ~0.05 s); also used for skin
bone       0.25    0.006   0.05  cortical bone: T2* below 1 ms, almost no signal in FISP
MS lesion  1.30    0.13    0.80  synthetic: between WM and CSF, as reported for chronic MS
                                 lesions by relaxometry / MRF studies (T1 1.1-1.6 s,
                                 T2 0.1-0.2 s)
oedema     1.80    0.25    0.90  synthetic vasogenic oedema: long T1 and T2
========== ======= ======= ===== ====================================================

PD is the relative water (proton) density, CSF = 1 (brain values as in common
quantitative-MRI phantoms, e.g. WM 0.69, GM 0.8). The literature values above are
rounded; the spread between studies (sequence, B1 correction, MT) is of the same order as
the per-subject spread that the simulator draws.

Per-subject variation
---------------------
* Each subject multiplies the nominal T1, T2 and PD of every tissue by an independent
  log-normal factor ``exp(N(0, spread))`` (``spread`` = 0.15 for T1/T2 and 0.05 for PD by
  default: about 15 % between subjects).
* A smooth spatial texture (unit-variance Gaussian random fields with about 8 mm
  correlation length, one each for T1, T2 and PD) modulates each tissue by
  ``exp(texture_k * field)`` with ``texture_k`` a few percent.
* Lesions (a fraction ``lesion_probability`` of the subjects): either 3-10 small
  MS-like ellipsoids (radius 2-7 mm) in white matter, or 1-2 large oedema-like ones
  (radius 8-20 mm), placed in template space so that the slices of one subject agree.
* PD carries a smooth complex phase: a random constant, a linear ramp of up to 1 rad
  across the field of view and a smooth field (about 40 mm correlation, 0.3 rad standard
  deviation).

Partial-volume mixing
---------------------
Voxels hold fractions ``f_k`` of several tissues. Parameters are mixed, not signals: the
voxel's PD is ``sum_k f_k PD_k`` and its relaxation *rates* are PD-weighted means,
``1/T1 = sum_k f_k PD_k / T1_k / PD`` (likewise T2): the fast-exchange limit. Each voxel
then has exactly one (T1, T2, PD), which is the ground truth written to ``ref/`` and the
generator of its signal, so the reference maps and the data agree exactly. (Mixing signals
instead would leave no single "true" T1/T2 per voxel at tissue borders.)

Finally T1 is clipped to [0.05, 5] s and T2 to [0.005, min(3, T1)] s: the default
dictionary range (``physics.dictionary.t1t2_grid``) with T2 <= T1.

Literature ranges (the phantom world's "tissue ranges" ingredient)
------------------------------------------------------------------
Reported 3 T values differ between studies far more than the 15 % spread above (sequence,
B1 and MT handling, fitting model): the review of Bojorquez et al. (Magn Reson Imaging
2017, "What are normal relaxation times of tissues at 3 T?") lists, e.g., WM T1 from 0.70 to
1.74 s and fat T2 from 0.041 to 0.371 s across methods. A subject of a
:class:`~mrf_monai.phantoms.recipe.PhantomRecipe` with ``tissue_range_probability`` draws
each tissue's T1 and T2 log-uniformly and its PD uniformly over :data:`TISSUE_RANGES`:

========== =========== ============= =========== =========================================
tissue     T1 (s)      T2 (s)        PD          basis (3 T)
========== =========== ============= =========== =========================================
WM         0.70-1.10   0.040-0.080   0.62-0.76   IR and MRF values (Wansapura 1999: 0.83 s;
                                                 Stanisz 2005: 1.08 s, T2 0.07 s); MRF-FISP
                                                 reports the shorter T2
GM         1.10-1.85   0.070-0.120   0.74-0.88   Wansapura 1999 (1.33 s) to Stanisz 2005
                                                 (1.82 s, T2 0.1 s)
CSF        3.50-4.70   1.20-2.50     0.95-1.00   water-like (Lu 2005; Spijkerman 2018)
fat        0.30-0.45   0.050-0.150   0.80-1.00   Gold 2004 (0.37 s, 0.13 s); the shorter T2
                                                 of multi-peak fat in FISP/MRF
muscle     1.20-1.60   0.027-0.050   0.65-0.82   Gold 2004; Stanisz 2005
bone       0.15-0.40   0.004-0.012   0.02-0.10   cortical bone: almost no FISP signal
vessel     1.50-2.10   0.050-0.250   0.85-1.00   blood: T1 about 1.65 s (Lu et al., MRM 2004);
                                                 T2 depends on oxygenation (venous short,
                                                 arterial long)
========== =========== ============= =========== =========================================

(Rounded brackets around the cited values; check them against the papers before quoting
them elsewhere.) Lesions of the world have their own contrast modes
(:mod:`mrf_monai.phantoms.lesions`). ``vessel`` has nominal values :data:`VESSEL`
(1.65 s, 0.15 s, 0.9); it only appears in the world's fine structure.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from .anatomy import (
    CANVAS,
    FOV_MM,
    TISSUE_NAMES,
    head_slice,
    load_mni_templates,
    resample_to_matrix,
    sample_head_layers,
)
from .augment import (
    SLICE_RANGE,
    Augmentation,
    sample_augmentation,
    smooth_random_field,
    split_of_slice,
    split_slices,
    subject_generator,
)
from .recipe import PhantomRecipe, check_training_seed, is_validation_seed, recipe_for_seed

__all__ = [
    "FIELD_STRENGTH_T",
    "TissueProperties",
    "TISSUES",
    "TISSUE_RANGES",
    "VESSEL",
    "LESION_TYPES",
    "T1_RANGE_S",
    "T2_RANGE_S",
    "LABELS",
    "SubjectParameters",
    "Lesion",
    "sample_subject_parameters",
    "sample_subject_maps",
    "tissue_maps",
    "mix_tissues",
]

#: Field strength of every value in this module, tesla.
FIELD_STRENGTH_T = 3.0
#: Range of the simulated parameters = the default dictionary range, seconds.
T1_RANGE_S = (0.05, 5.0)
T2_RANGE_S = (0.005, 3.0)


@dataclass(frozen=True)
class TissueProperties:
    """Nominal 3 T properties of one tissue.

    Attributes:
        t1_s, t2_s: relaxation times, seconds.
        pd: relative proton density (CSF = 1).
        texture: standard deviation of the log spatial texture of T1/T2 (PD: half of it).
    """

    t1_s: float
    t2_s: float
    pd: float
    texture: float = 0.04


#: Nominal tissue properties at 3 T (see the module docstring for sources).
TISSUES: dict[str, TissueProperties] = {
    "csf": TissueProperties(4.20, 1.80, 1.00, texture=0.02),
    "gm": TissueProperties(1.35, 0.090, 0.80, texture=0.05),
    "wm": TissueProperties(0.85, 0.065, 0.69, texture=0.05),
    "fat": TissueProperties(0.37, 0.13, 0.90, texture=0.04),
    "muscle": TissueProperties(1.42, 0.040, 0.75, texture=0.05),
    "bone": TissueProperties(0.25, 0.006, 0.05, texture=0.05),
}
#: Nominal blood (the ``vessel`` tissue of the phantom world's fine structure).
VESSEL = TissueProperties(1.65, 0.15, 0.90, texture=0.03)
#: 3 T literature ranges ``((T1 lo, hi) s, (T2 lo, hi) s, (PD lo, hi))`` (module docstring).
TISSUE_RANGES: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "wm": ((0.70, 1.10), (0.040, 0.080), (0.62, 0.76)),
    "gm": ((1.10, 1.85), (0.070, 0.120), (0.74, 0.88)),
    "csf": ((3.50, 4.70), (1.20, 2.50), (0.95, 1.00)),
    "fat": ((0.30, 0.45), (0.050, 0.150), (0.80, 1.00)),
    "muscle": ((1.20, 1.60), (0.027, 0.050), (0.65, 0.82)),
    "bone": ((0.15, 0.40), (0.004, 0.012), (0.02, 0.10)),
    "vessel": ((1.50, 2.10), (0.050, 0.250), (0.85, 1.00)),
}
#: Synthetic lesion types (the ``"lesion"`` tissue of a subject takes one of them).
LESION_TYPES: dict[str, TissueProperties] = {
    "ms": TissueProperties(1.30, 0.13, 0.80, texture=0.08),
    "oedema": TissueProperties(1.80, 0.25, 0.90, texture=0.06),
}
#: Label of each tissue in the ``labels`` map (0 = air / background).
LABELS = {"background": 0, **{name: i + 1 for i, name in enumerate(TISSUE_NAMES)}}


@dataclass(frozen=True)
class Lesion:
    """An ellipsoidal lesion in template space (LPS-oriented voxel coordinates, mm)."""

    centre: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    angle_rad: float = 0.0
    edge_mm: float = 1.5


@dataclass(frozen=True)
class SubjectParameters:
    """Everything random about a subject that does not depend on the slice.

    ``world`` is ``None`` for today's phantoms, else the subject's draw of a
    :class:`~mrf_monai.phantoms.recipe.PhantomRecipe` (:class:`mrf_monai.phantoms.world.WorldDraw`).
    """

    tissues: dict[str, TissueProperties]
    lesions: tuple[Lesion, ...]
    lesion_type: str | None
    augmentation: Augmentation
    layers: object  # anatomy.HeadLayers
    phase_seed: int
    world: object | None = None  # world.WorldDraw


def _draw(rng: np.random.Generator, p: TissueProperties, spread: float, pd_spread: float) -> TissueProperties:
    f1, f2, f3 = np.exp(rng.normal(0.0, [spread, spread, pd_spread]))
    return TissueProperties(p.t1_s * f1, p.t2_s * f2, p.pd * f3, p.texture)


@functools.lru_cache(maxsize=4)
def _lesion_sites(threshold: float) -> np.ndarray:
    """Template voxels ``(x, y, z)`` with WM above ``threshold`` in the usable slices (cached)."""
    t = load_mni_templates()
    z0, z1 = SLICE_RANGE
    sites = np.argwhere(t.wm[:, :, z0:z1] > threshold)
    sites[:, 2] += z0
    sites.setflags(write=False)
    return sites


def _sample_lesions(rng: np.random.Generator, kind: str) -> tuple[Lesion, ...]:
    cand = _lesion_sites(0.9 if kind == "ms" else 0.6)
    n = int(rng.integers(3, 11)) if kind == "ms" else int(rng.integers(1, 3))
    r_lo, r_hi = (2.0, 7.0) if kind == "ms" else (8.0, 20.0)
    out = []
    for idx in rng.choice(len(cand), size=n, replace=False):
        x, y, z = cand[idx]
        r = rng.uniform(r_lo, r_hi)
        radii = tuple(float(r * f) for f in rng.uniform(0.6, 1.4, size=3))
        out.append(Lesion((float(x), float(y), float(z)), radii, float(rng.uniform(0, math.pi))))
    return tuple(out)


def sample_subject_parameters(
    seed: int,
    split: str = "train",
    augment: bool = True,
    spread: float = 0.15,
    pd_spread: float = 0.05,
    lesion_probability: float = 0.3,
    *,
    recipe: PhantomRecipe | None = None,
) -> SubjectParameters:
    """Draw the slice-independent parameters of subject ``seed`` of ``split``.

    Args:
        seed: subject seed (non-negative); with ``split`` it fixes everything.
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint random streams).
        augment: draw a geometric augmentation (else the template's own geometry).
        spread: log-normal standard deviation of the per-subject T1 and T2 factors.
        pd_spread: same for PD.
        lesion_probability: probability that the subject has lesions (a recipe's own
            ``lesion_probability`` replaces it).
        recipe: the phantom world to draw from (:class:`~mrf_monai.phantoms.recipe.PhantomRecipe`;
            ``None``: today's phantoms). Seeds of the reserved validation range always use
            their validation kind's recipe, and are refused for ``split="train"``
            (:mod:`mrf_monai.phantoms.recipe`).
    """
    recipe = recipe_for_seed(seed, split, recipe)
    if recipe is not None:
        lesion_probability = recipe.lesion_probability
    rng = subject_generator(seed, split, 0)
    tissues = {name: _draw(rng, p, spread, pd_spread) for name, p in TISSUES.items()}
    lesion_type = None
    lesions: tuple[Lesion, ...] = ()
    if rng.random() < lesion_probability:
        lesion_type = "ms" if rng.random() < 0.7 else "oedema"
        tissues["lesion"] = _draw(rng, LESION_TYPES[lesion_type], spread, pd_spread)
        lesions = _sample_lesions(rng, lesion_type)
    else:
        tissues["lesion"] = LESION_TYPES["ms"]
    aug = sample_augmentation(rng) if augment else Augmentation()
    layers = sample_head_layers(rng)
    base = SubjectParameters(tissues, lesions, lesion_type, aug, layers, int(rng.integers(0, 2**31 - 1)))
    if recipe is None:
        return base
    from .world import draw_world  # the world builds on this module

    return draw_world(base, seed, split, augment, recipe)


def _lesion_fraction(lesions: tuple[Lesion, ...], z: float):
    def fraction(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        f = np.zeros(x.shape, dtype=np.float64)
        for les in lesions:
            rx, ry, rz = les.radii_mm
            dz = (z - les.centre[2]) / rz
            if abs(dz) >= 1.0:
                continue
            c, s = math.cos(les.angle_rad), math.sin(les.angle_rad)
            dx, dy = x - les.centre[0], y - les.centre[1]
            u = (c * dx + s * dy) / rx
            v = (-s * dx + c * dy) / ry
            rho = np.sqrt(u * u + v * v + dz * dz)
            f = np.maximum(f, np.clip((1.0 - rho) * min(les.radii_mm) / les.edge_mm, 0.0, 1.0))
        return f

    return fraction


def mix_tissues(
    fractions: dict[str, np.ndarray],
    t1_s: dict[str, np.ndarray | float],
    t2_s: dict[str, np.ndarray | float],
    pd: dict[str, np.ndarray | float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Partial-volume (fast-exchange) mixing of tissue parameters.

    ``PD = sum f_k PD_k``; ``1/T1 = sum f_k PD_k / T1_k / PD`` and the same for T2
    (module docstring). Returns ``(t1_s, t2_s, pd)``; voxels without protons get 0.
    """
    names = list(fractions)
    shape = np.shape(fractions[names[0]])
    pd_tot = np.zeros(shape)
    r1 = np.zeros(shape)
    r2 = np.zeros(shape)
    for k in names:
        w = fractions[k] * pd[k]
        pd_tot += w
        r1 += w / t1_s[k]
        r2 += w / t2_s[k]
    has = pd_tot > 0
    t1 = np.zeros(shape)
    t2 = np.zeros(shape)
    t1[has] = pd_tot[has] / r1[has]
    t2[has] = pd_tot[has] / r2[has]
    return t1, t2, pd_tot


def sample_subject_maps(
    seed: int,
    slice_index: int,
    matrix: int = CANVAS,
    split: str = "train",
    augment: bool = True,
    *,
    parameters: SubjectParameters | None = None,
    check_split: bool = True,
    mask_threshold: float = 0.5,
    recipe: PhantomRecipe | None = None,
) -> dict[str, np.ndarray]:
    """Ground-truth parameter maps of one axial slice of a simulated subject.

    Args:
        seed: subject seed (non-negative); the same seed and split give the same subject
            in every slice.
        slice_index: MNI152 axial slice (1 mm); must belong to ``split``
            (:func:`mrf_monai.phantoms.augment.split_slices`) unless ``check_split=False``.
        matrix: output matrix (the field of view is 230 mm, so voxels are 230/matrix mm).
        split: ``"train"``, ``"val"`` or ``"test"``.
        augment: apply the subject's geometric augmentation.
        parameters: precomputed :func:`sample_subject_parameters` of this subject (saves
            redrawing them for every slice).
        check_split: refuse slices that belong to another split (or to no split).
        mask_threshold: brain-tissue fraction above which a voxel is in ``mask``.
        recipe: the phantom world (:class:`~mrf_monai.phantoms.recipe.PhantomRecipe`, see
            :func:`sample_subject_parameters`; ignored when ``parameters`` are given, which
            carry their own draw). ``None`` and ``PhantomRecipe()`` give today's phantoms.

    Returns:
        ``(matrix, matrix)`` numpy arrays: ``t1_s``, ``t2_s`` (float32 seconds, 0 outside
        the head), ``pd`` (complex64, magnitude = relative proton density, smooth phase),
        ``mask`` (bool, brain tissue used for metrics: CSF + GM + WM + lesion fraction above
        ``mask_threshold``), ``labels`` (uint8, dominant tissue, :data:`LABELS`) and
        ``fractions`` ``(len(TISSUE_NAMES), matrix, matrix)`` float32 (all zero for a
        fully synthetic phantom, whose ``labels`` are region ids from
        :data:`mrf_monai.phantoms.synthetic.SYNTHETIC_LABEL_BASE`).
    """
    if check_split and split_of_slice(slice_index) != split:
        raise ValueError(
            f"slice {slice_index} belongs to split {split_of_slice(slice_index)!r}, not {split!r}; "
            f"use one of mrf_monai.phantoms.augment.split_slices({split!r}) = {split_slices(split).tolist()} "
            "or pass check_split=False"
        )
    if parameters is None:
        p = sample_subject_parameters(seed, split, augment, recipe=recipe)
    else:
        check_training_seed(seed, split)
        if is_validation_seed(seed) and parameters.world is None:
            raise ValueError(
                f"subject seed {seed} is a validation seed: its parameters must come from "
                "sample_subject_parameters (they carry the validation recipe's draw)"
            )
        p = parameters
    if p.world is not None:
        from .world import world_slice_maps  # the world builds on this module

        return world_slice_maps(seed, slice_index, matrix, split, augment, p, mask_threshold)
    lesion = _lesion_fraction(p.lesions, float(slice_index)) if p.lesions else None
    aug = p.augmentation if augment else Augmentation()
    frac = head_slice(slice_index, p.layers, None if aug.is_identity else aug.warp(), lesion)
    frac = resample_to_matrix(frac, matrix)
    return tissue_maps(frac, p, seed, split, slice_index, matrix, mask_threshold)


def tissue_maps(
    frac: dict[str, np.ndarray],
    p: SubjectParameters,
    seed: int,
    split: str,
    slice_index: int,
    matrix: int,
    mask_threshold: float = 0.5,
    phase=None,
) -> dict[str, np.ndarray]:
    """The map dict of :func:`sample_subject_maps` from tissue fractions at the output matrix.

    Args:
        frac: ``(matrix, matrix)`` fraction maps of every tissue of :data:`TISSUE_NAMES` and
            ``brain`` (e.g. :func:`~mrf_monai.phantoms.anatomy.head_slice`, resampled).
        p: the subject's parameters (tissue values, PD phase seed).
        seed, split, slice_index: select the random stream of the texture and phase fields.
        matrix: the matrix of ``frac``.
        mask_threshold: see :func:`sample_subject_maps`.
        phase: optional callable ``matrix -> phase map (rad)`` replacing today's smooth phase.
    """
    rng = subject_generator(seed, split, 1, int(slice_index))
    shape = (matrix, matrix)
    pixel_mm = FOV_MM / matrix
    tex = {q: smooth_random_field(rng, shape, 8.0 / pixel_mm) for q in ("t1", "t2", "pd")}
    t1_k, t2_k, pd_k = {}, {}, {}
    for k in TISSUE_NAMES:
        if k not in p.tissues:
            if np.any(frac[k] > 0):
                raise ValueError(
                    f"the phantom has {k!r} tissue but the subject's parameters give it no values"
                )
            continue  # an absent tissue (today's phantoms have no vessels) adds exactly nothing
        tp = p.tissues[k]
        t1_k[k] = tp.t1_s * np.exp(tp.texture * tex["t1"])
        t2_k[k] = tp.t2_s * np.exp(tp.texture * tex["t2"])
        pd_k[k] = tp.pd * np.exp(0.5 * tp.texture * tex["pd"])
    fr = {k: frac[k].astype(np.float64) for k in TISSUE_NAMES}
    t1, t2, pd_mag = mix_tissues({k: fr[k] for k in t1_k}, t1_k, t2_k, pd_k)
    has = pd_mag > 1e-4 * max(float(pd_mag.max()), 1e-12)
    t1 = np.where(has, np.clip(t1, *T1_RANGE_S), 0.0)
    t2 = np.where(has, np.clip(np.minimum(t2, t1), T2_RANGE_S[0], T2_RANGE_S[1]), 0.0)
    t2 = np.where(has, np.minimum(t2, t1), 0.0)
    pd_mag = np.where(has, pd_mag, 0.0)

    if phase is None:
        # smooth phase: constant + linear ramp (<= 1 rad across the FOV) + smooth field
        prng = np.random.default_rng(p.phase_seed)
        phase0 = prng.uniform(-math.pi, math.pi)
        ramp = prng.normal(size=2)
        ramp = ramp / max(float(np.linalg.norm(ramp)), 1e-12) * prng.uniform(0.0, 1.0)
        u = (np.arange(matrix) - matrix // 2) / matrix
        phi = phase0 + ramp[0] * u[:, None] + ramp[1] * u[None, :]
        phi = phi + 0.3 * smooth_random_field(rng, shape, 40.0 / pixel_mm)
    else:
        phi = phase(matrix)
    pd = (pd_mag * np.exp(1j * phi)).astype(np.complex64)

    stack = np.stack([fr[k] for k in TISSUE_NAMES])
    labels = np.where(stack.sum(0) >= 0.5, stack.argmax(0) + 1, 0).astype(np.uint8)
    brain = fr["csf"] + fr["gm"] + fr["wm"] + fr["lesion"] + fr["vessel"]
    # CSF outside the brain mask (extra-axial rim) is not brain tissue for the metrics
    mask = (frac["brain"] >= mask_threshold) & (brain >= mask_threshold) & has
    return {
        "t1_s": t1.astype(np.float32),
        "t2_s": t2.astype(np.float32),
        "pd": pd,
        "mask": mask,
        "labels": labels,
        "fractions": stack.astype(np.float32),
    }
