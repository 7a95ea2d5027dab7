"""Phantom recipes (what the phantom world is made of) and the seeds reserved for validation.

Recipe
------
A :class:`PhantomRecipe` says which ingredients of the phantom world a subject may get and
how often: fully synthetic label phantoms (:mod:`mrf_monai.phantoms.synthetic`), strong
multi-scale deformation (:mod:`mrf_monai.phantoms.deform`), tissue parameters drawn over
their 3 T literature ranges, fine structure (cortical folding detail, sulcal and
perivascular CSF, vessels, through-plane partial volume: :mod:`mrf_monai.phantoms.structures`),
lesions of varied shape and contrast (:mod:`mrf_monai.phantoms.lesions`) and stronger PD
phase. Each ingredient has a probability (the share of subjects that get it); ``strength``
scales the amplitudes and counts of all of them. A recipe is plain data: ``to_dict`` /
``from_dict`` round-trip through JSON, so a bundle config can hold one.

``PhantomRecipe()`` (every probability 0, lesions as today) is today's phantom world, and
gives exactly the maps of ``sample_subject_maps`` without a recipe.

Validation seeds
----------------
Subject seeds ``VALIDATION_SEED_START = 2**52`` to ``VALIDATION_SEED_STOP = 2**52 + 2**40``
(exclusive) are reserved for the out-of-distribution validation sets. Each validation kind
owns a block of ``2**32`` seeds (:data:`VALIDATION_SEED_BLOCKS`): a seed in a block *is* a
subject of that kind, drawn with the kind's fixed recipe (:data:`VALIDATION_RECIPES`)
whatever recipe the caller asks for. Training draws (``split="train"``) refuse every seed of
the reserved range (:func:`check_training_seed`), so no training pair can ever reproduce a
validation subject. ``SimulatedPairDataset(seed=k)`` uses subject seeds ``k * 2**32 + i``:
dataset seeds ``2**20`` to ``2**20 + 2**8 - 1`` fall into the reserved range. All seeds stay
below ``2**53``, so they are exact in JSON readers that use doubles.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PhantomRecipe",
    "SYNTHETIC_STYLES",
    "VALIDATION_SEED_START",
    "VALIDATION_SEED_STOP",
    "VALIDATION_SEED_BLOCKS",
    "VALIDATION_RECIPES",
    "validation_seed",
    "validation_kind_of_seed",
    "is_validation_seed",
    "check_training_seed",
    "check_training_seeds",
    "recipe_for_seed",
]

#: Styles of the fully synthetic phantoms (:mod:`mrf_monai.phantoms.synthetic`).
SYNTHETIC_STYLES = ("fields", "voronoi")

_PROBABILITIES = (
    "synthetic_fraction",
    "deformation_probability",
    "tissue_range_probability",
    "folding_probability",
    "csf_space_probability",
    "vessel_probability",
    "slab_probability",
    "lesion_probability",
    "varied_lesion_probability",
    "phase_probability",
)


@dataclass(frozen=True)
class PhantomRecipe:
    """Which ingredients of the phantom world a subject gets, and how often.

    Attributes:
        synthetic_fraction: share of subjects that are fully synthetic label phantoms
            (:func:`mrf_monai.phantoms.synthetic.synthetic_slice`) instead of MNI152 heads.
        synthetic_styles: region styles of the synthetic phantoms (drawn uniformly among them).
        deformation_probability: share of template subjects with a strong multi-scale
            diffeomorphic deformation (on top of the usual augmentation).
        deformation_mm: range (uniform) of the standard deviation of the coarsest (64 mm)
            velocity component, mm; the 32 and 16 mm components get 1/2 and 1/4 of it.
        tissue_range_probability: share of subjects whose tissue T1/T2/PD are drawn
            log-uniformly over their 3 T literature ranges
            (:data:`mrf_monai.phantoms.tissues.TISSUE_RANGES`) instead of around the means.
        folding_probability: share with cortical folding detail (sharpened GM/WM boundary
            perturbed by band-limited noise of 4-8 mm wavelength).
        csf_space_probability: share with sulcal CSF and perivascular spaces.
        vessel_probability: share with vessels (thin tubes of blood: long T1, bright PD).
        slab_probability: share with through-plane partial volume (the template averaged
            over a 3 mm slab instead of one 1 mm slice).
        lesion_probability: share of subjects with lesions (0.3 = today's default).
        varied_lesion_probability: share of the subjects with lesions whose lesions are of
            varied shape (ellipsoids, lobulated blobs, rings with a cystic core), size
            (radius 1.5-25 mm) and contrast (T1/T2 above or below white matter) instead of
            today's MS-like / oedema-like ellipsoids.
        phase_probability: share of template subjects with a strong random PD phase (ramp
            up to pi across the FOV, smooth field up to 1 rad); synthetic phantoms always get one.
        strength: multiplier (>= 0) of the amplitudes and counts of folding, CSF spaces,
            vessels and phase (1 = the documented ranges).
    """

    synthetic_fraction: float = 0.0
    synthetic_styles: tuple[str, ...] = SYNTHETIC_STYLES
    deformation_probability: float = 0.0
    deformation_mm: tuple[float, float] = (2.0, 8.0)
    tissue_range_probability: float = 0.0
    folding_probability: float = 0.0
    csf_space_probability: float = 0.0
    vessel_probability: float = 0.0
    slab_probability: float = 0.0
    lesion_probability: float = 0.3
    varied_lesion_probability: float = 0.0
    phase_probability: float = 0.0
    strength: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "synthetic_styles", tuple(self.synthetic_styles))
        object.__setattr__(self, "deformation_mm", tuple(float(v) for v in self.deformation_mm))
        for name in _PROBABILITIES:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"PhantomRecipe.{name} must be a probability in [0, 1], got {v!r}")
        bad = [s for s in self.synthetic_styles if s not in SYNTHETIC_STYLES]
        if bad or not self.synthetic_styles:
            raise ValueError(
                f"PhantomRecipe.synthetic_styles must be a non-empty subset of {SYNTHETIC_STYLES}, "
                f"got {self.synthetic_styles!r}"
            )
        lo, hi = self.deformation_mm if len(self.deformation_mm) == 2 else (math.nan, math.nan)
        if not 0.0 <= lo <= hi <= 16.0:
            raise ValueError(
                "PhantomRecipe.deformation_mm must be (low, high) with 0 <= low <= high <= 16 mm, "
                f"got {self.deformation_mm!r}"
            )
        if not isinstance(self.strength, (int, float)) or not 0.0 <= self.strength <= 4.0:
            raise ValueError(f"PhantomRecipe.strength must be in [0, 4], got {self.strength!r}")

    @property
    def is_default(self) -> bool:
        """True when the recipe is today's phantom world (``PhantomRecipe()``)."""
        return self == PhantomRecipe()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists); :meth:`from_dict` inverts it."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhantomRecipe:
        """Recipe from a dict such as :meth:`to_dict` wrote (missing keys take the defaults).

        Raises:
            ValueError: unknown keys (named in the message) or values out of range.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a phantom recipe must be a JSON object (dict), got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown phantom recipe key(s) {unknown}; the keys are {sorted(names)} "
                "(docs/simulation.md, 'Phantom world')"
            )
        return cls(**data)

    @classmethod
    def wide(cls, synthetic_fraction: float = 0.25, strength: float = 1.0) -> PhantomRecipe:
        """The wide training world proposed for issue 13 (every ingredient on for part of the subjects)."""
        return cls(
            synthetic_fraction=synthetic_fraction,
            deformation_probability=0.6,
            deformation_mm=(2.0, 8.0),
            tissue_range_probability=0.7,
            folding_probability=0.7,
            csf_space_probability=0.6,
            vessel_probability=0.6,
            slab_probability=0.5,
            lesion_probability=0.5,
            varied_lesion_probability=0.8,
            phase_probability=0.5,
            strength=strength,
        )


def _plain(v: Any) -> Any:
    return [_plain(x) for x in v] if isinstance(v, (tuple, list)) else v


#: First reserved subject seed (inclusive).
VALIDATION_SEED_START = 2**52
#: End of the reserved subject seeds (exclusive).
VALIDATION_SEED_STOP = 2**52 + 2**40
_BLOCK = 2**32
#: Seed block ``(start, stop)`` of each out-of-distribution validation kind.
VALIDATION_SEED_BLOCKS: dict[str, tuple[int, int]] = {
    "deformed": (VALIDATION_SEED_START, VALIDATION_SEED_START + _BLOCK),
    "synthetic": (VALIDATION_SEED_START + _BLOCK, VALIDATION_SEED_START + 2 * _BLOCK),
}
#: Fixed recipe of each validation kind: strongly deformed MNI152 heads with every
#: ingredient at the top of its range, and fully synthetic label phantoms.
VALIDATION_RECIPES: dict[str, PhantomRecipe] = {
    "deformed": PhantomRecipe(
        deformation_probability=1.0,
        deformation_mm=(7.0, 10.0),
        tissue_range_probability=1.0,
        folding_probability=1.0,
        csf_space_probability=1.0,
        vessel_probability=1.0,
        slab_probability=1.0,
        lesion_probability=0.5,
        varied_lesion_probability=1.0,
        phase_probability=1.0,
    ),
    "synthetic": PhantomRecipe(synthetic_fraction=1.0, phase_probability=1.0),
}


def validation_seed(kind: str, index: int) -> int:
    """Subject seed of subject ``index`` (0-based) of validation kind ``kind``."""
    if kind not in VALIDATION_SEED_BLOCKS:
        raise ValueError(f"validation kind must be one of {sorted(VALIDATION_SEED_BLOCKS)}, got {kind!r}")
    start, stop = VALIDATION_SEED_BLOCKS[kind]
    if not 0 <= int(index) < stop - start:
        raise ValueError(f"validation subject index must be in [0, {stop - start}), got {index}")
    return start + int(index)


def is_validation_seed(seed: int) -> bool:
    """True when ``seed`` lies in the reserved validation range."""
    return VALIDATION_SEED_START <= int(seed) < VALIDATION_SEED_STOP


def validation_kind_of_seed(seed: int) -> str | None:
    """The validation kind whose block holds ``seed`` (``None`` outside every block)."""
    for kind, (start, stop) in VALIDATION_SEED_BLOCKS.items():
        if start <= int(seed) < stop:
            return kind
    return None


def check_training_seed(seed: int, split: str) -> None:
    """Refuse a reserved validation seed for a training draw (``split == "train"``).

    Raises:
        ValueError: naming the seed, the reserved range and what to do.
    """
    if split == "train" and is_validation_seed(seed):
        raise ValueError(
            f"subject seed {int(seed)} lies in the range reserved for the out-of-distribution "
            f"validation sets [{VALIDATION_SEED_START}, {VALIDATION_SEED_STOP}) = [2**52, 2**52 + 2**40); "
            "training draws may not use it (for SimulatedPairDataset: dataset seeds 2**20 to "
            "2**20 + 255 are reserved); pick a smaller seed (docs/simulation.md, 'Validation sets')"
        )


def check_training_seeds(first: int, count: int, split: str) -> None:
    """Refuse a block of subject seeds ``first .. first + count - 1`` that meets the reserved
    range, for ``split == "train"`` (e.g. a ``SimulatedPairDataset``: ``first = seed * 2**32``,
    ``count = length``), before any item is drawn."""
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    last = int(first) + int(count) - 1
    if split == "train" and int(first) < VALIDATION_SEED_STOP and last >= VALIDATION_SEED_START:
        check_training_seed(max(int(first), VALIDATION_SEED_START), split)


def recipe_for_seed(seed: int, split: str, recipe: PhantomRecipe | None) -> PhantomRecipe | None:
    """The recipe that subject ``seed`` of ``split`` is drawn with.

    Reserved seeds are refused for training and get their kind's fixed recipe
    (:data:`VALIDATION_RECIPES`); a different explicit ``recipe`` for them is an error.
    Other seeds keep ``recipe`` (``None``: today's phantoms).
    """
    check_training_seed(seed, split)
    if not is_validation_seed(seed):
        return recipe
    kind = validation_kind_of_seed(seed)
    if kind is None:
        raise ValueError(
            f"subject seed {int(seed)} lies in the reserved validation range but in no validation kind's "
            f"block {VALIDATION_SEED_BLOCKS}; it is kept free for future validation sets"
        )
    fixed = VALIDATION_RECIPES[kind]
    if recipe is not None and recipe != fixed:
        raise ValueError(
            f"subject seed {int(seed)} belongs to the {kind!r} validation set, whose recipe is fixed "
            f"({fixed}); do not pass another recipe for it"
        )
    return fixed
