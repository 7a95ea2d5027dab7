"""Numerical brain phantoms: MNI152 anatomy, 3 T tissue parameters, augmentation, splits.

``sample_subject_maps(seed, slice_index, matrix, split, augment)`` is the entry point: it
returns the ground-truth T1/T2/PD maps of one axial slice of a simulated subject.
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
from .tissues import FIELD_STRENGTH_T, LABELS, TISSUES, sample_subject_maps, sample_subject_parameters

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
    "FIELD_STRENGTH_T",
    "LABELS",
    "TISSUES",
    "sample_subject_maps",
    "sample_subject_parameters",
]
