"""Simulated MRF data: subject folders (``raw.h5`` + ``ref/``) and on-the-fly training pairs."""

from .pairs import CompressedSignalTable, SimulatedPairDataset
from .subjects import DEFAULT_NOISE, choose_slices, simulate_subject

__all__ = [
    "CompressedSignalTable",
    "SimulatedPairDataset",
    "DEFAULT_NOISE",
    "choose_slices",
    "simulate_subject",
]
