"""Simulated MRF data: subject folders (``raw.h5`` + ``ref/``) and training pairs, simulated on the
fly or from a dataset folder of subjects with references, and the validation sets
(in-distribution, out-of-distribution, out-of-distribution at 4x noise)."""

from .pairs import CompressedSignalTable, SimulatedPairDataset, load_protocol
from .subject_pairs import SubjectDataError, SubjectPairDataset, dataset_sequence, estimate_pd_phase
from .subjects import DEFAULT_NOISE, choose_slices, simulate_subject
from .validation_sets import (
    VALIDATION_SETS,
    ValidationSetSpec,
    ValidationSubject,
    read_validation_set,
    validation_set_subjects,
    write_validation_set,
)

__all__ = [
    "CompressedSignalTable",
    "SimulatedPairDataset",
    "load_protocol",
    "SubjectDataError",
    "SubjectPairDataset",
    "dataset_sequence",
    "estimate_pd_phase",
    "DEFAULT_NOISE",
    "choose_slices",
    "simulate_subject",
    "VALIDATION_SETS",
    "ValidationSetSpec",
    "ValidationSubject",
    "read_validation_set",
    "validation_set_subjects",
    "write_validation_set",
]
