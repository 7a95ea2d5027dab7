"""Simulated MRF data: subject folders (``raw.h5`` + ``ref/``) and training pairs, simulated on the
fly or from a dataset folder of subjects with references."""

from .pairs import CompressedSignalTable, SimulatedPairDataset
from .subject_pairs import SubjectDataError, SubjectPairDataset, dataset_sequence, estimate_pd_phase
from .subjects import DEFAULT_NOISE, choose_slices, simulate_subject

__all__ = [
    "CompressedSignalTable",
    "SimulatedPairDataset",
    "SubjectDataError",
    "SubjectPairDataset",
    "dataset_sequence",
    "estimate_pd_phase",
    "DEFAULT_NOISE",
    "choose_slices",
    "simulate_subject",
]
