"""Numerical brain phantoms: MNI152 anatomy, 3 T tissue parameters, augmentation, splits,
and the wider phantom world (recipes, strong deformation, fine structure, varied lesions,
fully synthetic label phantoms, reserved validation seeds).

``sample_subject_maps(seed, slice_index, matrix, split, augment, recipe=None)`` is the entry
point: it returns the ground-truth T1/T2/PD maps of one axial slice of a simulated subject;
``recipe`` (a :class:`PhantomRecipe`) selects the phantom world (``None``: today's phantoms).
"""

from .anatomy import (
    CANVAS,
    FOV_MM,
    TISSUE_NAMES,
    HeadLayers,
    head_slice,
    load_mni_templates,
    slice_position_mm,
)
from .augment import (
    SPLITS,
    Augmentation,
    sample_augmentation,
    split_of_slice,
    split_slices,
    subject_generator,
)
from .recipe import (
    VALIDATION_RECIPES,
    VALIDATION_SEED_BLOCKS,
    VALIDATION_SEED_START,
    VALIDATION_SEED_STOP,
    PhantomRecipe,
    check_training_seed,
    is_validation_seed,
    validation_kind_of_seed,
    validation_seed,
)
from .tissues import (
    FIELD_STRENGTH_T,
    LABELS,
    TISSUE_RANGES,
    TISSUES,
    sample_subject_maps,
    sample_subject_parameters,
)

__all__ = [
    "CANVAS",
    "FOV_MM",
    "TISSUE_NAMES",
    "HeadLayers",
    "head_slice",
    "load_mni_templates",
    "slice_position_mm",
    "SPLITS",
    "Augmentation",
    "sample_augmentation",
    "split_of_slice",
    "split_slices",
    "subject_generator",
    "PhantomRecipe",
    "VALIDATION_RECIPES",
    "VALIDATION_SEED_BLOCKS",
    "VALIDATION_SEED_START",
    "VALIDATION_SEED_STOP",
    "check_training_seed",
    "is_validation_seed",
    "validation_kind_of_seed",
    "validation_seed",
    "FIELD_STRENGTH_T",
    "LABELS",
    "TISSUES",
    "TISSUE_RANGES",
    "sample_subject_maps",
    "sample_subject_parameters",
]
