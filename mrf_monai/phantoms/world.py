"""The phantom world: a subject drawn from a :class:`~mrf_monai.phantoms.recipe.PhantomRecipe`.

:func:`draw_world` decides, once per subject, which ingredients the subject gets (one
uniform number per ingredient from the sub-stream ``subject_generator(seed, split, 20)``,
compared with the recipe's probability) and draws each ingredient's slice-independent
parameters from its own sub-stream (21: deformation, 22: tissue values, 23: lesions, 24: PD
phase). Switching one ingredient off therefore leaves every other draw of the subject
unchanged, which is what an ablation needs; and everything today's phantoms draw (stream 0:
tissues, lesions, augmentation, head layers) is drawn exactly as before.

:func:`world_slice_maps` builds one slice: a fully synthetic phantom
(:func:`mrf_monai.phantoms.synthetic.synthetic_slice`, stream ``(26, slice)``), or the MNI152
head of :func:`mrf_monai.phantoms.anatomy.head_slice` seen through the subject's
augmentation and strong deformation (:mod:`mrf_monai.phantoms.deform`), optionally averaged
over a 3 mm slab, with varied lesions (:mod:`mrf_monai.phantoms.lesions`) and fine structure
(:mod:`mrf_monai.phantoms.structures`, stream ``(25, slice, k)``) added on the 1 mm canvas;
then the same resampling, tissue mixing, texture and mask as today
(:func:`mrf_monai.phantoms.tissues.tissue_maps`), with the subject's strong PD phase if it
has one. ``PhantomRecipe()`` switches every ingredient off and gives today's maps exactly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .anatomy import CANVAS, brain_slice, canvas_coords, head_slice, resample_to_matrix
from .augment import Augmentation, subject_generator
from .deform import Deformation, compose_warp, sample_deformation
from .lesions import ShapedLesion, sample_lesion_properties, sample_shaped_lesions, shaped_lesion_fractions
from .recipe import PhantomRecipe
from .structures import add_perivascular_spaces, add_sulci, add_vessels, fold_cortex
from .synthetic import PhaseField, sample_phase_field, synthetic_slice
from .tissues import (
    TISSUE_RANGES,
    VESSEL,
    SubjectParameters,
    TissueProperties,
    _lesion_fraction,
    tissue_maps,
)

__all__ = ["WorldDraw", "draw_world", "world_slice_maps", "world_to_dict"]

_FLAGS, _DEFORM, _TISSUE, _LESION, _PHASE, _STRUCT, _SYNTH = 20, 21, 22, 23, 24, 25, 26


@dataclass(frozen=True)
class WorldDraw:
    """A subject's draw of a recipe (which ingredients, with their slice-independent parameters).

    Attributes:
        recipe: the recipe drawn from.
        synthetic_style: style of a fully synthetic subject; ``None`` for an MNI152 head.
        deformation: strong deformation (``None``: none).
        tissue_ranges: tissue values drawn over the literature ranges.
        folding, csf_spaces, vessels: fine-structure ingredients.
        slab_weights: through-plane weights of the template slices (``None``: one 1 mm slice).
        varied_lesions: the subject's lesions are :class:`~mrf_monai.phantoms.lesions.ShapedLesion`.
        lesion_contrast: contrast mode of varied lesions.
        phase: strong PD phase (``None``: today's smooth phase).
    """

    recipe: PhantomRecipe
    synthetic_style: str | None = None
    deformation: Deformation | None = None
    tissue_ranges: bool = False
    folding: bool = False
    csf_spaces: bool = False
    vessels: bool = False
    slab_weights: tuple[float, ...] | None = None
    varied_lesions: bool = False
    lesion_contrast: str | None = None
    phase: PhaseField | None = None

    @property
    def synthetic(self) -> bool:
        """True for a fully synthetic subject."""
        return self.synthetic_style is not None

    def ingredients(self) -> list[str]:
        """Names of the ingredients this subject got (for manifests and ablations)."""
        if self.synthetic:
            return [f"synthetic-{self.synthetic_style}"]
        names = {
            "deformation": self.deformation is not None,
            "tissue-ranges": self.tissue_ranges,
            "folding": self.folding,
            "csf-spaces": self.csf_spaces,
            "vessels": self.vessels,
            "slab": self.slab_weights is not None,
            "varied-lesions": self.varied_lesions,
            "phase": self.phase is not None,
        }
        return [k for k, on in names.items() if on]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _range_tissues(rng: np.random.Generator, tissues: dict[str, TissueProperties]) -> dict:
    out = dict(tissues)
    for name, ((a1, b1), (a2, b2), (a3, b3)) in TISSUE_RANGES.items():
        texture = tissues[name].texture if name in tissues else VESSEL.texture
        t1 = _log_uniform(rng, a1, b1)
        t2 = min(_log_uniform(rng, a2, b2), 0.9 * t1)
        out[name] = TissueProperties(t1, t2, float(rng.uniform(a3, b3)), texture)
    return out


def draw_world(
    base: SubjectParameters, seed: int, split: str, augment: bool, recipe: PhantomRecipe
) -> SubjectParameters:
    """``base`` (today's draw of the subject) extended by its draw of ``recipe`` (module docstring)."""
    flags = subject_generator(seed, split, _FLAGS)
    u = flags.random(10)  # one number per ingredient, whatever the recipe
    style_index = int(flags.integers(0, len(recipe.synthetic_styles)))
    synthetic = bool(u[0] < recipe.synthetic_fraction)
    tissues = dict(base.tissues)
    trng = subject_generator(seed, split, _TISSUE)
    f1, f2, f3 = np.exp(trng.normal(0.0, [0.15, 0.15, 0.05]))
    tissues["vessel"] = TissueProperties(VESSEL.t1_s * f1, VESSEL.t2_s * f2, VESSEL.pd * f3, VESSEL.texture)
    tissue_ranges = bool(u[2] < recipe.tissue_range_probability) and not synthetic
    if tissue_ranges:
        tissues = _range_tissues(trng, tissues)
    phase = None
    if synthetic or u[8] < recipe.phase_probability:
        phase = sample_phase_field(subject_generator(seed, split, _PHASE), max(recipe.strength, 1e-6))
    if synthetic:
        draw = WorldDraw(recipe, synthetic_style=recipe.synthetic_styles[style_index], phase=phase)
        return dataclasses.replace(base, tissues=tissues, world=draw)
    deformation = None
    if u[1] < recipe.deformation_probability:
        deformation = sample_deformation(subject_generator(seed, split, _DEFORM), recipe.deformation_mm)
    slab = None
    if u[6] < recipe.slab_probability:
        w = float(flags.uniform(0.25, 1.0))
        slab = (w, 1.0, w)
    lesions, lesion_type, contrast = base.lesions, base.lesion_type, None
    varied = bool(base.lesions) and bool(u[7] < recipe.varied_lesion_probability)
    if varied:
        lrng = subject_generator(seed, split, _LESION)
        lesions = sample_shaped_lesions(lrng, split)
        contrast, (t1, t2, pd) = sample_lesion_properties(lrng)
        tissues["lesion"] = TissueProperties(t1, t2, pd, texture=0.08)
        lesion_type = f"varied-{contrast}"
    draw = WorldDraw(
        recipe,
        deformation=deformation,
        tissue_ranges=tissue_ranges,
        folding=bool(u[3] < recipe.folding_probability),
        csf_spaces=bool(u[4] < recipe.csf_space_probability),
        vessels=bool(u[5] < recipe.vessel_probability),
        slab_weights=slab,
        varied_lesions=varied,
        lesion_contrast=contrast,
        phase=phase,
    )
    return dataclasses.replace(base, tissues=tissues, lesions=lesions, lesion_type=lesion_type, world=draw)


def _shaped_lesion(lesions: tuple[ShapedLesion, ...], z: float):
    def fraction(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        les, core = shaped_lesion_fractions(lesions, x, y, z)
        return les + core

    return fraction


#: Largest distance (mm) of a deformed brain from the canvas centre along LPS x (left-right)
#: and y (anterior-posterior): room for the procedural head layers inside the 230 mm FOV
#: (the undeformed template with the largest augmentation scale reaches about 75 / 94 mm).
_BRAIN_HALF_EXTENT_MM = (80.0, 95.0)


def _fit_fov(coords: tuple[np.ndarray, np.ndarray], z: int, max_iterations: int = 4) -> tuple:
    """Shrink a deformed slice about the canvas centre until its brain leaves room for the head.

    The brain (of the template slice ``z`` sampled at ``coords``) must lie within
    :data:`_BRAIN_HALF_EXTENT_MM` of the canvas centre; the map is nonlinear, so the
    shrinking is repeated (at most ``max_iterations`` times).
    """
    c = CANVAS // 2
    x, y = coords
    cx, cy = x[c, c], y[c, c]
    for _ in range(max_iterations):
        brain = brain_slice(z, lambda a, b, xy=(x, y): xy)["brain"] >= 0.5
        if not brain.any():
            break
        ii, jj = np.nonzero(brain)
        f = max(
            float(np.abs(ii - c).max()) / _BRAIN_HALF_EXTENT_MM[0],
            float(np.abs(jj - c).max()) / _BRAIN_HALF_EXTENT_MM[1],
        )
        if f <= 1.0:
            break
        # sampling f times farther from the centre shrinks the image by about f
        f = 1.01 * f
        x, y = cx + (x - cx) * f, cy + (y - cy) * f
    return x, y


def world_slice_maps(
    seed: int,
    slice_index: int,
    matrix: int,
    split: str,
    augment: bool,
    p: SubjectParameters,
    mask_threshold: float = 0.5,
) -> dict[str, np.ndarray]:
    """Maps of slice ``slice_index`` of a subject with a world draw (module docstring).

    Same arguments and result as :func:`mrf_monai.phantoms.tissues.sample_subject_maps`
    (which calls this when ``p.world`` is set); ``augment=False`` also drops the strong
    deformation (it is geometric).
    """
    w = p.world
    if not isinstance(w, WorldDraw):
        raise ValueError("world_slice_maps needs parameters drawn with a recipe (p.world is not a WorldDraw)")
    z = int(slice_index)
    if w.synthetic:
        rng = subject_generator(seed, split, _SYNTH, z)
        return synthetic_slice(rng, matrix, w.synthetic_style, w.phase, mask_threshold)
    aug = p.augmentation if augment else Augmentation()
    warp = None if aug.is_identity else aug.warp()
    if augment and w.deformation is not None:
        warp = compose_warp(warp, w.deformation)
    coords = None if warp is None else warp(*canvas_coords())  # evaluated once, also for the lesions
    if coords is not None and augment and w.deformation is not None:
        coords = _fit_fov(coords, z)

    def fixed_warp(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return coords

    lesion = None
    if p.lesions:
        lesion = _shaped_lesion(p.lesions, z) if w.varied_lesions else _lesion_fraction(p.lesions, float(z))
    frac = head_slice(z, p.layers, None if coords is None else fixed_warp, lesion, w.slab_weights)
    if p.lesions and w.varied_lesions:
        x, y = coords if coords is not None else canvas_coords()
        les, core = shaped_lesion_fractions(p.lesions, x, y, float(z))
        share = les / np.maximum(les + core, 1e-12)
        total = frac["lesion"].astype(np.float64)
        frac["lesion"] = (total * share).astype(np.float32)
        frac["csf"] = (frac["csf"] + total * (1.0 - share)).astype(np.float32)  # cystic core
    s = w.recipe.strength

    def rng(k: int) -> np.random.Generator:
        return subject_generator(seed, split, _STRUCT, z, k)

    if w.folding:
        frac = fold_cortex(frac, rng(0), s)
    if w.csf_spaces:
        frac = add_perivascular_spaces(add_sulci(frac, rng(1), s), rng(2), s)
    if w.vessels:
        frac = add_vessels(frac, rng(3), s)
    frac = resample_to_matrix(frac, matrix)
    return tissue_maps(frac, p, seed, split, z, matrix, mask_threshold, phase=w.phase)


def world_to_dict(draw: WorldDraw | None) -> dict[str, Any] | None:
    """JSON-serialisable description of a :class:`WorldDraw` (``None`` stays ``None``)."""
    if draw is None:
        return None

    def plain(v: Any) -> Any:
        if isinstance(v, PhantomRecipe):
            return v.to_dict()
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        return v

    out = plain(draw)
    out["ingredients"] = draw.ingredients()
    return out
